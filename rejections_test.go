package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// refusedLine is a "token refused" log line.
type refusedLine struct {
	Msg        string `json:"msg"`
	Level      string `json:"level"`
	Reason     string `json:"reason"`
	Route      string `json:"route"`
	Kid        string `json:"kid"`
	Iss        string `json:"iss"`
	Aud        string `json:"aud"`
	Suppressed int    `json:"suppressed"`
}

func refusedLines(t testing.TB, logs string) []refusedLine {
	t.Helper()
	var out []refusedLine
	for line := range strings.Lines(logs) {
		var l refusedLine
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "token refused" {
			out = append(out, l)
		}
	}
	return out
}

// checkRefusal: a 401 whose detail says reason, the same sentence in WWW-Authenticate's
// error_description, and nothing of the token in the answer.
func checkRefusal(t *testing.T, r response, token, code, says string) errorBody {
	t.Helper()
	e := checkEnvelope(t, r, 401, code)
	if !strings.Contains(e.Detail, says) {
		t.Errorf("detail %q does not say %q", e.Detail, says)
	}
	want := `Bearer error="invalid_token", error_description="` + e.Detail + `"`
	if got := r.Header().Get("WWW-Authenticate"); got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}
	if token != "" {
		for _, part := range strings.Split(token, ".") {
			if len(part) > 8 && strings.Contains(r.Body.String()+r.Header().Get("WWW-Authenticate"), part) {
				t.Errorf("the answer holds part of the token: %s", r.Body.String())
			}
		}
	}
	return e
}

// TestLocalTokenRefusalsSayWhy: every way a local access token can be refused answers
// which check failed, and logs it once with what the token claimed.
func TestLocalTokenRefusalsSayWhy(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.srv.rejections.every = 0 // a line for every refusal: each case below checks its own
	_, u := env.registerUser("refused@example.com")
	good := func() jwt.MapClaims {
		now := time.Now()
		return jwt.MapClaims{"sub": strconv.FormatInt(u.ID, 10), "user_id": u.ID, "iss": env.cfg.JWTIssuer,
			"aud": env.cfg.JWTAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	with := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := good()
		edit(c)
		return c
	}
	secret := env.cfg.JWTSecret
	deleted, _ := env.registerUser("gone@example.com")
	env.do("DELETE", "/api/v1/auth/me", "", deleted).want(204, "")

	cases := []struct {
		name, token, code, says, reason string
	}{
		{"expired", signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		})), "token_expired", "expired", "expired"},
		{"not yet valid", signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) {
			c["nbf"] = time.Now().Add(time.Hour).Unix()
		})), "invalid_token", "not valid yet", "not_yet_valid"},
		{"bad signature", signToken(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), with(func(jwt.MapClaims) {})),
			"invalid_token", "signature is invalid", "signature"},
		{"algorithm", signToken(t, jwt.SigningMethodHS512, secret, with(func(jwt.MapClaims) {})),
			"invalid_token", "signing algorithm is not accepted", "algorithm"},
		{"issuer", signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["iss"] = "someone-else" })),
			"invalid_token", "issuer is not accepted; expected " + env.cfg.JWTIssuer, "issuer"},
		{"audience", signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["aud"] = "another-api" })),
			"invalid_token", "audience is not accepted; expected " + env.cfg.JWTAudience, "audience"},
		{"no exp", signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "exp") })),
			"invalid_token", "lacks the required claim exp", "missing_claim"},
		{"malformed", "not-a-jwt", "invalid_token", "malformed", "malformed"},
		{"time claim a string", signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["exp"] = "2000000000" })),
			"invalid_token", "malformed", "malformed"},
		{"claims disagree", signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["sub"] = "999" })),
			"invalid_token", "name no single user", "claims"},
		{"user gone", deleted, "invalid_token", "user no longer exists", "user_gone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(refusedLines(t, env.logs.String()))
			checkRefusal(t, env.do("GET", "/api/v1/tasks", "", tc.token), tc.token, tc.code, tc.says)
			lines := refusedLines(t, env.logs.String())[before:]
			if len(lines) != 1 || lines[0].Reason != tc.reason || lines[0].Route != "GET /api/v1/tasks" || lines[0].Level != "INFO" {
				t.Fatalf("log lines %+v, want one at INFO with reason %s on GET /api/v1/tasks", lines, tc.reason)
			}
		})
	}
	t.Run("the log names what the token claimed", func(t *testing.T) {
		tok := signToken(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["aud"] = []string{"a1", "a2"} }))
		before := len(refusedLines(t, env.logs.String()))
		env.do("GET", "/api/v1/tasks", "", tok).want(401, "invalid_token")
		l := refusedLines(t, env.logs.String())[before:]
		if len(l) != 1 || l[0].Iss != env.cfg.JWTIssuer || l[0].Aud != `["a1","a2"]` {
			t.Fatalf("log %+v", l)
		}
	})
	t.Run("refresh tokens", func(t *testing.T) {
		r := env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"1.`+strings.Repeat("a", 43)+`"}`, "")
		checkRefusal(t, r, "", "invalid_token", "refresh token is unknown, expired, revoked or already used")
	})
	t.Run("login stays generic", func(t *testing.T) {
		for _, body := range []string{`{"email":"refused@example.com","password":"wrong password"}`,
			`{"email":"nobody@example.com","password":"wrong password"}`} {
			e := env.do("POST", "/api/v1/auth/login", body, "").want(401, "invalid_credentials").envelope()
			if e.Detail != errBadCredentials.Detail {
				t.Errorf("login detail %q", e.Detail)
			}
		}
	})
	// No token, nor any part of one, is ever logged.
	for _, tc := range cases {
		for _, part := range strings.Split(tc.token, ".") {
			if len(part) > 8 && strings.Contains(env.logs.String(), part) {
				t.Errorf("%s: the log holds part of the token", tc.name)
			}
		}
	}
}

// TestRefusalLogIsRateLimited: a flood of refused tokens writes one line per reason per
// interval; the next line counts the refusals not written.
func TestRefusalLogIsRateLimited(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.srv.rejections.every = time.Hour
	for range 50 {
		env.do("GET", "/api/v1/tasks", "", "garbage").want(401, "invalid_token")
	}
	env.do("GET", "/api/v1/tasks", "", "a.b").want(401, "invalid_token") // same reason: malformed
	expired := signToken(t, jwt.SigningMethodHS256, env.cfg.JWTSecret, jwt.MapClaims{"sub": "1", "user_id": 1,
		"iss": env.cfg.JWTIssuer, "aud": env.cfg.JWTAudience, "exp": time.Now().Add(-time.Hour).Unix()})
	env.do("GET", "/api/v1/tasks", "", expired).want(401, "token_expired") // another reason: its own line
	lines := refusedLines(t, env.logs.String())
	if len(lines) != 2 || lines[0].Reason != "malformed" || lines[1].Reason != "expired" {
		t.Fatalf("lines %+v, want one malformed and one expired", lines)
	}
	env.srv.rejections.every = 0
	env.do("GET", "/api/v1/tasks", "", "garbage").want(401, "invalid_token")
	lines = refusedLines(t, env.logs.String())
	if last := lines[len(lines)-1]; last.Reason != "malformed" || last.Suppressed != 50 {
		t.Fatalf("the line after the flood: %+v, want 50 suppressed", last)
	}
}

// TestBetterAuthRefusalsSayWhy: tokens of a real Better Auth server whose jwt() plugin has
// its own issuer and audience, against a service set up with BETTER_AUTH_URL alone (the
// misconfiguration a frontend team meets first): the 401 says the issuer is not the
// expected one and names it; with the issuer set, the audience; with both, 200. An
// unknown key id and an expired token say so too.
func TestBetterAuthRefusalsSayWhy(t *testing.T) {
	t.Parallel()
	ba := startBetterAuth(t, baServerOptions{issuer: "todo-app", audience: "todo-app-api", expiration: "4s"})
	jwks := ba.URL + "/api/auth/jwks"
	plain := newTestEnv(t, baEnvOption(ba.URL, jwks))
	issuerOnly := newTestEnv(t, baEnvOption(ba.URL, jwks), func(c *Config) { c.BetterAuthIssuer = "todo-app" })
	both := newTestEnv(t, baEnvOption(ba.URL, jwks), func(c *Config) {
		c.BetterAuthIssuer, c.BetterAuthAudience = "todo-app", "todo-app-api"
		c.JWTLeeway = 0 // so that the 4 s token expires in 4 s
	})
	// The token lives 4 s from here: the services are ready before it is made.
	user := ba.signUp(t, "mismatch@example.com", "Mis Match")

	checkRefusal(t, plain.do("GET", "/api/v1/tasks", "", user.Token), user.Token, "invalid_token",
		"issuer is not accepted; expected "+ba.URL)
	l := refusedLines(t, plain.logs.String())
	if len(l) != 1 || l[0].Reason != "issuer" || l[0].Iss != "todo-app" || l[0].Aud != "todo-app-api" || l[0].Kid == "" {
		t.Fatalf("log %+v, want the issuer refusal with the token's kid, iss and aud", l)
	}
	checkRefusal(t, issuerOnly.do("GET", "/api/v1/tasks", "", user.Token), user.Token, "invalid_token",
		"audience is not accepted; expected "+ba.URL)
	both.do("GET", "/api/v1/tasks", "", user.Token).want(200, "")

	otherKey := newBAKey(t, "EdDSA")
	claims := baPayloadClaims(t, user.Token)
	checkRefusal(t, both.do("GET", "/api/v1/tasks", "", otherKey.sign(t, claims)), "", "invalid_token",
		"key id (kid) is not in the key set")

	baEventually(t, "the 4 s token expires", func() bool {
		return both.do("GET", "/api/v1/tasks", "", user.Token).Code == 401
	})
	checkRefusal(t, both.do("GET", "/api/v1/tasks", "", user.Token), user.Token, "token_expired", "expired")
}

// baPayloadClaims are a token's claims, to sign again with another key.
func baPayloadClaims(t *testing.T, token string) jwt.MapClaims {
	c := jwt.MapClaims{}
	for k, v := range baPayload(t, token) {
		c[k] = v
	}
	return c
}

// TestStartLineStatesTheBetterAuthSetup: the start-up line names the key set, the
// issuer and audience the service expects (or that they are not checked), the algorithms
// and whether HS256 is accepted.
func TestStartLineStatesTheBetterAuthSetup(t *testing.T) {
	t.Parallel()
	line := func(cfg Config) map[string]any {
		var buf bytes.Buffer
		logBetterAuthSetup(slog.New(slog.NewJSONHandler(&buf, nil)), cfg)
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("%q: %v", buf.String(), err)
		}
		return m
	}
	m := line(Config{BetterAuthURL: "https://auth.example.com", BetterAuthJWKSURL: "https://auth.example.com/api/auth/jwks",
		BetterAuthAudience: "todo-api"})
	if m["jwks_url"] != "https://auth.example.com/api/auth/jwks" || m["issuer"] != "https://auth.example.com" ||
		m["audience"] != "todo-api" || m["algorithms"] != "EdDSA,ES256,RS256,PS256" || m["hs256_accepted"] != false {
		t.Errorf("JWKS setup line %v", m)
	}
	m = line(Config{BetterAuthSecret: []byte(strings.Repeat("s", 32))})
	if m["hs256_accepted"] != true || m["hs256_issuer"] != "not checked" || m["hs256_audience"] != "not checked" {
		t.Errorf("secret setup line %v", m)
	}
	for k := range m {
		if strings.Contains(strings.ToLower(k), "secret") {
			t.Errorf("the line names %s", k)
		}
	}
	if m := line(Config{}); !strings.Contains(m["msg"].(string), "off") {
		t.Errorf("no Better Auth: %v", m)
	}
}
