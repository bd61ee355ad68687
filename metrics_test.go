package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ---- a strict reader of the text format ----

// expSample is one line of an exposition: name, labels in the order written, value.
type expSample struct {
	name   string
	labels [][2]string
	value  float64
}

func (s expSample) label(name string) string {
	for _, l := range s.labels {
		if l[0] == name {
			return l[1]
		}
	}
	return ""
}

// exposition is a scrape read by parseExposition.
type exposition struct {
	types   map[string]string // family → TYPE
	samples []expSample
}

var (
	expMetricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	expLabelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// parseExposition reads text as Prometheus's text format 0.0.4 and fails the test on
// anything that format or good practice forbids: a malformed line, a sample before its
// family's TYPE or outside its family's block, a family declared twice, a duplicate
// series, a counter not named _total, a histogram whose buckets are not cumulative or
// whose +Inf bucket is not its count.
func parseExposition(t testing.TB, text string) exposition {
	t.Helper()
	if text == "" || !strings.HasSuffix(text, "\n") {
		t.Fatalf("exposition is empty or does not end in a line feed")
	}
	e := exposition{types: map[string]string{}}
	helped := map[string]bool{}
	seen := map[string]bool{}
	current := ""
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(why string) { t.Fatalf("line %d %q: %s", n+1, line, why) }
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ := strings.Cut(rest, " ")
			if !expMetricName.MatchString(name) || helped[name] {
				fail("bad or repeated HELP")
			}
			helped[name] = true
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			if _, dup := e.types[name]; dup || !expMetricName.MatchString(name) {
				fail("bad or repeated TYPE")
			}
			switch typ {
			case "counter":
				if !strings.HasSuffix(name, "_total") {
					fail("a counter's name must end in _total")
				}
			case "gauge", "histogram", "summary":
			default:
				fail("unknown type")
			}
			if !helped[name] {
				fail("TYPE without HELP")
			}
			e.types[name] = typ
			current = name
			continue
		}
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			fail("unexpected comment or blank line")
		}
		s := parseSampleLine(t, line, fail)
		family := s.name
		switch e.types[current] {
		case "histogram":
			family = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s.name, "_bucket"), "_sum"), "_count")
		case "summary":
			family = strings.TrimSuffix(strings.TrimSuffix(s.name, "_sum"), "_count")
		}
		if family != current {
			fail("sample outside its family's block (or before its TYPE)")
		}
		key := s.name + fmt.Sprint(s.labels)
		if seen[key] {
			fail("duplicate series")
		}
		seen[key] = true
		e.samples = append(e.samples, s)
	}
	e.checkHistograms(t)
	return e
}

func parseSampleLine(t testing.TB, line string, fail func(string)) expSample {
	t.Helper()
	var s expSample
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		fail("no value")
	}
	s.name, line = line[:i], line[i:]
	if !expMetricName.MatchString(s.name) {
		fail("bad metric name")
	}
	if line[0] == '{' {
		line = line[1:]
		for {
			eq := strings.Index(line, `="`)
			if eq <= 0 || !expLabelName.MatchString(line[:eq]) {
				fail("bad label name")
			}
			name := line[:eq]
			line = line[eq+2:]
			var v strings.Builder
			for {
				if line == "" {
					fail("unterminated label value")
				}
				c := line[0]
				line = line[1:]
				if c == '"' {
					break
				}
				if c == '\\' {
					if line == "" {
						fail("dangling escape")
					}
					switch line[0] {
					case '\\':
						v.WriteByte('\\')
					case '"':
						v.WriteByte('"')
					case 'n':
						v.WriteByte('\n')
					default:
						fail("unknown escape")
					}
					line = line[1:]
					continue
				}
				v.WriteByte(c)
			}
			for _, l := range s.labels {
				if l[0] == name {
					fail("label repeated")
				}
			}
			s.labels = append(s.labels, [2]string{name, v.String()})
			if strings.HasPrefix(line, ",") {
				line = line[1:]
				continue
			}
			if !strings.HasPrefix(line, "}") {
				fail("label set not closed")
			}
			line = line[1:]
			break
		}
	}
	if !strings.HasPrefix(line, " ") || strings.Count(line, " ") != 1 {
		fail("want exactly one space and a value, without a timestamp")
	}
	v, err := strconv.ParseFloat(line[1:], 64)
	if err != nil {
		fail("bad value")
	}
	s.value = v
	return s
}

// checkHistograms holds every histogram series to cumulative buckets in increasing le,
// ending in +Inf equal to its _count, with a _sum.
func (e exposition) checkHistograms(t testing.TB) {
	t.Helper()
	type series struct {
		les        []float64
		counts     []float64
		sum, count float64
		hasSum     bool
		hasCount   bool
	}
	hs := map[string]*series{}
	get := func(s expSample, family string) *series {
		var rest [][2]string
		for _, l := range s.labels {
			if l[0] != "le" {
				rest = append(rest, l)
			}
		}
		k := family + fmt.Sprint(rest)
		if hs[k] == nil {
			hs[k] = &series{}
		}
		return hs[k]
	}
	for _, s := range e.samples {
		for family, typ := range e.types {
			if typ != "histogram" || !strings.HasPrefix(s.name, family) {
				continue
			}
			switch s.name {
			case family + "_bucket":
				le, err := strconv.ParseFloat(s.label("le"), 64)
				if err != nil {
					t.Fatalf("%s: bad le %q", s.name, s.label("le"))
				}
				h := get(s, family)
				h.les, h.counts = append(h.les, le), append(h.counts, s.value)
			case family + "_sum":
				h := get(s, family)
				h.sum, h.hasSum = s.value, true
			case family + "_count":
				h := get(s, family)
				h.count, h.hasCount = s.value, true
			}
		}
	}
	for k, h := range hs {
		if len(h.les) == 0 || !math.IsInf(h.les[len(h.les)-1], 1) || !h.hasSum || !h.hasCount {
			t.Fatalf("histogram %s: want buckets ending in +Inf, a _sum and a _count", k)
		}
		for i := 1; i < len(h.les); i++ {
			if h.les[i] <= h.les[i-1] || h.counts[i] < h.counts[i-1] {
				t.Fatalf("histogram %s: buckets not increasing and cumulative: %v %v", k, h.les, h.counts)
			}
		}
		if h.counts[len(h.counts)-1] != h.count {
			t.Fatalf("histogram %s: +Inf bucket %v, count %v", k, h.counts[len(h.counts)-1], h.count)
		}
	}
}

// value is the sample of name whose labels include want (name=value pairs); ok is false
// when there is none.
func (e exposition) value(name string, want ...string) (float64, bool) {
	for _, s := range e.samples {
		if s.name != name {
			continue
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if s.label(want[i]) != want[i+1] {
				match = false
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// scrapeMetrics reads env's metrics as the metrics listener serves them.
func scrapeMetrics(t testing.TB, env *testEnv) exposition {
	t.Helper()
	rec := httptest.NewRecorder()
	env.srv.metricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != metricsContentType {
		t.Fatalf("GET /metrics = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	return parseExposition(t, rec.Body.String())
}

// wantMetric fails the test unless the series exists with value v.
func wantMetric(t testing.TB, e exposition, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := e.value(name, labels...)
	if !ok || got != v {
		t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, v)
	}
}

// ---- the series ----

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("metrics@example.com")
	var task wireTask
	for i := 0; i < 3; i++ {
		env.do("POST", "/api/v1/tasks", `{"title":"counted"}`, token).want(201, "").json(&task)
	}
	env.do("GET", fmt.Sprintf("/api/v1/tasks/%d", task.ID), "", token).want(200, "")
	env.do("GET", "/api/v1/tasks/999999999", "", token).want(404, "not_found")
	env.do("HEAD", fmt.Sprintf("/api/v1/tasks/%d", task.ID), "", token).want(200, "")
	env.do("GET", "/no/such/path", "", "").want(404, "not_found")
	env.do("PUT", "/api/v1/tasks", "", token).want(405, "method_not_allowed")
	// The API's port has no /metrics: the usual 404 envelope.
	checkEnvelope(t, env.do("GET", "/metrics", "", ""), 404, "not_found")

	e := scrapeMetrics(t, env)
	wantMetric(t, e, 1, "todo_http_requests_total", "route", "POST /api/v1/auth/register", "method", "POST", "class", "2xx")
	wantMetric(t, e, 3, "todo_http_requests_total", "route", "POST /api/v1/tasks", "method", "POST", "class", "2xx")
	wantMetric(t, e, 1, "todo_http_requests_total", "route", "GET /api/v1/tasks/{id}", "method", "GET", "class", "2xx")
	wantMetric(t, e, 1, "todo_http_requests_total", "route", "GET /api/v1/tasks/{id}", "method", "GET", "class", "4xx")
	wantMetric(t, e, 1, "todo_http_requests_total", "route", "GET /api/v1/tasks/{id}", "method", "HEAD", "class", "2xx")
	wantMetric(t, e, 2, "todo_http_requests_total", "route", routeUnmatched, "method", "GET", "class", "4xx")
	wantMetric(t, e, 1, "todo_http_requests_total", "route", routeUnmatched, "method", "PUT", "class", "4xx")
	wantMetric(t, e, 3, "todo_http_request_duration_seconds_count", "route", "POST /api/v1/tasks")
	wantMetric(t, e, 3, "todo_http_request_duration_seconds_bucket", "route", "POST /api/v1/tasks", "le", "+Inf")
	wantMetric(t, e, 3, "todo_http_request_duration_seconds_bucket", "route", "GET /api/v1/tasks/{id}", "le", "10")
	if _, ok := e.value("todo_http_request_duration_seconds_count", "route", "GET /healthz"); ok {
		t.Error("a route that served nothing has series")
	}
	wantMetric(t, e, 0, "todo_http_requests_in_flight")
	for _, kind := range errorKindNames {
		wantMetric(t, e, 0, "todo_db_errors_total", "kind", kind)
	}
	for _, limit := range rateLimitNames {
		wantMetric(t, e, 0, "todo_rate_limited_total", "limit", limit)
	}
	wantMetric(t, e, 0, "todo_password_hashes_in_flight")
	wantMetric(t, e, 0, "todo_password_hashes_waiting")
	wantMetric(t, e, float64(env.cfg.DBMaxConns), "todo_db_pool_max_connections")
	wantMetric(t, e, 0, "todo_db_pool_acquired_connections")
	wantMetric(t, e, float64(schemaVersion), "todo_schema_version")
	if v, _ := e.value("todo_db_pool_acquires_total"); v < 7 {
		t.Errorf("todo_db_pool_acquires_total = %v after 7 requests that query", v)
	}
	if v, _ := e.value("todo_db_pool_total_connections"); v < 1 {
		t.Errorf("todo_db_pool_total_connections = %v", v)
	}
	if v, _ := e.value("go_goroutines"); v < 1 {
		t.Errorf("go_goroutines = %v", v)
	}
	for _, name := range []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes",
		"process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_virtual_memory_bytes"} {
		if v, ok := e.value(name); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want above 0", name, v, ok)
		}
	}
	for _, name := range []string{"process_cpu_seconds_total", "go_gc_duration_seconds_sum", "go_gc_duration_seconds_count"} {
		if _, ok := e.value(name); !ok {
			t.Errorf("%s missing", name)
		}
	}
	if v, _ := e.value("go_info", "version", runtime.Version()); v != 1 {
		t.Error("go_info missing")
	}
	if v, _ := e.value("process_start_time_seconds"); math.Abs(v-float64(time.Now().Unix())) > 3600 {
		t.Errorf("process_start_time_seconds = %v, not within the hour", v)
	}

	// Only GET (and HEAD) /metrics is served there.
	rec := httptest.NewRecorder()
	env.srv.metricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/tasks", nil))
	if rec.Code != 404 {
		t.Errorf("GET /api/v1/tasks on the metrics listener = %d, want 404", rec.Code)
	}
}

// Every pattern the server registers has its own counters: none falls to "unmatched".
func TestMetricsKnowEveryRoute(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	for _, p := range env.srv.routed {
		if rs := env.srv.metrics.routes[p]; rs == nil || rs.route != p {
			t.Errorf("route %q has no counters of its own", p)
		}
	}
}

// Label values stay bounded: distinct ids, unknown paths and invented methods add no
// series, and every route label is a registered pattern.
func TestMetricsCardinality(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("cardinality@example.com")
	round := func(n int) {
		for i := 0; i < n; i++ {
			env.do("GET", fmt.Sprintf("/api/v1/tasks/%d", 1000+i), "", token)
			env.do("GET", fmt.Sprintf("/no-such-path/%d/x%d", i, i), "", "")
			env.do(fmt.Sprintf("BREW%d", i), "/api/v1/tasks", "", token)
		}
	}
	round(1)
	before := len(scrapeMetrics(t, env).samples)
	round(1000)
	e := scrapeMetrics(t, env)
	if after := len(e.samples); after != before {
		t.Errorf("series grew from %d to %d with 3,000 distinct paths and methods", before, after)
	}
	routes := append([]string{routeUnmatched}, env.srv.routed...)
	for _, s := range e.samples {
		if r := s.label("route"); r != "" && !slices.Contains(routes, r) {
			t.Errorf("route label %q is not a registered pattern", r)
		}
		if m := s.label("method"); m != "" && !slices.Contains(methodNames[:], m) {
			t.Errorf("method label %q", m)
		}
	}
	wantMetric(t, e, 1001, "todo_http_requests_total", "route", "GET /api/v1/tasks/{id}", "method", "GET", "class", "4xx")
	wantMetric(t, e, 1001, "todo_http_requests_total", "route", routeUnmatched, "method", "other", "class", "4xx")
}

func TestMetricsRateLimitsAndHashing(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.LoginFailuresPerMinute = 1; c.RegistersPerMinute = 1 })
	env.registerUser("hashing@example.com")
	env.do("POST", "/api/v1/auth/register", `{"email":"second@example.com","password":"`+testPassword+`"}`, "").want(429, "rate_limited")
	bad := `{"email":"hashing@example.com","password":"wrong password"}`
	env.do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
	env.do("POST", "/api/v1/auth/login", bad, "").want(429, "rate_limited")
	env.do("POST", "/api/v1/auth/login", bad, "").want(429, "rate_limited")
	e := scrapeMetrics(t, env)
	wantMetric(t, e, 1, "todo_rate_limited_total", "limit", "register")
	wantMetric(t, e, 2, "todo_rate_limited_total", "limit", "login")

	// Both hashing slots taken: a login queues for one.
	env = newTestEnv(t, func(c *Config) { c.HashConcurrency = 2 })
	env.registerUser("hashing@example.com")
	a := env.srv.auth
	a.hashSlots <- struct{}{}
	a.hashSlots <- struct{}{}
	done := make(chan response, 1)
	go func() {
		done <- env.do("POST", "/api/v1/auth/login", `{"email":"hashing@example.com","password":"`+testPassword+`"}`, "")
	}()
	queued := relWaitUntil(10*time.Second, func() bool {
		v, _ := scrapeMetrics(t, env).value("todo_password_hashes_waiting")
		return v == 1
	})
	e = scrapeMetrics(t, env)
	<-a.hashSlots
	<-a.hashSlots
	if !queued {
		t.Error("todo_password_hashes_waiting never reached 1")
	}
	wantMetric(t, e, 2, "todo_password_hashes_in_flight")
	wantMetric(t, e, 1, "todo_http_requests_in_flight")
	if r := <-done; r.Code != 200 {
		t.Fatalf("queued login: %d %s", r.Code, r.Body)
	}
	e = scrapeMetrics(t, env)
	wantMetric(t, e, 0, "todo_password_hashes_waiting")
	wantMetric(t, e, 0, "todo_password_hashes_in_flight")
}

func TestMetricsDBErrorKinds(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	tests := []struct {
		err    error
		kind   errorKind
		status int
	}{
		{fmt.Errorf("find task 7: %w", context.DeadlineExceeded), kindTimeout, 503},
		{fmt.Errorf("find task 7: %w", &pgconn.PgError{Code: "57014"}), kindTimeout, 503},
		{fmt.Errorf("list: %w", &pgconn.PgError{Code: "08006"}), kindUnavailable, 503},
		{fmt.Errorf("list: %w", &pgconn.PgError{Code: "57P01"}), kindUnavailable, 503},
		{fmt.Errorf("list: %w", io.ErrUnexpectedEOF), kindUnavailable, 503},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, kindUnavailable, 503},
		{fmt.Errorf("update: %w", &pgconn.PgError{Code: "40001"}), kindConflict, 503},
		{fmt.Errorf("update: %w", &pgconn.PgError{Code: "40P01"}), kindConflict, 503},
		{fmt.Errorf("update: %w", &pgconn.PgError{Code: "42P01"}), kindInternal, 500},
		{errors.New("encode response: boom"), kindInternal, 500},
	}
	want := map[string]float64{}
	for _, tt := range tests {
		if got := classifyError(tt.err); got != tt.kind {
			t.Errorf("classifyError(%v) = %s, want %s", tt.err, errorKindNames[got], errorKindNames[tt.kind])
		}
		rec := httptest.NewRecorder()
		env.srv.writeError(rec, httptest.NewRequest("GET", "/api/v1/tasks", nil), tt.err)
		if rec.Code != tt.status {
			t.Errorf("writeError(%v) = %d, want %d", tt.err, rec.Code, tt.status)
		}
		want[errorKindNames[tt.kind]]++
	}
	// An *apiError is the handler's own answer, not a database error.
	env.srv.writeError(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), errUnavailable)
	e := scrapeMetrics(t, env)
	for _, kind := range errorKindNames {
		wantMetric(t, e, want[kind], "todo_db_errors_total", "kind", kind)
	}
}

// Recording a request allocates nothing: the metrics' whole cost per request is a few
// atomic adds.
func TestMetricsRecordingAllocatesNothing(t *testing.T) {
	m := newMetrics(&Server{routed: []string{"GET /api/v1/tasks/{id}"}})
	allocs := testing.AllocsPerRun(1000, func() {
		m.requestStarted()
		m.observe("GET /api/v1/tasks/{id}", "GET", 200, 1500*time.Microsecond)
		m.observe("", "BREW", 404, 20*time.Second)
		m.requestEnded()
	})
	if allocs != 0 {
		t.Errorf("recording a request allocates %v times", allocs)
	}
}

func TestMetricsAddrDefault(t *testing.T) {
	t.Setenv("METRICS_ADDR", "") // restored after the test
	if got := environment("METRICS_ADDR"); got != "" {
		t.Errorf("METRICS_ADDR set empty reads %q, want empty (metrics off)", got)
	}
	os.Unsetenv("METRICS_ADDR")
	if got := environment("METRICS_ADDR"); got != ":9464" {
		t.Errorf("METRICS_ADDR unset reads %q, want :9464", got)
	}
}

// ---- a client that goes away ----

// accessLine waits for the access log line of the request with the given id.
func accessLine(t *testing.T, logs *syncBuffer, requestID string) map[string]any {
	t.Helper()
	var line map[string]any
	found := relWaitUntil(10*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "request" && l["request_id"] == requestID {
				line = l
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatalf("no access log line for %s:\n%s", requestID, logs.String())
	}
	return line
}

// logLinesAt returns the log lines of the request at level.
func logLinesAt(logs *syncBuffer, requestID, level string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) == nil && l["level"] == level && l["request_id"] == requestID {
			out = append(out, sc.Text())
		}
	}
	return out
}

// A client that closes its connection while its request waits for the database is
// logged as 499 at info, with no error line, and counted in class 499, not 5xx. A query
// that times out while its client waits stays a 503 and an error.
func TestClientGoneIsNotAServerError(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.QueryTimeout = 2 * time.Second })
	token, _ := env.registerUser("gone@example.com")
	var task wireTask
	env.do("POST", "/api/v1/tasks", `{"title":"locked"}`, token).want(201, "").json(&task)
	hs := httptest.NewServer(env.srv)
	t.Cleanup(hs.Close)
	addr := hs.Listener.Addr().String()

	// Every statement on tasks waits behind this lock until the test rolls back.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, env.cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	waitingOnLock := func(n int) bool {
		var waiting int
		env.st.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return waiting >= n
	}
	send := func(id, request string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, request, id)
		return c
	}
	get := "GET /api/v1/tasks/" + strconv.FormatInt(task.ID, 10) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
		"X-Request-ID: %s\r\nAuthorization: Bearer " + token + "\r\n\r\n"

	gone := send("client-gone", get)
	if !relWaitUntil(10*time.Second, func() bool { return waitingOnLock(1) }) {
		t.Fatal("the request never waited on the lock")
	}
	gone.Close()
	line := accessLine(t, env.logs, "client-gone")
	if line["status"] != float64(statusClientClosed) || line["level"] != "INFO" || line["route"] != "GET /api/v1/tasks/{id}" {
		t.Errorf("access line %v, want status 499 at INFO on the route", line)
	}
	if errs := logLinesAt(env.logs, "client-gone", "ERROR"); len(errs) > 0 {
		t.Errorf("a client that went away was logged as an error: %v", errs)
	}
	if len(logLinesAt(env.logs, "client-gone", "DEBUG")) == 0 {
		t.Error("no debug line says why the request ended")
	}

	// A body cut off is the client's fault too: a 4xx, never an error line.
	cut := send("body-cut", "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: 100\r\nAuthorization: Bearer "+token+"\r\n\r\n{\"title\":")
	time.Sleep(100 * time.Millisecond)
	cut.Close()
	if line := accessLine(t, env.logs, "body-cut"); line["status"].(float64) >= 500 {
		t.Errorf("cut body: access line %v, want a 4xx", line)
	}
	if errs := logLinesAt(env.logs, "body-cut", "ERROR"); len(errs) > 0 {
		t.Errorf("a cut body was logged as an error: %v", errs)
	}

	// The client waits; the query's own timeout passes: 503 and an error, as before.
	stays := send("client-stays", get)
	stays.SetReadDeadline(time.Now().Add(30 * time.Second))
	answer, _ := io.ReadAll(io.LimitReader(stays, 4096))
	if !strings.HasPrefix(string(answer), "HTTP/1.1 503") {
		t.Errorf("query timeout answered %q, want 503", answer)
	}
	if line := accessLine(t, env.logs, "client-stays"); line["status"] != float64(503) {
		t.Errorf("access line %v, want status 503", line)
	}
	if len(logLinesAt(env.logs, "client-stays", "ERROR")) != 1 {
		t.Errorf("a query timeout was not logged as an error:\n%s", env.logs.String())
	}
	tx.Rollback(ctx)

	e := scrapeMetrics(t, env)
	wantMetric(t, e, 1, "todo_http_requests_total", "route", "GET /api/v1/tasks/{id}", "method", "GET", "class", "499")
	wantMetric(t, e, 1, "todo_http_requests_total", "route", "GET /api/v1/tasks/{id}", "method", "GET", "class", "5xx")
	wantMetric(t, e, 1, "todo_db_errors_total", "kind", "timeout")
	wantMetric(t, e, 0, "todo_db_errors_total", "kind", "internal")
	if v, ok := e.value("todo_http_requests_total", "route", "POST /api/v1/tasks", "class", "5xx"); ok {
		t.Errorf("cut body counted as 5xx: %v", v)
	}
}

// ---- against a real Prometheus ----

// prometheusQuery runs an instant query and returns its samples' values by their labels.
func prometheusQuery(t *testing.T, base, query string) []float64 {
	t.Helper()
	res, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		t.Fatalf("query %s: %v", query, err)
	}
	defer res.Body.Close()
	var out struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Status != "success" {
		t.Fatalf("query %s: %v %s %s", query, err, out.Status, out.Error)
	}
	var vs []float64
	for _, r := range out.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %s: value %v", query, r.Value)
		}
		vs = append(vs, v)
	}
	return vs
}

// startPrometheus runs Debian's prometheus (the test command installs it) with a
// configuration of the test's own that scrapes target every second, on a free port, with
// its storage in a temporary directory; it returns its base URL.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: `make test` installs it (Debian's prometheus package, as root)")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: todo
    static_configs:
      - targets: ["`+target+`"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		port := baFreePort(t)
		out := &syncBuffer{}
		cmd := exec.Command(bin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address=127.0.0.1:"+port, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		base := "http://127.0.0.1:" + port
		ready := relWaitUntil(60*time.Second, func() bool {
			select {
			case <-exited:
				return true
			default:
			}
			res, err := http.Get(base + "/-/ready")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == 200
		})
		select {
		case <-exited:
			if attempt < 3 && strings.Contains(out.String(), "address already in use") {
				continue
			}
			t.Fatalf("prometheus exited:\n%s", out.String())
		default:
		}
		if !ready {
			stop()
			t.Fatalf("prometheus not ready within 60s:\n%s", out.String())
		}
		t.Cleanup(func() {
			stop()
			if t.Failed() {
				t.Logf("prometheus log:\n%s", out.String())
			}
		})
		return base
	}
}

// The real service's metrics listener, scraped by a real Prometheus: the exposition
// parses, and the series read back through PromQL are what the test sent.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	t.Parallel()
	base, stop, done, logs := startService(t, map[string]string{"METRICS_ADDR": "127.0.0.1:0"})
	relStopRun(t, stop, done)
	var metricsAddr string
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var l struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "metrics listening" {
			_, port, _ := net.SplitHostPort(l.Addr)
			metricsAddr = "127.0.0.1:" + port
		}
	}
	if metricsAddr == "" {
		t.Fatalf("no metrics listener in the log:\n%s", logs.String())
	}

	c := relClient(t, 10*time.Second)
	token, _ := relRegister(t, c, base, "prometheus@example.com")
	const creates = 5
	for i := 0; i < creates; i++ {
		if r := relCall(c, "POST", base+"/api/v1/tasks", `{"title":"scraped"}`, token, nil); r.status != 201 {
			t.Fatalf("create: %v", r)
		}
	}
	// Not on the API's port; nothing but /metrics on the metrics port.
	if r := relCall(c, "GET", base+"/metrics", "", "", nil); r.status != 404 || r.code != "not_found" {
		t.Errorf("GET /metrics on the API port: %v, want the 404 envelope", r)
	}
	if r := relCall(c, "GET", "http://"+metricsAddr+"/healthz", "", "", nil); r.status != 404 {
		t.Errorf("GET /healthz on the metrics port: %v, want 404", r)
	}
	if r := relCall(c, "GET", "http://"+metricsAddr+"/metrics", "", "", nil); r.status != 200 ||
		r.header.Get("Content-Type") != metricsContentType {
		t.Fatalf("GET /metrics: %v %q", r, r.header.Get("Content-Type"))
	} else {
		parseExposition(t, string(r.body))
	}

	prom := startPrometheus(t, metricsAddr)
	if !relWaitUntil(60*time.Second, func() bool {
		v := prometheusQuery(t, prom, `up{job="todo"}`)
		return len(v) == 1 && v[0] == 1
	}) {
		res, _ := http.Get(prom + "/api/v1/targets")
		var b []byte
		if res != nil {
			b, _ = io.ReadAll(res.Body)
			res.Body.Close()
		}
		t.Fatalf("Prometheus never scraped the service successfully; targets: %s", b)
	}
	want := func(query string, v float64) {
		t.Helper()
		got := prometheusQuery(t, prom, query)
		if len(got) != 1 || got[0] != v {
			t.Errorf("%s = %v, want [%v]", query, got, v)
		}
	}
	want(`todo_http_requests_total{route="POST /api/v1/tasks",class="2xx"}`, creates)
	want(`todo_http_requests_total{route="POST /api/v1/auth/register",method="POST",class="2xx"}`, 1)
	want(`todo_http_requests_total{route="unmatched",class="4xx"}`, 1)
	want(`todo_http_request_duration_seconds_bucket{route="POST /api/v1/tasks",le="+Inf"}`, creates)
	want(`count(todo_http_request_duration_seconds_bucket{route="POST /api/v1/tasks"})`, float64(len(durationBuckets)+1))
	want(`todo_http_request_duration_seconds_count{route="POST /api/v1/tasks"}`, creates)
	want(`todo_db_pool_max_connections`, 16)
	want(`todo_schema_version`, float64(schemaVersion))
	want(`count(todo_db_errors_total)`, float64(numErrorKinds))
	want(`sum(todo_db_errors_total)`, 0)
	for _, q := range []string{`go_goroutines > 0`, `process_resident_memory_bytes > 0`, `process_open_fds > 0`,
		`process_cpu_seconds_total >= 0`, `go_gc_duration_seconds_count >= 0`, `todo_http_requests_in_flight >= 0`,
		`histogram_quantile(0.5, rate(todo_http_request_duration_seconds_bucket[1m])) >= 0 or vector(0)`} {
		if v := prometheusQuery(t, prom, q); len(v) == 0 {
			t.Errorf("%s: no result", q)
		}
	}
}
