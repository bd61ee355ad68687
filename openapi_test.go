package main

// The API description (openapi.json) as a document: its model for the tests, the schema
// validator, well-formedness, drift between the document and the routes the server
// registers, and the limits it states against the limits the server applies.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ---- the document ----

// oaDoc is openapi.json parsed with numbers kept exact, plus what the tests derive from it.
type oaDoc struct {
	root map[string]any

	mu        sync.Mutex
	compilers map[bool]*jsonschema.Compiler // by oaValidator.answers
	where     map[uintptr]string            // the JSON pointer of each object of root
	extra     int                           // schemas written for a test, so far
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

// jsonRPC marks the MCP endpoint: its body and answers are JSON-RPC messages, so the REST
// rules of bodies (422, the error envelope on a 400) do not apply to it.
func (o oaOperation) jsonRPC() bool { v, _ := o.Op["x-jsonrpc"].(bool); return v }

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

// ---- the schemas, checked by a JSON Schema 2020-12 validator ----

// oaDocURL names openapi.json for the validator. It is never fetched: the parsed
// document is added under it as one resource, and each schema is compiled by its JSON
// pointer in it (oaDocURL#/components/schemas/Task), so that the document's own
// "#/components/…" references resolve as they do for any OpenAPI 3.1 tool.
const oaDocURL = "https://todo.invalid/openapi.json"

// oaValidator checks an instance against a schema of the document with
// github.com/santhosh-tekuri/jsonschema/v6, in JSON Schema 2020-12 (OpenAPI 3.1's
// dialect), with format assertions on. A schema is a node of the document, found where
// it sits in it, or (in the validator's own test) one written for the test, whose
// "#/…" references name the document's schemas.
type oaValidator struct {
	doc *oaDoc
	// answers holds instances to what the service promises of its own answers, on top of
	// the schema: a date-time is in UTC with a Z suffix (contract section 1).
	answers bool
}

// validate returns one line per failed check, or nothing when inst is valid. A schema
// that does not compile (an unresolved $ref, a keyword of the wrong type) fails too.
func (v oaValidator) validate(schema, inst any) []string {
	sch, err := v.doc.schema(schema, v.answers)
	if err != nil {
		return []string{err.Error()}
	}
	err = sch.Validate(inst)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		if err != nil {
			return []string{err.Error()}
		}
		return nil
	}
	var lines []string
	var leaves func(e *jsonschema.ValidationError)
	leaves = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			lines = append(lines, e.Error())
		}
		for _, c := range e.Causes {
			leaves(c)
		}
	}
	leaves(ve)
	return lines
}

// schema compiles a schema for one kind of check (the compiler keeps what it compiled).
// A node of the document is found by identity, as the map it is in the parsed document,
// and compiled by its JSON pointer; anything else is a schema written for a test.
func (d *oaDoc) schema(schema any, answers bool) (*jsonschema.Schema, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.compilers == nil {
		d.compilers = map[bool]*jsonschema.Compiler{}
	}
	if d.compilers[answers] == nil {
		c, err := newOACompiler(d.root, answers)
		if err != nil {
			return nil, err
		}
		d.compilers[answers] = c
	}
	if d.where == nil {
		d.where = map[uintptr]string{}
		var walk func(v any, ptr string)
		walk = func(v any, ptr string) {
			switch x := v.(type) {
			case map[string]any:
				d.where[reflect.ValueOf(x).Pointer()] = ptr
				for k, e := range x {
					walk(e, ptr+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k))
				}
			case []any:
				for i, e := range x {
					walk(e, ptr+"/"+strconv.Itoa(i))
				}
			}
		}
		walk(d.root, "")
	}
	c := d.compilers[answers]
	loc := ""
	if m, ok := schema.(map[string]any); ok {
		if ptr, found := d.where[reflect.ValueOf(m).Pointer()]; found {
			loc = oaDocURL + "#" + (&url.URL{Fragment: ptr}).EscapedFragment()
		}
	}
	if loc == "" {
		// A schema written for a test: its own resource, its references into the document.
		var rebase func(v any) any
		rebase = func(v any) any {
			switch x := v.(type) {
			case map[string]any:
				out := make(map[string]any, len(x))
				for k, e := range x {
					if ref, ok := e.(string); ok && k == "$ref" && strings.HasPrefix(ref, "#") {
						e = oaDocURL + ref
					}
					out[k] = rebase(e)
				}
				return out
			case []any:
				out := make([]any, len(x))
				for i, e := range x {
					out[i] = rebase(e)
				}
				return out
			}
			return v
		}
		d.extra++
		loc = fmt.Sprintf("urn:todo:test-schema-%d", d.extra)
		if err := c.AddResource(loc, rebase(schema)); err != nil {
			return nil, err
		}
	}
	return c.Compile(loc)
}

// newOACompiler is a JSON Schema 2020-12 compiler holding the document, asserting
// formats: JSON Schema's own date-time and date, and email as the contract has it
// (section 3, and the description of the field): one @, a non-empty local part, a dot
// inside the domain. JSON Schema's email is RFC 5321's mailbox, which refuses a local
// part over 64 characters that the service accepts. For answers, a date-time must also
// be in UTC with a Z suffix.
func newOACompiler(root map[string]any, answers bool) (*jsonschema.Compiler, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.RegisterFormat(&jsonschema.Format{Name: "email", Validate: func(v any) error {
		s, ok := v.(string)
		if !ok {
			return nil
		}
		local, domain, ok := strings.Cut(s, "@")
		if !ok || local == "" || strings.Contains(domain, "@") || !strings.Contains(strings.Trim(domain, "."), ".") {
			return errors.New("not an email address: one @, and a dot inside the domain")
		}
		return nil
	}})
	if answers {
		rfc3339, err := oaRFC3339()
		if err != nil {
			return nil, err
		}
		c.RegisterFormat(&jsonschema.Format{Name: "date-time", Validate: func(v any) error {
			s, ok := v.(string)
			if !ok {
				return nil // format applies to strings only
			}
			if err := rfc3339.Validate(s); err != nil {
				return errors.New("not an RFC 3339 time")
			}
			if !strings.HasSuffix(s, "Z") {
				return errors.New("not in UTC with a Z suffix")
			}
			return nil
		}})
	}
	if err := c.AddResource(oaDocURL, root); err != nil {
		return nil, err
	}
	return c, nil
}

// oaRFC3339 is JSON Schema's own date-time format, as the library asserts it.
func oaRFC3339() (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource("urn:todo:date-time", map[string]any{"type": "string", "format": "date-time"}); err != nil {
		return nil, err
	}
	return c.Compile("urn:todo:date-time")
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

	// Every schema is a JSON Schema 2020-12 schema: compiling one checks it, and each
	// schema it references, against the dialect's meta-schema.
	compiled := 0
	compile := func(schema any, at string) {
		compiled++
		if _, err := doc.schema(schema, false); err != nil {
			t.Errorf("%s: %v", at, err)
		}
	}
	var schemas func(v any, at string)
	schemas = func(v any, at string) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if k == "schema" {
					compile(e, at+"/schema")
				} else {
					schemas(e, at+"/"+k)
				}
			}
		case []any:
			for i, e := range x {
				schemas(e, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	schemas(doc.root["paths"], "#/paths")
	components := doc.root["components"].(map[string]any)
	for _, kind := range []string{"parameters", "headers", "requestBodies", "responses"} {
		schemas(components[kind], "#/components/"+kind)
	}
	for name, s := range components["schemas"].(map[string]any) {
		compile(s, "#/components/schemas/"+name)
	}
	if compiled < 100 {
		t.Errorf("only %d schemas compiled", compiled)
	}

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
		if _, ok := doc.jsonBodySchema(t, o); ok && !o.jsonRPC() {
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
			if status >= "400" && !(o.jsonRPC() && status == "400") {
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
			"priority":"medium","tags":["home"],"due_date":null,"remind_at":null,"created_at":"2026-11-27T10:00:00Z",
			"updated_at":"2026-11-27T10:00:00.5Z","completed_at":null,"recurrence":null,"next_task_id":null}`)).(map[string]any)
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

	// Keywords the document does not use yet, which the subset validator written for these
	// tests before ignored: each edited task below passed it. Each schema adds one keyword
	// to Task (the first is the contract's rule for completed_at); the valid task passes.
	const taskRef = `"$ref":"#/components/schemas/Task"`
	for _, tc := range []struct {
		keyword, schema string
		edit            func(map[string]any)
	}{
		{"if/then/else", `{` + taskRef + `,"if":{"properties":{"completed":{"const":true}}},
			"then":{"properties":{"completed_at":{"type":"string"}}},"else":{"properties":{"completed_at":{"type":"null"}}}}`,
			func(m map[string]any) { m["completed"] = true }},
		{"unevaluatedProperties", `{` + taskRef + `,"unevaluatedProperties":false}`,
			func(m map[string]any) { m["owner_email"] = "ada@example.com" }},
		{"propertyNames", `{` + taskRef + `,"propertyNames":{"pattern":"^[a-z_]+$"}}`,
			func(m map[string]any) { m["Title"] = "Buy milk" }},
		{"not", `{` + taskRef + `,"not":{"required":["password"]}}`,
			func(m map[string]any) { m["password"] = "correct horse battery" }},
		{"contains", `{` + taskRef + `,"properties":{"tags":{"contains":{"const":"home"}}}}`,
			func(m map[string]any) { m["tags"] = []any{"work"} }},
		{"exclusiveMaximum", `{` + taskRef + `,"properties":{"id":{"exclusiveMaximum":100}}}`,
			func(m map[string]any) { m["id"] = json.Number("100") }},
		{"dependentRequired", `{` + taskRef + `,"dependentRequired":{"snooze_until":["snoozed_by"]}}`,
			func(m map[string]any) { m["snooze_until"] = "2026-11-27T10:00:00Z" }},
	} {
		s := oaDecode(t, []byte(tc.schema))
		if errs := v.validate(s, task(nil)); len(errs) > 0 {
			t.Errorf("%s: a valid task is rejected: %v", tc.keyword, errs)
		}
		if errs := v.validate(s, task(tc.edit)); len(errs) == 0 {
			t.Errorf("%s: accepted", tc.keyword)
		}
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
