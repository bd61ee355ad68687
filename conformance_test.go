package main

// Conformance to the API description: the document's examples and the service's real
// answers (and the requests that succeeded) against the document's schemas.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOpenAPIExamplesMatchTheirSchemas: an example that breaks its own schema would teach
// clients the wrong thing (and Swagger UI sends the body examples as they are).
func TestOpenAPIExamplesMatchTheirSchemas(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	v := oaValidator{doc: doc}
	checked := 0
	checkMedia := func(at string, mt map[string]any, answers bool) {
		schema, ok := mt["schema"]
		if !ok {
			return
		}
		val := oaValidator{doc: doc, answers: answers}
		if ex, ok := mt["example"]; ok {
			checked++
			for _, e := range val.validate(schema, ex) {
				t.Errorf("%s example: %s", at, e)
			}
		}
		examples, _ := mt["examples"].(map[string]any)
		for name, ex := range examples {
			checked++
			for _, e := range val.validate(schema, doc.resolve(t, ex)["value"]) {
				t.Errorf("%s example %s: %s", at, name, e)
			}
		}
	}
	for _, o := range doc.operations(t) {
		for _, p := range o.Params {
			if ex, ok := p["example"]; ok {
				checked++
				inst := ex
				if p["in"] == "path" {
					inst = oaParamValue(doc, p["schema"], fmt.Sprint(ex))
				}
				for _, e := range v.validate(p["schema"], inst) {
					t.Errorf("%s parameter %v example: %s", o.pattern(), p["name"], e)
				}
			}
		}
		if rb, ok := o.Op["requestBody"]; ok {
			content, _ := doc.resolve(t, rb)["content"].(map[string]any)
			for ct, mt := range content {
				checkMedia(o.pattern()+" request "+ct, mt.(map[string]any), false)
			}
		}
		for status, r := range o.Op["responses"].(map[string]any) {
			content, _ := doc.resolve(t, r)["content"].(map[string]any)
			for ct, mt := range content {
				checkMedia(o.pattern()+" "+status+" "+ct, mt.(map[string]any), true)
			}
		}
	}
	components := doc.root["components"].(map[string]any)
	for name, r := range components["responses"].(map[string]any) {
		content, _ := doc.resolve(t, r)["content"].(map[string]any)
		for ct, mt := range content {
			checkMedia("components/responses/"+name+" "+ct, mt.(map[string]any), true)
		}
	}
	if checked < 40 {
		t.Errorf("only %d examples checked; the document should show most bodies by example", checked)
	}
}

// ---- conformance: real answers against the document ----

// oaConformance sends requests through a test server and checks each answer against the
// document: the status is documented for the operation the mux routes the request to, the
// required headers are there and valid, and the body matches the schema of its media type.
// It remembers which (operation, status) pairs it has seen.
type oaConformance struct {
	t    *testing.T
	doc  *oaDoc
	ops  map[string]oaOperation
	mux  *http.ServeMux
	mu   sync.Mutex
	seen map[string]map[int]bool
}

func newOAConformance(t *testing.T, doc *oaDoc) *oaConformance {
	c := &oaConformance{t: t, doc: doc, ops: map[string]oaOperation{}, mux: oaRoutes(), seen: map[string]map[int]bool{}}
	for _, o := range doc.operations(t) {
		c.ops[o.pattern()] = o
	}
	return c
}

// oaReq is one request of the conformance run; want is the status it must get, or 0 for
// any status the document lists for the route.
type oaReq struct {
	method, target, body, token string
	headers                     header
	want                        int
	// within ends the request after this long: an event stream answers until then.
	within time.Duration
}

// send makes the request through env, checks the status, then the answer against the
// document; a request with a body the operation documents is checked against that too.
func (c *oaConformance) send(env *testEnv, q oaReq) response {
	t := c.t
	t.Helper()
	ctx := context.Background()
	if q.within > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, q.within)
		defer cancel()
	}
	r := env.doCtx(ctx, q.method, q.target, q.body, q.token, q.headers)
	if q.want != 0 && r.Code != q.want {
		t.Errorf("%s %s: got %d %s, want %d", q.method, q.target, r.Code, oaShort(r.Body.String()), q.want)
		return r
	}
	c.checkAnswer(q, r)
	return r
}

func (c *oaConformance) checkAnswer(q oaReq, r response) {
	t := c.t
	t.Helper()
	name := q.method + " " + q.target
	_, pattern := c.mux.Handler(httptest.NewRequest(q.method, q.target, nil))
	var resp map[string]any
	if pattern == "" {
		// No route: the mux's own 404 or 405, which any path can answer.
		which := map[int]string{404: "NotFound", 405: "MethodNotAllowed"}[r.Code]
		if which == "" {
			t.Errorf("%s: %d without a route", name, r.Code)
			return
		}
		resp = c.doc.resolve(t, map[string]any{"$ref": "#/components/responses/" + which})
	} else {
		o, ok := c.ops[pattern]
		if !ok {
			t.Errorf("%s: route %s is not in the document", name, pattern)
			return
		}
		if resp = c.doc.resolve(t, c.doc.response(t, o, r.Code)); resp == nil {
			t.Errorf("%s: status %d is not documented for %s: %s", name, r.Code, pattern, oaShort(r.Body.String()))
			return
		}
		c.mu.Lock()
		if c.seen[pattern] == nil {
			c.seen[pattern] = map[int]bool{}
		}
		c.seen[pattern][r.Code] = true
		c.mu.Unlock()
		if r.Code < 300 {
			c.checkRequest(o, q)
		}
	}
	headers, _ := resp["headers"].(map[string]any)
	for h, def := range headers {
		hd := c.doc.resolve(t, def)
		got, present := r.Header()[http.CanonicalHeaderKey(h)]
		if !present {
			if hd["required"] == true {
				t.Errorf("%s: %d lacks the documented header %s", name, r.Code, h)
			}
			continue
		}
		for _, e := range (oaValidator{doc: c.doc, answers: true}).validate(hd["schema"], oaParamValue(c.doc, hd["schema"], got[0])) {
			t.Errorf("%s: header %s: %s", name, h, e)
		}
	}
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if r.Body.Len() != 0 {
			t.Errorf("%s: %d has a body the document does not show: %s", name, r.Code, oaShort(r.Body.String()))
		}
		return
	}
	mediaType := strings.TrimSpace(strings.Split(r.Header().Get("Content-Type"), ";")[0])
	mt, ok := content[mediaType].(map[string]any)
	if !ok {
		t.Errorf("%s: %d answered %q, the document lists %v", name, r.Code, mediaType, slices.Sorted(maps.Keys(content)))
		return
	}
	if mediaType != "application/json" {
		return
	}
	for _, e := range (oaValidator{doc: c.doc, answers: true}).validate(mt["schema"], oaDecode(t, r.Body.Bytes())) {
		t.Errorf("%s: %d body %s", name, r.Code, e)
	}
}

// checkRequest holds a request that succeeded to the document: its query parameters are
// documented for the operation and valid, and its body matches the documented schema.
func (c *oaConformance) checkRequest(o oaOperation, q oaReq) {
	t := c.t
	t.Helper()
	name := q.method + " " + q.target
	u, _ := url.Parse(q.target)
	for k, vals := range u.Query() {
		p := o.param("query", k)
		if p == nil {
			t.Errorf("%s: query parameter %s is not documented", name, k)
			continue
		}
		for _, e := range (oaValidator{doc: c.doc}).validate(p["schema"], oaParamValue(c.doc, p["schema"], vals[0])) {
			t.Errorf("%s: query parameter %s: %s", name, k, e)
		}
	}
	if q.body == "" {
		return
	}
	ct := "application/json"
	if v, ok := q.headers["Content-Type"]; ok {
		ct = v
	}
	content, _ := c.doc.resolve(t, o.Op["requestBody"])["content"].(map[string]any)
	mt, ok := content[ct].(map[string]any)
	if !ok {
		t.Errorf("%s: request body of type %s is not documented", name, ct)
		return
	}
	var inst any
	if ct == "application/x-www-form-urlencoded" {
		form, _ := url.ParseQuery(q.body)
		m := map[string]any{}
		for k := range form {
			m[k] = form.Get(k)
		}
		inst = m
	} else {
		inst = oaDecode(t, []byte(q.body))
	}
	for _, e := range (oaValidator{doc: c.doc}).validate(mt["schema"], inst) {
		t.Errorf("%s: the request body that succeeded breaks the document: %s", name, e)
	}
}

// oaParamValue reads a header or query value as the JSON value its schema types.
func oaParamValue(doc *oaDoc, schema any, raw string) any {
	s, _ := schema.(map[string]any)
	if ref, ok := s["$ref"].(string); ok {
		target, _ := doc.pointer(ref)
		s, _ = target.(map[string]any)
	}
	switch s["type"] {
	case "integer", "number":
		if _, err := strconv.ParseFloat(raw, 64); err == nil {
			return json.Number(raw)
		}
	case "boolean":
		if b, err := strconv.ParseBool(raw); err == nil {
			return b
		}
	}
	return raw
}

// TestOpenAPIAnswersMatchTheDocument drives every operation through its success and
// every documented error that is cheap to provoke, and checks each answer against the
// document. At the end every documented status but 500 and 503 must have been seen.
func TestOpenAPIAnswersMatchTheDocument(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	c := newOAConformance(t, doc)
	env := newTestEnv(t)
	send := func(q oaReq) response { t.Helper(); return c.send(env, q) }
	form := header{"Content-Type": "application/x-www-form-urlencoded"}

	// Accounts.
	var tr tokenResponse
	send(oaReq{method: "POST", target: "/api/v1/auth/register", want: 201,
		body: `{"email":"Conformance@Example.com","password":"correct horse battery","name":"  Ada  "}`}).json(&tr)
	token, me := tr.AccessToken, strconv.FormatInt(tr.User.ID, 10)
	send(oaReq{method: "POST", target: "/api/v1/auth/register", want: 409,
		body: `{"email":"conformance@example.com","password":"correct horse battery"}`})
	send(oaReq{method: "POST", target: "/api/v1/auth/login", want: 200,
		body: `{"email":"conformance@example.com","password":"correct horse battery"}`})
	send(oaReq{method: "POST", target: "/api/v1/auth/login", want: 401,
		body: `{"email":"conformance@example.com","password":"wrong horse battery"}`})
	send(oaReq{method: "POST", target: "/api/v1/auth/login", want: 400, headers: form, body: "username=%zz"})
	send(oaReq{method: "POST", target: "/api/v1/auth/login", want: 422, headers: form, body: "username=a%40b.c"})
	send(oaReq{method: "POST", target: "/api/v1/auth/login", want: 200, headers: form,
		body: "grant_type=password&username=conformance%40example.com&password=correct+horse+battery&scope="}).json(&tr)
	var tr2 tokenResponse
	send(oaReq{method: "POST", target: "/api/v1/auth/refresh", want: 200,
		body: `{"refresh_token":"` + tr.RefreshToken + `"}`}).json(&tr2)
	send(oaReq{method: "POST", target: "/api/v1/auth/logout", want: 204, body: `{"refresh_token":"` + tr2.RefreshToken + `"}`})
	send(oaReq{method: "POST", target: "/api/v1/auth/refresh", want: 401, body: `{"refresh_token":"` + tr2.RefreshToken + `"}`})
	send(oaReq{method: "POST", target: "/api/v1/auth/logout", want: 401, body: `{"refresh_token":"1.not-a-token"}`})
	send(oaReq{method: "GET", target: "/api/v1/auth/me", token: token, want: 200})
	send(oaReq{method: "GET", target: "/api/v1/auth/me", token: "not.a.token", want: 401})
	send(oaReq{method: "PATCH", target: "/api/v1/auth/me", token: token, want: 200, body: `{"name":"Ada King"}`})
	send(oaReq{method: "PATCH", target: "/api/v1/auth/me", token: token, want: 200, body: `{"name":null}`})
	send(oaReq{method: "PATCH", target: "/api/v1/auth/me", token: token, want: 200, body: `{}`})
	send(oaReq{method: "POST", target: "/api/v1/auth/password", token: token, want: 422,
		body: `{"current_password":"not the password","new_password":"another good password"}`})
	send(oaReq{method: "POST", target: "/api/v1/auth/password", token: token, want: 200,
		body: `{"current_password":"correct horse battery","new_password":"another good password"}`})
	var gone tokenResponse
	send(oaReq{method: "POST", target: "/api/v1/auth/register", want: 201,
		body: `{"email":"leaving@example.com","password":"correct horse battery"}`}).json(&gone)
	send(oaReq{method: "DELETE", target: "/api/v1/auth/me", token: gone.AccessToken, want: 204})
	send(oaReq{method: "GET", target: "/api/v1/auth/me", token: gone.AccessToken, want: 401})

	// Tasks.
	var task wireTask
	created := send(oaReq{method: "POST", target: "/api/v1/tasks", token: token, want: 201,
		body: `{"title":" Write the manual ","description":"With examples","priority":"high","tags":["Docs","docs","api"],"due_date":"2026-12-01"}`})
	created.json(&task)
	id := strconv.FormatInt(task.ID, 10)
	send(oaReq{method: "POST", target: "/api/v1/tasks", token: token, want: 201, body: `{"title":"Minimal"}`})
	key := header{"Idempotency-Key": "conformance-1"}
	send(oaReq{method: "POST", target: "/api/v1/tasks", token: token, headers: key, want: 201, body: `{"title":"Once"}`})
	send(oaReq{method: "POST", target: "/api/v1/tasks", token: token, headers: key, want: 201, body: `{"title":"Once"}`})
	send(oaReq{method: "POST", target: "/api/" + me + "/tasks", token: token, headers: key, want: 422, body: `{"title":"Twice"}`})
	send(oaReq{method: "POST", target: "/api/v1/tasks", token: token, headers: header{"Idempotency-Key": "tab\there"}, want: 422, body: `{"title":"x"}`})
	send(oaReq{method: "POST", target: "/api/v1/tasks", token: token, want: 201,
		body: `{"title":"Due with offset","due_date":"2026-12-01T09:30:00+02:00","description":null,"tags":null,"completed":true}`})
	var page taskPage
	send(oaReq{method: "GET", target: "/api/v1/tasks", token: token, want: 200})
	send(oaReq{method: "GET", target: "/api/v1/tasks?limit=1&sort=-priority", token: token, want: 200}).json(&page)
	if page.NextCursor == nil {
		t.Fatal("no next_cursor on a page of 1 of 4 tasks")
	}
	send(oaReq{method: "GET", target: "/api/v1/tasks?limit=1&sort=-priority&cursor=" + url.QueryEscape(*page.NextCursor), token: token, want: 200})
	send(oaReq{method: "GET", target: "/api/v1/tasks?limit=1&sort=title&cursor=" + url.QueryEscape(*page.NextCursor), token: token, want: 400})
	send(oaReq{method: "GET", target: "/api/v1/tasks?completed=false&status=pending&q=manual&priority=high&tag=docs&due_after=2026-11-01&due_before=2026-12-31T00:00:00Z&limit=100", token: token, want: 200})
	send(oaReq{method: "GET", target: "/api/v1/tasks?limit=0&status=maybe&sort=id", token: token, want: 400})
	send(oaReq{method: "GET", target: "/api/v1/tasks/stats", token: token, want: 200})
	got := send(oaReq{method: "GET", target: "/api/v1/tasks/" + id, token: token, want: 200})
	etag := got.Header().Get("ETag")
	send(oaReq{method: "GET", target: "/api/v1/tasks/" + id, token: token, headers: header{"If-None-Match": etag}, want: 304})
	send(oaReq{method: "GET", target: "/api/v1/tasks/not-a-number", token: token, want: 404})
	r := send(oaReq{method: "PUT", target: "/api/v1/tasks/" + id, token: token, headers: header{"If-Match": etag}, want: 200,
		body: `{"title":"Write the manual","priority":"low"}`})
	send(oaReq{method: "PATCH", target: "/api/v1/tasks/" + id, token: token, headers: header{"If-Match": r.Header().Get("ETag")}, want: 200,
		body: `{"description":"Chapter one","tags":["docs"],"due_date":null}`})
	send(oaReq{method: "PATCH", target: "/api/v1/tasks/" + id, token: token, headers: header{"If-Match": etag}, want: 412, body: `{"title":"stale"}`})
	send(oaReq{method: "PATCH", target: "/api/v1/tasks/" + id + "/complete", token: token, headers: header{"Content-Type": ""}, want: 200})
	send(oaReq{method: "PATCH", target: "/api/v1/tasks/" + id + "/complete", token: token, want: 200, body: `{"completed":false}`})
	send(oaReq{method: "PATCH", target: "/api/v1/tasks/" + id, token: token, want: 422, body: `{"title":null,"priority":"urgent","tags":["` + strings.Repeat("t", 51) + `"]}`})
	var doomed wireTask
	send(oaReq{method: "POST", target: "/api/v1/tasks", token: token, want: 201, body: `{"title":"Doomed"}`}).json(&doomed)
	send(oaReq{method: "DELETE", target: "/api/v1/tasks/" + strconv.FormatInt(doomed.ID, 10), token: token, headers: header{"If-Match": "*"}, want: 204})
	send(oaReq{method: "DELETE", target: "/api/v1/tasks/" + strconv.FormatInt(doomed.ID, 10), token: token, want: 404})

	// Section 6.
	webBase := "/api/" + me + "/tasks"
	send(oaReq{method: "GET", target: webBase, token: token, want: 200})
	send(oaReq{method: "GET", target: webBase + "?search=manual&status=open&tags=docs&due_date_from=2026-01-01&due_date_to=2027-01-01&sort_by=title&sort_order=desc&limit=1000&skip=0", token: token, want: 200})
	send(oaReq{method: "GET", target: webBase + "?sort=created&order=asc&offset=1&limit=5&completed=true", token: token, want: 200})
	send(oaReq{method: "GET", target: webBase + "?limit=1001", token: token, want: 400})
	var web map[string]any
	send(oaReq{method: "POST", target: webBase, token: token, want: 201, body: `{"title":"From the web app","priority":"low"}`}).json(&web)
	webTask := webBase + "/" + fmt.Sprint(web["id"])
	got = send(oaReq{method: "GET", target: webTask, token: token, want: 200})
	send(oaReq{method: "GET", target: webTask, token: token, headers: header{"If-None-Match": got.Header().Get("ETag")}, want: 304})
	send(oaReq{method: "PUT", target: webTask, token: token, headers: header{"If-Match": got.Header().Get("ETag")}, want: 200, body: `{"completed":true}`})
	send(oaReq{method: "PATCH", target: webTask + "/complete", token: token, want: 200})
	send(oaReq{method: "DELETE", target: webTask, token: token, want: 204})

	// Operations.
	send(oaReq{method: "GET", target: "/healthz", want: 200})
	send(oaReq{method: "GET", target: "/readyz", want: 200})
	for _, target := range []string{"/openapi.json", "/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css",
		"/docs/swagger-initializer.js", "/docs/favicon-32x32.png", "/docs/LICENSE", "/docs/NOTICE", "/docs/swagger-ui-bundle.js.LICENSE.txt"} {
		r := send(oaReq{method: "GET", target: target, want: 200})
		send(oaReq{method: "GET", target: target, headers: header{"If-None-Match": r.Header().Get("ETag")}, want: 304})
	}
	send(oaReq{method: "GET", target: "/docs/index.html", want: 404})
	send(oaReq{method: "GET", target: "/no/such/route", want: 404})
	send(oaReq{method: "POST", target: "/healthz", want: 405})
	send(oaReq{method: "DELETE", target: webBase, token: token, want: 405})

	// The generic errors. Which probes an operation gets follows from its route (method and
	// path), not from what the document says of it, so that a status the document forgets
	// is caught as well as one it invents.
	big := `{"title":"` + strings.Repeat("a", int(env.cfg.MaxBodyBytes)) + `"}`
	wrongTypes := `{"title":5,"completed":"x","email":5,"password":5,"refresh_token":5,"name":5,"current_password":5,"new_password":5}`
	for _, o := range doc.operations(t) {
		if o.jsonRPC() || o.pattern() == "GET /api/v1/events" {
			continue // below
		}
		valid := map[string]string{"id": id, "user_id": me}
		// The event ticket's and the verification resend's POST read no body.
		hasBody := (o.Method == "POST" || o.Method == "PUT" || o.Method == "PATCH") &&
			o.pattern() != "POST /api/v1/events/ticket" && o.pattern() != "POST /api/v1/auth/verify/resend"
		example := ""
		if _, ok := doc.jsonBodySchema(t, o); ok {
			example = doc.jsonBodyExample(t, o)
		}
		// Without a token, whatever the route answers must be documented; nothing a
		// request without a token can do here harms the fixtures.
		send(oaReq{method: o.Method, target: o.samplePath(valid), body: example, want: 0})
		if strings.Contains(o.Path, "{user_id}") {
			send(oaReq{method: o.Method, target: o.samplePath(map[string]string{"id": id, "user_id": "someone-else"}),
				token: token, body: example, want: 403})
		}
		if strings.Contains(o.Path, "{id}") {
			send(oaReq{method: o.Method, target: o.samplePath(map[string]string{"id": "999999999", "user_id": me}),
				token: token, body: example, want: 404})
			if o.Method != "GET" && strings.Contains(o.Path, "/tasks/") { // tasks have ETags
				send(oaReq{method: o.Method, target: o.samplePath(valid), token: token, body: example,
					headers: header{"If-Match": `"999999"`}, want: 412})
			}
		}
		if strings.Contains(o.Path, "{asset}") {
			send(oaReq{method: o.Method, target: o.samplePath(map[string]string{"asset": "missing.js"}), want: 404})
		}
		if o.Method == "GET" {
			if r := send(oaReq{method: o.Method, target: o.samplePath(valid), token: token, want: 200}); r.Header().Get("ETag") != "" {
				send(oaReq{method: o.Method, target: o.samplePath(valid), token: token,
					headers: header{"If-None-Match": r.Header().Get("ETag")}, want: 304})
			}
		}
		if strings.HasSuffix(o.Path, "/tasks") && o.Method != "POST" {
			body := ""
			if hasBody {
				body = example
			}
			send(oaReq{method: o.Method, target: o.samplePath(valid) + "?priority=urgent", token: token, body: body, want: 400})
		}
		if !hasBody {
			continue
		}
		send(oaReq{method: o.Method, target: o.samplePath(valid), token: token, body: big, want: 413})
		send(oaReq{method: o.Method, target: o.samplePath(valid), token: token, body: `{}`,
			headers: header{"Content-Type": "text/plain"}, want: 415})
		send(oaReq{method: o.Method, target: o.samplePath(valid), token: token, body: `[1]`, want: 400})
		send(oaReq{method: o.Method, target: o.samplePath(valid), token: token, body: wrongTypes, want: 422})
	}
	send(oaReq{method: "PATCH", target: "/api/v1/tasks?priority=urgent", token: token, body: `{"completed":true}`, want: 400})

	// The MCP endpoint: JSON-RPC inside, the HTTP errors of every route outside.
	rpcHeaders := header{"Accept": "application/json, text/event-stream"}
	send(oaReq{method: "POST", target: "/mcp", want: 401, headers: rpcHeaders, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`})
	send(oaReq{method: "POST", target: "/mcp", token: token, want: 200, headers: rpcHeaders, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`})
	send(oaReq{method: "POST", target: "/mcp", token: token, want: 202, headers: rpcHeaders, body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`})
	send(oaReq{method: "POST", target: "/mcp", token: token, want: 400, headers: rpcHeaders, body: `{"jsonrpc":`})
	send(oaReq{method: "POST", target: "/mcp", token: token, want: 413, headers: rpcHeaders, body: big})
	send(oaReq{method: "POST", target: "/mcp", token: token, want: 415, headers: header{"Content-Type": "text/plain"}, body: `{}`})
	send(oaReq{method: "GET", target: "/.well-known/oauth-protected-resource", want: 200})
	send(oaReq{method: "GET", target: "/.well-known/oauth-protected-resource/mcp", want: 200})

	// The event stream answers until the client goes: each request here ends after a while.
	stream := func(q oaReq) response { q.method, q.within = "GET", 300*time.Millisecond; return send(q) }
	stream(oaReq{target: "/api/v1/events", want: 401})
	stream(oaReq{target: "/api/v1/events?ticket=1.unknown", want: 401})
	stream(oaReq{target: "/api/v1/events", token: token, want: 200})
	stream(oaReq{target: "/api/v1/events?last_event_id=x", token: token, want: 400})
	var tk struct{ Ticket string }
	send(oaReq{method: "POST", target: "/api/v1/events/ticket", token: token, want: 200}).json(&tk)
	stream(oaReq{target: "/api/v1/events?ticket=" + url.QueryEscape(tk.Ticket), want: 200})
	oneStream := newTestEnv(t, func(c *Config) { c.EventsMaxPerUser = 1 })
	oneToken, _ := oneStream.registerUser("one-stream@example.com")
	held, release := context.WithCancel(context.Background())
	heldDone := make(chan struct{})
	go func() {
		defer close(heldDone)
		oneStream.doCtx(held, "GET", "/api/v1/events", "", oneToken)
	}()
	for deadline := time.Now().Add(5 * time.Second); oneStream.srv.events.open.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held stream did not open")
		}
	}
	c.send(oneStream, oaReq{method: "GET", target: "/api/v1/events", token: oneToken, want: 429, within: 300 * time.Millisecond})
	release()
	<-heldDone

	// Account e-mail, with mail on (queued only: no mailer runs here).
	mailOn := newTestEnv(t, func(c *Config) {
		c.LoginFailuresPerMinute = 1 // forgot-password shares the login limits
		c.mail = mailConfig{server: &url.URL{Scheme: "smtp", Host: "127.0.0.1:9"}, from: &mail.Address{Address: "todo@example.com"},
			appURL: "https://app.example.com"}
	})
	var mr tokenResponse
	c.send(mailOn, oaReq{method: "POST", target: "/api/v1/auth/register", want: 201,
		body: `{"email":"mail-on@example.com","password":"correct horse battery"}`}).json(&mr)
	c.send(mailOn, oaReq{method: "POST", target: "/api/v1/auth/verify/resend", token: mr.AccessToken, want: 202})
	c.send(mailOn, oaReq{method: "POST", target: "/api/v1/auth/password/forgot", want: 202, body: `{"email":"mail-on@example.com"}`})
	c.send(mailOn, oaReq{method: "POST", target: "/api/v1/auth/password/forgot", want: 429, body: `{"email":"mail-on@example.com"}`})
	for _, kind := range []string{mailVerify, mailReset} {
		tok, hash := newAccountToken(mr.User.ID)
		if err := mailOn.st.IssueAccountToken(context.Background(), mr.User.ID, kind, hash, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if kind == mailVerify {
			c.send(mailOn, oaReq{method: "POST", target: "/api/v1/auth/verify", want: 200, body: `{"token":"` + tok + `"}`})
		} else {
			c.send(mailOn, oaReq{method: "POST", target: "/api/v1/auth/password/reset", want: 204,
				body: `{"token":"` + tok + `","new_password":"another good password"}`})
		}
	}
	c.send(mailOn, oaReq{method: "POST", target: "/api/v1/auth/verify", want: 422, body: `{"token":"1.unknown"}`})

	// Webhooks: one created and deleted.
	var hook struct{ ID int64 }
	send(oaReq{method: "POST", target: "/api/v1/webhooks", token: token, want: 201,
		body: `{"url":"https://example.com/hooks/todo","events":["task.*"]}`}).json(&hook)
	send(oaReq{method: "GET", target: "/api/v1/webhooks", token: token, want: 200})
	send(oaReq{method: "DELETE", target: "/api/v1/webhooks/" + strconv.FormatInt(hook.ID, 10), token: token, want: 204})

	// The bulk routes last: they change every matching task.
	send(oaReq{method: "PATCH", target: "/api/v1/tasks?tag=docs", token: token, want: 200, body: `{"completed":true}`})
	send(oaReq{method: "DELETE", target: "/api/v1/tasks?completed=true&tag=docs", token: token, want: 200})
	send(oaReq{method: "DELETE", target: "/api/v1/tasks?status=completed", token: token, want: 200})
	send(oaReq{method: "DELETE", target: "/api/v1/tasks", token: token, want: 400})

	// Rate limits, with one attempt a minute.
	limited := newTestEnv(t, func(c *Config) { c.RegistersPerMinute, c.LoginFailuresPerMinute = 1, 1 })
	var lt tokenResponse
	c.send(limited, oaReq{method: "POST", target: "/api/v1/auth/register", want: 201,
		body: `{"email":"limited@example.com","password":"correct horse battery"}`}).json(&lt)
	c.send(limited, oaReq{method: "POST", target: "/api/v1/auth/register", want: 429,
		body: `{"email":"limited2@example.com","password":"correct horse battery"}`})
	c.send(limited, oaReq{method: "POST", target: "/api/v1/auth/password", token: lt.AccessToken, want: 422,
		body: `{"current_password":"wrong horse","new_password":"another good password"}`})
	c.send(limited, oaReq{method: "POST", target: "/api/v1/auth/password", token: lt.AccessToken, want: 429,
		body: `{"current_password":"wrong horse","new_password":"another good password"}`})
	c.send(limited, oaReq{method: "POST", target: "/api/v1/auth/login", want: 429,
		body: `{"email":"limited@example.com","password":"wrong horse"}`})
	mcpLimited := newTestEnv(t, func(c *Config) { c.ToolCallsPerMinute = 1 })
	mcpToken, _ := mcpLimited.registerUser("mcp-limited@example.com")
	stats := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"task_stats","arguments":{}}}`
	c.send(mcpLimited, oaReq{method: "POST", target: "/mcp", token: mcpToken, want: 200, body: stats})
	c.send(mcpLimited, oaReq{method: "POST", target: "/mcp", token: mcpToken, want: 429, body: stats})

	// The database out of reach.
	proxy, proxied := newDBProxy(t, newTestDatabase(t))
	outage := newTestEnvWith(t, testConfig(proxied))
	outToken, _ := outage.registerUser("outage-docs@example.com")
	proxy.setDown(true)
	c.send(outage, oaReq{method: "GET", target: "/readyz", want: 503})
	c.send(outage, oaReq{method: "GET", target: "/api/v1/tasks", token: outToken, want: 503})
	proxy.setDown(false)

	for _, o := range doc.operations(t) {
		for status := range o.Op["responses"].(map[string]any) {
			n, _ := strconv.Atoi(status)
			if n == 500 || n == 503 {
				continue // a fault of the service or of its database: not cheap to provoke here
			}
			if !c.seen[o.pattern()][n] {
				t.Errorf("%s: documented status %d was never seen", o.pattern(), n)
			}
		}
	}
}
