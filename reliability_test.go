package main

// Reliability, what its tests share: no goroutines or pooled connections left behind,
// real HTTP to a running service, and the real binary. The tests themselves are in
// outage_test.go (a database restart, idempotent retries), shutdown_test.go,
// overload_test.go (pool exhaustion, slow clients, a login flood) and hostile_test.go.
// See specs/operations.

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
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
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

// ---- the real binary ----

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
