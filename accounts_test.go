package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const testPassword = "correct horse battery"

func TestRegister(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	r := env.do("POST", "/api/v1/auth/register", `{"email":"  Ada@Example.COM ","password":"`+testPassword+`","name":"  Ada Lovelace "}`, "").
		want(http.StatusCreated, "")
	if r.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.Header().Get("Cache-Control"))
	}
	var tr tokenResponse
	r.json(&tr)
	if tr.AccessToken == "" || tr.RefreshToken == "" || tr.TokenType != "bearer" || tr.ExpiresIn != 900 {
		t.Errorf("token response %+v", tr)
	}
	if tr.User.ID <= 0 || *tr.User.Email != "ada@example.com" || *tr.User.Name != "Ada Lovelace" || tr.User.CreatedAt.IsZero() {
		t.Errorf("user %+v", tr.User)
	}
	var raw map[string]any
	r.json(&raw)
	user := raw["user"].(map[string]any)
	if _, ok := user["password_hash"]; ok || len(user) != 6 || user["timezone"] != "UTC" || user["email_verified"] != false {
		t.Errorf("user shape %v, want exactly id, email, name, created_at, timezone (UTC), email_verified (false)", user)
	}
	env.do("GET", "/api/v1/auth/me", "", tr.AccessToken).want(200, "")

	t.Run("duplicate email differing in case", func(t *testing.T) {
		t.Parallel()
		env.do("POST", "/api/v1/auth/register", `{"email":"ADA@example.com","password":"another password"}`, "").
			want(http.StatusConflict, "email_taken")
	})
	t.Run("no name", func(t *testing.T) {
		t.Parallel()
		var tr tokenResponse
		env.do("POST", "/api/v1/auth/register", `{"email":"noname@example.com","password":"`+testPassword+`"}`, "").
			want(201, "").json(&tr)
		if tr.User.Name != nil {
			t.Errorf("name %v, want null", *tr.User.Name)
		}
	})
}

func TestRegisterValidation(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	tests := []struct {
		name, body string
		fields     []string
	}{
		{"every field bad", `{"email":"not-an-email","password":"short","name":"` + strings.Repeat("n", 101) + `"}`,
			[]string{"email", "password", "name"}},
		{"missing all", `{}`, []string{"email", "password"}},
		{"wrong types", `{"email":42,"password":true,"name":7}`, []string{"email", "password", "name"}},
		{"two at signs", `{"email":"a@b@c.com","password":"` + testPassword + `"}`, []string{"email"}},
		{"no dot in domain", `{"email":"a@localhost","password":"` + testPassword + `"}`, []string{"email"}},
		{"space inside", `{"email":"a b@c.com","password":"` + testPassword + `"}`, []string{"email"}},
		{"email too long", `{"email":"` + strings.Repeat("a", 250) + `@b.com","password":"` + testPassword + `"}`, []string{"email"}},
		{"password too long", `{"email":"a@b.com","password":"` + strings.Repeat("p", 129) + `"}`, []string{"password"}},
		{"password of 7 multi-byte characters", `{"email":"a@b.com","password":"ééééééé"}`, []string{"password"}},
		{"name with NUL", `{"email":"a@b.com","password":"` + testPassword + `","name":"a\u0000b"}`, []string{"name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := env.do("POST", "/api/v1/auth/register", tt.body, "").want(422, "validation_error").envelope()
			var got []string
			for _, f := range e.Errors {
				got = append(got, f.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("fields %v, want %v (%+v)", got, tt.fields, e.Errors)
			}
		})
	}
	t.Run("limits are inclusive", func(t *testing.T) {
		t.Parallel()
		env.do("POST", "/api/v1/auth/register", `{"email":"limits@example.com","password":"`+strings.Repeat("é", 128)+
			`","name":"`+strings.Repeat("ñ", 100)+`"}`, "").want(201, "")
		env.do("POST", "/api/v1/auth/register", `{"email":"eight@example.com","password":"12345678"}`, "").want(201, "")
	})
}

func TestLogin(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	_, user := env.registerUser("login@example.com")

	var tr tokenResponse
	r := env.do("POST", "/api/v1/auth/login", `{"email":" LOGIN@example.com","password":"`+testPassword+`"}`, "").want(200, "")
	r.json(&tr)
	if tr.User.ID != user.ID || tr.AccessToken == "" || r.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("login answered %+v", tr)
	}
	env.do("GET", "/api/v1/auth/me", "", tr.AccessToken).want(200, "")

	t.Run("OAuth2 password form", func(t *testing.T) {
		t.Parallel()
		var tr tokenResponse
		env.do("POST", "/api/v1/auth/login", "grant_type=password&username=login%40example.com&password="+strings.ReplaceAll(testPassword, " ", "+"), "",
			header{"Content-Type": "application/x-www-form-urlencoded"}).want(200, "").json(&tr)
		if tr.User.ID != user.ID || tr.TokenType != "bearer" {
			t.Errorf("form login answered %+v", tr)
		}
		e := env.do("POST", "/api/v1/auth/login", "grant_type=password", "",
			header{"Content-Type": "application/x-www-form-urlencoded"}).want(422, "validation_error").envelope()
		if len(e.Errors) != 2 {
			t.Errorf("missing form fields: %+v", e.Errors)
		}
	})
	t.Run("wrong password and unknown email answer alike", func(t *testing.T) {
		t.Parallel()
		wrong := env.do("POST", "/api/v1/auth/login", `{"email":"login@example.com","password":"not the password"}`, "").
			want(401, "invalid_credentials").envelope()
		unknown := env.do("POST", "/api/v1/auth/login", `{"email":"nobody@example.com","password":"not the password"}`, "").
			want(401, "invalid_credentials").envelope()
		if wrong.Detail != unknown.Detail || wrong.ErrorCode != unknown.ErrorCode || len(wrong.Errors) != len(unknown.Errors) {
			t.Errorf("answers differ: %+v vs %+v", wrong, unknown)
		}
	})
	t.Run("missing fields", func(t *testing.T) {
		t.Parallel()
		e := env.do("POST", "/api/v1/auth/login", `{}`, "").want(422, "validation_error").envelope()
		if len(e.Errors) != 2 {
			t.Errorf("errors %+v", e.Errors)
		}
	})
}

func TestRefreshRotationAndReuse(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.registerUser("rotate@example.com")
	var login tokenResponse
	env.do("POST", "/api/v1/auth/login", `{"email":"rotate@example.com","password":"`+testPassword+`"}`, "").want(200, "").json(&login)

	refresh := func(tok string) response {
		return env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+tok+`"}`, "")
	}
	var r1 tokenResponse
	res := refresh(login.RefreshToken).want(200, "")
	res.json(&r1)
	if r1.RefreshToken == login.RefreshToken || r1.AccessToken == "" || r1.User.ID != login.User.ID ||
		res.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("refresh answered %+v", r1)
	}
	env.do("GET", "/api/v1/auth/me", "", r1.AccessToken).want(200, "")
	var r2 tokenResponse
	refresh(r1.RefreshToken).want(200, "").json(&r2)

	// The first token was rotated: using it again is reuse, and revokes the whole login.
	refresh(login.RefreshToken).want(401, "invalid_token")
	refresh(r2.RefreshToken).want(401, "invalid_token")

	for _, bad := range []string{"", "garbage", "1.short", "0." + strings.Repeat("a", 43), strconv.Itoa(int(login.User.ID)) + "." + strings.Repeat("a", 43)} {
		if bad == "" {
			env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":""}`, "").want(422, "validation_error")
			continue
		}
		refresh(bad).want(401, "invalid_token")
	}

	t.Run("another login is untouched by the reuse", func(t *testing.T) {
		var other tokenResponse
		env.do("POST", "/api/v1/auth/login", `{"email":"rotate@example.com","password":"`+testPassword+`"}`, "").want(200, "").json(&other)
		refresh(other.RefreshToken).want(200, "")
	})
	t.Run("expired refresh token", func(t *testing.T) {
		var other tokenResponse
		env.do("POST", "/api/v1/auth/login", `{"email":"rotate@example.com","password":"`+testPassword+`"}`, "").want(200, "").json(&other)
		_, hash, _ := parseRefreshToken(other.RefreshToken)
		if _, err := env.st.pool.Exec(context.Background(), `UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1`, hash); err != nil {
			t.Fatal(err)
		}
		refresh(other.RefreshToken).want(401, "invalid_token")
	})
}

func TestLogout(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	var tr tokenResponse
	env.do("POST", "/api/v1/auth/register", `{"email":"bye@example.com","password":"`+testPassword+`"}`, "").want(201, "").json(&tr)
	r := env.do("POST", "/api/v1/auth/logout", `{"refresh_token":"`+tr.RefreshToken+`"}`, "")
	if r.Code != 204 || r.Body.Len() != 0 {
		t.Fatalf("logout = %d %q", r.Code, r.Body.String())
	}
	env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+tr.RefreshToken+`"}`, "").want(401, "invalid_token")
	env.do("POST", "/api/v1/auth/logout", `{"refresh_token":"`+tr.RefreshToken+`"}`, "").want(401, "invalid_token")
}

func TestProfile(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("me@example.com")
	var u userJSON
	r := env.do("GET", "/api/v1/auth/me", "", token).want(200, "")
	r.json(&u)
	if u.ID != user.ID || *u.Email != "me@example.com" || r.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("me = %+v", u)
	}
	name := func(body string) *string {
		var u userJSON
		env.do("PATCH", "/api/v1/auth/me", body, token).want(200, "").json(&u)
		return u.Name
	}
	if n := name(`{"name":"  Grace "}`); n == nil || *n != "Grace" {
		t.Errorf("set name: %v", n)
	}
	if n := name(`{}`); n == nil || *n != "Grace" {
		t.Errorf("absent name changed it: %v", n)
	}
	if n := name(`{"name":null}`); n != nil {
		t.Errorf("null did not clear: %v", *n)
	}
	name(`{"name":"Back"}`)
	if n := name(`{"name":""}`); n != nil {
		t.Errorf("empty did not clear: %v", *n)
	}
	env.do("PATCH", "/api/v1/auth/me", `{"name":"`+strings.Repeat("x", 101)+`"}`, token).want(422, "validation_error")
	env.do("PATCH", "/api/v1/auth/me", `{"name":5}`, token).want(422, "validation_error")
	env.do("GET", "/api/v1/auth/me", "", "").want(401, "not_authenticated")
}

func TestPasswordChange(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	var first tokenResponse
	env.do("POST", "/api/v1/auth/register", `{"email":"pw@example.com","password":"`+testPassword+`"}`, "").want(201, "").json(&first)
	var second tokenResponse
	env.do("POST", "/api/v1/auth/login", `{"email":"pw@example.com","password":"`+testPassword+`"}`, "").want(200, "").json(&second)

	e := env.do("POST", "/api/v1/auth/password", `{"current_password":"wrong password","new_password":"x"}`, first.AccessToken).
		want(422, "validation_error").envelope()
	if len(e.Errors) != 1 || e.Errors[0].Field != "new_password" {
		t.Errorf("bad new password: %+v", e.Errors)
	}
	env.do("POST", "/api/v1/auth/password", `{"current_password":"wrong password","new_password":"a new password"}`, first.AccessToken).
		want(422, "validation_error")

	var changed tokenResponse
	r := env.do("POST", "/api/v1/auth/password", `{"current_password":"`+testPassword+`","new_password":"a new password"}`, first.AccessToken).
		want(200, "")
	r.json(&changed)
	if changed.AccessToken == "" || changed.RefreshToken == "" || r.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("password change answered %+v", changed)
	}
	for _, old := range []string{first.RefreshToken, second.RefreshToken} {
		env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+old+`"}`, "").want(401, "invalid_token")
	}
	env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+changed.RefreshToken+`"}`, "").want(200, "")
	// Access tokens already issued live out their short lifetime.
	env.do("GET", "/api/v1/auth/me", "", first.AccessToken).want(200, "")
	env.do("POST", "/api/v1/auth/login", `{"email":"pw@example.com","password":"`+testPassword+`"}`, "").want(401, "invalid_credentials")
	env.do("POST", "/api/v1/auth/login", `{"email":"pw@example.com","password":"a new password"}`, "").want(200, "")
}

func TestDeleteAccount(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	var tr tokenResponse
	env.do("POST", "/api/v1/auth/register", `{"email":"gone@example.com","password":"`+testPassword+`"}`, "").want(201, "").json(&tr)
	otherToken, _ := env.registerUser("stays@example.com")
	env.do("POST", "/api/v1/tasks", `{"title":"mine"}`, tr.AccessToken).want(201, "")
	env.do("POST", "/api/v1/tasks", `{"title":"theirs"}`, otherToken).want(201, "")

	r := env.do("DELETE", "/api/v1/auth/me", "", tr.AccessToken)
	if r.Code != 204 {
		t.Fatalf("delete = %d %s", r.Code, r.Body.String())
	}
	// Every route refuses the token: a statement that finds none of the user's rows runs
	// the user check before answering (a found row would have proved the user).
	uid := strconv.FormatInt(tr.User.ID, 10)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/v1/auth/me", ""}, {"PATCH", "/api/v1/auth/me", `{"name":"x"}`},
		{"POST", "/api/v1/auth/password", `{"current_password":"` + testPassword + `","new_password":"another one"}`},
		{"DELETE", "/api/v1/auth/me", ""},
		{"GET", "/api/v1/tasks", ""}, {"POST", "/api/v1/tasks", `{"title":"ghost"}`},
		{"GET", "/api/v1/tasks/1", ""}, {"PATCH", "/api/v1/tasks/1", `{"title":"x"}`}, {"DELETE", "/api/v1/tasks/1", ""},
		{"PATCH", "/api/v1/tasks/1/complete", ""}, {"GET", "/api/v1/tasks/stats", ""},
		{"DELETE", "/api/v1/tasks?completed=true", ""}, {"PATCH", "/api/v1/tasks", `{"completed":true}`},
		{"GET", "/api/" + uid + "/tasks", ""},
	} {
		r := env.do(c.method, c.path, c.body, tr.AccessToken)
		if r.Code != 401 || r.code() != "invalid_token" {
			t.Errorf("%s %s with a deleted user's token = %d %s", c.method, c.path, r.Code, r.Body.String())
		}
	}
	r = env.do("POST", "/api/v1/tasks", `{"title":"ghost"}`, tr.AccessToken, header{"Idempotency-Key": "k1"})
	if r.Code != 401 {
		t.Errorf("idempotent create with a deleted user's token = %d", r.Code)
	}
	for _, method := range []string{"PATCH", "DELETE"} { // conditional writes ask why they missed
		r := env.do(method, "/api/v1/tasks/1", `{"title":"x"}`, tr.AccessToken, header{"If-Match": `"1"`})
		if r.Code != 401 || r.code() != "invalid_token" {
			t.Errorf("%s with If-Match and a deleted user's token = %d %s", method, r.Code, r.Body.String())
		}
	}
	env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+tr.RefreshToken+`"}`, "").want(401, "invalid_token")
	env.do("POST", "/api/v1/auth/login", `{"email":"gone@example.com","password":"`+testPassword+`"}`, "").want(401, "invalid_credentials")
	var tasks, tokens int
	env.st.pool.QueryRow(context.Background(), `SELECT count(*) FROM tasks WHERE user_id = $1`, tr.User.ID).Scan(&tasks)
	env.st.pool.QueryRow(context.Background(), `SELECT count(*) FROM refresh_tokens WHERE user_id = $1`, tr.User.ID).Scan(&tokens)
	if tasks != 0 || tokens != 0 {
		t.Errorf("left behind: %d tasks, %d refresh tokens", tasks, tokens)
	}
	var page taskPage
	env.do("GET", "/api/v1/tasks", "", otherToken).want(200, "").json(&page)
	if page.Total != 1 {
		t.Errorf("other user's tasks: %d", page.Total)
	}
	// The email is free again.
	env.registerUser("gone@example.com")
}

// signToken signs claims as an attacker or a misconfigured issuer might.
func signToken(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAccessTokenVerification(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	_, user := env.registerUser("tokens@example.com")
	secret := env.cfg.JWTSecret
	// Tokens are signed when each subtest runs, not when the table is built: parallel
	// subtests may start long after, and the leeway cases are relative to now.
	valid := func() jwt.MapClaims {
		now := time.Now()
		return jwt.MapClaims{"sub": strconv.FormatInt(user.ID, 10), "user_id": user.ID, "email": "tokens@example.com",
			"iss": "todo-api", "aud": "todo-api", "iat": now.Unix(), "nbf": now.Unix(),
			"exp": now.Add(time.Minute).Unix(), "jti": "x"}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := valid()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	sign := func(m jwt.SigningMethod, key any, c func() jwt.MapClaims) func() string {
		return func() string { return signToken(t, m, key, c()) }
	}
	hs := func(k string, v func() any) func() string {
		return sign(jwt.SigningMethodHS256, secret, func() jwt.MapClaims {
			var val any
			if v != nil {
				val = v()
			}
			return with(k, val)
		})
	}
	at := func(d time.Duration) func() any { return func() any { return time.Now().Add(d).Unix() } }
	is := func(v any) func() any { return func() any { return v } }
	tests := []struct {
		name  string
		token func() string
		code  string
	}{
		{"valid", sign(jwt.SigningMethodHS256, secret, valid), ""},
		{"within leeway", hs("exp", at(-30*time.Second)), ""},
		{"expired", hs("exp", at(-2*time.Minute)), "token_expired"},
		{"not yet valid", hs("nbf", at(5*time.Minute)), "invalid_token"},
		{"wrong issuer", hs("iss", is("someone-else")), "invalid_token"},
		{"no issuer", hs("iss", nil), "invalid_token"},
		{"wrong audience", hs("aud", is("other-api")), "invalid_token"},
		{"no audience", hs("aud", nil), "invalid_token"},
		{"no expiry", hs("exp", nil), "invalid_token"},
		{"alg none", func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, valid()).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}, "invalid_token"},
		{"wrong key", sign(jwt.SigningMethodHS256, []byte(strings.Repeat("w", 40)), valid), "invalid_token"},
		{"other HMAC algorithm", sign(jwt.SigningMethodHS512, secret, valid), "invalid_token"},
		{"sub and user_id disagree", hs("user_id", is(user.ID+1)), "invalid_token"},
		{"unknown user", sign(jwt.SigningMethodHS256, secret, func() jwt.MapClaims {
			return jwt.MapClaims{"sub": "999999", "user_id": 999999, "iss": "todo-api", "aud": "todo-api",
				"exp": time.Now().Add(time.Minute).Unix()}
		}), "invalid_token"},
		// RFC 7519 NumericDate: a JSON number, fractions and exponents included; a string
		// holding a number, a boolean or null is malformed, never merely expired.
		{"exp a fraction", hs("exp", func() any { return float64(time.Now().Add(time.Minute).Unix()) + 0.5 }), ""},
		{"exp in exponent form", hs("exp", func() any { return json.Number("1.999999999e9") }), ""},
		{"exp a string", hs("exp", func() any { return strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10) }), "invalid_token"},
		{"exp a past string", hs("exp", is("1000000000")), "invalid_token"},
		{"exp null", hs("exp", is(json.RawMessage("null"))), "invalid_token"},
		{"exp a boolean", hs("exp", is(true)), "invalid_token"},
		{"exp an object", hs("exp", is(map[string]int{"t": 1})), "invalid_token"},
		{"nbf a string", hs("nbf", func() any { return strconv.FormatInt(time.Now().Unix(), 10) }), "invalid_token"},
		{"iat a string", hs("iat", func() any { return strconv.FormatInt(time.Now().Unix(), 10) }), "invalid_token"},
		{"iat an array", hs("iat", is([]int64{1})), "invalid_token"},
		{"malformed", func() string { return "not.a.jwt" }, "invalid_token"},
		{"garbage", func() string { return "garbage" }, "invalid_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := env.do("GET", "/api/v1/auth/me", "", tt.token())
			if tt.code == "" {
				r.want(200, "")
				return
			}
			checkEnvelope(t, r, 401, tt.code)
			if !strings.HasPrefix(r.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", r.Header().Get("WWW-Authenticate"))
			}
		})
	}
	t.Run("issued token carries every claim", func(t *testing.T) {
		t.Parallel()
		var tr tokenResponse
		env.do("POST", "/api/v1/auth/login", `{"email":"tokens@example.com","password":"`+testPassword+`"}`, "").want(200, "").json(&tr)
		claims := jwt.MapClaims{}
		tok, _, err := jwt.NewParser().ParseUnverified(tr.AccessToken, claims)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Header["alg"] != "HS256" {
			t.Errorf("alg %v", tok.Header["alg"])
		}
		for _, c := range []string{"sub", "user_id", "email", "iss", "aud", "iat", "nbf", "exp", "jti"} {
			if _, ok := claims[c]; !ok {
				t.Errorf("claim %s missing: %v", c, claims)
			}
		}
		if claims["sub"] != strconv.FormatInt(user.ID, 10) || claims["user_id"] != float64(user.ID) {
			t.Errorf("sub/user_id %v %v", claims["sub"], claims["user_id"])
		}
		exp, _ := claims.GetExpirationTime()
		iat, _ := claims.GetIssuedAt()
		if d := exp.Sub(iat.Time); d != 15*time.Minute {
			t.Errorf("lifetime %v, want 15m", d)
		}
	})
}

func TestJWTAlgorithmSelectable(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.JWTAlgorithm = "HS512" })
	token, _ := env.registerUser("hs512@example.com")
	tok, _, _ := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if tok.Header["alg"] != "HS512" {
		t.Fatalf("alg %v, want HS512", tok.Header["alg"])
	}
	env.do("GET", "/api/v1/auth/me", "", token).want(200, "")
}

func TestLoginRateLimits(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.LoginFailuresPerMinute = 3; c.RegistersPerMinute = 2 })
	env.registerUser("limited@example.com")
	bad := `{"email":"limited@example.com","password":"wrong password"}`
	for i := 0; i < 3; i++ {
		env.do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
	}
	r := env.do("POST", "/api/v1/auth/login", bad, "")
	checkEnvelope(t, r, 429, "rate_limited")
	if ra, err := strconv.Atoi(r.Header().Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After = %q", r.Header().Get("Retry-After"))
	}
	// The right password is refused too while the address is limited.
	env.do("POST", "/api/v1/auth/login", `{"email":"limited@example.com","password":"`+testPassword+`"}`, "").want(429, "rate_limited")

	t.Run("per email, across addresses", func(t *testing.T) {
		env := newTestEnv(t, func(c *Config) {
			c.LoginFailuresPerMinute = 3
			c.TrustedProxies = mustPrefixes("192.0.2.0/24")
		})
		env.registerUser("target@example.com")
		for i := 0; i < 3; i++ {
			env.do("POST", "/api/v1/auth/login", `{"email":"target@example.com","password":"wrong password"}`, "",
				header{"X-Forwarded-For": "198.51.100." + strconv.Itoa(i)}).want(401, "invalid_credentials")
		}
		env.do("POST", "/api/v1/auth/login", `{"email":"target@example.com","password":"wrong password"}`, "",
			header{"X-Forwarded-For": "198.51.100.99"}).want(429, "rate_limited")
		// Another email from a fresh address is not limited.
		env.do("POST", "/api/v1/auth/login", `{"email":"other@example.com","password":"wrong password"}`, "",
			header{"X-Forwarded-For": "198.51.100.100"}).want(401, "invalid_credentials")
	})
	t.Run("registrations per address", func(t *testing.T) {
		env := newTestEnv(t, func(c *Config) { c.RegistersPerMinute = 2 })
		env.registerUser("r1@example.com")
		env.registerUser("r2@example.com")
		env.do("POST", "/api/v1/auth/register", `{"email":"r3@example.com","password":"`+testPassword+`"}`, "").want(429, "rate_limited")
	})
}

func mustPrefixes(s string) []netip.Prefix {
	cfg, err := loadConfig(func(k string) string {
		return map[string]string{"DATABASE_URL": "postgres://x@y/z", "JWT_SECRET_KEY": strings.Repeat("k", 32), "TRUSTED_PROXIES": s}[k]
	})
	if err != nil {
		panic(err)
	}
	return cfg.TrustedProxies
}

func TestClientAddress(t *testing.T) {
	t.Parallel()
	rl := &rateLimits{trusted: mustPrefixes("10.0.0.0/8, 192.0.2.1")}
	tests := []struct{ remote, xff, want string }{
		{"203.0.113.5:1234", "1.2.3.4", "203.0.113.5"},         // untrusted peer: its header is ignored
		{"10.1.2.3:1234", "1.2.3.4", "1.2.3.4"},                // trusted proxy
		{"10.1.2.3:1234", "1.2.3.4, 10.9.9.9", "1.2.3.4"},      // chain of trusted proxies
		{"10.1.2.3:1234", "6.6.6.6, 1.2.3.4", "1.2.3.4"},       // the client cannot spoof past the last untrusted hop
		{"192.0.2.1:80", "", "192.0.2.1"},                      // no header
		{"[::ffff:10.0.0.1]:80", "2001:db8::1", "2001:db8::1"}, // mapped IPv4 proxy
	}
	for _, tt := range tests {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := rl.clientAddr(r); got != tt.want {
			t.Errorf("%s via %q = %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
}

func TestPasswordHashing(t *testing.T) {
	t.Parallel()
	a := &Authenticator{hashSlots: make(chan struct{}, 1), argon: defaultArgon}
	ctx := context.Background()
	hash, err := a.hashPassword(ctx, "pässwörd")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("PHC string %q", hash)
	}
	if ok, stale, _ := a.verifyPassword(ctx, "pässwörd", hash); !ok || stale {
		t.Errorf("verify own hash: ok=%v stale=%v", ok, stale)
	}
	if ok, _, _ := a.verifyPassword(ctx, "passwörd", hash); ok {
		t.Error("wrong password verified")
	}
	other, _ := a.hashPassword(ctx, "pässwörd")
	if other == hash {
		t.Error("two hashes of one password are equal: salt not random")
	}
	weak := &Authenticator{hashSlots: make(chan struct{}, 1), argon: argonParams{memory: 64, time: 1, threads: 1}}
	weakHash, _ := weak.hashPassword(ctx, "pässwörd")
	if ok, stale, _ := a.verifyPassword(ctx, "pässwörd", weakHash); !ok || !stale {
		t.Errorf("weaker parameters: ok=%v stale=%v, want a stale match", ok, stale)
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=1,t=1,p=1$YQ$YQ", "$argon2id$v=19$m=x$a$b", "$argon2id$v=19$m=99999999,t=1,p=1$YWFh$YWFhYWFhYWFhYWFhYWFhYQ"} {
		if _, _, err := a.verifyPassword(ctx, "x", bad); err == nil {
			t.Errorf("malformed hash %q accepted", bad)
		}
	}
}

func TestRehashOnLogin(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("rehash@example.com")
	_ = token
	before, _ := env.st.FindPasswordHash(context.Background(), user.ID)
	// Raise the parameters, as an operator upgrading the service would.
	env.srv.auth.argon = argonParams{memory: 128, time: 2, threads: 1}
	env.do("POST", "/api/v1/auth/login", `{"email":"rehash@example.com","password":"`+testPassword+`"}`, "").want(200, "")
	after, _ := env.st.FindPasswordHash(context.Background(), user.ID)
	if before == after || !strings.Contains(after, "m=128,t=2,p=1") {
		t.Errorf("hash not upgraded: %s -> %s", before, after)
	}
	env.do("POST", "/api/v1/auth/login", `{"email":"rehash@example.com","password":"`+testPassword+`"}`, "").want(200, "")
}

func TestHashingIsBounded(t *testing.T) {
	t.Parallel()
	a := &Authenticator{hashSlots: make(chan struct{}, 2), argon: argonParams{memory: 64, time: 1, threads: 1}}
	var mu sync.Mutex
	peak, cur := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.acquireHashSlot(context.Background()); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			cur--
			mu.Unlock()
			<-a.hashSlots
		}()
	}
	wg.Wait()
	if peak > 2 {
		t.Errorf("%d hashes ran at once, want at most 2", peak)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.hashSlots <- struct{}{}
	a.hashSlots <- struct{}{}
	cancel()
	if _, err := a.hashPassword(ctx, "x"); err == nil {
		t.Error("hash with every slot taken and a cancelled request did not give up")
	}
}

func TestSecretRequiredOutsideDevelopment(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	err := run(context.Background(), func(k string) string {
		return map[string]string{"DATABASE_URL": "postgres://u@localhost/db", "JWT_SECRET_KEY": strings.Repeat("k", 31)}[k]
	}, &out)
	if err == nil || !strings.Contains(err.Error(), "JWT_SECRET_KEY") {
		t.Fatalf("run with a 31-byte secret = %v", err)
	}
	base, _, _, logs := startService(t, map[string]string{"APP_ENV": "development", "JWT_SECRET_KEY": ""})
	res, err := http.Get(base + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("dev mode service: %v", err)
	}
	res.Body.Close()
	if !strings.Contains(logs.String(), "ephemeral") {
		t.Errorf("dev mode did not say it uses an ephemeral secret:\n%s", logs.String())
	}
}

// BenchmarkPasswordHash measures one Argon2id hash at the production parameters.
func BenchmarkPasswordHash(b *testing.B) {
	a := &Authenticator{hashSlots: make(chan struct{}, 1), argon: defaultArgon}
	for b.Loop() {
		if _, err := a.hashPassword(context.Background(), testPassword); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAccessTokenVerify measures the signature and claims check of an access token,
// without the user lookup (a database round trip, measured by the HTTP benchmarks).
func BenchmarkAccessTokenVerify(b *testing.B) {
	cfg := testConfig("postgres://x@y/z")
	a := &Authenticator{cfg: cfg}
	a.method = jwt.GetSigningMethod(cfg.JWTAlgorithm)
	a.parser = jwt.NewParser(jwt.WithValidMethods([]string{cfg.JWTAlgorithm}), jwt.WithIssuer(cfg.JWTIssuer),
		jwt.WithAudience(cfg.JWTAudience), jwt.WithExpirationRequired(), jwt.WithLeeway(cfg.JWTLeeway))
	email := "bench@example.com"
	token, err := a.issueAccessToken(User{ID: 42, Email: &email})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var c accessClaims
		if _, err := a.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return cfg.JWTSecret, nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTokenCache(t *testing.T) {
	t.Parallel()
	tc := newTokenCache(4)
	p := principal{UserID: 7, Subject: "7", checkUser: true}
	tc.put("live", p, time.Now().Add(time.Minute))
	tc.put("dead", p, time.Now().Add(-time.Second))
	if got, ok := tc.get("live"); !ok || got != p {
		t.Errorf("live token: %v %v", got, ok)
	}
	if _, ok := tc.get("dead"); ok {
		t.Error("an expired token was served from the cache")
	}
	if _, ok := tc.get("never"); ok {
		t.Error("an unknown token was served from the cache")
	}
	for i := 0; i < 100; i++ {
		tc.put(strconv.Itoa(i), p, time.Now().Add(time.Minute))
	}
	if n := len(tc.entries); n > 4 {
		t.Errorf("cache holds %d entries, bound is 4", n)
	}
}

func TestCachedTokenStillChecksTheUser(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("cached@example.com")
	env.do("GET", "/api/v1/tasks", "", token).want(200, "") // verified, now cached
	if _, ok := env.srv.auth.verified.get(token); !ok {
		t.Fatal("a verified token was not cached")
	}
	env.do("DELETE", "/api/v1/auth/me", "", token)
	env.do("GET", "/api/v1/tasks", "", token).want(401, "invalid_token")
}

// statementLog records the statements a pool sends, batches included, with their
// arguments.
type statementLog struct {
	mu   sync.Mutex
	sent []sentStatement
}

// sentStatement is one statement a pool sent, with its arguments.
type sentStatement struct {
	sql  string
	args []any
}

func (l *statementLog) add(sql string, args []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, sentStatement{sql, args})
}

// takeSent returns what was sent since the last take, and forgets it.
func (l *statementLog) takeSent() []sentStatement {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sent
	l.sent = nil
	return s
}

// take is takeSent's statements without their arguments.
func (l *statementLog) take() []string {
	var sql []string
	for _, s := range l.takeSent() {
		sql = append(sql, s.sql)
	}
	return sql
}

func (l *statementLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.add(d.SQL, d.Args)
	return ctx
}
func (l *statementLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (l *statementLog) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (l *statementLog) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	l.add(d.SQL, d.Args)
}
func (l *statementLog) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// traced is the same service over the same database, through a pool whose statements
// tracer sees.
func (e *testEnv) traced(tracer pgx.QueryTracer) *testEnv {
	e.t.Helper()
	pc, err := pgxpool.ParseConfig(e.cfg.DatabaseURL)
	if err != nil {
		e.t.Fatal(err)
	}
	pc.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	st := &Store{pool: pool, queryTimeout: e.cfg.QueryTimeout}
	auth, err := NewAuthenticator(e.cfg, st, slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatal(err)
	}
	return &testEnv{t: e.t, cfg: e.cfg, st: st, srv: NewServer(slog.New(slog.DiscardHandler), e.cfg, st, auth), logs: e.logs}
}

func TestUserCheckOnlyOnAMiss(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("checked@example.com")
	task := env.createTask(token, `{"title":"found"}`)
	emptyToken, _ := env.registerUser("empty@example.com")

	// The same service over a pool that records every statement it sends.
	var log statementLog
	traced := env.traced(&log)

	path := env.taskPath(task.ID)
	for _, c := range []struct {
		method, path, body, token string
		status                    int
		checks                    bool
	}{
		// A row of the user's found or written proves the user: one statement, no check.
		{"GET", path, "", token, 200, false},
		{"PATCH", path, `{"title":"renamed"}`, token, 200, false},
		{"PATCH", path + "/complete", "", token, 200, false},
		{"GET", "/api/v1/tasks", "", token, 200, false},
		{"POST", "/api/v1/tasks", `{"title":"new"}`, token, 201, false},
		{"GET", "/api/v1/tasks/stats", "", token, 200, false},
		// Nothing of the user's found: the check runs before answering.
		{"GET", "/api/v1/tasks/999999999", "", token, 404, true},
		{"GET", "/api/v1/tasks", "", emptyToken, 200, true},
		{"GET", "/api/v1/tasks/stats", "", emptyToken, 200, true},
	} {
		log.take()
		traced.do(c.method, c.path, c.body, c.token).want(c.status, "")
		sent := log.take()
		if got := slices.Contains(sent, userExistsSQL); got != c.checks {
			t.Errorf("%s %s: user check sent = %v, want %v (statements: %q)", c.method, c.path, got, c.checks, sent)
		}
	}
}
