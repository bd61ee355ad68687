package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ---- test database ----

// Every test gets its own database, cloned from a template that holds the embedded
// schema, so tests run in parallel and in any order. The test command provides the
// cluster (scripts/test.sh) or TEST_DATABASE_URL; without it the tests fail, never skip.
var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

func testDatabaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		u = citusURL()
	}
	if u == "" {
		t.Fatal("TEST_DATABASE_URL is not set: run the tests with `make test`, which starts a throwaway PostgreSQL")
	}
	return u
}

// citusURL is TEST_CITUS_URL, the Citus test mode: a database on a Citus coordinator with
// its workers registered and the extension created. CREATE DATABASE does not propagate to
// the workers, so there every test gets its own schema in that one database instead of a
// database of its own, and the tables it holds are really distributed.
func citusURL() string { return os.Getenv("TEST_CITUS_URL") }

// citusShardCount keeps the Citus test mode quick: each distributed table of each test
// schema has this many shards instead of Citus's default 32.
const citusShardCount = "4"

// newTestSchema makes an empty schema in the Citus test database and returns a URL whose
// connections work in it (search_path); it is dropped after the test, unless the test
// failed.
func newTestSchema(t testing.TB, prefix string) string {
	t.Helper()
	name := randomName(prefix)
	citusExec(t, "CREATE SCHEMA "+name)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept schema %s of the failed test", name)
			return
		}
		citusExec(t, "DROP SCHEMA IF EXISTS "+name+" CASCADE")
	})
	u, err := url.Parse(citusURL())
	if err != nil {
		t.Fatalf("parse TEST_CITUS_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	q.Set("citus.shard_count", citusShardCount)
	u.RawQuery = q.Encode()
	return u.String()
}

func citusExec(t testing.TB, sql string) {
	t.Helper()
	execAt(t, citusURL(), sql)
}

// newEmptyDatabase returns the URL of a database (a schema, in the Citus test mode) that
// holds no schema yet, as on a service's first start.
func newEmptyDatabase(t testing.TB) string {
	t.Helper()
	if citusURL() != "" {
		return newTestSchema(t, "todo_empty_")
	}
	name := randomName("todo_empty_")
	adminExec(t, "CREATE DATABASE "+name)
	t.Cleanup(func() { adminExec(t, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	return withDatabase(t, testDatabaseURL(t), name)
}

// withDatabase returns base with its database name replaced.
func withDatabase(t testing.TB, base, db string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + db
	return u.String()
}

func adminExec(t testing.TB, sql string) {
	t.Helper()
	execAt(t, testDatabaseURL(t), sql)
}

// execAt runs sql on the database at dbURL, retrying what concurrent DDL can collide on.
func execAt(t testing.TB, dbURL, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	defer conn.Close(ctx)
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, sql)
		// Concurrent CREATE DATABASE from one template can collide; it is safe to retry.
		var pe *pgconn.PgError
		if err != nil && attempt < 20 && (strings.Contains(err.Error(), "being accessed by other users") ||
			(asPgError(err, &pe) && (pe.Code == "55006" || pe.Code == "40001" || pe.Code == "XX000"))) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		break
	}
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func asPgError(err error, pe **pgconn.PgError) bool {
	e, ok := err.(*pgconn.PgError)
	if ok {
		*pe = e
	}
	return ok
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newTestDatabase makes a fresh database with the schema and returns its URL; it is
// dropped after the test, unless the test failed (then it is kept for a look).
func newTestDatabase(t testing.TB) string {
	t.Helper()
	if citusURL() != "" {
		u := newTestSchema(t, "todo_test_")
		st, err := OpenStore(context.Background(), testConfig(u))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.applySchema(context.Background()); err != nil {
			t.Fatalf("apply schema on Citus: %v", err)
		}
		return u
	}
	base := testDatabaseURL(t)
	templateOnce.Do(func() {
		templateName = randomName("todo_tmpl_")
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			templateErr = err
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+templateName); err != nil {
			templateErr = err
			return
		}
		st, err := OpenStore(ctx, testConfig(withDatabase(t, base, templateName)))
		if err != nil {
			templateErr = err
			return
		}
		templateErr = st.applySchema(ctx)
		st.Close()
	})
	if templateErr != nil {
		t.Fatalf("build template database: %v", templateErr)
	}
	name := randomName("todo_test_")
	adminExec(t, "CREATE DATABASE "+name+" TEMPLATE "+templateName)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept database %s of the failed test", name)
			return
		}
		adminExec(t, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return withDatabase(t, base, name)
}

// testConfig is the configuration tests start from: cheap password hashing (the real
// parameters are measured by the benchmarks), generous rate limits.
func testConfig(dbURL string) Config {
	cfg, err := loadConfig(func(k string) string {
		switch k {
		case "DATABASE_URL":
			return dbURL
		case "JWT_SECRET_KEY":
			return "test-secret-key-that-is-long-enough-0123456789"
		case "LOGIN_RATE_LIMIT", "REGISTER_RATE_LIMIT", "MCP_RATE_LIMIT":
			return "100000"
		}
		return ""
	})
	if err != nil {
		panic(err)
	}
	cfg.argon = argonParams{memory: 64, time: 1, threads: 1}
	return cfg
}

func newTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	st, err := OpenStore(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// testEnv is a Server over its own database, exercised through its real handler chain.
type testEnv struct {
	t    testing.TB
	cfg  Config
	st   *Store
	srv  *Server
	logs *syncBuffer
}

type envOption func(*Config)

func newTestEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	cfg := testConfig(newTestDatabase(t))
	for _, o := range opts {
		o(&cfg)
	}
	return newTestEnvWith(t, cfg)
}

func newTestEnvWith(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	st := newTestStore(t, cfg)
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	auth, err := NewAuthenticator(cfg, st, log)
	if err != nil {
		t.Fatalf("new authenticator: %v", err)
	}
	return &testEnv{t: t, cfg: cfg, st: st, srv: NewServer(log, cfg, st, auth), logs: logs}
}

// syncBuffer is a log sink that tests read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// requestCase is one request of a table test and the answer it must get: the envelope
// with code for an error status, the status alone for a success.
type requestCase struct {
	name, method, path, body string
	headers                  header
	status                   int
	code                     string
}

// runRequestCases sends each case with token, each in its own parallel subtest.
func (e *testEnv) runRequestCases(t *testing.T, token string, cases []requestCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := e.do(tc.method, tc.path, tc.body, token, tc.headers)
			if tc.status < 300 {
				if r.Code != tc.status {
					t.Fatalf("got %d %s, want %d", r.Code, r.Body, tc.status)
				}
				return
			}
			checkEnvelope(t, r, tc.status, tc.code)
		})
	}
}

// response is a finished exchange with helpers to read it.
type response struct {
	*httptest.ResponseRecorder
	t testing.TB
}

type header map[string]string

// do sends one request through the full handler chain. body is sent as JSON unless
// headers name another Content-Type.
func (e *testEnv) do(method, path, body, token string, headers ...header) response {
	e.t.Helper()
	return e.doCtx(context.Background(), method, path, body, token, headers...)
}

// doCtx is do under ctx: the request ends when ctx does.
func (e *testEnv) doCtx(ctx context.Context, method, path, body, token string, headers ...header) response {
	e.t.Helper()
	var rdr io.Reader
	if body != "" {
		rdr = strings.NewReader(body)
	}
	req := httptest.NewRequestWithContext(ctx, method, path, rdr)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, h := range headers {
		for k, v := range h {
			if v == "" {
				req.Header.Del(k)
			} else {
				req.Header.Set(k, v)
			}
		}
	}
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	return response{rec, e.t}
}

// json decodes the body into v, failing the test when it is not JSON.
func (r response) json(v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.Body.Bytes(), v); err != nil {
		r.t.Fatalf("decode %q: %v", r.Body.String(), err)
	}
}

func (r response) envelope() errorBody {
	r.t.Helper()
	var e errorBody
	r.json(&e)
	return e
}

func (r response) code() string {
	var e errorBody
	json.Unmarshal(r.Body.Bytes(), &e)
	return e.ErrorCode
}

// want fails the test unless the status (and, for errors, the error_code) match.
func (r response) want(status int, code string) response {
	r.t.Helper()
	if r.Code != status || (code != "" && r.code() != code) {
		r.t.Fatalf("got %d %s, want %d %s", r.Code, r.Body.String(), status, code)
	}
	return r
}

// registerUser makes a local account and returns its access token and user.
func (e *testEnv) registerUser(email string) (string, userJSON) {
	e.t.Helper()
	var tr tokenResponse
	e.do("POST", "/api/v1/auth/register", `{"email":"`+email+`","password":"correct horse battery"}`, "").
		want(http.StatusCreated, "").json(&tr)
	return tr.AccessToken, tr.User
}

// ---- foundation ----

// checkEnvelope asserts the contract's error envelope.
func checkEnvelope(t *testing.T, r response, status int, code string) errorBody {
	t.Helper()
	if r.Code != status {
		t.Fatalf("status %d, want %d: %s", r.Code, status, r.Body.String())
	}
	if ct := r.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	e := r.envelope()
	if e.ErrorCode != code || e.Detail == "" {
		t.Errorf("envelope %+v, want error_code %s and a detail", e, code)
	}
	if _, err := time.Parse(time.RFC3339, e.Timestamp); err != nil || !strings.HasSuffix(e.Timestamp, "Z") {
		t.Errorf("timestamp %q is not RFC 3339 UTC", e.Timestamp)
	}
	if e.RequestID == "" || e.RequestID != r.Header().Get("X-Request-ID") {
		t.Errorf("request_id %q, X-Request-ID %q: want the same, non-empty", e.RequestID, r.Header().Get("X-Request-ID"))
	}
	return e
}

func TestErrorEnvelope(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	token, _ := env.registerUser("envelope@example.com")
	env.runRequestCases(t, token, []requestCase{
		{"unknown route", "GET", "/nope", "", nil, 404, "not_found"},
		{"unknown api route", "GET", "/api/v1/nothing/here", "", nil, 404, "not_found"},
		{"wrong method", "DELETE", "/healthz", "", nil, 405, "method_not_allowed"},
		{"malformed JSON", "POST", "/api/v1/tasks", `{"title":`, nil, 400, "invalid_json"},
		{"empty body", "POST", "/api/v1/tasks", " ", nil, 400, "invalid_json"},
		{"not an object", "POST", "/api/v1/tasks", `["title"]`, nil, 400, "invalid_json"},
		{"null body", "POST", "/api/v1/tasks", `null`, nil, 400, "invalid_json"},
		{"trailing data", "POST", "/api/v1/tasks", `{"title":"a"} {}`, nil, 400, "invalid_json"},
		{"invalid UTF-8", "POST", "/api/v1/tasks", "{\"title\":\"\xff\xfe\"}", nil, 400, "invalid_json"},
		{"too large", "POST", "/api/v1/tasks", `{"title":"` + strings.Repeat("a", 2000) + `"}`, nil, 413, "payload_too_large"},
		{"wrong content type", "POST", "/api/v1/tasks", `{"title":"a"}`, header{"Content-Type": "text/plain"}, 415, "unsupported_media_type"},
		{"no content type", "POST", "/api/v1/tasks", `{"title":"a"}`, header{"Content-Type": ""}, 415, "unsupported_media_type"},
		{"no token", "GET", "/api/v1/tasks", "", header{"Authorization": ""}, 401, "not_authenticated"},
	})
	t.Run("405 keeps Allow", func(t *testing.T) {
		t.Parallel()
		r := env.do("POST", "/api/v1/tasks/stats", "", token)
		checkEnvelope(t, r, 405, "method_not_allowed")
		if allow := r.Header().Get("Allow"); !strings.Contains(allow, "GET") {
			t.Errorf("Allow = %q, want it to list GET", allow)
		}
	})
	t.Run("401 asks for a bearer token", func(t *testing.T) {
		t.Parallel()
		r := env.do("GET", "/api/v1/tasks", "", "")
		if got := r.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("charset parameter accepted", func(t *testing.T) {
		t.Parallel()
		env.do("POST", "/api/v1/tasks", `{"title":"ok"}`, token,
			header{"Content-Type": "application/json; charset=utf-8"}).want(201, "")
	})
}

func TestPanicIsRecoveredAs500(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	s := env.srv
	h := s.withRequestInfo(s.logRequests(s.recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom: secret internals")
	}))))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("X-Request-ID", "panic-req-1")
	h.ServeHTTP(rec, req)
	r := response{rec, t}
	e := checkEnvelope(t, r, 500, "internal_error")
	if strings.Contains(r.Body.String(), "boom") {
		t.Errorf("500 body reveals the panic: %s", r.Body.String())
	}
	if e.RequestID != "panic-req-1" {
		t.Errorf("request_id %q", e.RequestID)
	}
	logs := env.logs.String()
	if !strings.Contains(logs, `"panic":"boom: secret internals"`) || !strings.Contains(logs, `"request_id":"panic-req-1"`) {
		t.Errorf("panic not logged with its request id:\n%s", logs)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	if got := env.do("GET", "/healthz", "", "", header{"X-Request-ID": "abc.DEF_12:3-4"}).Header().Get("X-Request-ID"); got != "abc.DEF_12:3-4" {
		t.Errorf("valid id not echoed: %q", got)
	}
	seen := map[string]bool{}
	for _, bad := range []string{"", "has space", strings.Repeat("a", 129), "semi;colon", "ünïcode"} {
		got := env.do("GET", "/healthz", "", "", header{"X-Request-ID": bad}).Header().Get("X-Request-ID")
		if got == "" || got == bad || !validRequestID(got) || seen[got] {
			t.Errorf("X-Request-ID %q answered %q, want a new valid unique id", bad, got)
		}
		seen[got] = true
	}
	if got := env.do("GET", "/healthz", "", "", header{"X-Request-ID": strings.Repeat("a", 128)}).Header().Get("X-Request-ID"); got != strings.Repeat("a", 128) {
		t.Errorf("128-character id not echoed")
	}
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("logger@example.com")
	env.do("GET", "/api/v1/tasks/42", "", token, header{"X-Request-ID": "log-line-1"}).want(404, "not_found")
	var line map[string]any
	for _, l := range strings.Split(env.logs.String(), "\n") {
		if strings.Contains(l, `"request_id":"log-line-1"`) && strings.Contains(l, `"msg":"request"`) {
			json.Unmarshal([]byte(l), &line)
		}
	}
	if line == nil {
		t.Fatalf("no access log line:\n%s", env.logs.String())
	}
	if line["method"] != "GET" || line["route"] != "GET /api/v1/tasks/{id}" || line["status"] != float64(404) ||
		line["user_id"] != float64(user.ID) || line["duration_ms"] == nil {
		t.Errorf("access log line %v", line)
	}
	if strings.Contains(env.logs.String(), token) || strings.Contains(env.logs.String(), "correct horse") {
		t.Error("a token or password reached the log")
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.do("GET", "/healthz", "", "").want(200, "")
	env.do("GET", "/readyz", "", "").want(200, "")
}

func TestCORS(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.CORSAllowedOrigins = []string{"https://app.example.com"} })
	r := env.do("OPTIONS", "/api/v1/tasks", "", "", header{"Origin": "https://app.example.com",
		"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"})
	if r.Code != 204 || r.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(r.Header().Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(r.Header().Get("Access-Control-Allow-Methods"), "PATCH") {
		t.Errorf("preflight: %d %v", r.Code, r.Header())
	}
	r = env.do("GET", "/healthz", "", "", header{"Origin": "https://app.example.com"})
	if r.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(r.Header().Get("Access-Control-Expose-Headers"), "ETag") {
		t.Errorf("simple request headers: %v", r.Header())
	}
	r = env.do("OPTIONS", "/api/v1/tasks", "", "", header{"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})
	if r.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign origin allowed: %v", r.Header())
	}
	checkEnvelope(t, r, 405, "method_not_allowed")
}

// dbProxy is a TCP proxy in front of the test cluster that can be cut and restored,
// to show the service through a database outage without stopping the shared cluster.
type dbProxy struct {
	ln     net.Listener
	target func() (net.Conn, error)
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newDBProxy(t *testing.T, dbURL string) (*dbProxy, string) {
	t.Helper()
	pc, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	network, addr := "tcp", net.JoinHostPort(pc.Host, fmt.Sprint(pc.Port))
	if strings.HasPrefix(pc.Host, "/") {
		network, addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", pc.Host, pc.Port)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dbProxy{ln: ln, target: func() (net.Conn, error) { return net.Dial(network, addr) }}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	// The runtime parameters go along: in the Citus test mode, search_path names the
	// test's schema.
	q := url.Values{"sslmode": {"disable"}}
	for k, v := range pc.RuntimeParams {
		q.Set(k, v)
	}
	u := url.URL{Scheme: "postgres", User: url.User(pc.User), Host: ln.Addr().String(), Path: "/" + pc.Database, RawQuery: q.Encode()}
	return p, u.String()
}

func (p *dbProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := p.target()
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// setDown cuts every open connection and refuses new ones, or lets them through again.
func (p *dbProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func TestReadinessFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	proxy, proxied := newDBProxy(t, newTestDatabase(t))
	env := newTestEnvWith(t, testConfig(proxied))
	token, _ := env.registerUser("outage@example.com")
	env.do("GET", "/readyz", "", "").want(200, "")
	env.do("GET", "/api/v1/tasks", "", token).want(200, "")

	proxy.setDown(true)
	start := time.Now()
	checkEnvelope(t, env.do("GET", "/readyz", "", ""), 503, "service_unavailable")
	checkEnvelope(t, env.do("GET", "/api/v1/tasks", "", token), 503, "service_unavailable")
	checkEnvelope(t, env.do("POST", "/api/v1/tasks", `{"title":"during"}`, token), 503, "service_unavailable")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("three requests during the outage took %v; each must fail fast", d)
	}
	proxy.setDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for env.do("GET", "/readyz", "", "").Code != 200 {
		if time.Now().After(deadline) {
			t.Fatal("not ready 10s after the database returned")
		}
		time.Sleep(100 * time.Millisecond)
	}
	env.do("GET", "/api/v1/tasks", "", token).want(200, "")
}

func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	base := map[string]string{"DATABASE_URL": "postgres://u@localhost/db", "JWT_SECRET_KEY": strings.Repeat("k", 32)}
	tests := []struct{ name, key, value, want string }{
		{"unparsable database url", "DATABASE_URL", "mysql://x", "DATABASE_URL"},
		{"missing database url", "DATABASE_URL", "", "DATABASE_URL"},
		{"bad port", "PORT", "eighty", "PORT"},
		{"port out of range", "PORT", "70000", "PORT"},
		{"unknown log level", "LOG_LEVEL", "loud", "LOG_LEVEL"},
		{"short secret", "JWT_SECRET_KEY", "short", "JWT_SECRET_KEY"},
		{"missing secret", "JWT_SECRET_KEY", "", "JWT_SECRET_KEY"},
		{"bad algorithm", "JWT_ALGORITHM", "RS256", "JWT_ALGORITHM"},
		{"bad shutdown timeout", "SHUTDOWN_TIMEOUT", "soon", "SHUTDOWN_TIMEOUT"},
		{"metrics address without a port", "METRICS_ADDR", "9464", "METRICS_ADDR"},
		{"metrics on the API port", "METRICS_ADDR", ":8080", "METRICS_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := func(k string) string {
				if k == tt.key {
					return tt.value
				}
				return base[k]
			}
			var out bytes.Buffer
			err := run(context.Background(), env, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Count(err.Error(), "\n") > 0 {
				t.Fatalf("run = %v, want one line naming %s", err, tt.want)
			}
			if tt.key == "JWT_SECRET_KEY" && tt.value != "" && strings.Contains(err.Error(), tt.value) {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
	t.Run("development mode makes an ephemeral secret", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadConfig(func(k string) string {
			return map[string]string{"DATABASE_URL": "postgres://u@localhost/db", "APP_ENV": "development"}[k]
		})
		if err != nil || !cfg.DevMode {
			t.Fatalf("dev config: %v %+v", err, cfg.DevMode)
		}
	})
}

// startService runs the real service (run) on a free port and returns its base URL, the
// function that stops it like SIGTERM does, and the channel run's result arrives on.
func startService(t *testing.T, extra map[string]string) (string, context.CancelFunc, <-chan error, *syncBuffer) {
	t.Helper()
	env := map[string]string{
		"DATABASE_URL":   newTestDatabase(t),
		"JWT_SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
		"PORT":           "0",
	}
	for k, v := range extra {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, out) }()
	t.Cleanup(cancel)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var l struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				_, port, _ := net.SplitHostPort(l.Addr)
				return "http://127.0.0.1:" + port, cancel, done, out
			}
		}
		select {
		case err := <-done:
			t.Fatalf("service exited: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("service did not start:\n%s", out.String())
	return "", nil, nil, nil
}

func TestGracefulShutdownFinishesInFlightRequest(t *testing.T) {
	t.Parallel()
	base, stop, done, _ := startService(t, map[string]string{"SHUTDOWN_TIMEOUT": "10s"})
	// A registration whose body is still arriving when the shutdown starts.
	body := `{"email":"late@example.com","password":"correct horse battery"}`
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		len(body), body[:10])
	time.Sleep(200 * time.Millisecond) // the server has read the headers: the request is in flight
	stop()
	time.Sleep(200 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		c.Close()
		t.Error("new connections still accepted after shutdown began")
	}
	fmt.Fprint(conn, body[10:])
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request cut: %v", err)
	}
	if res.StatusCode != http.StatusCreated {
		t.Errorf("in-flight request answered %d, want 201", res.StatusCode)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after shutdown")
	}
}

func TestRunServesEndToEnd(t *testing.T) {
	t.Parallel()
	base, _, _, logs := startService(t, nil)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/no/such/route": 404} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, res.StatusCode, want)
		}
		if want == 404 && e["error_code"] != "not_found" {
			t.Errorf("404 body %v", e)
		}
	}
	// The access log is buffered, yet a request's line reaches stdout while the service
	// runs, within the flush interval.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), `"route":"GET /healthz"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for /healthz while running:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLogBuffer(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	lb := startLogBuffer(&out, 20*time.Millisecond)
	lb.Write([]byte("{\"first\":1}\n"))
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "{\"first\":1}\n" { // written by the periodic flush, not by Close
		if time.Now().After(deadline) {
			t.Fatalf("a buffered line was not flushed while running: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Concurrent writers: every line whole, none lost, all out once Close returns.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				fmt.Fprintf(lb, "{\"writer\":%d,\"line\":%d,\"pad\":%q}\n", w, i, strings.Repeat("x", i%300))
			}
		})
	}
	wg.Wait()
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1+8*2000 {
		t.Fatalf("%d lines, want %d", len(lines), 1+8*2000)
	}
	next := make([]int, 8)
	for _, l := range lines[1:] {
		var v struct{ Writer, Line int }
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("torn line %q: %v", l, err)
		}
		if v.Line != next[v.Writer] {
			t.Fatalf("writer %d: line %d after %d", v.Writer, v.Line, next[v.Writer]-1)
		}
		next[v.Writer]++
	}
}
