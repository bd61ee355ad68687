package main

// Reliability: graceful shutdown of the real binary, and its bound. See
// specs/operations.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ---- graceful shutdown of the real binary ----

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
