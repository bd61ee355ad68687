package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tagsBody is a task body with n distinct tags.
func tagsBody(n int) string {
	var b strings.Builder
	b.WriteString(`{"title":"t","tags":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"t%d"`, i)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestTagValidationIsLinear: a body of many distinct tags is refused at a cost that grows
// with its size, not with its square. Measured as work per byte of two bodies ten times
// apart in size, in one run: a search of every earlier tag for each tag (what this guards
// against) makes the larger one's cost per byte about ten times the smaller one's.
func TestTagValidationIsLinear(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("tags@example.com")
	perByte := func(n int) float64 {
		body := tagsBody(n)
		env.do("POST", "/api/v1/tasks", body, token).want(422, "validation_error")
		r := testing.Benchmark(func(b *testing.B) {
			for b.Loop() {
				env.do("POST", "/api/v1/tasks", body, token)
			}
		})
		return float64(r.NsPerOp()) / float64(len(body))
	}
	small, large := perByte(10_000), perByte(100_000)
	ratio := large / small
	t.Logf("cost per byte: %.1f ns (10,000 tags), %.1f ns (100,000 tags): %.2f×", small, large, ratio)
	if ratio > 3 {
		t.Fatalf("cost per byte of 100,000 tags is %.1f× that of 10,000 (%.1f vs %.1f ns/byte): not linear",
			ratio, large, small)
	}
	r := env.do("POST", "/api/v1/tasks", tagsBody(21), token).want(422, "validation_error").envelope()
	if len(r.Errors) != 1 || r.Errors[0].Field != "tags" || r.Errors[0].Message != "must hold at most 20 distinct tags" {
		t.Errorf("21 tags: %+v", r.Errors)
	}
	// Repeats collapse before the limit counts: 40 tags that are 20 distinct ones are fine.
	body := `{"title":"t","tags":[` + strings.Repeat(`"a","A ",`, 1) + strings.TrimSuffix(strings.Repeat(`"x",`, 38), ",") + `]}`
	env.do("POST", "/api/v1/tasks", body, token).want(201, "")
	env.do("POST", "/api/v1/tasks", strings.Replace(tagsBody(20), `"t0"`, `"t0","T0","t1"`, 1), token).want(201, "")
}

// BenchmarkTagValidation is the work of refusing a body of n distinct tags, per request
// and per byte.
func BenchmarkTagValidation(b *testing.B) {
	env := newTestEnv(b)
	token, _ := env.registerUser("tags@example.com")
	for _, n := range []int{1_000, 10_000, 100_000} {
		body := tagsBody(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				env.do("POST", "/api/v1/tasks", body, token)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(body)), "ns/byte")
		})
	}
}

// statusCounts sends n copies of one request at once and counts the answers by status.
func statusCounts(env *testEnv, n int, send func(i int) response) map[int]int {
	var (
		mu     sync.Mutex
		counts = map[int]int{}
		wg     sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			r := send(i)
			mu.Lock()
			counts[r.Code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return counts
}

// TestLoginLimitHoldsUnderABurst: the failed-login budget is taken before the password is
// checked, so a burst of concurrent guesses gets no more evaluations than the limit, on
// the address key and on the e-mail key alike; the password change's guesses likewise.
func TestLoginLimitHoldsUnderABurst(t *testing.T) {
	t.Parallel()
	const limit, burst = 10, 100
	// The bucket refills at limit per minute; a run that takes a few seconds may see one
	// more token.
	const most = limit + 1
	t.Run("one address, one e-mail", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t, func(c *Config) { c.LoginFailuresPerMinute = limit })
		env.registerUser("burst@example.com")
		counts := statusCounts(env, burst, func(int) response {
			return env.do("POST", "/api/v1/auth/login", `{"email":"burst@example.com","password":"wrong password"}`, "")
		})
		if counts[401] > most || counts[401] < limit || counts[401]+counts[429] != burst {
			t.Fatalf("%d concurrent wrong passwords with a limit of %d: %v", burst, limit, counts)
		}
	})
	t.Run("one e-mail, many addresses", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t, func(c *Config) {
			c.LoginFailuresPerMinute = limit
			c.TrustedProxies = mustPrefixes("192.0.2.0/24")
		})
		env.registerUser("spread@example.com")
		counts := statusCounts(env, burst, func(i int) response {
			return env.do("POST", "/api/v1/auth/login", `{"email":"spread@example.com","password":"wrong password"}`, "",
				header{"X-Forwarded-For": fmt.Sprintf("198.51.%d.%d", i/200, i%200)})
		})
		if counts[401] > most || counts[401]+counts[429] != burst {
			t.Fatalf("%d concurrent wrong passwords from as many addresses: %v", burst, counts)
		}
	})
	t.Run("password change", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t, func(c *Config) { c.LoginFailuresPerMinute = limit })
		token, _ := env.registerUser("change-burst@example.com")
		counts := statusCounts(env, burst, func(int) response {
			return env.do("POST", "/api/v1/auth/password",
				`{"current_password":"wrong password","new_password":"another good password"}`, token)
		})
		if counts[422] > most || counts[422]+counts[429] != burst {
			t.Fatalf("%d concurrent wrong current passwords: %v", burst, counts)
		}
	})
	t.Run("successes give their attempt back", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t, func(c *Config) { c.LoginFailuresPerMinute = 2 })
		env.registerUser("good@example.com")
		good := `{"email":"good@example.com","password":"` + testPassword + `"}`
		for range 6 {
			env.do("POST", "/api/v1/auth/login", good, "").want(200, "")
		}
		bad := `{"email":"good@example.com","password":"wrong password"}`
		env.do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
		env.do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
		env.do("POST", "/api/v1/auth/login", bad, "").want(429, "rate_limited")
	})
}

// thief refreshes a stolen refresh token in a loop, each time with the token the last
// refresh answered, until a refresh is refused or stop is closed; it answers the last
// token it was given.
func thief(env *testEnv, token string, stop <-chan struct{}) <-chan string {
	last := make(chan string, 1)
	go func() {
		defer func() { last <- token }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+token+`"}`, "")
			if r.Code != 200 {
				return
			}
			var tr tokenResponse
			r.json(&tr)
			token = tr.RefreshToken
		}
	}()
	return last
}

func refreshWorks(env *testEnv, token string) bool {
	return env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+token+`"}`, "").Code == 200
}

func loginAs(env *testEnv, email, password string) tokenResponse {
	var tr tokenResponse
	env.do("POST", "/api/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, "").want(200, "").json(&tr)
	return tr
}

// TestReuseDetectionReachesRefreshesInFlight: a thief refreshes a stolen token in a loop
// while its owner presents the rotated original; once the reuse answer is given, no token
// of the login works, also one the thief's refresh in flight was writing.
func TestReuseDetectionReachesRefreshesInFlight(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.registerUser("stolen@example.com")
	const trials = 40
	survivors := 0
	for range trials {
		original := loginAs(env, "stolen@example.com", testPassword).RefreshToken
		var stolen tokenResponse
		env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+original+`"}`, "").want(200, "").json(&stolen)
		stop := make(chan struct{})
		last := thief(env, stolen.RefreshToken, stop)
		env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+original+`"}`, "").want(401, "invalid_token")
		close(stop)
		if refreshWorks(env, <-last) {
			survivors++
		}
	}
	if survivors > 0 {
		t.Fatalf("the thief's token survived reuse detection in %d of %d trials", survivors, trials)
	}
}

// TestPasswordChangeReachesSessionsInFlight: while a thief refreshes in a loop and logins
// with the old password are in flight, the owner changes the password. Once the change
// has answered, none of their refresh tokens works; the new login's does.
func TestPasswordChangeReachesSessionsInFlight(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	const trials, logins = 30, 4
	refreshSurvivors, loginSurvivors, loginsAnswered := 0, 0, 0
	for i := range trials {
		email := fmt.Sprintf("owner%d@example.com", i)
		access, _ := env.registerUser(email)
		stolen := loginAs(env, email, testPassword).RefreshToken
		stop := make(chan struct{})
		last := thief(env, stolen, stop)
		var wg sync.WaitGroup
		oldLogins := make([]response, logins)
		for j := range oldLogins {
			wg.Go(func() {
				oldLogins[j] = env.do("POST", "/api/v1/auth/login", `{"email":"`+email+`","password":"`+testPassword+`"}`, "")
			})
		}
		var changed tokenResponse
		env.do("POST", "/api/v1/auth/password",
			`{"current_password":"`+testPassword+`","new_password":"a new password here"}`, access).want(200, "").json(&changed)
		close(stop)
		if refreshWorks(env, <-last) {
			refreshSurvivors++
		}
		wg.Wait()
		for _, r := range oldLogins {
			if r.Code != 200 {
				if r.Code != 401 || r.code() != "invalid_credentials" {
					t.Fatalf("a login in flight answered %d %s", r.Code, r.Body)
				}
				continue
			}
			loginsAnswered++
			var tr tokenResponse
			r.json(&tr)
			if refreshWorks(env, tr.RefreshToken) {
				loginSurvivors++
			}
		}
		if !refreshWorks(env, changed.RefreshToken) {
			t.Fatal("the password change's own refresh token does not work")
		}
	}
	t.Logf("%d of %d logins in flight answered 200 before the change", loginsAnswered, trials*logins)
	if refreshSurvivors > 0 || loginSurvivors > 0 {
		t.Fatalf("after the password change: the thief's token worked in %d of %d trials, "+
			"a login's in flight with the old password %d times", refreshSurvivors, trials, loginSurvivors)
	}
}

// connKiller ends the database connection that is about to send a statement matching
// match, once armed: a database that goes away in the middle of a request.
type connKiller struct {
	statementLog
	admin *pgxpool.Pool
	match string
	armed atomic.Bool
	err   error
}

func (k *connKiller) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(strings.Join(strings.Fields(d.SQL), " "), k.match) && k.armed.CompareAndSwap(true, false) {
		// The integer form: Citus adds a bigint one that reads its argument as a global pid.
		if _, err := k.admin.Exec(context.Background(), `SELECT pg_terminate_backend($1::integer, 5000::bigint)`,
			int32(c.PgConn().PID())); err != nil {
			k.err = err
		}
	}
	return ctx
}

// TestRefreshSurvivesADatabaseError: a refresh whose database connection is lost after
// the token was rotated answers 503 (a client retries it, rather than reading "signed
// out"), and the rotation is undone with it: the same token then refreshes.
func TestRefreshSurvivesADatabaseError(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.registerUser("flaky@example.com")
	login := loginAs(env, "flaky@example.com", testPassword)
	killer := &connKiller{admin: env.st.pool, match: "SELECT " + userColumns + " FROM users WHERE id = $1"}
	flaky := env.traced(killer)
	killer.armed.Store(true)
	r := flaky.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+login.RefreshToken+`"}`, "")
	if killer.armed.Load() {
		t.Fatal("the refresh never read its user")
	}
	if killer.err != nil {
		t.Fatalf("ending the connection: %v", killer.err)
	}
	checkEnvelope(t, r, 503, "service_unavailable")
	var tr tokenResponse
	flaky.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+login.RefreshToken+`"}`, "").want(200, "").json(&tr)
	env.do("GET", "/api/v1/auth/me", "", tr.AccessToken).want(200, "")
}

// TestIPv6ClientsCountByPrefix: addresses of one /64 share their buckets, for
// registrations and failed logins; another /64 has its own.
func TestIPv6ClientsCountByPrefix(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) {
		c.RegistersPerMinute, c.LoginFailuresPerMinute = 2, 2
		c.TrustedProxies = mustPrefixes("192.0.2.0/24")
	})
	from := func(addr string) header { return header{"X-Forwarded-For": addr} }
	created := 0
	for i := range 10 {
		r := env.do("POST", "/api/v1/auth/register", fmt.Sprintf(`{"email":"v6-%d@example.com","password":"%s"}`, i, testPassword), "",
			from(fmt.Sprintf("2001:db8:1:2:%x::%x", i, i+1)))
		if r.Code == 201 {
			created++
		} else {
			r.want(429, "rate_limited")
		}
	}
	if created != 2 {
		t.Errorf("10 addresses of one /64 registered %d accounts under a limit of 2", created)
	}
	env.do("POST", "/api/v1/auth/register", `{"email":"v6-other@example.com","password":"`+testPassword+`"}`, "",
		from("2001:db8:1:3::1")).want(201, "")

	bad := `{"email":"v6-0@example.com","password":"wrong password"}`
	env.do("POST", "/api/v1/auth/login", bad, "", from("2001:db8:9:9::1")).want(401, "invalid_credentials")
	env.do("POST", "/api/v1/auth/login", `{"email":"v6-1@example.com","password":"wrong password"}`, "",
		from("2001:db8:9:9::2")).want(401, "invalid_credentials")
	env.do("POST", "/api/v1/auth/login", `{"email":"v6-other@example.com","password":"wrong password"}`, "",
		from("2001:db8:9:9:ffff::3")).want(429, "rate_limited")

	t.Run("configurable", func(t *testing.T) {
		cfg, err := loadConfig(func(k string) string {
			return map[string]string{"DATABASE_URL": "postgres://x", "JWT_SECRET_KEY": strings.Repeat("k", 32),
				"RATE_LIMIT_IPV6_PREFIX": "128"}[k]
		})
		if err != nil || cfg.RateLimitIPv6Prefix != 128 {
			t.Fatalf("RATE_LIMIT_IPV6_PREFIX=128: %d, %v", cfg.RateLimitIPv6Prefix, err)
		}
		rl := &rateLimits{ipv6Bits: 56}
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = "[2001:db8:1:2ff:1::1]:443"
		if k := rl.addrKey(r); k != "ip:2001:db8:1:200::/56" {
			t.Errorf("a /56 key: %s", k)
		}
		r.RemoteAddr = "198.51.100.7:443"
		if k := rl.addrKey(r); k != "ip:198.51.100.7" {
			t.Errorf("an IPv4 key: %s", k)
		}
	})
}

// TestBetterAuthKeySetNeedsAnAudience: a key set configured without BETTER_AUTH_URL must
// name the audience, or the service does not start; tokens meant for another service
// would otherwise pass.
func TestBetterAuthKeySetNeedsAnAudience(t *testing.T) {
	t.Parallel()
	load := func(extra map[string]string) error {
		_, err := loadConfig(func(k string) string {
			if v, ok := extra[k]; ok {
				return v
			}
			return map[string]string{"DATABASE_URL": "postgres://x", "JWT_SECRET_KEY": strings.Repeat("k", 32)}[k]
		})
		return err
	}
	jwks := map[string]string{"BETTER_AUTH_JWKS_URL": "https://auth.example.com/api/auth/jwks",
		"BETTER_AUTH_ISSUER": "https://auth.example.com"}
	err := load(jwks)
	if err == nil || !strings.Contains(err.Error(), "BETTER_AUTH_AUDIENCE") {
		t.Fatalf("key set, issuer, no audience: %v", err)
	}
	jwks["BETTER_AUTH_AUDIENCE"] = "todo-api"
	if err := load(jwks); err != nil {
		t.Fatalf("with an audience: %v", err)
	}
	if err := load(map[string]string{"BETTER_AUTH_URL": "https://auth.example.com"}); err != nil {
		t.Fatalf("BETTER_AUTH_URL alone (audience defaults to it): %v", err)
	}

	// And the audience is checked: a token for another service, or for none, is refused.
	key := newBAKey(t, "EdDSA")
	s := newJWKSServer(t, key)
	env := newTestEnv(t, func(c *Config) {
		c.BetterAuthJWKSURL, c.BetterAuthIssuer, c.BetterAuthAudience = s.URL+"/api/auth/jwks", baTestIssuer, "todo-api"
		c.JWKSRefreshEvery = time.Hour
	})
	claims := baGoodClaims("aud-user")
	claims["aud"] = "todo-api"
	env.do("GET", "/api/v1/auth/me", "", key.sign(t, claims)).want(200, "")
	claims["aud"] = "another-service"
	env.do("GET", "/api/v1/auth/me", "", key.sign(t, claims)).want(401, "invalid_token")
	delete(claims, "aud")
	env.do("GET", "/api/v1/auth/me", "", key.sign(t, claims)).want(401, "invalid_token")
}

// TestManyDotTokenCostsNothing: a bearer of 60,000 dots is refused without allocating
// in proportion to its dots. Not parallel: it reads the process's allocation count.
func TestManyDotTokenCostsNothing(t *testing.T) {
	a := fzAuthenticator(t)
	for _, token := range []string{strings.Repeat(".", 60_000), "a" + strings.Repeat(".a", 30_000)} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const n = 20
		for range n {
			if _, err := a.Authenticate(context.Background(), token); err == nil {
				t.Fatal("accepted")
			}
		}
		runtime.ReadMemStats(&after)
		if perCall := (after.TotalAlloc - before.TotalAlloc) / n; perCall > 4<<10 {
			t.Errorf("a %d-byte token of dots allocated %d bytes per check", len(token), perCall)
		}
	}
}

// TestTitleCursorsFitTheLimit: the cursor after a task whose title escapes to the most
// JSON (255 "<", control or four-byte characters) is within the service's own cursor
// limit, and following it gives the next page.
func TestTitleCursorsFitTheLimit(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("cursor@example.com")
	titles := []string{strings.Repeat("<", 255), strings.Repeat(`\u0001`, 255), strings.Repeat("😀", 255), "a" + strings.Repeat(`\u2028`, 253) + "a"}
	for _, title := range titles {
		env.do("POST", "/api/v1/tasks", `{"title":"`+title+`"}`, token).want(201, "")
	}
	for _, desc := range []string{"", "-"} {
		seen, next := 0, ""
		for {
			var page taskPage
			env.do("GET", "/api/v1/tasks?sort="+desc+"title&limit=1&cursor="+next, "", token).want(200, "").json(&page)
			seen += len(page.Items)
			if page.NextCursor == nil {
				break
			}
			if len(*page.NextCursor) > maxCursorLen {
				t.Fatalf("a cursor of %d characters", len(*page.NextCursor))
			}
			next = *page.NextCursor
		}
		if seen != len(titles) {
			t.Errorf("sort=%stitle: %d tasks over the pages, want %d", desc, seen, len(titles))
		}
	}
}

// TestIdempotencyKeyComparesJSONValues: a repeat whose body is the same JSON value written
// another way (escapes, key order at any depth, white space, number forms) gets the first
// answer; a different value is still idempotency_key_reused.
func TestIdempotencyKeyComparesJSONValues(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("idem@example.com")
	first := `{"title":"café","tags":["a","b"],"x":{"k":1,"j":[1,{"b":2,"a":1}]}}`
	var want wireTask
	env.do("POST", "/api/v1/tasks", first, token, header{"Idempotency-Key": "k1"}).want(201, "").json(&want)
	for _, same := range []string{
		`{"title":"caf\u00e9","tags":["a","b"],"x":{"k":1,"j":[1,{"b":2,"a":1}]}}`,
		`{"x":{"j":[1,{"a":1,"b":2}],"k":1.0},"tags":["a","b"],"title":"café"}`,
		"{ \"title\" : \"caf\\u00E9\",\n \"tags\": [ \"a\", \"b\" ], \"x\": {\"j\": [1e0, {\"a\": 1, \"b\": 2}], \"k\": 1}}",
	} {
		var got wireTask
		env.do("POST", "/api/v1/tasks", same, token, header{"Idempotency-Key": "k1"}).want(201, "").json(&got)
		if got.ID != want.ID {
			t.Errorf("%s: task %d, the first answer was task %d", same, got.ID, want.ID)
		}
	}
	for _, other := range []string{
		`{"title":"cafe","tags":["a","b"],"x":{"k":1,"j":[1,{"b":2,"a":1}]}}`,
		`{"title":"café","tags":["b","a"],"x":{"k":1,"j":[1,{"b":2,"a":1}]}}`,
		`{"title":"café","tags":["a","b"],"x":{"k":2,"j":[1,{"b":2,"a":1}]}}`,
	} {
		env.do("POST", "/api/v1/tasks", other, token, header{"Idempotency-Key": "k1"}).want(422, "idempotency_key_reused")
	}
}

// TestJWKSEmptySetKeepsCachedKeys: a key-set endpoint that answers 200 with no usable
// key (an empty object, an empty list, keys of no known type) does not replace the cached
// keys: tokens that worked keep working.
func TestJWKSEmptySetKeepsCachedKeys(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	jwks := newJWKSServer(t, k)
	env := newJWKSEnv(t, jwks, func(c *Config) { c.JWKSRefreshEvery = 20 * time.Millisecond })
	env.srv.auth.ba.staleAfter = time.Nanosecond
	token := k.sign(t, baGoodClaims(randomName("user-")))
	baMe(t, env, token)
	for _, body := range []string{`{}`, `{"keys":[]}`, `{"keys":[{"kty":"oct","kid":"x","k":"c2VjcmV0"}]}`} {
		jwks.fail(0, body)
		before := jwks.fetches.Load()
		baEventually(t, body+": refreshes", func() bool {
			baAs(env, t).do("GET", "/api/v1/tasks", "", token).want(200, "")
			return jwks.fetches.Load() >= before+3
		})
	}
	env.do("GET", "/api/v1/tasks", "", token).want(200, "")
}

// TestJWKSStaleSetRefreshesInTheBackground: with the cached set stale and the endpoint
// hanging, requests with a cached key are answered while the refresh is still waiting:
// before the fetch has ended (and logged its failure), not after the client's timeout.
func TestJWKSStaleSetRefreshesInTheBackground(t *testing.T) {
	t.Parallel()
	k := newBAKey(t, "EdDSA")
	var hang atomic.Bool
	var fetches atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if hang.Load() {
			<-release
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{k.jwk}})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	env := newTestEnv(t, baEnvOption(baTestIssuer, srv.URL+"/api/auth/jwks"),
		func(c *Config) { c.JWKSRefreshEvery = time.Millisecond })
	token := k.sign(t, baGoodClaims(randomName("user-")))
	baMe(t, env, token)

	hang.Store(true)
	env.srv.auth.ba.staleAfter = time.Nanosecond
	for range 10 {
		env.do("GET", "/api/v1/tasks", "", token).want(200, "")
	}
	if fetches.Load() < 2 {
		t.Fatalf("the stale set was not refetched (%d fetches)", fetches.Load())
	}
	if strings.Contains(env.logs.String(), "JWKS fetch failed") {
		t.Fatal("a request waited for the hanging fetch to fail")
	}
	// A kid that is not cached waits for a fetch (and then is refused).
	other := newBAKey(t, "EdDSA")
	env.do("GET", "/api/v1/tasks", "", other.sign(t, baGoodClaims("z"))).want(401, "invalid_token")
}
