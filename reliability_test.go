package main

// Reliability: the service through a database restart, idempotent creation, graceful
// shutdown of the real binary, pool exhaustion, slow clients, a login flood, hostile
// input, and no goroutines or pooled connections left behind. See specs/operations.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ---- goroutine leaks ----

// TestMain runs the tests and then checks that every goroutine they started has ended:
// servers shut down, pools closed, clients' connections gone. Fuzzing runs skip the
// check, since the fuzzing engine keeps its own goroutines.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && !relFuzzing() {
		if leaked := relLeakedGoroutines(15 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "FAIL: goroutines still running after the tests ended:\n\n%s\n", leaked)
			code = 1
		}
	}
	relRemoveBinary()
	os.Exit(code)
}

func relFuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// relBenignGoroutines live for the whole process by design: the signal watcher that
// signal.Notify starts once.
var relBenignGoroutines = []string{"os/signal.signal_recv", "os/signal.loop"}

// relLeakedGoroutines waits up to limit for the goroutines to settle and returns the
// stacks of those still running, or "" when none are left.
func relLeakedGoroutines(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		// The first stack is this goroutine's own.
		for _, g := range strings.Split(string(buf), "\n\n")[1:] {
			if g = strings.TrimSpace(g); g == "" {
				continue
			}
			benign := false
			for _, b := range relBenignGoroutines {
				benign = benign || strings.Contains(g, b)
			}
			if !benign {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// relCheckPoolReleased fails the test when, at its end, the store's pool still lends a
// connection: a borrowed connection that is never returned is a leak that ends in an
// exhausted pool. Register it after the store and before the servers that use it, so
// that it runs once they have stopped and before the pool closes.
func relCheckPoolReleased(t *testing.T, st *Store) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for st.pool.Stat().AcquiredConns() != 0 {
			if time.Now().After(deadline) {
				t.Errorf("pool still lends %d connections after the servers stopped", st.pool.Stat().AcquiredConns())
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// ---- real HTTP ----

// relResult is one exchange over real HTTP.
type relResult struct {
	status int
	code   string // error_code of an error envelope
	body   []byte
	header http.Header
	dur    time.Duration
	err    error // no answer at all: refused, cut, or the client gave up
}

func (r relResult) String() string {
	if r.err != nil {
		return fmt.Sprintf("no answer after %v: %v", r.dur.Round(time.Millisecond), r.err)
	}
	return fmt.Sprintf("%d %s after %v", r.status, bytes.TrimSpace(r.body), r.dur.Round(time.Millisecond))
}

func relClient(t *testing.T, timeout time.Duration) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

func relCall(c *http.Client, method, url, body, token string, hdr map[string]string) relResult {
	var rdr io.Reader
	if body != "" {
		rdr = strings.NewReader(body)
	}
	start := time.Now()
	req, err := http.NewRequest(method, url, rdr)
	if err != nil {
		return relResult{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		return relResult{err: err, dur: time.Since(start)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	r := relResult{status: res.StatusCode, body: b, header: res.Header, dur: time.Since(start), err: err}
	if res.StatusCode >= 400 {
		var e errorBody
		json.Unmarshal(b, &e)
		r.code = e.ErrorCode
	}
	return r
}

// relRegister makes a local account over HTTP and returns its access token and id.
func relRegister(t *testing.T, c *http.Client, base, email string) (string, int64) {
	t.Helper()
	r := relCall(c, "POST", base+"/api/v1/auth/register", `{"email":"`+email+`","password":"correct horse battery"}`, "", nil)
	if r.status != http.StatusCreated {
		t.Fatalf("register %s: %v", email, r)
	}
	var tr tokenResponse
	if err := json.Unmarshal(r.body, &tr); err != nil {
		t.Fatalf("register %s: %v", email, err)
	}
	return tr.AccessToken, tr.User.ID
}

// relWaitUntil polls cond until it holds or limit passes; it reports which.
func relWaitUntil(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// relStopRun cancels a service started by startService and waits for run to return, so
// that nothing of it outlives the test.
func relStopRun(t *testing.T, stop context.CancelFunc, done <-chan error) {
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not return within 30s of its context's cancellation")
		}
	})
}

// ---- a private PostgreSQL cluster ----

// relCluster is a PostgreSQL cluster of one test's own in a temporary directory, reached
// through a Unix socket there, so that the test can stop and restart the server without
// disturbing the cluster that the other tests share.
type relCluster struct {
	bin, dir, data string
	asPostgres     bool // PostgreSQL refuses to run as root: root runs it as postgres
}

// relPGBin finds the PostgreSQL server binaries: TEST_PG_BIN (set by the test command),
// else the newest Debian install. Without them the test fails, never skips.
func relPGBin(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TEST_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err != nil {
			t.Fatalf("TEST_PG_BIN=%s holds no pg_ctl: %v", d, err)
		}
		return d
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(found) == 0 {
		t.Fatal("PostgreSQL server binaries not found: set TEST_PG_BIN (the test command does) or install PostgreSQL")
	}
	sort.Slice(found, func(i, j int) bool { return relVersionLess(found[i], found[j]) })
	return filepath.Dir(found[len(found)-1])
}

func relVersionLess(a, b string) bool {
	va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
	vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
	return va < vb
}

func newRelCluster(t *testing.T) *relCluster {
	t.Helper()
	bin := relPGBin(t)
	// A Unix socket path is limited to about 100 bytes; a long TMPDIR would not fit.
	parent := os.TempDir()
	if len(parent) > 60 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "todo-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c := &relCluster{bin: bin, dir: dir, data: filepath.Join(dir, "data"), asPostgres: os.Geteuid() == 0}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(c.data, "postmaster.pid")); err == nil {
			c.ctl("stop", "-m", "immediate", "-w")
		}
		os.RemoveAll(dir)
	})
	if c.asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user to own the cluster: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if out, err := c.command(ctx, "initdb", "-D", c.data, "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C.UTF-8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	c.start(t)
	return c
}

func (c *relCluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, name)
	if c.asPostgres {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.CommandContext(ctx, path, args...)
}

func (c *relCluster) ctl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	return c.command(ctx, "pg_ctl", append([]string{"-D", c.data, "-t", "60"}, args...)...).CombinedOutput()
}

// url is the cluster's postgres database, through its socket.
func (c *relCluster) url() string { return "postgres://postgres@/postgres?host=" + c.dir }

func (c *relCluster) start(t *testing.T) {
	t.Helper()
	opts := "-c listen_addresses='' -c unix_socket_directories=" + c.dir + " -c max_connections=100"
	if out, err := c.ctl("-l", filepath.Join(c.dir, "server.log"), "-w", "-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// stop shuts the server down as an operator would for a restart: -m fast ends every
// connection at once and rolls back their open transactions.
func (c *relCluster) stop(t *testing.T) {
	t.Helper()
	if out, err := c.ctl("-m", "fast", "-w", "stop"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// ---- database outage ----

// TestDatabaseOutageUnderLoad restarts PostgreSQL under a bounded load of writes and
// reads. During the outage every request answers 503 service_unavailable in bounded
// time and /readyz says 503; after the restart the same process answers 2xx again within
// seconds. Every write answered 2xx is in the database afterwards, and writes that are
// retried with their Idempotency-Key until they get a 2xx exist exactly once.
func TestDatabaseOutageUnderLoad(t *testing.T) {
	t.Parallel()
	cluster := newRelCluster(t)
	const queryTimeout = 2 * time.Second
	base, stop, done, _ := startService(t, map[string]string{
		"DATABASE_URL":        cluster.url(),
		"QUERY_TIMEOUT":       queryTimeout.String(),
		"REGISTER_RATE_LIMIT": "1000",
	})
	relStopRun(t, stop, done)
	client := relClient(t, 20*time.Second)
	token, _ := relRegister(t, client, base, "outage@example.com")

	const (
		phaseBefore = iota
		phaseOutage
		phaseAfter
	)
	var (
		phase      atomic.Int32
		stopLoad   = make(chan struct{})
		wg         sync.WaitGroup
		mu         sync.Mutex
		results    []relResult // every answer, for the checks below
		phases     []int32
		created    = map[string]int64{} // title → id answered 2xx
		unanswered = map[string]bool{}  // titles of writes without a key that got no 2xx
		okAfter    atomic.Int32         // successful writes after the restart
		okBefore   atomic.Int32
		firstOK    atomic.Int64 // unix nanos of the first 2xx write after the restart
		aborted    atomic.Bool
	)
	record := func(r relResult) {
		mu.Lock()
		results = append(results, r)
		phases = append(phases, phase.Load())
		mu.Unlock()
	}
	stopped := func() bool {
		select {
		case <-stopLoad:
			return true
		default:
			return false
		}
	}
	hardDeadline := time.Now().Add(150 * time.Second)

	// Writers that retry: each write carries its own Idempotency-Key and is sent again,
	// after a short pause, until some answer is a 2xx — as a careful client does.
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400 && !stopped(); i++ {
				title := fmt.Sprintf("retried-%d-%d", w, i)
				body := `{"title":"` + title + `","tags":["outage"]}`
				for {
					r := relCall(client, "POST", base+"/api/v1/tasks", body, token, map[string]string{"Idempotency-Key": title})
					p := phase.Load()
					record(r)
					if r.status == http.StatusCreated {
						var tj wireTask
						json.Unmarshal(r.body, &tj)
						mu.Lock()
						created[title] = tj.ID
						mu.Unlock()
						if p == phaseAfter {
							okAfter.Add(1)
							firstOK.CompareAndSwap(0, time.Now().UnixNano())
						} else if p == phaseBefore {
							okBefore.Add(1)
						}
						break
					}
					if aborted.Load() {
						return
					}
					if time.Now().After(hardDeadline) {
						t.Errorf("write %s never got a 2xx; last answer %v", title, r)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	// A writer that does not retry and sends no key: an error leaves its write undone or
	// done, but never done twice.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 400 && !stopped(); i++ {
			title := fmt.Sprintf("once-%d", i)
			r := relCall(client, "POST", base+"/api/v1/tasks", `{"title":"`+title+`"}`, token, nil)
			record(r)
			mu.Lock()
			if r.status == http.StatusCreated {
				var tj wireTask
				json.Unmarshal(r.body, &tj)
				created[title] = tj.ID
			} else {
				unanswered[title] = true
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// Readers.
	for _, path := range []string{"/api/v1/tasks?limit=5&tag=outage", "/api/v1/tasks/stats"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000 && !stopped(); i++ {
				record(relCall(client, "GET", base+path, "", token, nil))
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	var finishOnce sync.Once
	finish := func() { finishOnce.Do(func() { close(stopLoad); wg.Wait() }) }
	// When a check below ends the test early, writers stop retrying too.
	t.Cleanup(func() { aborted.Store(true); finish() })

	if !relWaitUntil(30*time.Second, func() bool { return okBefore.Load() >= 20 }) {
		finish()
		t.Fatalf("only %d writes succeeded before the outage", okBefore.Load())
	}

	phase.Store(phaseOutage)
	outageStart := time.Now()
	cluster.stop(t)
	var readyDuring relResult
	if !relWaitUntil(10*time.Second, func() bool {
		readyDuring = relCall(client, "GET", base+"/readyz", "", "", nil)
		return readyDuring.status == http.StatusServiceUnavailable
	}) {
		t.Errorf("/readyz during the outage: %v, want 503", readyDuring)
	} else if readyDuring.code != "service_unavailable" {
		t.Errorf("/readyz during the outage: %v, want service_unavailable", readyDuring)
	}
	// Let every worker meet the outage for a while.
	time.Sleep(3 * time.Second)
	outageLoad := func() (n, unavailable int) {
		mu.Lock()
		defer mu.Unlock()
		for i, r := range results {
			if phases[i] == phaseOutage {
				n++
				if r.status == http.StatusServiceUnavailable {
					unavailable++
				}
			}
		}
		return n, unavailable
	}

	// Answers that arrive once the server is starting again count as after the outage.
	phase.Store(phaseAfter)
	cluster.start(t)
	restarted := time.Now()
	var readyAfter time.Duration
	if relWaitUntil(30*time.Second, func() bool {
		return relCall(client, "GET", base+"/readyz", "", "", nil).status == http.StatusOK
	}) {
		readyAfter = time.Since(restarted)
	} else {
		t.Error("/readyz not 200 within 30s of the database's return")
	}
	if !relWaitUntil(60*time.Second, func() bool { return okAfter.Load() >= 20 }) {
		t.Errorf("only %d writes succeeded after the restart", okAfter.Load())
	}
	finish()

	writeRecovery := time.Duration(-1)
	if ns := firstOK.Load(); ns != 0 {
		writeRecovery = max(0, time.Unix(0, ns).Sub(restarted))
	}
	n, unavailable := outageLoad()
	t.Logf("outage of %v: %d requests during it, %d answered 503; after the restart /readyz was 200 in %v, the first write succeeded in %v",
		restarted.Sub(outageStart).Round(time.Millisecond), n, unavailable, readyAfter.Round(time.Millisecond), writeRecovery.Round(time.Millisecond))
	if unavailable == 0 {
		t.Error("no request answered 503 during the outage: the test did not exercise it")
	}
	// The contract: back to normal within 10 s of the database's return.
	if readyAfter > 10*time.Second || writeRecovery < 0 || writeRecovery > 10*time.Second {
		t.Errorf("recovery took /readyz %v and writes %v, want both within 10s", readyAfter, writeRecovery)
	}

	var slowest time.Duration
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("request in phase %d got no answer: %v", phases[i], r)
		case r.status >= 200 && r.status < 300:
		case r.status == http.StatusServiceUnavailable && r.code == "service_unavailable" && r.header.Get("Retry-After") != "":
			slowest = max(slowest, r.dur)
		default:
			t.Errorf("request in phase %d: %v, want a 2xx or 503 service_unavailable with Retry-After", phases[i], r)
		}
	}
	t.Logf("%d requests in all; the slowest 503 took %v", len(results), slowest.Round(time.Millisecond))
	// The contract's bound is 5 s; a request makes at most two sequential statements
	// (authentication, then its own), each under the query timeout.
	if slowest > 2*queryTimeout+time.Second {
		t.Errorf("a 503 took %v, want at most %v: requests must fail fast during an outage", slowest, 2*queryTimeout+time.Second)
	}

	// The database's own account of what was written.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, cluster.url())
	if err != nil {
		t.Fatalf("connect after the restart: %v", err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT title, count(*), min(id) FROM tasks GROUP BY title`)
	type stored struct {
		n  int64
		id int64
	}
	inDB := map[string]stored{}
	var title string
	var s stored
	if _, err := pgx.ForEachRow(rows, []any{&title, &s.n, &s.id}, func() error { inDB[title] = s; return nil }); err != nil {
		t.Fatalf("read tasks: %v", err)
	}
	retried := 0
	for title, id := range created {
		got := inDB[title]
		if got.n != 1 || got.id != id {
			t.Errorf("write %q answered 2xx with id %d; the database holds %d such tasks (id %d), want exactly that one", title, id, got.n, got.id)
		}
		if strings.HasPrefix(title, "retried-") {
			retried++
		}
	}
	for title, got := range inDB {
		if got.n > 1 {
			t.Errorf("%q is stored %d times", title, got.n)
		}
		if _, ok := created[title]; !ok && !unanswered[title] {
			t.Errorf("%q is stored but was never written", title)
		}
	}
	t.Logf("%d retried writes each stored exactly once; %d writes without a key got no 2xx", retried, len(unanswered))
}

// ---- idempotent creation ----

// relCountTasks counts the user's tasks with the given title straight from the database.
func relCountTasks(t *testing.T, st *Store, userID int64, title string) int {
	t.Helper()
	var n int
	if err := st.pool.QueryRow(context.Background(), `SELECT count(*) FROM tasks WHERE user_id = $1 AND title = $2`,
		userID, title).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("idem@example.com")
	key := func(k string) header { return header{"Idempotency-Key": k} }

	t.Run("a repeat answers the first answer and creates nothing", func(t *testing.T) {
		t.Parallel()
		first := env.do("POST", "/api/v1/tasks", `{"title":"repeat me","tags":["a"]}`, token, key("repeat-1")).want(201, "")
		// The same JSON value, differently spelled, is the same body.
		again := env.do("POST", "/api/v1/tasks", `{ "tags" : ["a"], "title":"repeat me" }`, token, key("repeat-1")).want(201, "")
		if first.Body.String() != again.Body.String() || first.Header().Get("Location") != again.Header().Get("Location") {
			t.Errorf("repeat answered\n%s (%s), first answer was\n%s (%s)", again.Body, again.Header().Get("Location"),
				first.Body, first.Header().Get("Location"))
		}
		if n := relCountTasks(t, env.st, user.ID, "repeat me"); n != 1 {
			t.Errorf("%d tasks, want 1", n)
		}
	})
	t.Run("racing repeats create one task", func(t *testing.T) {
		t.Parallel()
		var wg sync.WaitGroup
		answers := make([]response, 20)
		for i := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[i] = env.do("POST", "/api/v1/tasks", `{"title":"raced"}`, token, key("race-1"))
			}()
		}
		wg.Wait()
		for i, a := range answers {
			if a.Code != 201 || a.Body.String() != answers[0].Body.String() {
				t.Errorf("answer %d: %d %s, want 201 %s", i, a.Code, a.Body, answers[0].Body)
			}
		}
		if n := relCountTasks(t, env.st, user.ID, "raced"); n != 1 {
			t.Errorf("%d tasks after 20 racing repeats, want 1", n)
		}
	})
	t.Run("the same key with another body is refused", func(t *testing.T) {
		t.Parallel()
		env.do("POST", "/api/v1/tasks", `{"title":"original"}`, token, key("reuse-1")).want(201, "")
		r := env.do("POST", "/api/v1/tasks", `{"title":"different"}`, token, key("reuse-1"))
		checkEnvelope(t, r, 422, "idempotency_key_reused")
		if n := relCountTasks(t, env.st, user.ID, "different"); n != 0 {
			t.Errorf("the refused body created %d tasks", n)
		}
	})
	t.Run("keys are per user", func(t *testing.T) {
		t.Parallel()
		other, otherUser := env.registerUser("idem-other@example.com")
		var mine, theirs wireTask
		env.do("POST", "/api/v1/tasks", `{"title":"shared key"}`, token, key("per-user")).want(201, "").json(&mine)
		env.do("POST", "/api/v1/tasks", `{"title":"shared key"}`, other, key("per-user")).want(201, "").json(&theirs)
		if mine.ID == theirs.ID || theirs.UserID != float64(otherUser.ID) {
			t.Errorf("the second user got %+v, want a task of their own", theirs)
		}
		// Another body under the same key is no reuse for someone else's key.
		env.do("POST", "/api/v1/tasks", `{"title":"other body"}`, other, key("per-user-2")).want(201, "")
		env.do("POST", "/api/v1/tasks", `{"title":"mine"}`, token, key("per-user-2")).want(201, "")
	})
	t.Run("both create routes share one key space", func(t *testing.T) {
		t.Parallel()
		sub := strconv.FormatInt(user.ID, 10)
		var a, b wireTask
		env.do("POST", "/api/v1/tasks", `{"title":"either route"}`, token, key("routes-1")).want(201, "").json(&a)
		env.do("POST", "/api/"+sub+"/tasks", `{"title":"either route"}`, token, key("routes-1")).want(201, "").json(&b)
		if a.ID != b.ID {
			t.Errorf("the section 6 route created task %d after /api/v1 created %d under the same key", b.ID, a.ID)
		}
		checkEnvelope(t, env.do("POST", "/api/"+sub+"/tasks", `{"title":"not the same"}`, token, key("routes-1")),
			422, "idempotency_key_reused")
		env.do("POST", "/api/"+sub+"/tasks", `{"title":"hackathon first"}`, token, key("routes-2")).want(201, "")
		env.do("POST", "/api/v1/tasks", `{"title":"hackathon first"}`, token, key("routes-2")).want(201, "")
		if n := relCountTasks(t, env.st, user.ID, "hackathon first"); n != 1 {
			t.Errorf("%d tasks, want 1", n)
		}
	})
	t.Run("only successful creations are remembered", func(t *testing.T) {
		t.Parallel()
		checkEnvelope(t, env.do("POST", "/api/v1/tasks", `{"title":""}`, token, key("failed-1")), 422, "validation_error")
		env.do("POST", "/api/v1/tasks", `{"title":"second try"}`, token, key("failed-1")).want(201, "")
	})
	t.Run("expired keys are forgotten", func(t *testing.T) {
		t.Parallel()
		var first wireTask
		env.do("POST", "/api/v1/tasks", `{"title":"long ago"}`, token, key("expired-1")).want(201, "").json(&first)
		// A day and a bit later, as far as the key is concerned.
		if _, err := env.st.pool.Exec(context.Background(), `UPDATE idempotency_keys SET created_at = now() - interval '25 hours'
			WHERE user_id = $1 AND key = $2`, user.ID, "expired-1"); err != nil {
			t.Fatal(err)
		}
		var again wireTask
		env.do("POST", "/api/v1/tasks", `{"title":"a new body"}`, token, key("expired-1")).want(201, "").json(&again)
		if again.ID == first.ID || again.Title != "a new body" {
			t.Errorf("reused expired key answered %+v", again)
		}
		var n int
		env.st.pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys
			WHERE user_id = $1 AND created_at < now() - interval '24 hours'`, user.ID).Scan(&n)
		if n != 0 {
			t.Errorf("%d expired keys still stored", n)
		}
	})
	t.Run("a key not yet a day old is kept", func(t *testing.T) {
		t.Parallel()
		env.do("POST", "/api/v1/tasks", `{"title":"recent"}`, token, key("recent-1")).want(201, "")
		env.st.pool.Exec(context.Background(), `UPDATE idempotency_keys SET created_at = now() - interval '23 hours'
			WHERE user_id = $1 AND key = $2`, user.ID, "recent-1")
		checkEnvelope(t, env.do("POST", "/api/v1/tasks", `{"title":"other"}`, token, key("recent-1")), 422, "idempotency_key_reused")
	})
	t.Run("malformed keys", func(t *testing.T) {
		t.Parallel()
		for _, k := range []string{strings.Repeat("k", 256), "tab\there", "ünï"} {
			checkEnvelope(t, env.do("POST", "/api/v1/tasks", `{"title":"bad key"}`, token, key(k)), 422, "validation_error")
		}
		env.do("POST", "/api/v1/tasks", `{"title":"long key"}`, token, key(strings.Repeat("k", 255))).want(201, "")
	})
}

// ---- graceful shutdown of the real binary ----

var (
	relBinaryOnce sync.Once
	relBinaryDir  string
	relBinaryPath string
	relBinaryErr  error
)

// relBinary builds the service as it ships (static, no race detector) once per run.
func relBinary(t *testing.T) string {
	t.Helper()
	relBinaryOnce.Do(func() {
		relBinaryDir, relBinaryErr = os.MkdirTemp("", "todo-bin-")
		if relBinaryErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		relBinaryPath = filepath.Join(relBinaryDir, "todo")
		cmd := exec.Command(goTool, "build", "-o", relBinaryPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			relBinaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if relBinaryErr != nil {
		t.Fatal(relBinaryErr)
	}
	return relBinaryPath
}

func relRemoveBinary() {
	if relBinaryDir != "" {
		os.RemoveAll(relBinaryDir)
	}
}

// relProcess is the real binary, running.
type relProcess struct {
	cmd    *exec.Cmd
	base   string
	out    *syncBuffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// startBinary runs the built binary against its own test database with the given extra
// environment, and waits until it listens.
func startBinary(t *testing.T, extra map[string]string) *relProcess {
	t.Helper()
	env := map[string]string{
		"DATABASE_URL":   newTestDatabase(t),
		"JWT_SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
		"PORT":           "0",
		"METRICS_ADDR":   "", // set and empty: off, so that binaries running at once do not share its port
	}
	for k, v := range extra {
		env[k] = v
	}
	p := &relProcess{cmd: exec.Command(relBinary(t)), out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		for sc.Scan() {
			var l struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				_, port, _ := net.SplitHostPort(l.Addr)
				p.base = "http://127.0.0.1:" + port
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("service exited: %v\n%s", p.err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("service did not start:\n%s", p.out.String())
	return nil
}

// relRawRequest is one request written by hand on its own connection, so that the test
// knows the server has received it before the signal. Its answer is read as soon as it
// comes, to tell whether it was still in flight at the signal.
type relRawRequest struct {
	name, method, path, body, token string
	held                            int // bytes of the body held back until release
	want                            int

	conn        net.Conn
	releaseOnce sync.Once
	release     chan struct{}
	done        chan struct{}
	status      int
	answer      []byte
	err         error
	at          time.Time // when the answer arrived
}

func (rr *relRawRequest) send(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rr.conn, rr.release, rr.done = c, make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { rr.releaseHeld(); c.Close(); <-rr.done })
	auth := ""
	if rr.token != "" {
		auth = "Authorization: Bearer " + rr.token + "\r\n"
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: todo\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		rr.method, rr.path, auth, len(rr.body), rr.body[:len(rr.body)-rr.held])
	go rr.await()
}

// releaseHeld sends the held-back end of the body.
func (rr *relRawRequest) releaseHeld() { rr.releaseOnce.Do(func() { close(rr.release) }) }

func (rr *relRawRequest) await() {
	defer close(rr.done)
	rr.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if rr.held > 0 {
		<-rr.release
		if _, rr.err = io.WriteString(rr.conn, rr.body[len(rr.body)-rr.held:]); rr.err != nil {
			return
		}
	}
	res, err := http.ReadResponse(bufio.NewReader(rr.conn), nil)
	if err != nil {
		rr.err = err
		return
	}
	defer res.Body.Close()
	rr.answer, rr.err = io.ReadAll(res.Body)
	rr.status, rr.at = res.StatusCode, time.Now()
}

// TestGracefulShutdownUnderLoad sends SIGTERM to the real binary while requests are in
// flight: every request received before the signal is answered normally (including
// ones whose body is still arriving and logins queued for a hashing slot), new
// connections are refused, and the process exits 0 within SHUTDOWN_TIMEOUT.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 15 * time.Second
	p := startBinary(t, map[string]string{
		"SHUTDOWN_TIMEOUT":    shutdownTimeout.String(),
		"HASH_CONCURRENCY":    "2",
		"LOGIN_RATE_LIMIT":    "100000",
		"REGISTER_RATE_LIMIT": "100000",
	})
	addr := strings.TrimPrefix(p.base, "http://")
	client := relClient(t, 30*time.Second)
	token, _ := relRegister(t, client, p.base, "shutdown@example.com")

	// Background load over keep-alive connections, before and through the signal.
	var (
		signalled atomic.Bool
		stopLoad  = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		before    int
		bad       []string
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				var r relResult
				if i%2 == 0 {
					r = relCall(client, "POST", p.base+"/api/v1/tasks", fmt.Sprintf(`{"title":"load %d-%d"}`, w, i), token, nil)
				} else {
					r = relCall(client, "GET", p.base+"/api/v1/tasks?limit=3", "", token, nil)
				}
				after := signalled.Load()
				mu.Lock()
				switch {
				case r.err != nil && after:
					// Refused or closed by the stopping server: a request it never received.
				case r.err != nil || r.status >= 500:
					bad = append(bad, r.String())
				case !after:
					before++
				}
				mu.Unlock()
				if r.err != nil && after {
					return
				}
			}
		}()
	}

	var inFlight []*relRawRequest
	login := `{"email":"shutdown@example.com","password":"correct horse battery"}`
	for i := range 24 {
		inFlight = append(inFlight, &relRawRequest{name: fmt.Sprintf("login %d", i), method: "POST",
			path: "/api/v1/auth/login", body: login, want: http.StatusOK})
	}
	for i := range 4 {
		inFlight = append(inFlight, &relRawRequest{name: fmt.Sprintf("create %d", i), method: "POST",
			path: "/api/v1/tasks", body: fmt.Sprintf(`{"title":"in flight %d"}`, i), token: token, want: http.StatusCreated})
	}
	for i := range 4 {
		body := fmt.Sprintf(`{"title":"half sent %d","description":"the rest of this body arrives after the signal"}`, i)
		inFlight = append(inFlight, &relRawRequest{name: fmt.Sprintf("partial body %d", i), method: "POST",
			path: "/api/v1/tasks", body: body, token: token, held: len(body) / 2, want: http.StatusCreated})
	}
	time.Sleep(500 * time.Millisecond) // the load is running
	for _, rr := range inFlight {
		rr.send(t, addr)
	}
	time.Sleep(500 * time.Millisecond) // the server has read every request line and header

	signalled.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sigAt := time.Now()
	// The listener closes as soon as the process handles the signal.
	if !relWaitUntil(5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}) {
		t.Error("new connections still accepted 5s after SIGTERM")
	}

	finishedAfter := 0
	for _, rr := range inFlight {
		rr.releaseHeld()
		<-rr.done
		switch {
		case rr.err != nil:
			t.Errorf("%s, received before the signal, got no answer: %v", rr.name, rr.err)
		case rr.status != rr.want:
			t.Errorf("%s answered %d %s, want %d", rr.name, rr.status, rr.answer, rr.want)
		case rr.at.After(sigAt):
			finishedAfter++
		}
	}
	t.Logf("%d of %d requests received before SIGTERM were answered after it", finishedAfter, len(inFlight))
	select {
	case <-p.exited:
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("still running %v after SIGTERM:\n%s", time.Since(sigAt), p.out.String())
	}
	exitAfter := time.Since(sigAt)
	close(stopLoad)
	wg.Wait()
	if p.err != nil {
		t.Errorf("exit: %v, want status 0\n%s", p.err, p.out.String())
	}
	if exitAfter > shutdownTimeout {
		t.Errorf("exited %v after SIGTERM, want within SHUTDOWN_TIMEOUT (%v)", exitAfter, shutdownTimeout)
	}
	t.Logf("exited %v after SIGTERM; %d load requests answered before it", exitAfter.Round(time.Millisecond), before)
	if before == 0 {
		t.Error("no load ran before the signal")
	}
	for _, b := range bad {
		t.Errorf("load request: %s", b)
	}
}

// TestShutdownIsBoundedByTimeout shows that a client that never finishes its request
// cannot keep the process from exiting: it ends within SHUTDOWN_TIMEOUT, with status 0.
func TestShutdownIsBoundedByTimeout(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 2 * time.Second
	p := startBinary(t, map[string]string{"SHUTDOWN_TIMEOUT": shutdownTimeout.String(), "READ_TIMEOUT": "60s"})
	stuck := &relRawRequest{name: "stuck", method: "POST", path: "/api/v1/auth/login", body: `{"email":"a@example.com","password":"x"}`, held: 10}
	stuck.send(t, strings.TrimPrefix(p.base, "http://"))
	time.Sleep(300 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	sigAt := time.Now()
	select {
	case <-p.exited:
	case <-time.After(shutdownTimeout + 10*time.Second):
		t.Fatalf("still running %v after SIGTERM with a stuck client", time.Since(sigAt))
	}
	if p.err != nil {
		t.Errorf("exit after a drain cut short by SHUTDOWN_TIMEOUT: %v, want status 0", p.err)
	}
	t.Logf("exited %v after SIGTERM with a stuck client", time.Since(sigAt).Round(time.Millisecond))
}

// ---- pool exhaustion and slow clients ----

// TestPoolExhaustion runs 50 concurrent requests over a pool of 2 connections: they queue
// and succeed, or answer 503 after the query timeout; none hangs. With the pool held
// empty, every request answers 503 in bounded time, and the service serves again as soon
// as connections return.
func TestPoolExhaustion(t *testing.T) {
	t.Parallel()
	const queryTimeout = time.Second
	env := newTestEnv(t, func(c *Config) { c.DBMaxConns = 2; c.QueryTimeout = queryTimeout })
	relCheckPoolReleased(t, env.st)
	hs := httptest.NewServer(env.srv)
	t.Cleanup(hs.Close)
	token, _ := env.registerUser("pool@example.com")
	client := relClient(t, 30*time.Second)

	burst := func() []relResult {
		out := make([]relResult, 50)
		var wg sync.WaitGroup
		for i := range out {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%2 == 0 {
					out[i] = relCall(client, "POST", hs.URL+"/api/v1/tasks", fmt.Sprintf(`{"title":"burst %d"}`, i), token, nil)
				} else {
					out[i] = relCall(client, "GET", hs.URL+"/api/v1/tasks?limit=10", "", token, nil)
				}
			}()
		}
		wg.Wait()
		return out
	}
	// A request borrows a connection for authentication and again for its work, each
	// wait bounded by the query timeout.
	bound := 2*queryTimeout + 3*time.Second

	ok, unavailable := 0, 0
	for _, r := range burst() {
		switch {
		case r.err == nil && r.status < 300:
			ok++
		case r.err == nil && r.status == 503 && r.code == "service_unavailable":
			unavailable++
		default:
			t.Errorf("burst over a free pool: %v", r)
		}
		if r.dur > 10*time.Second {
			t.Errorf("a request took %v", r.dur)
		}
	}
	t.Logf("50 concurrent requests over 2 connections: %d succeeded, %d answered 503", ok, unavailable)
	if ok == 0 {
		t.Error("no request succeeded")
	}
	if n := env.st.pool.Stat().TotalConns(); n > 2 {
		t.Errorf("the pool opened %d connections, want at most 2", n)
	}

	// Hold every connection, as long statements would.
	ctx := context.Background()
	c1, err := env.st.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := env.st.pool.Acquire(ctx)
	if err != nil {
		c1.Release()
		t.Fatal(err)
	}
	start := time.Now()
	held := burst()
	c1.Release()
	c2.Release()
	for _, r := range held {
		if r.err != nil || r.status != 503 || r.code != "service_unavailable" {
			t.Errorf("with the pool held: %v, want 503 service_unavailable", r)
		} else if r.dur > bound {
			t.Errorf("with the pool held, a 503 took %v, want within %v", r.dur, bound)
		}
	}
	t.Logf("with the pool held, 50 requests answered in %v", time.Since(start).Round(time.Millisecond))

	if r := relCall(client, "GET", hs.URL+"/api/v1/tasks", "", token, nil); r.status != 200 {
		t.Errorf("after the pool was released: %v", r)
	}
	if n := env.st.pool.Stat().AcquiredConns(); n != 0 {
		t.Errorf("%d connections still borrowed after every request ended", n)
	}
}

// TestSlowClients opens connections that send their headers, or their body, one byte at a
// time: the server's read timeouts cut each of them, and meanwhile a normal client is
// served as usual.
func TestSlowClients(t *testing.T) {
	t.Parallel()
	base, stop, done, _ := startService(t, map[string]string{
		"READ_HEADER_TIMEOUT": "1s", "READ_TIMEOUT": "2s", "REGISTER_RATE_LIMIT": "1000",
	})
	relStopRun(t, stop, done)
	addr := strings.TrimPrefix(base, "http://")
	client := relClient(t, 10*time.Second)
	token, _ := relRegister(t, client, base, "slow@example.com")

	type cut struct {
		kind  string
		after time.Duration
		sent  int
	}
	results := make(chan cut, 40)
	drip := func(kind, head, body string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			results <- cut{kind: kind, after: -1}
			return
		}
		defer c.Close()
		start := time.Now()
		closed := make(chan struct{})
		go func() {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			io.Copy(io.Discard, c)
			close(closed)
		}()
		if _, err := io.WriteString(c, head); err != nil {
			results <- cut{kind: kind, after: time.Since(start)}
			return
		}
		sent := 0
		for i := 0; i < len(body); i++ {
			select {
			case <-closed:
				results <- cut{kind, time.Since(start), sent}
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := c.Write([]byte{body[i]}); err != nil {
				break
			}
			sent++
		}
		<-closed
		results <- cut{kind, time.Since(start), sent}
	}
	// 15 s of dripping each, far beyond the timeouts.
	slowHeader := "GET /api/v1/tasks HTTP/1.1\r\nHost: todo\r\nX-Slow: " + strings.Repeat("a", 150) + "\r\n\r\n"
	slowBody := `{"email":"slow@example.com","password":"` + strings.Repeat("p", 150) + `"}`
	for range 10 {
		go drip("header", "", slowHeader)
		go drip("body", fmt.Sprintf("POST /api/v1/auth/login HTTP/1.1\r\nHost: todo\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			len(slowBody)), slowBody)
	}

	time.Sleep(300 * time.Millisecond)
	for i := range 5 {
		for _, path := range []string{"/healthz", "/api/v1/tasks"} {
			if r := relCall(client, "GET", base+path, "", token, nil); r.err != nil || r.status != 200 || r.dur > 5*time.Second {
				t.Errorf("normal request %d to %s among slow clients: %v", i, path, r)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}

	var slowest time.Duration
	for range 20 {
		c := <-results
		if c.after < 0 {
			continue
		}
		slowest = max(slowest, c.after)
		if c.after > 8*time.Second {
			t.Errorf("a slow %s client held its connection for %v (%d bytes dripped)", c.kind, c.after, c.sent)
		}
	}
	t.Logf("20 slow clients cut; the longest held on for %v", slowest.Round(time.Millisecond))
}

// ---- login flood ----

// relPeakRSS reads the process's peak resident memory (VmHWM) in bytes.
func relPeakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc status: %v", err)
	}
	m := regexp.MustCompile(`(?m)^VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// TestLoginFlood sends 200 concurrent logins, half with a wrong password, to the real
// binary hashing with the production Argon2id parameters (19 MiB each): the hashing
// semaphore keeps its peak memory growth far under the contract's 512 MiB, where
// unbounded hashing would need some 3.8 GiB.
func TestLoginFlood(t *testing.T) {
	t.Parallel()
	p := startBinary(t, map[string]string{"LOGIN_RATE_LIMIT": "100000", "REGISTER_RATE_LIMIT": "100000"})
	client := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	t.Cleanup(client.CloseIdleConnections)
	relRegister(t, client, p.base, "flood@example.com")
	// Warm up: one login has been hashed, the pool and the runtime have started.
	if r := relCall(client, "POST", p.base+"/api/v1/auth/login", `{"email":"flood@example.com","password":"correct horse battery"}`, "", nil); r.status != 200 {
		t.Fatalf("login: %v", r)
	}
	before := relPeakRSS(t, p.cmd.Process.Pid)

	start := time.Now()
	var wg sync.WaitGroup
	answers := make([]relResult, 200)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			password := "correct horse battery"
			if i%2 == 1 {
				password = "wrong horse battery"
			}
			answers[i] = relCall(client, "POST", p.base+"/api/v1/auth/login",
				`{"email":"flood@example.com","password":"`+password+`"}`, "", nil)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	after := relPeakRSS(t, p.cmd.Process.Pid)
	ok, shed := 0, 0
	for i, r := range answers {
		want := http.StatusOK
		if i%2 == 1 {
			want = http.StatusUnauthorized
		}
		switch {
		case r.err == nil && r.status == want:
			ok++
		case r.err == nil && r.status == 503 && r.code == "service_unavailable" && r.header.Get("Retry-After") != "":
			shed++ // queued too long for a hashing slot: a prompt 503 rather than no answer
		default:
			t.Errorf("login %d: %v, want %d (or 503 when the queue is too long)", i, r, want)
		}
	}
	t.Logf("%d logins answered 200/401, %d shed with 503", ok, shed)
	if ok == 0 {
		t.Error("no login was served")
	}
	growth := after - before
	t.Logf("200 concurrent logins in %v: peak RSS %d MiB before, %d MiB after, growth %d MiB",
		took.Round(time.Millisecond), before>>20, after>>20, growth>>20)
	if growth >= 512<<20 {
		t.Errorf("peak memory grew by %d MiB under a login flood, want well under 512 MiB", growth>>20)
	}
}

// TestLoginFloodShedsAfterHashWait holds every hashing slot: a login then waits a
// bounded time (half the write timeout here) and answers 503 service_unavailable, rather
// than queueing until its connection has timed out. Once a slot is free, logins succeed.
func TestLoginFloodShedsAfterHashWait(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.HashConcurrency = 1; c.WriteTimeout = 2 * time.Second })
	env.registerUser("shed@example.com")
	login := `{"email":"shed@example.com","password":"correct horse battery"}`
	env.srv.auth.hashSlots <- struct{}{}
	start := time.Now()
	answered := make(chan response, 1)
	go func() { answered <- env.do("POST", "/api/v1/auth/login", login, "") }()
	var r response
	select {
	case r = <-answered:
	case <-time.After(15 * time.Second):
		<-env.srv.auth.hashSlots // let the waiting login through, so that nothing is left behind
		<-answered
		t.Fatal("a login waited 15s for a hashing slot without an answer")
	}
	waited := time.Since(start)
	<-env.srv.auth.hashSlots
	checkEnvelope(t, r, 503, "service_unavailable")
	if r.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if waited < 500*time.Millisecond || waited > 10*time.Second {
		t.Errorf("shed after %v, want about 1s (half the write timeout)", waited)
	}
	env.do("POST", "/api/v1/auth/login", login, "").want(200, "")
}

// ---- hostile input ----

// TestHostileInput sends what a hostile or broken client might: invalid UTF-8, NUL
// characters, very long query strings, huge numbers in paths and deeply nested JSON.
// Each is a 4xx in the error envelope, never a 500.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("hostile@example.com")
	var task wireTask
	env.do("POST", "/api/v1/tasks", `{"title":"target"}`, token).want(201, "").json(&task)
	sub := strconv.FormatInt(user.ID, 10)
	one := "/api/v1/tasks/" + strconv.FormatInt(task.ID, 10)
	nested := func(depth int, leaf string) string {
		return strings.Repeat(`{"a":`, depth) + leaf + strings.Repeat("}", depth)
	}
	long := strings.Repeat("x", 10_000)

	env.runRequestCases(t, token, []requestCase{
		{"invalid UTF-8 in title", "POST", "/api/v1/tasks", "{\"title\":\"\xc3\x28\"}", nil, 400, "invalid_json"},
		{"invalid UTF-8 in register", "POST", "/api/v1/auth/register", "{\"email\":\"\xff@example.com\",\"password\":\"12345678\"}", nil, 400, "invalid_json"},
		{"invalid UTF-8 in login", "POST", "/api/v1/auth/login", "{\"email\":\"a@example.com\",\"password\":\"\xfe\xff\"}", nil, 400, "invalid_json"},
		{"invalid UTF-8 in login form", "POST", "/api/v1/auth/login", "username=\xff&password=x", header{"Content-Type": "application/x-www-form-urlencoded"}, 400, "invalid_json"},
		{"invalid UTF-8 in patch", "PATCH", one, "{\"description\":\"\xed\xa0\x80\"}", nil, 400, "invalid_json"},
		{"surrogate escape", "POST", "/api/v1/tasks", `{"title":"\ud800"}`, nil, 201, ""},
		{"NUL in title", "POST", "/api/v1/tasks", `{"title":"a\u0000b"}`, nil, 422, "validation_error"},
		{"NUL in description", "POST", "/api/v1/tasks", `{"title":"a","description":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in tags", "POST", "/api/v1/tasks", `{"title":"a","tags":["x\u0000"]}`, nil, 422, "validation_error"},
		{"NUL in priority", "POST", "/api/v1/tasks", `{"title":"a","priority":"high\u0000"}`, nil, 422, "validation_error"},
		{"NUL in due date", "POST", "/api/v1/tasks", `{"title":"a","due_date":"2030-01-01\u0000"}`, nil, 422, "validation_error"},
		{"NUL in put", "PUT", one, `{"title":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in section 6 put", "PUT", "/api/" + sub + "/tasks/" + strconv.FormatInt(task.ID, 10), `{"description":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in name", "PATCH", "/api/v1/auth/me", `{"name":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in register email", "POST", "/api/v1/auth/register", `{"email":"a\u0000@example.com","password":"12345678"}`, nil, 422, "validation_error"},
		{"NUL in register name", "POST", "/api/v1/auth/register", `{"email":"nul-name@example.com","password":"12345678","name":"a\u0000"}`, nil, 422, "validation_error"},
		{"NUL in login email", "POST", "/api/v1/auth/login", `{"email":"hostile@example.com\u0000","password":"correct horse battery"}`, nil, 401, "invalid_credentials"},
		{"NUL in login password", "POST", "/api/v1/auth/login", `{"email":"hostile@example.com","password":"\u0000"}`, nil, 401, "invalid_credentials"},
		{"NUL in login form", "POST", "/api/v1/auth/login", "username=hostile%40example.com%00&password=x", header{"Content-Type": "application/x-www-form-urlencoded"}, 401, "invalid_credentials"},
		{"NUL in refresh token", "POST", "/api/v1/auth/refresh", `{"refresh_token":"1.\u0000"}`, nil, 401, "invalid_token"},
		{"NUL in password change", "POST", "/api/v1/auth/password", `{"current_password":"\u0000","new_password":"\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000"}`, nil, 422, "validation_error"},
		{"NUL in q", "GET", "/api/v1/tasks?q=%00", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in q", "GET", "/api/v1/tasks?q=%A9", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in search", "GET", "/api/" + sub + "/tasks?search=%FF%FE", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in tag", "GET", "/api/v1/tasks?tag=%C3%28", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in bulk filter", "PATCH", "/api/v1/tasks?q=%FF", `{"completed":true}`, nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in login form", "POST", "/api/v1/auth/login", "username=%FF%40example.com&password=x", header{"Content-Type": "application/x-www-form-urlencoded"}, 401, "invalid_credentials"},
		{"NUL in search", "GET", "/api/" + sub + "/tasks?search=a%00", "", nil, 400, "invalid_query"},
		{"NUL in tag", "GET", "/api/v1/tasks?tag=%00", "", nil, 400, "invalid_query"},
		{"NUL in sort", "GET", "/api/v1/tasks?sort=title%00", "", nil, 400, "invalid_query"},
		{"NUL in cursor", "GET", "/api/v1/tasks?cursor=%00.%00", "", nil, 400, "invalid_query"},
		{"NUL in bulk delete filter", "DELETE", "/api/v1/tasks?completed=true&q=%00", "", nil, 400, "invalid_query"},
		{"long q", "GET", "/api/v1/tasks?q=" + long, "", nil, 400, "invalid_query"},
		{"long tag", "GET", "/api/v1/tasks?tag=" + long, "", nil, 400, "invalid_query"},
		{"long cursor", "GET", "/api/v1/tasks?cursor=" + long, "", nil, 400, "invalid_query"},
		{"long limit", "GET", "/api/v1/tasks?limit=" + strings.Repeat("9", 10_000), "", nil, 400, "invalid_query"},
		{"long offset", "GET", "/api/" + sub + "/tasks?offset=" + strings.Repeat("9", 10_000), "", nil, 400, "invalid_query"},
		{"long due date", "GET", "/api/v1/tasks?due_before=" + long, "", nil, 400, "invalid_query"},
		{"many parameters", "GET", "/api/v1/tasks?" + strings.Repeat("x=1&", 2_500), "", nil, 200, ""},
		{"huge id", "GET", "/api/v1/tasks/99999999999999999999", "", nil, 404, "not_found"},
		{"huge id patch", "PATCH", "/api/v1/tasks/99999999999999999999", `{"title":"x"}`, nil, 404, "not_found"},
		{"huge id complete", "PATCH", "/api/v1/tasks/99999999999999999999/complete", "", nil, 404, "not_found"},
		{"huge id delete", "DELETE", "/api/v1/tasks/99999999999999999999", "", nil, 404, "not_found"},
		{"max id", "GET", "/api/v1/tasks/9223372036854775807", "", nil, 404, "not_found"},
		{"negative id", "GET", "/api/v1/tasks/-1", "", nil, 404, "not_found"},
		{"zero id", "GET", "/api/v1/tasks/0", "", nil, 404, "not_found"},
		{"exponent id", "GET", "/api/v1/tasks/1e3", "", nil, 404, "not_found"},
		{"long id", "GET", "/api/v1/tasks/" + long, "", nil, 404, "not_found"},
		{"huge id section 6", "GET", "/api/" + sub + "/tasks/99999999999999999999", "", nil, 404, "not_found"},
		{"huge user id section 6", "GET", "/api/99999999999999999999/tasks", "", nil, 403, "forbidden"},
		{"nested JSON body", "POST", "/api/v1/tasks", nested(20_000, "1"), nil, 400, "invalid_json"},
		{"nested JSON array", "POST", "/api/v1/tasks", strings.Repeat("[", 50_000) + strings.Repeat("]", 50_000), nil, 400, "invalid_json"},
		{"nested JSON field", "POST", "/api/v1/tasks", `{"title":` + nested(5_000, `"x"`) + `}`, nil, 422, "validation_error"},
		{"nested JSON tags", "POST", "/api/v1/tasks", `{"title":"a","tags":[` + strings.Repeat("[", 5_000) + strings.Repeat("]", 5_000) + `]}`, nil, 422, "validation_error"},
		{"nested JSON register", "POST", "/api/v1/auth/register", nested(20_000, "1"), nil, 400, "invalid_json"},
		{"huge number", "POST", "/api/v1/tasks", `{"title":"a","completed":1e999999}`, nil, 422, "validation_error"},
		{"huge number priority", "PATCH", one, `{"priority":123456789012345678901234567890}`, nil, 422, "validation_error"},
		{"far due date", "POST", "/api/v1/tasks", `{"title":"a","due_date":"9999-12-31T23:59:59-23:59"}`, nil, 422, "validation_error"},
		{"far due filter", "GET", "/api/v1/tasks?due_before=9999-12-31T23:59:59-23:59", "", nil, 400, "invalid_query"},
		{"early due date", "POST", "/api/v1/tasks", `{"title":"a","due_date":"0001-01-01T00:00:00+23:59"}`, nil, 422, "validation_error"},
		{"duplicate keys", "POST", "/api/v1/tasks", `{"title":"a","title":""}`, nil, 422, "validation_error"},
		{"long header token", "GET", "/api/v1/tasks", "", header{"Authorization": "Bearer " + long}, 401, "invalid_token"},
		{"NUL-free garbage token", "GET", "/api/v1/tasks", "", header{"Authorization": "Bearer a.b.c"}, 401, "invalid_token"},
	})
	// A stored task stays listable whatever was sent: nothing hostile was stored in a
	// form the service cannot answer.
	env.do("GET", "/api/v1/tasks?limit=100", "", token).want(200, "")
	env.do("GET", "/api/"+sub+"/tasks", "", token).want(200, "")
}
