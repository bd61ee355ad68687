package main

// The API description (openapi.json) and its reference page (/docs): the document against
// the routes registered (drift), real answers against the document's schemas, the limits
// it states against the limits the server applies, and the page in a real headless
// Chromium, signing in through the OAuth2 password flow and trying a route out.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// TestOpenAPIValidatorCatchesViolations keeps the validator honest: a schema check that
// passes everything would make the conformance tests below pass vacuously.
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
}

// send makes the request through env, checks the status, then the answer against the
// document; a request with a body the operation documents is checked against that too.
func (c *oaConformance) send(env *testEnv, q oaReq) response {
	t := c.t
	t.Helper()
	r := env.do(q.method, q.target, q.body, q.token, q.headers)
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
		valid := map[string]string{"id": id, "user_id": me}
		hasBody := o.Method == "POST" || o.Method == "PUT" || o.Method == "PATCH"
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
			if o.Method != "GET" {
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

// ---- the files ----

func TestDocsServesTheDescriptionAndThePage(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	r := env.do("GET", "/openapi.json", "", "").want(200, "")
	if !bytes.Equal(r.Body.Bytes(), openAPIDocument) {
		t.Error("/openapi.json is not the embedded openapi.json")
	}
	if !json.Valid(r.Body.Bytes()) || r.Header().Get("Content-Type") != "application/json" {
		t.Errorf("/openapi.json: Content-Type %q", r.Header().Get("Content-Type"))
	}
	page := env.do("GET", "/docs", "", "").want(200, "")
	csp := page.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "http") {
		t.Errorf("/docs Content-Security-Policy %q", csp)
	}
	for _, want := range []string{`src="docs/swagger-ui-bundle.js"`, `href="docs/swagger-ui.css"`, `src="docs/swagger-initializer.js"`} {
		if !strings.Contains(page.Body.String(), want) {
			t.Errorf("/docs lacks %s", want)
		}
	}
	if regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(page.Body.String()) {
		t.Error("/docs loads something from another origin")
	}
	initializer := env.do("GET", "/docs/swagger-initializer.js", "", "").want(200, "").Body.String()
	for _, want := range []string{"persistAuthorization: true", "tryItOutEnabled: true", "openapi.json", "validatorUrl: null"} {
		if !strings.Contains(initializer, want) {
			t.Errorf("the initializer lacks %s", want)
		}
	}
	for name, ct := range docsAssetTypes {
		r := env.do("GET", "/docs/"+name, "", "").want(200, "")
		want, _ := docsFiles.ReadFile("docs/" + name)
		if r.Header().Get("Content-Type") != ct || !bytes.Equal(r.Body.Bytes(), want) {
			t.Errorf("/docs/%s: Content-Type %q, %d bytes", name, r.Header().Get("Content-Type"), r.Body.Len())
		}
		if r.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("/docs/%s is not nosniff", name)
		}
	}
	head := env.do("HEAD", "/docs/swagger-ui.css", "", "")
	if head.Code != 200 || head.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD /docs/swagger-ui.css: %d %v", head.Code, head.Header())
	}
	checkEnvelope(t, env.do("GET", "/docs/", "", ""), 404, "not_found")
	checkEnvelope(t, env.do("GET", "/docs/missing.js", "", ""), 404, "not_found")
	checkEnvelope(t, env.do("POST", "/docs", "", ""), 405, "method_not_allowed")
}

// TestDocsVendoredFilesArePinned holds the Swagger UI files to the release and checksums
// that docs/README.md states, so that an update is a deliberate, recorded change.
func TestDocsVendoredFilesArePinned(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("docs/README.md")
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile("`swagger-ui-dist` ([0-9]+\\.[0-9]+\\.[0-9]+)").FindSubmatch(readme)
	if version == nil {
		t.Fatal("docs/README.md does not name the swagger-ui-dist version")
	}
	bundle, _ := os.ReadFile("docs/swagger-ui-bundle.js")
	if !bytes.Contains(bundle, []byte(`PACKAGE_VERSION:"`+string(version[1])+`"`)) {
		t.Errorf("swagger-ui-bundle.js is not release %s", version[1])
	}
	rows := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| `([0-9a-f]{64})` \\|").FindAllSubmatch(readme, -1)
	if len(rows) < 6 {
		t.Fatalf("docs/README.md lists %d checksums, want one per vendored file", len(rows))
	}
	for _, row := range rows {
		b, err := os.ReadFile(filepath.Join("docs", string(row[1])))
		if err != nil {
			t.Errorf("%s: %v", row[1], err)
			continue
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != string(row[2]) {
			t.Errorf("docs/%s does not match the checksum in docs/README.md", row[1])
		}
	}
}

// ---- the page in a real browser ----

// TestDocsPageTryItOutInChromium loads /docs from the running service in headless
// Chromium, checks that every operation of the document is listed, signs in through the
// Authorize dialog's OAuth2 password flow, and runs GET /api/v1/tasks with Try it out:
// the rendered answer is a 200 holding the user's task. Nothing may be fetched from
// another origin, and no script error or Content-Security-Policy violation may occur.
func TestDocsPageTryItOutInChromium(t *testing.T) {
	t.Parallel()
	bin := docsFindChromium(t)
	base, _, _, _ := startService(t, nil)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	const email, password = "reader@example.com", "correct horse battery"
	res, err := client.Post(base+"/api/v1/auth/register", "application/json",
		strings.NewReader(`{"email":"`+email+`","password":"`+password+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tr tokenResponse
	json.NewDecoder(res.Body).Decode(&tr)
	res.Body.Close()
	req, _ := http.NewRequest("POST", base+"/api/v1/tasks", strings.NewReader(`{"title":"Read the reference page"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tr.AccessToken)
	if res, err = client.Do(req); err != nil || res.StatusCode != 201 {
		t.Fatalf("create task: %v %v", res, err)
	}
	res.Body.Close()

	b := docsStartChromium(t, bin)
	b.call(t, "Page.enable", nil)
	b.call(t, "Runtime.enable", nil)
	b.call(t, "Network.enable", nil)
	b.call(t, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": `
		window.__violations = [];
		document.addEventListener("securitypolicyviolation", e => window.__violations.push(e.violatedDirective + " " + e.blockedURI));`})
	b.call(t, "Page.navigate", map[string]any{"url": base + "/docs"})

	b.waitFor(t, "the operations to render", `document.querySelectorAll(".opblock").length > 0`)
	var listed []string
	b.eval(t, `[...document.querySelectorAll(".opblock")].map(e =>
		e.querySelector(".opblock-summary-method").textContent + " " +
		e.querySelector(".opblock-summary-path").getAttribute("data-path"))`, &listed)
	doc := loadOpenAPI(t)
	var want []string
	for _, o := range doc.operations(t) {
		want = append(want, o.pattern())
	}
	sort.Strings(listed)
	if !slices.Equal(listed, want) {
		t.Errorf("the page lists\n%v\nwant\n%v", listed, want)
	}

	// Sign in as a reader would: Authorize, the password flow's form, Authorize, Close.
	b.click(t, ".auth-wrapper .authorize")
	b.waitFor(t, "the Authorize dialog", `!!document.querySelector("#oauth_username")`)
	b.typeInto(t, "#oauth_username", email)
	b.typeInto(t, "#oauth_password", password)
	b.click(t, `#oauth_username`, `.closest(".auth-container").querySelector("button.authorize")`)
	b.waitFor(t, "the password flow to answer", `!!document.querySelector(".modal-ux .errors") ||
		[...document.querySelectorAll(".modal-ux button")].some(x => x.textContent.trim() === "Logout")`)
	var authErr string
	b.eval(t, `(document.querySelector(".modal-ux .errors") || {}).textContent || ""`, &authErr)
	if authErr != "" {
		t.Fatalf("signing in through the Authorize dialog failed: %s", authErr)
	}
	var persisted string
	b.eval(t, `localStorage.getItem("authorized") || ""`, &persisted)
	if !strings.Contains(persisted, "oauth2Password") {
		t.Errorf("the authorization is not persisted: %q", persisted)
	}
	b.click(t, ".modal-ux .btn-done")

	// Try GET /api/v1/tasks out.
	op := `[...document.querySelectorAll(".opblock.opblock-get")].find(e =>
		e.querySelector(".opblock-summary-path").getAttribute("data-path") === "/api/v1/tasks")`
	b.click(t, op, `.querySelector(".opblock-summary-control")`)
	b.waitFor(t, "the operation to open", op+`.querySelector(".execute") !== null || `+op+`.querySelector(".try-out__btn") !== null`)
	var tryOut string
	b.eval(t, op+`.querySelector(".try-out__btn") ? `+op+`.querySelector(".try-out__btn").textContent.trim() : ""`, &tryOut)
	if tryOut == "Try it out" {
		b.click(t, op, `.querySelector(".try-out__btn")`)
	}
	b.waitFor(t, "the Execute button", op+`.querySelector(".execute") !== null`)
	b.click(t, op, `.querySelector(".execute")`)
	b.waitFor(t, "the live response", op+`.querySelector(".live-responses-table tr.response .response-col_status") !== null`)
	var answer struct {
		Status, Body, Curl string
	}
	b.eval(t, `(() => { const o = `+op+`; return {
		Status: o.querySelector(".live-responses-table tr.response .response-col_status").textContent.trim(),
		Body: (o.querySelector(".live-responses-table tr.response .response-col_description pre") || {}).textContent || "",
		Curl: (o.querySelector(".curl-command") || {}).textContent || "" }; })()`, &answer)
	if !strings.HasPrefix(answer.Status, "200") || !strings.Contains(answer.Body, "Read the reference page") {
		t.Errorf("Try it out answered %q: %s", answer.Status, oaShort(answer.Body))
	}
	if !strings.Contains(answer.Curl, "Authorization: Bearer ") {
		t.Errorf("the request carried no bearer token: %s", answer.Curl)
	}

	var violations []string
	b.eval(t, `window.__violations`, &violations)
	if len(violations) > 0 {
		t.Errorf("Content-Security-Policy violations: %v", violations)
	}
	for _, e := range b.exceptions() {
		t.Errorf("script error on the page: %s", e)
	}
	for _, u := range b.requests() {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "data:") && !strings.HasPrefix(u, "blob:") {
			t.Errorf("the page fetched %s, outside the service", u)
		}
	}
}

func docsFindChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium not found: install Debian's chromium package (scripts/test.sh does so when run as root)")
	return ""
}

// docsBrowser is a headless Chromium driven over the DevTools protocol, attached to one
// page.
type docsBrowser struct {
	ws      *docsWebSocket
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan docsCDPMessage
	errs    []string // uncaught script errors
	urls    []string // every request the page made
	done    chan struct{}
}

type docsCDPMessage struct {
	ID     int64           `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// docsStartChromium starts a headless Chromium with a fresh profile and attaches to its
// first page. Everything it started is stopped when the test ends.
func docsStartChromium(t *testing.T, bin string) *docsBrowser {
	t.Helper()
	profile, err := os.MkdirTemp("", "docs-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--disable-crash-reporter", "--no-proxy-server",
		"--mute-audio", "--user-data-dir="+profile, "--remote-debugging-port=0", "about:blank")
	// A process group of its own, so that its helper processes stop with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// A helper that outlives the browser must not hold Wait (and the test) on its pipes.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		os.RemoveAll(profile)
	})

	// With port 0 Chromium picks a free port and writes it to DevToolsActivePort.
	var port string
	docsPoll(t, "Chromium's DevTools port", 60*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("Chromium exited:\n%s", out.String())
		default:
		}
		b, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if lines := strings.Split(string(b), "\n"); err == nil && len(lines) >= 2 && lines[0] != "" {
			port = lines[0]
			return true
		}
		return false
	})
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var wsURL string
	docsPoll(t, "Chromium's page", 30*time.Second, func() bool {
		res, err := client.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var targets []struct{ Type, WebSocketDebuggerURL string }
		json.NewDecoder(res.Body).Decode(&targets)
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				wsURL = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	ws, err := docsDialWebSocket(wsURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", wsURL, err)
	}
	b := &docsBrowser{ws: ws, pending: map[int64]chan docsCDPMessage{}, done: make(chan struct{})}
	go b.read()
	t.Cleanup(func() { ws.conn.Close(); <-b.done })
	return b
}

func (b *docsBrowser) read() {
	defer close(b.done)
	for {
		raw, err := b.ws.readMessage()
		if err != nil {
			return
		}
		var m docsCDPMessage
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		b.mu.Lock()
		switch {
		case m.ID != 0:
			if ch, ok := b.pending[m.ID]; ok {
				ch <- m
				delete(b.pending, m.ID)
			}
		case m.Method == "Runtime.exceptionThrown":
			var p struct {
				ExceptionDetails struct {
					Text      string
					Exception struct{ Description string }
				}
			}
			json.Unmarshal(m.Params, &p)
			b.errs = append(b.errs, p.ExceptionDetails.Text+" "+p.ExceptionDetails.Exception.Description)
		case m.Method == "Network.requestWillBeSent":
			var p struct{ Request struct{ URL string } }
			json.Unmarshal(m.Params, &p)
			b.urls = append(b.urls, p.Request.URL)
		}
		b.mu.Unlock()
	}
}

func (b *docsBrowser) exceptions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.errs)
}

func (b *docsBrowser) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.urls)
}

// call sends one DevTools command and waits for its answer.
func (b *docsBrowser) call(t *testing.T, method string, params any) json.RawMessage {
	t.Helper()
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan docsCDPMessage, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if params == nil {
		msg, _ = json.Marshal(map[string]any{"id": id, "method": method})
	}
	if err := b.ws.writeFrame(1, msg); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			t.Fatalf("%s: %s", method, m.Error.Message)
		}
		return m.Result
	case <-b.done:
		t.Fatalf("%s: the connection to Chromium closed", method)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: no answer from Chromium", method)
	}
	return nil
}

// eval runs a JavaScript expression in the page and decodes its value into out.
func (b *docsBrowser) eval(t *testing.T, expr string, out any) {
	t.Helper()
	raw := b.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	if r.ExceptionDetails != nil {
		t.Fatalf("evaluate %s: %s %s", oaShort(expr), r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		if err := json.Unmarshal(r.Result.Value, out); err != nil {
			t.Fatalf("evaluate %s: %v (%s)", oaShort(expr), err, r.Result.Value)
		}
	}
}

// waitFor polls a JavaScript condition until it holds. The limit is generous: the page
// renders on a busy machine, and only a page that never gets there should fail.
func (b *docsBrowser) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	docsPoll(t, what, 60*time.Second, func() bool {
		var ok bool
		b.eval(t, "!!("+cond+")", &ok)
		return ok
	})
}

// click clicks the element that the expression (a selector, or an expression plus a
// suffix that walks from it) names.
func (b *docsBrowser) click(t *testing.T, selectorOrExpr string, then ...string) {
	t.Helper()
	el := selectorOrExpr
	if !strings.HasPrefix(el, "[") {
		el = "document.querySelector(" + strconv.Quote(selectorOrExpr) + ")"
	}
	el += strings.Join(then, "")
	b.waitFor(t, "an element to click: "+oaShort(el), el)
	b.eval(t, "("+el+").click()", nil)
}

// typeInto focuses an input and types text as keyboard input, so that the page's own
// input handlers see it.
func (b *docsBrowser) typeInto(t *testing.T, selector, text string) {
	t.Helper()
	b.eval(t, "document.querySelector("+strconv.Quote(selector)+").focus()", nil)
	b.call(t, "Input.insertText", map[string]any{"text": text})
	var got string
	b.eval(t, "document.querySelector("+strconv.Quote(selector)+").value", &got)
	if got != text {
		t.Fatalf("typed %q into %s, it holds %q", text, selector, got)
	}
}

func docsPoll(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %v", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// docsWebSocket is the client side of RFC 6455, as much as the DevTools protocol needs:
// text frames, fragmentation, ping and close.
type docsWebSocket struct {
	conn net.Conn
	br   *bufio.Reader
	wmu  sync.Mutex
}

func docsDialWebSocket(rawURL string) (*docsWebSocket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host, key)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	res.Body.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", res.Status)
	}
	return &docsWebSocket{conn: conn, br: br}, nil
}

// writeFrame sends one final frame; a client masks every frame it sends.
func (w *docsWebSocket) writeFrame(opcode byte, payload []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	frame := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xffff:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, c := range payload {
		frame = append(frame, c^mask[i%4])
	}
	_, err := w.conn.Write(frame)
	return err
}

// readMessage returns the next text or binary message, answering pings on the way.
func (w *docsWebSocket) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return nil, err
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 256<<20 {
			return nil, errors.New("websocket frame too large")
		}
		var mask [4]byte
		if h[1]&0x80 != 0 {
			if _, err := io.ReadFull(w.br, mask[:]); err != nil {
				return nil, err
			}
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.br, payload); err != nil {
			return nil, err
		}
		if h[1]&0x80 != 0 {
			for i := range payload {
				payload[i] ^= mask[i%4]
			}
		}
		switch h[0] & 0x0f {
		case 0x8:
			return nil, io.EOF
		case 0x9:
			if err := w.writeFrame(0xA, payload); err != nil {
				return nil, err
			}
			continue
		case 0xA:
			continue
		}
		msg = append(msg, payload...)
		if h[0]&0x80 != 0 {
			return msg, nil
		}
	}
}
