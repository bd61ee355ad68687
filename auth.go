package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"
)

// Authenticator issues and verifies the service's own tokens, hashes passwords, and
// recognises Better Auth tokens when configured.
type Authenticator struct {
	cfg       Config
	st        *Store
	log       *slog.Logger
	method    jwt.SigningMethod
	parser    *jwt.Parser
	hashSlots chan struct{}
	argon     argonParams // for new hashes
	dummyHash string
	cursorKey []byte
	ba        *betterAuth // nil unless BETTER_AUTH_URL, _JWKS_URL or _SECRET is set
	verified  *tokenCache

	// hashWaiting counts requests queued for a hashing slot, for the metrics;
	// len(hashSlots) is the hashes running.
	hashWaiting atomic.Int64
}

// NewAuthenticator prepares token signing and verification from cfg.
func NewAuthenticator(cfg Config, st *Store, log *slog.Logger) (*Authenticator, error) {
	a := &Authenticator{
		cfg:       cfg,
		st:        st,
		log:       log,
		method:    jwt.GetSigningMethod(cfg.JWTAlgorithm),
		hashSlots: make(chan struct{}, max(1, cfg.HashConcurrency)),
		argon:     cfg.argon,
		// Cursors are signed with a key derived from the JWT secret, so that every replica
		// accepts every other's cursors and neither key can be turned into the other.
		cursorKey: hmacSum(cfg.JWTSecret, []byte("todo cursor key v1")),
		verified:  newTokenCache(4096),
	}
	a.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{cfg.JWTAlgorithm}),
		jwt.WithIssuer(cfg.JWTIssuer),
		jwt.WithAudience(cfg.JWTAudience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.JWTLeeway),
	)
	// Login with an unknown email verifies against this hash, so that it costs the same
	// as a wrong password and the timing does not tell which emails have accounts.
	dummy, err := a.hashPassword(context.Background(), newOpaque(24))
	if err != nil {
		return nil, err
	}
	a.dummyHash = dummy
	// The hash leaves 19 MiB of garbage at start; hand it back now rather than let the
	// heap grow around it before the first collection.
	debug.FreeOSMemory()
	if cfg.BetterAuthJWKSURL != "" || len(cfg.BetterAuthSecret) > 0 {
		a.ba = newBetterAuth(cfg, log)
	}
	return a, nil
}

func hmacSum(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

func newOpaque(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ---- passwords ----

// argonParams are the Argon2id parameters of new hashes (OWASP: m=19 MiB, t=2, p=1).
// Each hash records its own, so raising these rehashes old passwords at their next login.
type argonParams struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
}

var defaultArgon = argonParams{memory: 19 * 1024, time: 2, threads: 1}

// hashPassword returns the PHC string of an Argon2id hash of password. It waits for a
// hashing slot, so that a flood of logins queues instead of exhausting memory.
func (a *Authenticator) hashPassword(ctx context.Context, password string) (string, error) {
	if err := a.acquireHashSlot(ctx); err != nil {
		return "", err
	}
	defer func() { <-a.hashSlots }()
	salt := make([]byte, 16)
	rand.Read(salt)
	p := a.argon
	key := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, 32)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// acquireHashSlot waits for a hashing slot at most half the write timeout: under a flood
// the excess answers 503 while it still can, instead of waiting past the write timeout
// and then being hashed for a client that can no longer be answered.
func (a *Authenticator) acquireHashSlot(ctx context.Context) error {
	wait := 15 * time.Second
	if a.cfg.WriteTimeout > 0 {
		wait = a.cfg.WriteTimeout / 2
	}
	select { // a free slot first, so that only a request that has to wait counts as queued
	case a.hashSlots <- struct{}{}:
		return nil
	default:
	}
	a.hashWaiting.Add(1)
	defer a.hashWaiting.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case a.hashSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for a hashing slot: %w", ctx.Err())
	case <-timer.C:
		return &apiError{Status: errUnavailable.Status, Code: errUnavailable.Code, Detail: errUnavailable.Detail,
			Err: fmt.Errorf("no hashing slot free within %v", wait)}
	}
}

// verifyPassword checks password against a PHC string in constant time; stale reports
// that the hash uses weaker parameters than new hashes do.
func (a *Authenticator) verifyPassword(ctx context.Context, password, phc string) (ok, stale bool, err error) {
	p, salt, want, perr := parsePHC(phc)
	if perr != nil {
		return false, false, perr
	}
	if err := a.acquireHashSlot(ctx); err != nil {
		return false, false, err
	}
	defer func() { <-a.hashSlots }()
	got := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, uint32(len(want)))
	ok = subtle.ConstantTimeCompare(got, want) == 1
	stale = p.memory < a.argon.memory || p.time < a.argon.time || p.threads < a.argon.threads
	return ok, stale, nil
}

func parsePHC(phc string) (argonParams, []byte, []byte, error) {
	parts := strings.Split(phc, "$")
	bad := errors.New("password hash: not an argon2id PHC string")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v=19" {
		return argonParams{}, nil, nil, bad
	}
	var p argonParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil {
		return argonParams{}, nil, nil, bad
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(key) < 16 || p.time == 0 || p.threads == 0 || p.memory > 1<<22 {
		return argonParams{}, nil, nil, bad
	}
	return p, salt, key, nil
}

// ---- access tokens ----

// accessClaims are the claims of the service's own access tokens.
type accessClaims struct {
	UserID int64  `json:"user_id"`
	Email  string `json:"email,omitempty"`
	jwt.RegisteredClaims
}

// issueAccessToken signs a token for the user, valid for JWT_ACCESS_TTL.
func (a *Authenticator) issueAccessToken(u User) (string, error) {
	now := time.Now()
	c := accessClaims{
		UserID: u.ID,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(u.ID, 10),
			Issuer:    a.cfg.JWTIssuer,
			Audience:  jwt.ClaimStrings{a.cfg.JWTAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(a.cfg.JWTAccessTTL)),
			ID:        newOpaque(16),
		},
	}
	if u.Email != nil {
		c.Email = *u.Email
	}
	s, err := jwt.NewWithClaims(a.method, c).SignedString(a.cfg.JWTSecret)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return s, nil
}

// principal is the authenticated caller: the local user row and the token's subject
// (the id a section 6 path must name).
type principal struct {
	UserID  int64
	Subject string
	// checkUser: the user's existence is still to be checked (local tokens).
	checkUser bool
	// Expires is when the token expires (leeway included): an event stream it opened
	// ends then.
	Expires time.Time
}

// peek is what is read from a token before its signature is checked, only to choose the
// one verifier that may accept it; the chosen verifier then checks everything.
type peek struct {
	Alg string `json:"alg"`
	Iss string `json:"iss"`
}

func peekToken(token string) (peek, bool) {
	var p peek
	// Counted, not split: a header of tens of thousands of dots would otherwise cost a
	// slice of as many strings before being refused (as golang-jwt's CVE-2025-30204).
	if strings.Count(token, ".") != 2 {
		return p, false
	}
	head, rest, _ := strings.Cut(token, ".")
	claims, _, _ := strings.Cut(rest, ".")
	hdr, err1 := base64.RawURLEncoding.DecodeString(head)
	body, err2 := base64.RawURLEncoding.DecodeString(claims)
	if err1 != nil || err2 != nil {
		return p, false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	var c struct {
		Iss any             `json:"iss"`
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
		Iat json.RawMessage `json:"iat"`
	}
	if json.Unmarshal(hdr, &h) != nil || json.Unmarshal(body, &c) != nil {
		return p, false
	}
	// RFC 7519 makes the time claims JSON numbers; the JWT library also takes a string
	// holding a number, which would let "exp": "1999999999" through.
	if !numericDate(c.Exp) || !numericDate(c.Nbf) || !numericDate(c.Iat) {
		return p, false
	}
	p.Alg = h.Alg
	p.Iss, _ = c.Iss.(string)
	return p, true
}

// numericDate reports whether a time claim is absent or a JSON number (a fraction or an
// exponent form included). json.Unmarshal has already checked that raw is valid JSON.
func numericDate(raw json.RawMessage) bool {
	return len(raw) == 0 || raw[0] == '-' || ('0' <= raw[0] && raw[0] <= '9')
}

// Authenticate verifies a bearer token and finds its user. Local tokens are recognised by
// their issuer and HMAC algorithm; other tokens go to Better Auth when it is configured.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (principal, error) {
	if p, ok := a.verified.get(token); ok {
		return p, nil
	}
	pk, ok := peekToken(token)
	if !ok {
		return principal{}, tokenError(errMalformedToken)
	}
	if strings.HasPrefix(pk.Alg, "HS") && pk.Iss == a.cfg.JWTIssuer {
		return a.authenticateLocal(token)
	}
	if a.ba != nil {
		return a.ba.authenticate(ctx, a.st, token, pk)
	}
	return principal{}, tokenError(errNotIssuedHere, expectation{iss: a.cfg.JWTIssuer})
}

func (a *Authenticator) authenticateLocal(token string) (principal, error) {
	var c accessClaims
	if _, err := a.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) {
		return a.cfg.JWTSecret, nil
	}); err != nil {
		return principal{}, tokenError(err, expectation{a.cfg.JWTIssuer, a.cfg.JWTAudience})
	}
	if c.UserID <= 0 || c.Subject != strconv.FormatInt(c.UserID, 10) {
		return principal{}, tokenError(errClaimsDisagree)
	}
	// Whether the user still exists is asked by the request's first statement (see
	// userCheck), not here: one round trip fewer per request.
	p := principal{UserID: c.UserID, Subject: c.Subject, checkUser: true, Expires: c.ExpiresAt.Add(a.cfg.JWTLeeway)}
	a.verified.put(token, p, p.Expires)
	return p, nil
}

// tokenCache remembers local access tokens already verified, until they expire, so that
// a client's next requests skip the signature and claims check (a quarter of a task
// read's CPU). Only the exact token string hits; the user's existence is still checked by
// every request (userCheck). A cache, not state: a replica without it verifies again.
type tokenCache struct {
	mu      sync.RWMutex
	max     int
	entries map[string]cachedToken
}

type cachedToken struct {
	p     principal
	until time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, entries: make(map[string]cachedToken, max)}
}

func (tc *tokenCache) get(token string) (principal, bool) {
	tc.mu.RLock()
	e, ok := tc.entries[token]
	tc.mu.RUnlock()
	if !ok || !time.Now().Before(e.until) {
		return principal{}, false
	}
	return e.p, true
}

func (tc *tokenCache) put(token string, p principal, until time.Time) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if len(tc.entries) >= tc.max {
		// Full: drop the expired, and if that frees too little, an arbitrary half (map
		// order), which costs those tokens one more verification each.
		now, n := time.Now(), 0
		for k, e := range tc.entries {
			if !now.Before(e.until) || n%2 == 0 {
				delete(tc.entries, k)
			}
			n++
		}
	}
	tc.entries[token] = cachedToken{p: p, until: until}
}

type principalKey struct{}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authed requires a valid bearer token, puts its principal in the context, and on the
// section 6 routes requires the path's {user_id} to be the token's subject.
func (s *Server) authed(h handlerFunc) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		token, ok := bearerToken(r)
		if !ok {
			return errNotAuthenticated
		}
		p, err := s.auth.Authenticate(r.Context(), token)
		if err != nil {
			requestInfoFrom(r.Context()).presented = presentedClaims(token)
			return err
		}
		requestInfoFrom(r.Context()).userID = p.UserID
		if pathUser := r.PathValue("user_id"); pathUser != "" && pathUser != p.Subject {
			return errForbidden
		}
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		if p.checkUser {
			ctx = withUserCheck(ctx, p.UserID)
		}
		return h(w, r.WithContext(ctx))
	})
}

// ---- refresh tokens ----

// newRefreshToken makes a refresh token "<user id>.<256 random bits>": the user id lets
// every lookup stay on the user's shard; only the SHA-256 of the whole string is stored.
func (a *Authenticator) newRefreshToken(userID int64) (string, refreshToken) {
	token := strconv.FormatInt(userID, 10) + "." + newOpaque(32)
	sum := sha256.Sum256([]byte(token))
	var family [16]byte
	rand.Read(family[:])
	return token, refreshToken{UserID: userID, Hash: sum[:], FamilyID: family,
		ExpiresAt: time.Now().Add(a.cfg.JWTRefreshTTL)}
}

// parseRefreshToken splits a refresh token into its user id and stored hash;
// invalid_token when it is not of the service's form.
func parseRefreshToken(token string) (int64, []byte, error) {
	idPart, secret, ok := strings.Cut(token, ".")
	id, err := strconv.ParseInt(idPart, 10, 64)
	if !ok || err != nil || id <= 0 || len(secret) != 43 {
		return 0, nil, refreshTokenRefused
	}
	sum := sha256.Sum256([]byte(token))
	return id, sum[:], nil
}

// ---- rate limits ----

// rateLimits are token buckets kept in PostgreSQL (the rate_limits table), so that every
// replica counts against the same buckets: N replicas allow what one allows. While the
// database is down they answer its error (503): a limiter that cannot count fails closed.
type rateLimits struct {
	loginFailures *limiter
	registers     *limiter
	toolCalls     *limiter // MCP tool calls per user
	trusted       []netip.Prefix
	ipv6Bits      int // an IPv6 client counts as its prefix of this length
}

func newRateLimits(cfg Config, st *Store) *rateLimits {
	return &rateLimits{
		loginFailures: &limiter{st: st, name: "login", burst: float64(cfg.LoginFailuresPerMinute),
			perSec: float64(cfg.LoginFailuresPerMinute) / 60},
		registers: &limiter{st: st, name: "register", burst: float64(cfg.RegistersPerMinute),
			perSec: float64(cfg.RegistersPerMinute) / 60},
		toolCalls: &limiter{st: st, name: "mcp", burst: float64(cfg.ToolCallsPerMinute),
			perSec: float64(cfg.ToolCallsPerMinute) / 60},
		trusted:  cfg.TrustedProxies,
		ipv6Bits: cfg.RateLimitIPv6Prefix,
	}
}

// limiter is one kind of bucket: burst events at once, refilled at perSec.
type limiter struct {
	st      *Store
	name    string
	burst   float64
	perSec  float64
	refused *atomic.Uint64 // todo_rate_limited_total's counter; nil counts nothing
}

// bucketKey hides the client address or e-mail the bucket counts for: the table needs
// only to tell keys apart.
func (l *limiter) bucketKey(key string) []byte {
	sum := sha256.Sum256([]byte(l.name + "\x00" + key))
	return sum[:]
}

// take counts one event against key's bucket when it has a token left, and answers
// rate_limited when it had none.
func (l *limiter) take(ctx context.Context, key string) error {
	allowed, tokens, err := l.st.RateTake(ctx, l.bucketKey(key), l.burst, l.perSec)
	if err != nil {
		return err
	}
	return l.verdict(allowed, tokens)
}

// takeAttempt takes one attempt from the bucket of each key before a password is checked,
// so that concurrent attempts cannot exceed a budget: a check before the hash and a count
// after it would let a burst be evaluated in full. When one bucket is empty, the tokens
// already taken are given back and the answer is rate_limited; when the database is
// down, its error, so that sign-ins fail closed.
func (l *limiter) takeAttempt(ctx context.Context, keys ...string) error {
	for i, k := range keys {
		if err := l.take(ctx, k); err != nil {
			l.giveBack(ctx, keys[:i]...)
			return err
		}
	}
	return nil
}

// giveBack returns the attempt of a sign-in that succeeded: only failures count. A token
// not given back (the database went away meanwhile) errs on the side of the limit.
func (l *limiter) giveBack(ctx context.Context, keys ...string) {
	for _, k := range keys {
		l.st.RateGive(ctx, l.bucketKey(k), l.burst, l.perSec)
	}
}

// verdict is nil when allowed, else rate_limited with the seconds until a token is back.
func (l *limiter) verdict(allowed bool, tokens float64) error {
	if allowed {
		return nil
	}
	if l.refused != nil {
		l.refused.Add(1)
	}
	return rateLimited(int((1-tokens)/l.perSec) + 1)
}

func rateLimited(retryAfter int) error {
	return &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Detail: "Too many attempts; try again later.", RetryAfter: retryAfter}
}

// addrKey is the bucket key of the request's client address. An IPv6 client counts as
// its /64 (RATE_LIMIT_IPV6_PREFIX): a single host is routinely given a whole /64, so
// keying the full address would give one client 2^64 buckets.
func (rl *rateLimits) addrKey(r *http.Request) string {
	a := rl.clientAddr(r)
	if addr, err := netip.ParseAddr(a); err == nil && addr.Is6() {
		if p, err := addr.Prefix(rl.ipv6Bits); err == nil {
			return "ip:" + p.String()
		}
	}
	return "ip:" + a
}

// clientAddr is the connection's address, or, when that is a trusted proxy, the last
// address in X-Forwarded-For that is not one.
func (rl *rateLimits) clientAddr(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	addr := ap.Addr().Unmap()
	if !rl.isTrusted(addr) {
		return addr.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		addr = hop.Unmap()
		if !rl.isTrusted(addr) {
			break
		}
	}
	return addr.String()
}

func (rl *rateLimits) isTrusted(a netip.Addr) bool {
	for _, p := range rl.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
