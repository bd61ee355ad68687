package main

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"net/http"
	"strconv"
	"sync"
)

// openAPIDocument is the API description served at /openapi.json. It is written by hand;
// the tests hold it to the routes registered and to the answers they give.
//
//go:embed openapi.json
var openAPIDocument []byte

// docsFiles are the reference page, its initializer, and the vendored Swagger UI files it
// loads (docs/README.md says from which release). Everything the page needs comes from
// this binary: it works offline and under a same-origin Content-Security-Policy.
//
//go:embed docs/index.html docs/swagger-initializer.js docs/swagger-ui-bundle.js docs/swagger-ui.css
//go:embed docs/favicon-32x32.png docs/LICENSE docs/NOTICE docs/swagger-ui-bundle.js.LICENSE.txt
var docsFiles embed.FS

// docsAssetTypes are the files served under /docs/, by name, with their media types. The
// licence texts are served too: the binary redistributes Swagger UI and carries them.
var docsAssetTypes = map[string]string{
	"swagger-ui-bundle.js":             "text/javascript; charset=utf-8",
	"swagger-initializer.js":           "text/javascript; charset=utf-8",
	"swagger-ui.css":                   "text/css; charset=utf-8",
	"favicon-32x32.png":                "image/png",
	"LICENSE":                          "text/plain; charset=utf-8",
	"NOTICE":                           "text/plain; charset=utf-8",
	"swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
}

// docsPolicy keeps the page to its own origin: Swagger UI needs inline styles and data:
// images, nothing else from outside.
const docsPolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// staticFile is an embedded file ready to serve, with a strong ETag of its content.
type staticFile struct {
	body        []byte
	contentType string
	etag        string
}

func newStaticFile(body []byte, contentType string) staticFile {
	sum := sha256.Sum256(body)
	return staticFile{body: body, contentType: contentType,
		etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`}
}

// serve answers the file, or 304 when If-None-Match already names it. Clients revalidate
// every time (no-cache), so a new release of the binary is picked up at once.
func (f staticFile) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("ETag", f.etag)
	h.Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Content-Length", strconv.Itoa(len(f.body)))
	w.WriteHeader(http.StatusOK)
	w.Write(f.body)
}

// docsAssets hashes the embedded files once per process rather than once per Server.
var docsAssets = sync.OnceValue(func() map[string]staticFile {
	assets := make(map[string]staticFile, len(docsAssetTypes)+2)
	for name, ct := range docsAssetTypes {
		b, err := docsFiles.ReadFile("docs/" + name)
		if err != nil {
			panic("embedded docs file missing: " + name) // the embed directive lists every name
		}
		assets[name] = newStaticFile(b, ct)
	}
	page, err := docsFiles.ReadFile("docs/index.html")
	if err != nil {
		panic("embedded docs page missing")
	}
	// Kept apart from the names above, so that /docs/index.html is not a second address of
	// the page.
	assets[""] = newStaticFile(page, "text/html; charset=utf-8")
	assets["openapi.json"] = newStaticFile(openAPIDocument, "application/json")
	return assets
})

// docRoutes registers the API description and its reference page.
func (s *Server) docRoutes(mux *http.ServeMux) {
	assets := docsAssets()
	s.route(mux, "GET /openapi.json", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assets["openapi.json"].serve(w, r)
	}))
	s.route(mux, "GET /docs", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", docsPolicy)
		w.Header().Set("Referrer-Policy", "no-referrer")
		assets[""].serve(w, r)
	}))
	s.route(mux, "GET /docs/{asset}", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("asset")
		if _, listed := docsAssetTypes[name]; !listed {
			return notFound("file")
		}
		assets[name].serve(w, r)
		return nil
	}))
}
