package main

// The reference page (/docs) and the description it loads (/openapi.json): the files as
// served, the pinned Swagger UI release, and the page in a real headless Chromium,
// signing in through the OAuth2 password flow and trying a route out.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

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

	b := startBrowser(t)
	b.onNewDocument(t, `
		window.__violations = [];
		document.addEventListener("securitypolicyviolation", e => window.__violations.push(e.violatedDirective + " " + e.blockedURI));`)
	b.navigate(t, base+"/docs")

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
	// The document's webhooks (deliveries the service sends) are listed by their name.
	hooks, _ := doc.root["webhooks"].(map[string]any)
	for name, item := range hooks {
		for method := range item.(map[string]any) {
			want = append(want, strings.ToUpper(method)+" "+name)
		}
	}
	sort.Strings(want)
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
