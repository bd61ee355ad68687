package main

// The API description (openapi.json) as a document: its model for the tests, the schema
// validator, well-formedness, drift between the document and the routes the server
// registers, and the limits it states against the limits the server applies.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// ---- the document ----

// oaDoc is openapi.json parsed with numbers kept exact, plus what the tests derive from it.
type oaDoc struct {
	root map[string]any
}

// oaOperation is one method of one path of the document, with its parameters resolved
// (those of the path item first, overridden by the operation's own).
type oaOperation struct {
	Method string // upper case
	Path   string
	Op     map[string]any
	Params []map[string]any
}

func (o oaOperation) pattern() string { return o.Method + " " + o.Path }

func (o oaOperation) id() string { s, _ := o.Op["operationId"].(string); return s }

var oaMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func loadOpenAPI(t testing.TB) *oaDoc {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(openAPIDocument))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatal("openapi.json holds more than one JSON value")
	}
	return &oaDoc{root: root}
}

// pointer resolves a local reference such as #/components/schemas/Task.
func (d *oaDoc) pointer(ref string) (any, bool) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, false
	}
	var cur any = d.root
	for _, tok := range strings.Split(rest, "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// resolve follows Reference Objects ({"$ref": …}) to what they name.
func (d *oaDoc) resolve(t testing.TB, v any) map[string]any {
	t.Helper()
	for i := 0; i < 10; i++ {
		m, _ := v.(map[string]any)
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		if v, ok = d.pointer(ref); !ok {
			t.Fatalf("openapi.json: unresolved $ref %s", ref)
		}
	}
	t.Fatal("openapi.json: $ref chain too long")
	return nil
}

func (d *oaDoc) operations(t testing.TB) []oaOperation {
	t.Helper()
	paths, _ := d.root["paths"].(map[string]any)
	var ops []oaOperation
	for path, item := range paths {
		pi := d.resolve(t, item)
		common := d.params(t, pi["parameters"])
		for _, m := range oaMethods {
			op, ok := pi[m].(map[string]any)
			if !ok {
				continue
			}
			params := slices.Clone(common)
			for _, p := range d.params(t, op["parameters"]) {
				params = slices.DeleteFunc(params, func(q map[string]any) bool {
					return q["name"] == p["name"] && q["in"] == p["in"]
				})
				params = append(params, p)
			}
			ops = append(ops, oaOperation{Method: strings.ToUpper(m), Path: path, Op: op, Params: params})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].pattern() < ops[j].pattern() })
	return ops
}

func (d *oaDoc) params(t testing.TB, v any) []map[string]any {
	list, _ := v.([]any)
	out := make([]map[string]any, 0, len(list))
	for _, p := range list {
		out = append(out, d.resolve(t, p))
	}
	return out
}

func (o oaOperation) param(in, name string) map[string]any {
	for _, p := range o.Params {
		if p["in"] == in && p["name"] == name {
			return p
		}
	}
	return nil
}

// samplePath fills the path template with the document's own example of each parameter.
func (o oaOperation) samplePath(overrides map[string]string) string {
	path := o.Path
	for _, p := range o.Params {
		if p["in"] != "path" {
			continue
		}
		name := p["name"].(string)
		v, ok := overrides[name]
		if !ok {
			v = fmt.Sprint(p["example"])
		}
		path = strings.ReplaceAll(path, "{"+name+"}", url.PathEscape(v))
	}
	return path
}

// response returns the documented response for a status, resolved, or nil.
func (d *oaDoc) response(t testing.TB, o oaOperation, status int) map[string]any {
	t.Helper()
	responses, _ := o.Op["responses"].(map[string]any)
	r, ok := responses[strconv.Itoa(status)]
	if !ok {
		return nil
	}
	return d.resolve(t, r)
}

// jsonBodySchema is the schema of the operation's application/json request body, if any.
func (d *oaDoc) jsonBodySchema(t testing.TB, o oaOperation) (any, bool) {
	rb, ok := o.Op["requestBody"]
	if !ok {
		return nil, false
	}
	content, _ := d.resolve(t, rb)["content"].(map[string]any)
	mt, ok := content["application/json"].(map[string]any)
	if !ok {
		return nil, false
	}
	return mt["schema"], true
}

// jsonBodyExample is the operation's own example of its application/json body.
func (d *oaDoc) jsonBodyExample(t testing.TB, o oaOperation) string {
	t.Helper()
	content, _ := d.resolve(t, o.Op["requestBody"])["content"].(map[string]any)
	mt, _ := content["application/json"].(map[string]any)
	ex, ok := mt["example"]
	if !ok {
		t.Fatalf("%s: the JSON request body has no example", o.pattern())
	}
	b, _ := json.Marshal(ex)
	return string(b)
}

// ---- a JSON Schema validator, for the subset the document uses ----

// oaValidator checks an instance against a schema of the document: type (with type
// arrays for null), properties, required, additionalProperties, items, enum, const,
// minLength/maxLength in Unicode characters, pattern, minimum/maximum,
// minItems/maxItems/uniqueItems, format (date-time, date, email), allOf/anyOf/oneOf and
// local $ref. Unknown keywords are ignored, as JSON Schema does.
type oaValidator struct {
	doc *oaDoc
	// answers holds instances to what the service promises of its own answers, on top of
	// the schema: a date-time is in UTC with a Z suffix (contract section 1).
	answers bool
}

func (v oaValidator) validate(schema, inst any) []string {
	var errs []string
	v.check(schema, inst, "$", &errs)
	return errs
}

func (v oaValidator) check(schema, inst any, at string, errs *[]string) {
	fail := func(format string, args ...any) {
		*errs = append(*errs, at+": "+fmt.Sprintf(format, args...))
	}
	if b, ok := schema.(bool); ok {
		if !b {
			fail("no value is allowed here")
		}
		return
	}
	s, ok := schema.(map[string]any)
	if !ok {
		fail("schema is not an object: %v", schema)
		return
	}
	if ref, ok := s["$ref"].(string); ok {
		target, found := v.doc.pointer(ref)
		if !found {
			fail("unresolved $ref %s", ref)
			return
		}
		v.check(target, inst, at, errs)
	}
	if t, ok := s["type"]; ok && !oaTypeMatches(t, inst) {
		fail("%s is not of type %v", oaDescribe(inst), t)
		return
	}
	if e, ok := s["enum"].([]any); ok && !slices.ContainsFunc(e, func(x any) bool { return oaSame(x, inst) }) {
		fail("%s is not one of %v", oaDescribe(inst), e)
	}
	if c, ok := s["const"]; ok && !oaSame(c, inst) {
		fail("%s is not %v", oaDescribe(inst), c)
	}
	switch x := inst.(type) {
	case string:
		n := float64(utf8.RuneCountInString(x))
		if m, ok := oaNum(s["minLength"]); ok && n < m {
			fail("%d characters, fewer than %v", int(n), m)
		}
		if m, ok := oaNum(s["maxLength"]); ok && n > m {
			fail("%d characters, more than %v", int(n), m)
		}
		if p, ok := s["pattern"].(string); ok {
			if re, err := regexp.Compile(p); err != nil {
				fail("pattern %q does not compile: %v", p, err)
			} else if !re.MatchString(x) {
				fail("%q does not match %q", oaShort(x), p)
			}
		}
		if f, ok := s["format"].(string); ok {
			if msg := v.format(f, x); msg != "" {
				fail("%q %s", oaShort(x), msg)
			}
		}
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			fail("%s is not a number", x)
		}
		if m, ok := oaNum(s["minimum"]); ok && f < m {
			fail("%s is less than %v", x, m)
		}
		if m, ok := oaNum(s["maximum"]); ok && f > m {
			fail("%s is more than %v", x, m)
		}
	case []any:
		if m, ok := oaNum(s["minItems"]); ok && float64(len(x)) < m {
			fail("%d items, fewer than %v", len(x), m)
		}
		if m, ok := oaNum(s["maxItems"]); ok && float64(len(x)) > m {
			fail("%d items, more than %v", len(x), m)
		}
		if s["uniqueItems"] == true {
			for i := range x {
				for j := i + 1; j < len(x); j++ {
					if oaSame(x[i], x[j]) {
						fail("items %d and %d are equal", i, j)
					}
				}
			}
		}
		if items, ok := s["items"]; ok {
			for i, it := range x {
				v.check(items, it, fmt.Sprintf("%s[%d]", at, i), errs)
			}
		}
	case map[string]any:
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, present := x[r.(string)]; !present {
					fail("property %q is missing", r)
				}
			}
		}
		props, _ := s["properties"].(map[string]any)
		for name, val := range x {
			if ps, ok := props[name]; ok {
				v.check(ps, val, at+"."+name, errs)
			} else if ap, ok := s["additionalProperties"]; ok {
				v.check(ap, val, at+"."+name, errs)
			}
		}
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, sub := range all {
			v.check(sub, inst, at, errs)
		}
	}
	if anyOf, ok := s["anyOf"].([]any); ok {
		var why []string
		matched := false
		for _, sub := range anyOf {
			e := v.validate(sub, inst)
			matched = matched || len(e) == 0
			why = append(why, e...)
		}
		if !matched {
			fail("matches none of anyOf: %s", strings.Join(why, "; "))
		}
	}
	if oneOf, ok := s["oneOf"].([]any); ok {
		n := 0
		var why []string
		for _, sub := range oneOf {
			e := v.validate(sub, inst)
			if len(e) == 0 {
				n++
			}
			why = append(why, e...)
		}
		if n != 1 {
			fail("matches %d of oneOf, want exactly 1 (%s)", n, strings.Join(why, "; "))
		}
	}
}

func (v oaValidator) format(f, s string) string {
	switch f {
	case "date-time":
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return "is not an RFC 3339 time"
		}
		if v.answers && !strings.HasSuffix(s, "Z") {
			return "is not in UTC with a Z suffix"
		}
	case "date":
		if _, err := time.Parse(time.DateOnly, s); err != nil {
			return "is not a YYYY-MM-DD date"
		}
	case "email":
		if local, domain, ok := strings.Cut(s, "@"); !ok || local == "" || domain == "" {
			return "is not an email address"
		}
	}
	return ""
}

func oaJSONType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if !strings.ContainsAny(string(x), ".eE") {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func oaTypeMatches(t, v any) bool {
	got := oaJSONType(v)
	ok := func(want any) bool { return want == got || want == "number" && got == "integer" }
	if list, isList := t.([]any); isList {
		return slices.ContainsFunc(list, ok)
	}
	return ok(t)
}

func oaSame(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func oaNum(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

func oaDescribe(v any) string {
	b, _ := json.Marshal(v)
	return oaShort(string(b))
}

func oaShort(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

func oaDecode(t testing.TB, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", oaShort(string(b)), err)
	}
	return v
}

// ---- the document is well formed ----

func TestOpenAPIDocumentIsWellFormed(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	if v, _ := doc.root["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", v)
	}
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				if _, found := doc.pointer(ref); !found {
					t.Errorf("%s: unresolved $ref %s", at, ref)
				}
			}
			for k, e := range x {
				walk(e, at+"/"+k)
			}
		case []any:
			for i, e := range x {
				walk(e, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	walk(doc.root, "#")

	schemes := doc.resolve(t, doc.root["components"])["securitySchemes"].(map[string]any)
	flows := doc.resolve(t, schemes["oauth2Password"])["flows"].(map[string]any)
	if tu := flows["password"].(map[string]any)["tokenUrl"]; tu != "/api/v1/auth/login" {
		t.Errorf("OAuth2 password flow tokenUrl = %v, want /api/v1/auth/login", tu)
	}

	ids := map[string]bool{}
	tmplParam := regexp.MustCompile(`\{([^}]+)\}`)
	for _, o := range doc.operations(t) {
		name := o.pattern()
		if id := o.id(); id == "" || ids[id] {
			t.Errorf("%s: operationId %q missing or not unique", name, id)
		} else {
			ids[id] = true
		}
		if o.Op["summary"] == nil || o.Op["tags"] == nil {
			t.Errorf("%s: no summary or tags", name)
		}
		inPath := map[string]bool{}
		for _, m := range tmplParam.FindAllStringSubmatch(o.Path, -1) {
			inPath[m[1]] = true
			p := o.param("path", m[1])
			if p == nil || p["required"] != true {
				t.Errorf("%s: path parameter %s is not declared as required", name, m[1])
			} else if p["example"] == nil {
				t.Errorf("%s: path parameter %s has no example", name, m[1])
			}
		}
		for _, p := range o.Params {
			if p["in"] == "path" && !inPath[p["name"].(string)] {
				t.Errorf("%s: declares path parameter %v that the path lacks", name, p["name"])
			}
			if p["schema"] == nil {
				t.Errorf("%s: parameter %v has no schema", name, p["name"])
			}
		}
		security, hasSecurity := o.Op["security"].([]any)
		if !hasSecurity {
			t.Errorf("%s: no security requirement (use [] for a public route)", name)
		}
		responses, _ := o.Op["responses"].(map[string]any)
		has := func(status string) bool { _, ok := responses[status]; return ok }
		if len(security) > 0 && !has("401") {
			t.Errorf("%s: needs a token but documents no 401", name)
		}
		if inPath["user_id"] && !has("403") {
			t.Errorf("%s: has {user_id} but documents no 403", name)
		}
		if _, ok := doc.jsonBodySchema(t, o); ok {
			for _, s := range []string{"400", "413", "415", "422"} {
				if !has(s) {
					t.Errorf("%s: takes a JSON body but documents no %s", name, s)
				}
			}
		}
		for status, r := range responses {
			rr := doc.resolve(t, r)
			if rr["description"] == nil {
				t.Errorf("%s %s: no description", name, status)
			}
			headers, _ := rr["headers"].(map[string]any)
			if _, ok := headers["X-Request-ID"]; !ok {
				t.Errorf("%s %s: X-Request-ID is not documented", name, status)
			}
			if status >= "400" {
				schema := doc.resolve(t, rr["content"])["application/json"].(map[string]any)["schema"]
				if !strings.Contains(oaDescribeFull(schema), "#/components/schemas/") {
					t.Errorf("%s %s: the error is not the Error envelope", name, status)
				}
			}
		}
	}
}

func oaDescribeFull(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestOpenAPIValidatorCatchesViolations keeps the validator honest: a schema check that
// passes everything would make the conformance tests pass vacuously.
func TestOpenAPIValidatorCatchesViolations(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	v := oaValidator{doc: doc, answers: true}
	task := func(edit func(map[string]any)) any {
		m := oaDecode(t, []byte(`{"id":42,"user_id":7,"title":"Buy milk","description":null,"completed":false,
			"priority":"medium","tags":["home"],"due_date":null,"created_at":"2026-11-27T10:00:00Z",
			"updated_at":"2026-11-27T10:00:00.5Z","completed_at":null}`)).(map[string]any)
		if edit != nil {
			edit(m)
		}
		return m
	}
	ref := func(name string) any { return map[string]any{"$ref": "#/components/schemas/" + name} }
	if errs := v.validate(ref("Task"), task(nil)); len(errs) > 0 {
		t.Fatalf("a valid task is rejected: %v", errs)
	}
	bad := map[string]func(map[string]any){
		"missing field":       func(m map[string]any) { delete(m, "completed_at") },
		"wrong type":          func(m map[string]any) { m["completed"] = "no" },
		"not in enum":         func(m map[string]any) { m["priority"] = "urgent" },
		"null not allowed":    func(m map[string]any) { m["title"] = nil },
		"too long":            func(m map[string]any) { m["title"] = strings.Repeat("é", 256) },
		"empty":               func(m map[string]any) { m["title"] = "" },
		"not an integer":      func(m map[string]any) { m["id"] = json.Number("4.2") },
		"below minimum":       func(m map[string]any) { m["id"] = json.Number("0") },
		"not UTC":             func(m map[string]any) { m["created_at"] = "2026-11-27T11:00:00+01:00" },
		"not a time":          func(m map[string]any) { m["due_date"] = "tomorrow" },
		"repeated items":      func(m map[string]any) { m["tags"] = []any{"a", "a"} },
		"item too long":       func(m map[string]any) { m["tags"] = []any{strings.Repeat("t", 51)} },
		"user_id as a string": func(m map[string]any) { m["user_id"] = "7" },
	}
	for name, edit := range bad {
		if errs := v.validate(ref("Task"), task(edit)); len(errs) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
	if errs := v.validate(ref("WebTask"), task(func(m map[string]any) { m["user_id"] = "7" })); len(errs) > 0 {
		t.Errorf("a web-app task is rejected: %v", errs)
	}
	envelope := func(code string, withErrors bool) any {
		m := map[string]any{"detail": "x", "error_code": code, "timestamp": "2026-11-27T10:00:00Z", "request_id": "r-1"}
		if withErrors {
			m["errors"] = []any{map[string]any{"field": "title", "message": "must not be empty"}}
		}
		return m
	}
	create422 := doc.resolve(t, doc.root["components"].(map[string]any)["responses"].(map[string]any)["CreateRejected"])
	schema := create422["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
	for _, tc := range []struct {
		inst any
		ok   bool
	}{
		{envelope("validation_error", true), true},
		{envelope("idempotency_key_reused", false), true},
		{envelope("validation_error", false), false}, // errors is required on validation_error
		{envelope("not_found", false), false},
		{envelope("no_such_code", false), false},
	} {
		if errs := v.validate(schema, tc.inst); (len(errs) == 0) != tc.ok {
			t.Errorf("422 of create %v: errors %v, want ok=%v", tc.inst, errs, tc.ok)
		}
	}
	if errs := v.validate(map[string]any{"$ref": "#/components/schemas/Nope"}, "x"); len(errs) == 0 {
		t.Error("an unresolved $ref is accepted")
	}
}

// ---- drift: the document and the routes ----

// oaRoutes is the mux that routes() builds, for asking which pattern a request reaches.
// Registering needs none of the Server's dependencies.
func oaRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	(&Server{}).routes(mux)
	return mux
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	env := newTestEnv(t)
	served := map[string]bool{}
	for _, p := range env.srv.routed {
		if served[p] {
			t.Errorf("pattern %q registered twice", p)
		}
		served[p] = true
	}
	if len(served) < 25 {
		t.Fatalf("only %d patterns recorded; does routes() register through s.route?", len(served))
	}
	documented := map[string]bool{}
	for _, o := range doc.operations(t) {
		documented[o.pattern()] = true
		if !served[o.pattern()] {
			t.Errorf("openapi.json describes %s, which is not served", o.pattern())
		}
	}
	for p := range served {
		if !documented[p] {
			t.Errorf("%s is served but openapi.json does not describe it", p)
		}
	}

	// Each operation, filled with its own examples, reaches its own route through the real
	// handler chain: no literal route shadows it, and it is not the mux's 404 or 405.
	mux := oaRoutes()
	for _, o := range doc.operations(t) {
		target := o.samplePath(nil)
		if _, got := mux.Handler(httptest.NewRequest(o.Method, target, nil)); got != o.pattern() {
			t.Errorf("%s %s reaches %q, want %q", o.Method, target, got, o.pattern())
		}
		r := env.do(o.Method, target, "", "")
		if r.Code == http.StatusMethodNotAllowed || r.Code == http.StatusNotFound && r.envelope().Detail == "route not found" {
			t.Errorf("%s %s: the mux itself answered %d", o.Method, target, r.Code)
		}
	}
}

// TestOpenAPILimitsAgreeWithTheServer: a body or query the document's schema accepts is
// accepted by the server, and one it rejects is rejected, at each stated limit.
func TestOpenAPILimitsAgreeWithTheServer(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	env := newTestEnv(t)
	token, user := env.registerUser("limits@example.com")
	me := strconv.FormatInt(user.ID, 10)
	ops := map[string]oaOperation{}
	for _, o := range doc.operations(t) {
		ops[o.pattern()] = o
	}
	v := oaValidator{doc: doc}
	tags := func(n, size int) string {
		list := make([]string, n)
		for i := range list {
			list[i] = fmt.Sprintf(`"%s%03d"`, strings.Repeat("t", size-3), i)
		}
		return "[" + strings.Join(list, ",") + "]"
	}
	s := func(n int, r string) string { return strings.Repeat(r, n) }
	bodies := []struct {
		pattern, body string
	}{
		{"POST /api/v1/auth/register", `{"email":"p7@example.com","password":"` + s(7, "p") + `"}`},
		{"POST /api/v1/auth/register", `{"email":"p8@example.com","password":"` + s(8, "ü") + `"}`},
		{"POST /api/v1/auth/register", `{"email":"p128@example.com","password":"` + s(128, "p") + `"}`},
		{"POST /api/v1/auth/register", `{"email":"p129@example.com","password":"` + s(129, "p") + `"}`},
		{"POST /api/v1/auth/register", `{"email":"n100@example.com","password":"correct horse","name":"` + s(100, "é") + `"}`},
		{"POST /api/v1/auth/register", `{"email":"n101@example.com","password":"correct horse","name":"` + s(101, "n") + `"}`},
		{"POST /api/v1/auth/register", `{"email":"` + s(242, "e") + `@example.com","password":"correct horse"}`},
		{"POST /api/v1/auth/register", `{"email":"` + s(243, "e") + `@example.com","password":"correct horse"}`},
		{"POST /api/v1/auth/register", `{"email":"no-at-sign","password":"correct horse"}`},
		{"POST /api/v1/auth/register", `{"password":"correct horse"}`},
		{"PATCH /api/v1/auth/me", `{"name":"` + s(100, "x") + `"}`},
		{"PATCH /api/v1/auth/me", `{"name":"` + s(101, "x") + `"}`},
		{"POST /api/v1/auth/password", `{"current_password":"correct horse battery","new_password":"` + s(7, "q") + `"}`},
		{"POST /api/v1/tasks", `{"title":"` + s(255, "日") + `"}`},
		{"POST /api/v1/tasks", `{"title":"` + s(256, "a") + `"}`},
		{"POST /api/v1/tasks", `{"title":""}`},
		{"POST /api/v1/tasks", `{"description":"no title"}`},
		{"POST /api/v1/tasks", `{"title":"d","description":"` + s(10000, "d") + `"}`},
		{"POST /api/v1/tasks", `{"title":"d","description":"` + s(10001, "d") + `"}`},
		{"POST /api/v1/tasks", `{"title":"t","tags":` + tags(20, 50) + `}`},
		{"POST /api/v1/tasks", `{"title":"t","tags":` + tags(21, 5) + `}`},
		{"POST /api/v1/tasks", `{"title":"t","tags":` + tags(1, 51) + `}`},
		{"POST /api/v1/tasks", `{"title":"t","tags":[""]}`},
		{"POST /api/v1/tasks", `{"title":"t","priority":"urgent"}`},
		{"POST /api/v1/tasks", `{"title":"t","priority":"low","completed":true}`},
		{"POST /api/v1/tasks", `{"title":"t","completed":"yes"}`},
		{"POST /api/v1/tasks", `{"title":"t","due_date":"2026-11-28"}`},
		{"POST /api/v1/tasks", `{"title":"t","due_date":"2026-11-28T10:00:00+02:00"}`},
		{"POST /api/v1/tasks", `{"title":"t","due_date":"tomorrow"}`},
		{"POST /api/v1/tasks", `{"title":"t","due_date":null,"description":null,"tags":null}`},
		{"POST /api/" + "{user_id}" + "/tasks", `{"title":"` + s(256, "w") + `"}`},
		{"PATCH /api/v1/tasks", `{}`},
		{"PATCH /api/v1/tasks", `{"completed":false}`},
	}
	for _, b := range bodies {
		o, ok := ops[b.pattern]
		if !ok {
			t.Fatalf("no operation %s", b.pattern)
		}
		schema, _ := doc.jsonBodySchema(t, o)
		schemaOK := len(v.validate(schema, oaDecode(t, []byte(b.body)))) == 0
		r := env.do(o.Method, o.samplePath(map[string]string{"user_id": me}), b.body, token)
		if serverOK := r.Code < 300; serverOK != schemaOK {
			t.Errorf("%s %s: the document says ok=%v, the server answered %d %s",
				b.pattern, oaShort(b.body), schemaOK, r.Code, oaShort(r.Body.String()))
		}
	}
	queries := []struct {
		pattern, query string
	}{
		{"GET /api/v1/tasks", "limit=1"}, {"GET /api/v1/tasks", "limit=100"},
		{"GET /api/v1/tasks", "limit=0"}, {"GET /api/v1/tasks", "limit=101"},
		{"GET /api/v1/tasks", "status=maybe"}, {"GET /api/v1/tasks", "status=done"},
		{"GET /api/v1/tasks", "sort=id"}, {"GET /api/v1/tasks", "sort=-due_date"},
		{"GET /api/v1/tasks", "sort=created"}, {"GET /api/v1/tasks", "priority=urgent"},
		{"GET /api/v1/tasks", "completed=maybe"}, {"GET /api/v1/tasks", "due_before=2026-11-28"},
		{"GET /api/v1/tasks", "due_after=soon"}, {"GET /api/v1/tasks", "tag=" + s(51, "t")},
		{"GET /api/v1/tasks", "q=" + s(500, "q")}, {"GET /api/v1/tasks", "q=" + s(501, "q")},
		{"GET /api/{user_id}/tasks", "limit=1000"}, {"GET /api/{user_id}/tasks", "limit=1001"},
		{"GET /api/{user_id}/tasks", "status=done"}, {"GET /api/{user_id}/tasks", "status=later"},
		{"GET /api/{user_id}/tasks", "sort=updated"}, {"GET /api/{user_id}/tasks", "sort_by=id"},
		{"GET /api/{user_id}/tasks", "sort_by=due_date&order=desc"}, {"GET /api/{user_id}/tasks", "sort_by=title&sort_order=up"},
		{"GET /api/{user_id}/tasks", "offset=-1"}, {"GET /api/{user_id}/tasks", "skip=3"},
		{"GET /api/{user_id}/tasks", "due_date_from=2026-01-01"}, {"GET /api/{user_id}/tasks", "due_date_to=never"},
	}
	for _, q := range queries {
		o := ops[q.pattern]
		values, _ := url.ParseQuery(q.query)
		schemaOK := true
		for k, vals := range values {
			p := o.param("query", k)
			if p == nil {
				t.Fatalf("%s: %s is not documented", q.pattern, k)
			}
			schemaOK = schemaOK && len(v.validate(p["schema"], oaParamValue(doc, p["schema"], vals[0]))) == 0
		}
		r := env.do(o.Method, o.samplePath(map[string]string{"user_id": me})+"?"+q.query, "", token)
		if serverOK := r.Code < 300; serverOK != schemaOK {
			t.Errorf("%s?%s: the document says ok=%v, the server answered %d %s",
				q.pattern, oaShort(q.query), schemaOK, r.Code, oaShort(r.Body.String()))
		}
	}
}
