package main

// Reliability under overload: pool exhaustion, slow clients and a login flood. See
// specs/operations.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

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

// TestLoginFloodOnManyCores runs the real binary as a 16-core machine would (GOMAXPROCS=16;
// HASH_CONCURRENCY and GOMEMLIMIT left to their defaults) under 256 concurrent logins:
// its peak resident memory stays within 256 MiB, where one hash per core (19 MiB each)
// and a heap left to triple under GOGC=200 went past 600 MiB.
func TestLoginFloodOnManyCores(t *testing.T) {
	t.Parallel()
	p := startBinary(t, map[string]string{"LOGIN_RATE_LIMIT": "100000", "REGISTER_RATE_LIMIT": "100000",
		"GOMAXPROCS": "16", "WRITE_TIMEOUT": "120s"})
	if !strings.Contains(p.out.String(), `"gomaxprocs":16,"hash_concurrency":5,`) {
		t.Fatalf("start line does not show GOMAXPROCS 16 and 5 hashing slots:\n%s", p.out.String())
	}
	client := &http.Client{Timeout: 180 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	t.Cleanup(client.CloseIdleConnections)
	relRegister(t, client, p.base, "cores@example.com")
	var wg sync.WaitGroup
	answers := make([]relResult, 256)
	for i := range answers {
		wg.Go(func() {
			answers[i] = relCall(client, "POST", p.base+"/api/v1/auth/login",
				`{"email":"cores@example.com","password":"correct horse battery"}`, "", nil)
		})
	}
	wg.Wait()
	served := 0
	for i, r := range answers {
		switch {
		case r.err == nil && r.status == 200:
			served++
		case r.err == nil && r.status == 503 && r.code == "service_unavailable":
		default:
			t.Errorf("login %d: %v", i, r)
		}
	}
	peak := relPeakRSS(t, p.cmd.Process.Pid)
	t.Logf("256 concurrent logins, %d served: peak RSS %d MiB", served, peak>>20)
	if served == 0 {
		t.Error("no login was served")
	}
	if peak > 256<<20 {
		t.Errorf("peak resident memory %d MiB, want at most 256 MiB", peak>>20)
	}
}

func TestMemoryDefaults(t *testing.T) {
	for procs, want := range map[int]int{1: 2, 2: 2, 4: 4, 5: 5, 16: 5, 128: 5} {
		if got := defaultHashConcurrency(procs); got != want {
			t.Errorf("defaultHashConcurrency(%d) = %d, want %d", procs, got, want)
		}
	}
	for cgroup, want := range map[string]int64{"": 192 << 20, "max\n": 192 << 20, "536870912\n": 192 << 20,
		"134217728\n": 96 << 20} {
		if got := defaultMemoryLimit(cgroup); got != want {
			t.Errorf("defaultMemoryLimit(%q) = %d MiB, want %d MiB", cgroup, got>>20, want>>20)
		}
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
