package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestBetterAuthIntegration(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"EdDSA", "RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			testBetterAuthIntegration(t, alg)
		})
	}
}

func testBetterAuthIntegration(t *testing.T, alg string) {
	ba := startBetterAuth(t, baServerOptions{alg: alg})
	// A second instance with its own keys that claims to be the first: its tokens differ
	// from the first's only in the key that signed them. Its tokens live 2 s.
	other := startBetterAuth(t, baServerOptions{alg: alg, expiration: "2s", issuer: ba.URL, audience: ba.URL})
	env := newTestEnv(t, baEnvOption(ba.URL, ba.URL+"/api/auth/jwks"))

	alice := ba.signUp(t, "alice@example.com", "Alice")
	bob := ba.signUp(t, "bob@example.com", "Bob")
	if hdr := strings.Split(alice.Token, ".")[0]; !strings.Contains(baDecode(t, hdr), `"`+alg+`"`) {
		t.Fatalf("Better Auth signed with %s, want %s", baDecode(t, hdr), alg)
	}

	t.Run("user bound to the Better Auth id", func(t *testing.T) {
		var me userJSON
		baAs(env, t).do("GET", "/api/v1/auth/me", "", alice.Token).want(200, "").json(&me)
		if me.Email == nil || *me.Email != "alice@example.com" || me.Name == nil || *me.Name != "Alice" {
			t.Errorf("me = %+v, want the token's email and name", me)
		}
		var issuer, subject string
		if err := env.st.pool.QueryRow(t.Context(), `SELECT issuer, subject FROM users WHERE id = $1`, me.ID).
			Scan(&issuer, &subject); err != nil {
			t.Fatal(err)
		}
		if issuer != ba.URL || subject != alice.ID {
			t.Errorf("user bound to (%q, %q), want (%q, %q)", issuer, subject, ba.URL, alice.ID)
		}
	})

	t.Run("tasks on /api/v1", func(t *testing.T) {
		e := baAs(env, t)
		var task wireTask
		e.do("POST", "/api/v1/tasks", `{"title":"Buy milk","tags":["Home"]}`, alice.Token).want(201, "").json(&task)
		if _, ok := task.UserID.(float64); !ok {
			t.Errorf("user_id on /api/v1 = %#v, want the local number", task.UserID)
		}
		path := "/api/v1/tasks/" + strconv.FormatInt(task.ID, 10)
		var page taskPage
		e.do("GET", "/api/v1/tasks", "", alice.Token).want(200, "").json(&page)
		if page.Total != 1 || len(page.Items) != 1 || page.Items[0].ID != task.ID {
			t.Fatalf("alice's list = %+v, want her one task", page)
		}
		e.do("PATCH", path, `{"title":"Buy oat milk","priority":"high"}`, alice.Token).want(200, "").json(&task)
		if task.Title != "Buy oat milk" || task.Priority != "high" {
			t.Errorf("after PATCH: %+v", task)
		}
		e.do("PATCH", path+"/complete", "", alice.Token).want(200, "").json(&task)
		if !task.Completed || task.CompletedAt == nil {
			t.Errorf("after complete: %+v", task)
		}
		// Bob sees none of it and can change none of it.
		e.do("GET", path, "", bob.Token).want(404, "not_found")
		e.do("PATCH", path, `{"title":"mine now"}`, bob.Token).want(404, "not_found")
		e.do("DELETE", path, "", bob.Token).want(404, "not_found")
		e.do("GET", "/api/v1/tasks", "", bob.Token).want(200, "").json(&page)
		if page.Total != 0 {
			t.Errorf("bob's list = %+v, want empty", page)
		}
		e.do("GET", path, "", alice.Token).want(200, "")
		e.do("DELETE", path, "", alice.Token).want(204, "")
		e.do("GET", path, "", alice.Token).want(404, "not_found")
	})

	t.Run("tasks on /api/{user_id}/tasks", func(t *testing.T) {
		e := baAs(env, t)
		base := "/api/" + alice.ID + "/tasks"
		var task wireTask
		e.do("POST", base, `{"title":"Call mom","description":"Sunday"}`, alice.Token).want(201, "").json(&task)
		if task.UserID != alice.ID {
			t.Errorf("user_id = %#v, want the Better Auth id %q", task.UserID, alice.ID)
		}
		path := base + "/" + strconv.FormatInt(task.ID, 10)
		var list []wireTask
		r := e.do("GET", base, "", alice.Token).want(200, "")
		r.json(&list)
		if len(list) != 1 || list[0].ID != task.ID || list[0].UserID != alice.ID || r.Header().Get("X-Total-Count") != "1" {
			t.Fatalf("list = %+v (X-Total-Count %q), want the one task with user_id %q",
				list, r.Header().Get("X-Total-Count"), alice.ID)
		}
		e.do("PUT", path, `{"title":"Call mom and dad"}`, alice.Token).want(200, "").json(&task)
		if task.Title != "Call mom and dad" || task.Description == nil || *task.Description != "Sunday" || task.UserID != alice.ID {
			t.Errorf("after PUT: %+v", task)
		}
		e.do("PATCH", path+"/complete", "", alice.Token).want(200, "").json(&task)
		if !task.Completed || task.UserID != alice.ID {
			t.Errorf("after complete: %+v", task)
		}
		e.do("GET", path, "", alice.Token).want(200, "").json(&task)
		if task.UserID != alice.ID {
			t.Errorf("GET user_id = %#v, want %q", task.UserID, alice.ID)
		}
		// The same task, seen on /api/v1, carries the local number.
		e.do("GET", "/api/v1/tasks/"+strconv.FormatInt(task.ID, 10), "", alice.Token).want(200, "").json(&task)
		if _, ok := task.UserID.(float64); !ok {
			t.Errorf("user_id on /api/v1 = %#v, want a number", task.UserID)
		}

		// Bob may not use alice's path, and her task does not exist on his.
		e.do("GET", base, "", bob.Token).want(403, "forbidden")
		e.do("POST", base, `{"title":"spam"}`, bob.Token).want(403, "forbidden")
		e.do("GET", path, "", bob.Token).want(403, "forbidden")
		bobPath := "/api/" + bob.ID + "/tasks/" + strconv.FormatInt(task.ID, 10)
		e.do("GET", bobPath, "", bob.Token).want(404, "not_found")
		e.do("PUT", bobPath, `{"title":"mine now"}`, bob.Token).want(404, "not_found")
		e.do("PATCH", bobPath+"/complete", "", bob.Token).want(404, "not_found")
		e.do("DELETE", bobPath, "", bob.Token).want(404, "not_found")
		e.do("GET", "/api/"+bob.ID+"/tasks", "", bob.Token).want(200, "").json(&list)
		if len(list) != 0 {
			t.Errorf("bob's list = %+v, want empty", list)
		}

		e.do("DELETE", path, "", alice.Token).want(204, "")
		e.do("GET", path, "", alice.Token).want(404, "not_found")
	})

	t.Run("tampered token", func(t *testing.T) {
		forged := baTamper(t, alice.Token, func(c map[string]any) { c["sub"], c["id"] = bob.ID, bob.ID })
		baAs(env, t).do("GET", "/api/"+bob.ID+"/tasks", "", forged).want(401, "invalid_token")
		longer := baTamper(t, alice.Token, func(c map[string]any) { c["exp"] = c["exp"].(float64) + 3600 })
		baAs(env, t).do("GET", "/api/v1/tasks", "", longer).want(401, "invalid_token")
	})

	t.Run("token of another instance and expired token", func(t *testing.T) {
		carol := other.signUp(t, "carol@example.com", "Carol")
		exp := time.Unix(int64(baPayload(t, carol.Token)["exp"].(float64)), 0)
		// Same issuer and audience, other keys: the signature is what is refused.
		baAs(env, t).do("GET", "/api/v1/tasks", "", carol.Token).want(401, "invalid_token")

		// Two services trusting the second instance, differing only in leeway: the one
		// that allows an hour accepts the token throughout, so expiry is all the other
		// refuses once exp has passed.
		otherJWKS := baEnvOption(ba.URL, other.URL+"/api/auth/jwks")
		strict := newTestEnv(t, otherJWKS, func(c *Config) { c.JWTLeeway = 0 })
		lenient := newTestEnv(t, otherJWKS, func(c *Config) { c.JWTLeeway = time.Hour })
		lenient.do("GET", "/api/v1/tasks", "", carol.Token).want(200, "")
		time.Sleep(time.Until(exp.Add(1500 * time.Millisecond)))
		checkEnvelope(t, strict.do("GET", "/api/v1/tasks", "", carol.Token), 401, "token_expired")
		lenient.do("GET", "/api/"+carol.ID+"/tasks", "", carol.Token).want(200, "")
	})
}

func baDecode(t *testing.T, seg string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ---- keys made in Go, served by a test JWKS endpoint ----

const baTestIssuer = "https://auth.example.test"

// baKey is a signing key and the JWK that publishes it.
type baKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
	jwk    map[string]any
}

// RSA keys are slow to make under the race detector; the tests share one.
var baRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func baB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// newBAKey makes a key for alg (EdDSA, ES256, RS256 or PS256). jwkAlg is the "alg" the JWK
// declares: alg itself unless given ("-" leaves it out).
func newBAKey(t testing.TB, alg string, jwkAlg ...string) baKey {
	t.Helper()
	k := baKey{kid: randomName("kid-"), method: jwt.GetSigningMethod(alg)}
	switch alg {
	case "EdDSA":
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k.priv = priv
		k.jwk = map[string]any{"kty": "OKP", "crv": "Ed25519", "x": baB64(pub)}
	case "ES256":
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := priv.PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		k.priv = priv
		k.jwk = map[string]any{"kty": "EC", "crv": "P-256", "x": baB64(pt[1:33]), "y": baB64(pt[33:])}
	case "RS256", "PS256":
		priv := baRSAKey()
		k.priv = priv
		k.jwk = map[string]any{"kty": "RSA", "n": baB64(priv.N.Bytes()), "e": baB64(big.NewInt(int64(priv.E)).Bytes())}
	default:
		t.Fatalf("no test key for %s", alg)
	}
	k.jwk["kid"] = k.kid
	if a := append(jwkAlg, alg)[0]; a != "-" {
		k.jwk["alg"] = a
	}
	return k
}

// baSign signs claims with any method and key, setting kid unless it is "".
func baSign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (k baKey) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return baSign(t, k.method, k.priv, k.kid, claims)
}

// baGoodClaims are the claims of a good Better Auth token for sub, as Better Auth sends them.
func baGoodClaims(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": sub, "id": sub, "email": sub + "@example.com", "name": "User " + sub,
		"emailVerified": false, "image": nil, "iss": baTestIssuer, "aud": baTestIssuer,
		"iat": now.Unix(), "exp": now.Add(15 * time.Minute).Unix()}
}

// jwksServer serves a key set that tests change, and counts the fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []map[string]any
	status  int    // answered instead of the set when not 0
	body    string // answered instead of the set when not ""
	fetches atomic.Int64
}

func newJWKSServer(t testing.TB, keys ...baKey) *jwksServer {
	s := &jwksServer{}
	s.setKeys(keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.status != 0 {
			w.WriteHeader(s.status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if s.body != "" {
			io.WriteString(w, s.body)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(keys ...baKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = nil
	for _, k := range keys {
		s.keys = append(s.keys, k.jwk)
	}
}

func (s *jwksServer) fail(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

// newJWKSEnv is a service that trusts the set served by s, for issuer baTestIssuer.
func newJWKSEnv(t testing.TB, s *jwksServer, opts ...envOption) *testEnv {
	t.Helper()
	return newTestEnv(t, append([]envOption{baEnvOption(baTestIssuer, s.URL+"/api/auth/jwks"),
		func(c *Config) { c.JWKSRefreshEvery = time.Hour }}, opts...)...)
}

// baMe answers the local user a token maps to, failing unless the token is accepted.
func baMe(t testing.TB, env *testEnv, token string) userJSON {
	t.Helper()
	var me userJSON
	baAs(env, t).do("GET", "/api/v1/auth/me", "", token).want(200, "").json(&me)
	return me
}

// baEventually retries check until it reports true, for up to a generous deadline.
func baEventually(t testing.TB, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJWKSAlgorithms(t *testing.T) {
	t.Parallel()
	keys := map[string]baKey{
		"EdDSA":             newBAKey(t, "EdDSA"),
		"ES256":             newBAKey(t, "ES256"),
		"RS256":             newBAKey(t, "RS256"),
		"PS256":             newBAKey(t, "PS256"),
		"RS256, no JWK alg": newBAKey(t, "RS256", "-"),
		"PS256, no JWK alg": newBAKey(t, "PS256", "-"),
		"EdDSA, no JWK alg": newBAKey(t, "EdDSA", "-"),
	}
	var all []baKey
	for _, k := range keys {
		all = append(all, k)
	}
	env := newJWKSEnv(t, newJWKSServer(t, all...))
	for name, k := range keys {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sub := randomName("user-")
			me := baMe(t, env, k.sign(t, baGoodClaims(sub)))
			if me.Email == nil || *me.Email != sub+"@example.com" {
				t.Errorf("me = %+v, want email %s@example.com", me, sub)
			}
			var task wireTask
			baAs(env, t).do("POST", "/api/"+sub+"/tasks", `{"title":"t"}`, k.sign(t, baGoodClaims(sub))).
				want(201, "").json(&task)
			if task.UserID != sub {
				t.Errorf("user_id = %#v, want %q", task.UserID, sub)
			}
		})
	}
}

func TestJWKSRejectsBadTokens(t *testing.T) {
	t.Parallel()
	ed := newBAKey(t, "EdDSA")
	es := newBAKey(t, "ES256")
	rs := newBAKey(t, "RS256")
	jwks := newJWKSServer(t, ed, es, rs)
	envs := map[string]*testEnv{
		"JWKS only": newJWKSEnv(t, jwks),
		// With a shared secret too, HS256 tokens go to the secret's verifier instead.
		"JWKS and secret": newJWKSEnv(t, jwks, func(c *Config) {
			c.BetterAuthSecret = []byte("better-auth-secret-0123456789abcdef")
		}),
	}

	pub := &baRSAKey().PublicKey
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkJSON, _ := json.Marshal(rs.jwk)
	with := func(k string, v any) jwt.MapClaims {
		c := baGoodClaims(randomName("user-"))
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	none := func(kid string) string {
		hdr, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": kid})
		body, _ := json.Marshal(baGoodClaims("user-none"))
		return baB64(hdr) + "." + baB64(body) + "."
	}
	unpublished := newBAKey(t, "EdDSA")
	unpublished.kid = ed.kid // a published kid, but another key's signature
	now := time.Now()

	tests := []struct {
		name, token, code string
	}{
		{"HS256 with the RSA key's PEM as secret", baSign(t, jwt.SigningMethodHS256, pemBytes, rs.kid, with("x", nil)), "invalid_token"},
		{"HS256 with the RSA key's DER as secret", baSign(t, jwt.SigningMethodHS256, der, rs.kid, with("x", nil)), "invalid_token"},
		{"HS256 with the RSA JWK as secret", baSign(t, jwt.SigningMethodHS256, jwkJSON, rs.kid, with("x", nil)), "invalid_token"},
		{"HS256 with the RSA modulus as secret", baSign(t, jwt.SigningMethodHS256, pub.N.Bytes(), rs.kid, with("x", nil)), "invalid_token"},
		{"alg none", none(rs.kid), "invalid_token"},
		{"alg none, Ed25519 kid", none(ed.kid), "invalid_token"},
		{"RS256 key under PS256", baSign(t, jwt.SigningMethodPS256, baRSAKey(), rs.kid, with("x", nil)), "invalid_token"},
		{"ES256 signature, Ed25519 kid", baSign(t, jwt.SigningMethodES256, es.priv, ed.kid, with("x", nil)), "invalid_token"},
		{"unpublished key, published kid", unpublished.sign(t, with("x", nil)), "invalid_token"},
		{"no kid", baSign(t, ed.method, ed.priv, "", with("x", nil)), "invalid_token"},
		{"unknown kid", baSign(t, ed.method, ed.priv, "no-such-kid", with("x", nil)), "invalid_token"},
		{"wrong iss", ed.sign(t, with("iss", "https://evil.example.test")), "invalid_token"},
		{"no iss", ed.sign(t, with("iss", nil)), "invalid_token"},
		{"wrong aud", ed.sign(t, with("aud", "https://other-app.example.test")), "invalid_token"},
		{"no aud", ed.sign(t, with("aud", nil)), "invalid_token"},
		{"no exp", ed.sign(t, with("exp", nil)), "invalid_token"},
		{"expired", ed.sign(t, with("exp", now.Add(-2*time.Hour).Unix())), "token_expired"},
		{"not yet valid", ed.sign(t, with("nbf", now.Add(2*time.Hour).Unix())), "invalid_token"},
		{"exp a string", ed.sign(t, with("exp", strconv.FormatInt(now.Add(time.Hour).Unix(), 10))), "invalid_token"},
		{"exp a past string", ed.sign(t, with("exp", "1000000000")), "invalid_token"},
		{"exp null", ed.sign(t, with("exp", json.RawMessage("null"))), "invalid_token"},
		{"nbf a string", es.sign(t, with("nbf", strconv.FormatInt(now.Unix(), 10))), "invalid_token"},
		{"iat a boolean", rs.sign(t, with("iat", true)), "invalid_token"},
		{"no subject", es.sign(t, jwt.MapClaims{"iss": baTestIssuer, "aud": baTestIssuer, "exp": now.Add(time.Hour).Unix()}), "invalid_token"},
		{"subject too long", ed.sign(t, with("sub", strings.Repeat("s", 256))), "invalid_token"},
		{"not a JWT", "not.a.jwt", "invalid_token"},
	}
	for envName, env := range envs {
		t.Run(envName, func(t *testing.T) {
			t.Parallel()
			// The same keys and claims, correctly signed, are accepted.
			for _, k := range []baKey{ed, es, rs} {
				baMe(t, env, k.sign(t, with("x", nil)))
			}
			baMe(t, env, ed.sign(t, with("aud", []string{"someone-else", baTestIssuer})))
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					r := baAs(env, t).do("GET", "/api/v1/tasks", "", tt.token)
					checkEnvelope(t, r, 401, tt.code)
				})
			}
		})
	}
}

func TestJWKSConfiguredIssuerAndAudience(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	env := newJWKSEnv(t, newJWKSServer(t, k), func(c *Config) {
		c.BetterAuthIssuer = "https://issuer.example.test"
		c.BetterAuthAudience = "todo-web"
	})
	claims := func(iss, aud string) jwt.MapClaims {
		c := baGoodClaims(randomName("user-"))
		c["iss"], c["aud"] = iss, aud
		return c
	}
	baMe(t, env, k.sign(t, claims("https://issuer.example.test", "todo-web")))
	for _, c := range []jwt.MapClaims{
		claims(baTestIssuer, baTestIssuer), // the defaults no longer apply
		claims("https://issuer.example.test", baTestIssuer),
		claims(baTestIssuer, "todo-web"),
	} {
		env.do("GET", "/api/v1/tasks", "", k.sign(t, c)).want(401, "invalid_token")
	}
}

func TestJWKSKeyRotation(t *testing.T) {
	t.Parallel()
	old, next := newBAKey(t, "EdDSA"), newBAKey(t, "ES256")
	jwks := newJWKSServer(t, old)
	env := newJWKSEnv(t, jwks, func(c *Config) { c.JWKSRefreshEvery = 50 * time.Millisecond })
	// A set this old is refetched on use, so that keys removed from it stop working.
	env.srv.auth.ba.staleAfter = 200 * time.Millisecond
	sub := randomName("user-")
	first := baMe(t, env, old.sign(t, baGoodClaims(sub)))

	// Better Auth publishes the new key next to the old one, then signs with it.
	jwks.setKeys(old, next)
	baEventually(t, "token of the new kid accepted", func() bool {
		return env.do("GET", "/api/v1/auth/me", "", next.sign(t, baGoodClaims(sub))).Code == 200
	})
	if again := baMe(t, env, next.sign(t, baGoodClaims(sub))); again.ID != first.ID {
		t.Errorf("after rotation the subject maps to user %d, before to %d", again.ID, first.ID)
	}
	baMe(t, env, old.sign(t, baGoodClaims(sub)))

	// Once the old key leaves the set, its tokens stop working.
	jwks.setKeys(next)
	baEventually(t, "token of the removed kid refused", func() bool {
		return env.do("GET", "/api/v1/auth/me", "", old.sign(t, baGoodClaims(sub))).code() == "invalid_token"
	})
	baMe(t, env, next.sign(t, baGoodClaims(sub)))
}

func TestJWKSDownKeepsCachedKeys(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	jwks := newJWKSServer(t, k)
	env := newJWKSEnv(t, jwks, func(c *Config) { c.JWKSRefreshEvery = 20 * time.Millisecond })
	// A stale set is refetched on every use (one fetch per interval), so each failure
	// mode below is met while serving a known key.
	env.srv.auth.ba.staleAfter = time.Nanosecond
	token := k.sign(t, baGoodClaims(randomName("user-")))
	baMe(t, env, token)

	for _, mode := range []struct {
		name   string
		status int
		body   string
	}{
		{"503", http.StatusServiceUnavailable, ""},
		{"not JSON", 0, "<html>maintenance</html>"},
		{"truncated", 0, `{"keys":[{"kty":"OKP"`},
	} {
		jwks.fail(mode.status, mode.body)
		before := jwks.fetches.Load()
		// Keep using the token until several refreshes have failed under it.
		baEventually(t, mode.name+": failed refreshes", func() bool {
			baAs(env, t).do("GET", "/api/v1/tasks", "", token).want(200, "")
			return jwks.fetches.Load() >= before+3
		})
		env.do("GET", "/api/v1/tasks", "", k.sign(t, baGoodClaims("x"))).want(200, "")
		// A kid that is not cached still gets a clean 401 rather than a 5xx.
		unknown := baSign(t, k.method, k.priv, "unknown-kid", baGoodClaims("y"))
		env.do("GET", "/api/v1/tasks", "", unknown).want(401, "invalid_token")
	}

	// The endpoint gone altogether: connections refused.
	jwks.Close()
	for range 20 {
		env.do("GET", "/api/v1/tasks", "", token).want(200, "")
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(env.logs.String(), "JWKS fetch failed") {
		t.Errorf("failed fetches not logged:\n%s", env.logs.String())
	}
}

func TestJWKSUnknownKidFloodFetchesOncePerInterval(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	attacker := newBAKey(t, "EdDSA")

	t.Run("one fetch for a burst", func(t *testing.T) {
		t.Parallel()
		jwks := newJWKSServer(t, k)
		env := newJWKSEnv(t, jwks) // refresh interval: one hour
		const n = 64
		var wg sync.WaitGroup
		codes := make([]int, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tok := baSign(t, attacker.method, attacker.priv, randomName("kid-"), baGoodClaims("flood"))
				codes[i] = env.do("GET", "/api/v1/tasks", "", tok).Code
			}()
		}
		close(start)
		wg.Wait()
		for i, c := range codes {
			if c != 401 {
				t.Errorf("request %d answered %d, want 401", i, c)
			}
		}
		if got := jwks.fetches.Load(); got != 1 {
			t.Errorf("%d unknown kids caused %d JWKS fetches, want 1", n, got)
		}
		baMe(t, env, k.sign(t, baGoodClaims(randomName("user-"))))
		if got := jwks.fetches.Load(); got != 1 {
			t.Errorf("a cached kid caused a fetch: %d fetches, want 1", got)
		}
	})

	t.Run("at most one fetch per interval", func(t *testing.T) {
		t.Parallel()
		jwks := newJWKSServer(t, k)
		const interval = 200 * time.Millisecond
		env := newJWKSEnv(t, jwks, func(c *Config) { c.JWKSRefreshEvery = interval })
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < 1500*time.Millisecond {
					tok := baSign(t, attacker.method, attacker.priv, randomName("kid-"), baGoodClaims("flood"))
					env.do("GET", "/api/v1/tasks", "", tok)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		got, limit := jwks.fetches.Load(), int64(elapsed/interval)+1
		if got < 2 || got > limit {
			t.Errorf("%d JWKS fetches in %v with a %v interval, want 2 to %d", got, elapsed, interval, limit)
		}
	})
}

// ---- tokens minted with the shared secret (BETTER_AUTH_SECRET) ----

const baTestSecret = "better-auth-secret-0123456789abcdef"

func baMint(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return baSign(t, jwt.SigningMethodHS256, []byte(baTestSecret), "", claims)
}

func TestBetterAuthSecretTokens(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.BetterAuthSecret = []byte(baTestSecret) })
	exp := time.Now().Add(time.Hour).Unix()
	sub := randomName("user-")

	t.Run("accepted", func(t *testing.T) {
		t.Parallel()
		for _, c := range []jwt.MapClaims{
			{"sub": randomName("user-"), "exp": exp},
			{"user_id": randomName("user-"), "exp": exp},
			{"id": randomName("user-"), "exp": exp},
			{"user_id": 987654321, "exp": exp},
			{"sub": randomName("user-"), "exp": exp, "iss": "anything", "aud": "anyone"},
		} {
			baMe(t, env, baMint(t, c))
		}
	})

	t.Run("sub, user_id and id name the same user", func(t *testing.T) {
		t.Parallel()
		a := baMe(t, env, baMint(t, jwt.MapClaims{"sub": sub, "exp": exp, "email": "minted@example.com"}))
		b := baMe(t, env, baMint(t, jwt.MapClaims{"user_id": sub, "exp": exp}))
		c := baMe(t, env, baMint(t, jwt.MapClaims{"id": sub, "exp": exp}))
		if a.ID != b.ID || a.ID != c.ID {
			t.Errorf("users %d, %d, %d, want one", a.ID, b.ID, c.ID)
		}
		var task wireTask
		baAs(env, t).do("POST", "/api/"+sub+"/tasks", `{"title":"minted"}`, baMint(t, jwt.MapClaims{"id": sub, "exp": exp})).
			want(201, "").json(&task)
		if task.UserID != sub {
			t.Errorf("user_id = %#v, want %q", task.UserID, sub)
		}
		n := baMe(t, env, baMint(t, jwt.MapClaims{"user_id": 4242, "exp": exp}))
		s := baMe(t, env, baMint(t, jwt.MapClaims{"sub": "4242", "exp": exp}))
		if n.ID != s.ID {
			t.Errorf("user_id 4242 is user %d, sub \"4242\" user %d, want one", n.ID, s.ID)
		}
		// Beyond 2^53 a float64 cannot tell these ids apart; they are two users.
		big1 := baMe(t, env, baMint(t, jwt.MapClaims{"user_id": int64(1<<53 + 1), "exp": exp}))
		big0 := baMe(t, env, baMint(t, jwt.MapClaims{"user_id": int64(1 << 53), "exp": exp}))
		if big1.ID == big0.ID {
			t.Errorf("user_id 2^53+1 and 2^53 are both user %d", big1.ID)
		}
		if me := baMe(t, env, baMint(t, jwt.MapClaims{"sub": "9007199254740993", "exp": exp})); me.ID != big1.ID {
			t.Errorf("sub \"9007199254740993\" is user %d, user_id 9007199254740993 user %d, want one", me.ID, big1.ID)
		}
	})

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name, token, code string
		}{
			{"expired", baMint(t, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(-2 * time.Hour).Unix()}), "token_expired"},
			{"no exp", baMint(t, jwt.MapClaims{"sub": "u1"}), "invalid_token"},
			{"no subject", baMint(t, jwt.MapClaims{"email": "x@example.com", "exp": exp}), "invalid_token"},
			{"empty subject", baMint(t, jwt.MapClaims{"sub": "", "user_id": "", "exp": exp}), "invalid_token"},
			{"fractional user_id", baMint(t, jwt.MapClaims{"user_id": 1.5, "exp": exp}), "invalid_token"},
			{"wrong secret", baSign(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdefgh"), "", jwt.MapClaims{"sub": "u1", "exp": exp}), "invalid_token"},
			{"HS384", baSign(t, jwt.SigningMethodHS384, []byte(baTestSecret), "", jwt.MapClaims{"sub": "u1", "exp": exp}), "invalid_token"},
			{"HS512", baSign(t, jwt.SigningMethodHS512, []byte(baTestSecret), "", jwt.MapClaims{"sub": "u1", "exp": exp}), "invalid_token"},
			{"not yet valid", baMint(t, jwt.MapClaims{"sub": "u1", "exp": exp, "nbf": exp}), "invalid_token"},
			{"exp a string", baMint(t, jwt.MapClaims{"sub": "u1", "exp": strconv.FormatInt(exp, 10)}), "invalid_token"},
			{"exp a past string", baMint(t, jwt.MapClaims{"sub": "u1", "exp": "1000000000"}), "invalid_token"},
			{"exp false", baMint(t, jwt.MapClaims{"sub": "u1", "exp": false}), "invalid_token"},
			{"iat a string", baMint(t, jwt.MapClaims{"sub": "u1", "exp": exp, "iat": "1"}), "invalid_token"},
			{"EdDSA with no JWKS configured", newBAKey(t, "EdDSA").sign(t, baGoodClaims("u1")), "invalid_token"},
		}
		for _, tt := range tests {
			r := env.do("GET", "/api/v1/tasks", "", tt.token)
			if r.Code != 401 || r.code() != tt.code {
				t.Errorf("%s: %d %s, want 401 %s", tt.name, r.Code, r.Body.String(), tt.code)
			}
		}
	})

	t.Run("local tokens still work", func(t *testing.T) {
		t.Parallel()
		token, _ := baAs(env, t).registerUser("local-" + randomName("") + "@example.com")
		baAs(env, t).do("GET", "/api/v1/tasks", "", token).want(200, "")
	})
}

func TestBetterAuthSecretIssuerAndAudience(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) {
		c.BetterAuthSecret = []byte(baTestSecret)
		c.BetterAuthIssuer = "https://frontend.example.test"
		c.BetterAuthAudience = "todo-api-web"
	})
	exp := time.Now().Add(time.Hour).Unix()
	claims := func(iss, aud any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "u1", "exp": exp, "iss": iss, "aud": aud}
		for k, v := range c {
			if v == nil {
				delete(c, k)
			}
		}
		return c
	}
	baMe(t, env, baMint(t, claims("https://frontend.example.test", "todo-api-web")))
	for name, c := range map[string]jwt.MapClaims{
		"no iss":    claims(nil, "todo-api-web"),
		"wrong iss": claims("https://evil.example.test", "todo-api-web"),
		"no aud":    claims("https://frontend.example.test", nil),
		"wrong aud": claims("https://frontend.example.test", "other"),
	} {
		if r := env.do("GET", "/api/v1/tasks", "", baMint(t, c)); r.Code != 401 || r.code() != "invalid_token" {
			t.Errorf("%s: %d %s, want 401 invalid_token", name, r.Code, r.Body.String())
		}
	}
}

func TestBetterAuthSecretAndJWKSShareUsers(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	env := newJWKSEnv(t, newJWKSServer(t, k), func(c *Config) { c.BetterAuthSecret = []byte(baTestSecret) })
	sub := randomName("user-")
	viaJWKS := baMe(t, env, k.sign(t, baGoodClaims(sub)))
	exp := time.Now().Add(time.Hour).Unix()
	for _, c := range []jwt.MapClaims{
		{"sub": sub, "exp": exp},
		{"sub": sub, "exp": exp, "iss": baTestIssuer},
	} {
		if viaSecret := baMe(t, env, baMint(t, c)); viaSecret.ID != viaJWKS.ID {
			t.Errorf("minted %v is user %d, the JWKS token user %d: want one", c, viaSecret.ID, viaJWKS.ID)
		}
	}
}

// ---- the local user row ----

func TestBetterAuthConcurrentFirstRequestsCreateOneUser(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	// What is tested is one user for many first requests, not their speed: on Citus the
	// 24 inserts into the users reference table queue behind one another, each a
	// two-phase commit on every node over connections the pool is still opening, and on
	// a loaded 2-core test machine outlast the default per-query timeout.
	timeout := 5 * time.Second
	if citusURL() != "" {
		timeout = 30 * time.Second
	}
	env := newJWKSEnv(t, newJWKSServer(t, k), func(c *Config) { c.QueryTimeout = timeout })
	for round := range 4 {
		sub := randomName("user-")
		const n = 24
		ids := make([]int64, n)
		errs := make([]string, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			token := k.sign(t, baGoodClaims(sub))
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r := env.do("GET", "/api/v1/auth/me", "", token)
				var me userJSON
				if r.Code != 200 || json.Unmarshal(r.Body.Bytes(), &me) != nil {
					errs[i] = fmt.Sprintf("%d %s", r.Code, r.Body.String())
				}
				ids[i] = me.ID
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != "" {
				t.Errorf("round %d, request %d: %s", round, i, errs[i])
			} else if ids[i] != ids[0] {
				t.Errorf("round %d: request %d is user %d, request 0 user %d", round, i, ids[i], ids[0])
			}
		}
		var rows int
		if err := env.st.pool.QueryRow(t.Context(), `SELECT count(*) FROM users WHERE subject = $1`, sub).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != 1 {
			t.Errorf("round %d: %d users rows for one subject, want 1", round, rows)
		}
	}
}

// Requests that meet another replica's first insert of the same user, still uncommitted,
// wait for it and then find its row: their statement's snapshot cannot see the row, so
// this is the path where the upsert must look again.
func TestBetterAuthFirstRequestsMeetAnotherReplicasInsert(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	// The service's connections carry a name of this test's, so that the waits counted
	// below are its own (in the Citus test mode every test shares one database).
	app := randomName("meet-")
	env := newJWKSEnv(t, newJWKSServer(t, k), func(c *Config) {
		c.QueryTimeout = time.Minute
		u, err := url.Parse(c.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("application_name", app)
		u.RawQuery = q.Encode()
		c.DatabaseURL = u.String()
	})
	baMe(t, env, k.sign(t, baGoodClaims(randomName("warm-")))) // the key set is cached
	ctx := t.Context()
	sub := randomName("user-")
	claims := baGoodClaims(sub)
	tx, err := env.st.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	var want int64
	if err := tx.QueryRow(ctx, `INSERT INTO users (issuer, subject, email, name) VALUES ($1, $2, $3, $4) RETURNING id`,
		baTestIssuer, sub, claims["email"], claims["name"]).Scan(&want); err != nil {
		t.Fatal(err)
	}

	const n = 6
	results := make(chan string, n)
	for range n {
		token := k.sign(t, claims)
		go func() {
			r := env.do("GET", "/api/v1/auth/me", "", token)
			var me userJSON
			json.Unmarshal(r.Body.Bytes(), &me)
			results <- fmt.Sprintf("%d %d", r.Code, me.ID)
		}()
	}
	baEventually(t, "requests waiting on the uncommitted insert", func() bool {
		var waiting int
		q := `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`
		if citusURL() != "" {
			// users is a reference table: a request waits in its worker-side backend.
			q = `SELECT count(DISTINCT w.global_pid) FROM citus_stat_activity w
				JOIN citus_stat_activity c ON c.global_pid = w.global_pid AND c.application_name = $1
				WHERE w.wait_event_type = 'Lock'`
		}
		env.st.pool.QueryRow(ctx, q, app).Scan(&waiting)
		return waiting >= n
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for range n {
		if got := <-results; got != fmt.Sprintf("200 %d", want) {
			t.Errorf("request answered %s, want 200 for user %d", got, want)
		}
	}
	var rows int
	env.st.pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE subject = $1`, sub).Scan(&rows)
	if rows != 1 {
		t.Errorf("%d users rows for one subject, want 1", rows)
	}
}

func TestBetterAuthProfileClaimsUpdateUser(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "ES256")
	env := newJWKSEnv(t, newJWKSServer(t, k))
	sub := randomName("user-")
	claims := func(email, name any) jwt.MapClaims {
		c := baGoodClaims(sub)
		c["email"], c["name"] = email, name
		return c
	}
	first := baMe(t, env, k.sign(t, claims("ada@example.com", "Ada")))
	if first.Email == nil || *first.Email != "ada@example.com" || first.Name == nil || *first.Name != "Ada" {
		t.Fatalf("first sight: %+v", first)
	}
	var task wireTask
	env.do("POST", "/api/v1/tasks", `{"title":"kept"}`, k.sign(t, claims("ada@example.com", "Ada"))).want(201, "").json(&task)

	changed := baMe(t, env, k.sign(t, claims("ada@lovelace.example", "Ada Lovelace")))
	if changed.ID != first.ID || changed.Email == nil || *changed.Email != "ada@lovelace.example" ||
		changed.Name == nil || *changed.Name != "Ada Lovelace" {
		t.Errorf("after a changed claim: %+v, want user %d with the new email and name", changed, first.ID)
	}
	var email, name string
	if err := env.st.pool.QueryRow(t.Context(), `SELECT email, name FROM users WHERE id = $1`, first.ID).Scan(&email, &name); err != nil {
		t.Fatal(err)
	}
	if email != "ada@lovelace.example" || name != "Ada Lovelace" {
		t.Errorf("row holds %q, %q", email, name)
	}
	env.do("GET", "/api/v1/tasks/"+strconv.FormatInt(task.ID, 10), "", k.sign(t, claims("ada@lovelace.example", "Ada Lovelace"))).
		want(200, "")

	// Claims that do not fit the users table, or are not text, do not lock the user out;
	// like an absent claim, they leave the stored value as it was.
	long := baMe(t, env, k.sign(t, claims(strings.Repeat("a", 250)+"@example.com", strings.Repeat("é", 150))))
	if long.ID != first.ID || long.Email == nil || *long.Email != "ada@lovelace.example" || long.Name == nil ||
		len([]rune(*long.Name)) != 100 {
		t.Errorf("oversized claims: %+v, want the email kept and the name cut to 100 characters", long)
	}
	odd := baMe(t, env, k.sign(t, claims(42, map[string]any{"first": "Ada"})))
	if odd.ID != first.ID || odd.Email == nil || *odd.Email != "ada@lovelace.example" || odd.Name == nil || *odd.Name != *long.Name {
		t.Errorf("non-text claims: %+v, want user %d as it was", odd, first.ID)
	}
	bare := baGoodClaims(sub)
	delete(bare, "email")
	delete(bare, "name")
	if got := baMe(t, env, k.sign(t, bare)); got.Email == nil || *got.Email != "ada@lovelace.example" || got.Name == nil {
		t.Errorf("a token without profile claims cleared them: %+v", got)
	}
	var rows int
	env.st.pool.QueryRow(t.Context(), `SELECT count(*) FROM users WHERE subject = $1`, sub).Scan(&rows)
	if rows != 1 {
		t.Errorf("%d rows for one subject, want 1", rows)
	}
}

// TestBetterAuthKnownUserIsARead: once a user is known, a request whose token carries the
// same profile claims reads the user row and writes nothing (on Citus a write to the users
// reference table is a two-phase commit on every node); a changed claim writes it.
func TestBetterAuthKnownUserIsARead(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	env := newJWKSEnv(t, newJWKSServer(t, k))
	var log statementLog
	traced := env.traced(&log)

	sub := randomName("user-")
	claims := baGoodClaims(sub)
	writes := func() int {
		n := 0
		for _, sql := range log.take() {
			if strings.Contains(sql, "INSERT INTO users") {
				n++
			}
		}
		return n
	}
	baMe(t, traced, k.sign(t, claims))
	if n := writes(); n != 1 {
		t.Errorf("first sight sent %d inserts, want 1", n)
	}
	baMe(t, traced, k.sign(t, claims))
	delete(claims, "name")
	baMe(t, traced, k.sign(t, claims))
	if n := writes(); n != 0 {
		t.Errorf("known user with the same claims sent %d inserts, want 0", n)
	}
	claims["email"] = "changed-" + sub + "@example.com"
	if me := baMe(t, traced, k.sign(t, claims)); me.Email == nil || *me.Email != claims["email"] {
		t.Errorf("changed email not stored: %+v", me)
	}
	if n := writes(); n != 1 {
		t.Errorf("a changed claim sent %d inserts, want 1", n)
	}
}
