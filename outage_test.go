package main

// Reliability: the service through a database restart, and idempotent creation, which
// makes retried writes safe. See specs/operations.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

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
