package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ---- a real Better Auth server (testdata/betterauth) ----

// baServer is one running Better Auth instance of the Node fixture, with its own database.
type baServer struct {
	URL    string
	stderr *syncBuffer
}

type baServerOptions struct {
	alg        string // JWT_ALG; "" is the fixture's default, EdDSA
	expiration string // JWT_EXPIRATION
	issuer     string // JWT_ISSUER
	audience   string // JWT_AUDIENCE
}

// startBetterAuth runs the fixture on a fresh database and waits for it to be ready.
// Node is required: without it the test fails, since the integration is the point.
func startBetterAuth(t *testing.T, o baServerOptions) *baServer {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js >= 20) is required for the Better Auth integration tests: %v", err)
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "betterauth"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "better-auth")); err != nil {
		t.Fatalf("the Better Auth fixture is not installed; run `npm ci` in testdata/betterauth (make test does): %v", err)
	}
	db := randomName("betterauth_")
	adminExec(t, "CREATE DATABASE "+db)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept Better Auth database %s of the failed test", db)
			return
		}
		adminExec(t, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	})
	dbURL := withDatabase(t, testDatabaseURL(t), db)
	// The port is free when chosen but may be taken before Node binds it; then retry.
	for attempt := 1; ; attempt++ {
		s, err := startBetterAuthOnce(t, node, dir, dbURL, o)
		if err == nil {
			return s
		}
		if attempt == 3 || !strings.Contains(err.Error(), "EADDRINUSE") {
			t.Fatal(err)
		}
	}
}

func startBetterAuthOnce(t *testing.T, node, dir, dbURL string, o baServerOptions) (*baServer, error) {
	t.Helper()
	port := baFreePort(t)
	url := "http://127.0.0.1:" + port
	cmd := exec.Command(node, "server.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"PORT="+port,
		"BETTER_AUTH_URL="+url,
		"BETTER_AUTH_SECRET="+randomName("fixture-secret-0123456789abcdef-"),
		"DATABASE_URL="+dbURL,
		"JWT_ALG="+o.alg,
		"JWT_EXPIRATION="+o.expiration,
		"JWT_ISSUER="+o.issuer,
		"JWT_AUDIENCE="+o.audience,
	)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start Better Auth fixture: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.After(90 * time.Second)
	for {
		if line, _, _ := strings.Cut(stdout.String(), "\n"); strings.HasPrefix(line, "READY ") {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("Better Auth %s stderr:\n%s", url, stderr.String())
				}
			})
			return &baServer{URL: url, stderr: stderr}, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("Better Auth fixture exited (%v):\n%s", err, stderr.String())
		case <-deadline:
			stop()
			return nil, fmt.Errorf("Better Auth fixture not ready after 90s:\n%s", stderr.String())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func baFreePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

var baClient = &http.Client{Timeout: 30 * time.Second}

// baUser is a user signed up through Better Auth, with the JWT it issued them.
type baUser struct {
	ID, Email, Token string
}

// signUp creates a user through Better Auth's own API, then fetches the user's JWT with
// the session cookie, the way a frontend's authClient.token() does.
func (s *baServer) signUp(t *testing.T, email, name string) baUser {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"email": email, "password": "password123", "name": name})
	req, _ := http.NewRequest("POST", s.URL+"/api/auth/sign-up/email", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", s.URL)
	res, err := baClient.Do(req)
	if err != nil {
		t.Fatalf("sign up %s: %v", email, err)
	}
	var up struct {
		User struct{ ID, Email string }
	}
	baReadJSON(t, res, &up)
	if up.User.ID == "" {
		t.Fatalf("sign up %s: no user id", email)
	}
	req, _ = http.NewRequest("GET", s.URL+"/api/auth/token", nil)
	for _, c := range res.Cookies() {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	res, err = baClient.Do(req)
	if err != nil {
		t.Fatalf("token for %s: %v", email, err)
	}
	var tok struct{ Token string }
	baReadJSON(t, res, &tok)
	if strings.Count(tok.Token, ".") != 2 {
		t.Fatalf("token for %s is not a JWT: %q", email, tok.Token)
	}
	return baUser{ID: up.User.ID, Email: up.User.Email, Token: tok.Token}
}

func baReadJSON(t *testing.T, res *http.Response, v any) {
	t.Helper()
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %s", res.Request.Method, res.Request.URL, res.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s %s: decode %q: %v", res.Request.Method, res.Request.URL, b, err)
	}
}

// baPayload decodes a JWT's claims without verifying them.
func baPayload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// baTamper re-encodes token's claims after edit, keeping the original signature.
func baTamper(t *testing.T, token string, edit func(map[string]any)) string {
	t.Helper()
	c := baPayload(t, token)
	edit(c)
	b, _ := json.Marshal(c)
	parts := strings.Split(token, ".")
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
}

// baEnvOption points the service at a Better Auth instance's key set. BETTER_AUTH_URL is
// also the issuer and audience the service expects, as Better Auth defaults to it.
func baEnvOption(baseURL, jwksURL string) envOption {
	return func(c *Config) {
		c.BetterAuthURL = baseURL
		c.BetterAuthJWKSURL = jwksURL
		c.JWKSRefreshEvery = time.Second
	}
}

// baAs is env bound to t, so that a subtest's failures end the subtest, not its parent.
func baAs(env *testEnv, t testing.TB) *testEnv {
	e := *env
	e.t = t
	return &e
}
