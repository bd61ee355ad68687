package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// betterAuth verifies tokens issued by a Better Auth server: asymmetric ones against its
// JSON Web Key Set, and HS256 ones minted with the shared BETTER_AUTH_SECRET.
type betterAuth struct {
	log      *slog.Logger
	jwksURL  string
	issuer   string // checked on JWKS tokens; defaults to BETTER_AUTH_URL
	audience string
	secret   []byte
	// For secret-signed tokens iss and aud are checked only when set explicitly, since
	// frontends that mint their own tokens often include neither.
	secretIssuer, secretAudience string
	leeway                       time.Duration
	refreshEvery                 time.Duration
	client                       *http.Client

	mu          sync.RWMutex
	keys        map[string]jwk // by kid
	fetchMu     sync.Mutex     // one fetch at a time; waiters then see its result
	lastAttempt time.Time
	staleAfter  time.Duration // jwksStaleAfter; tests shorten it
}

// jwk is one usable key of the set: the public key and the one algorithm it may verify.
type jwk struct {
	alg string
	key any
}

// jwksStaleAfter is how old the cached set may grow before a token's use refreshes it, so
// that a key removed from the set stops working; a failed refresh keeps the cache.
const jwksStaleAfter = 10 * time.Minute

func newBetterAuth(cfg Config, log *slog.Logger) *betterAuth {
	ba := &betterAuth{
		log:            log,
		jwksURL:        cfg.BetterAuthJWKSURL,
		issuer:         orDefault(cfg.BetterAuthIssuer, cfg.BetterAuthURL),
		audience:       orDefault(cfg.BetterAuthAudience, cfg.BetterAuthURL),
		secret:         cfg.BetterAuthSecret,
		secretIssuer:   cfg.BetterAuthIssuer,
		secretAudience: cfg.BetterAuthAudience,
		leeway:         cfg.JWTLeeway,
		refreshEvery:   cfg.JWKSRefreshEvery,
		client:         &http.Client{Timeout: 3 * time.Second},
		keys:           map[string]jwk{},
		staleAfter:     jwksStaleAfter,
	}
	return ba
}

// baClaims are the claims read from a Better Auth token. A token minted by a frontend
// may name its user in user_id or id instead of sub. Email and name are read as any
// JSON value, so that a profile claim of an unexpected type is dropped instead of
// refusing a correctly signed token.
type baClaims struct {
	jwt.RegisteredClaims
	AltUserID any `json:"user_id"`
	AltID     any `json:"id"`
	Email     any `json:"email"`
	Name      any `json:"name"`
}

func (c *baClaims) subject() string {
	if c.Subject != "" {
		return c.Subject
	}
	for _, v := range []any{c.AltUserID, c.AltID} {
		switch v := v.(type) {
		case string:
			return v
		case json.Number:
			// Read as a number literal (jwt.WithJSONNumber), not a float64, so that ids
			// beyond 2^53 stay distinct; only whole numbers name a user.
			if n, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
				return strconv.FormatInt(n, 10)
			}
		}
	}
	return ""
}

var asymmetricAlgs = []string{"EdDSA", "ES256", "RS256", "PS256"}

// authenticate verifies a Better Auth token and finds, or on first sight creates, the
// local user bound to its (issuer, subject).
func (ba *betterAuth) authenticate(ctx context.Context, st *Store, token string, pk peek) (principal, error) {
	var (
		c      baClaims
		issuer string
		want   expectation
		err    error
	)
	switch {
	case pk.Alg == "HS256" && len(ba.secret) > 0:
		opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
			jwt.WithLeeway(ba.leeway), jwt.WithJSONNumber()}
		if ba.secretIssuer != "" {
			opts = append(opts, jwt.WithIssuer(ba.secretIssuer))
		}
		if ba.secretAudience != "" {
			opts = append(opts, jwt.WithAudience(ba.secretAudience))
		}
		_, err = jwt.NewParser(opts...).ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return ba.secret, nil })
		// One Better Auth server seen both ways maps each user to one row.
		issuer = orDefault(c.Issuer, orDefault(ba.issuer, "better-auth"))
		want = expectation{ba.secretIssuer, ba.secretAudience}
	case ba.jwksURL != "":
		opts := []jwt.ParserOption{jwt.WithValidMethods(asymmetricAlgs), jwt.WithExpirationRequired(),
			jwt.WithLeeway(ba.leeway), jwt.WithIssuer(ba.issuer), jwt.WithAudience(ba.audience), jwt.WithJSONNumber()}
		_, err = jwt.NewParser(opts...).ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
			return ba.keyFor(ctx, t)
		})
		issuer = ba.issuer
		want = expectation{ba.issuer, ba.audience}
	default:
		// HS256 without BETTER_AUTH_SECRET, or an asymmetric token without a key set.
		return principal{}, tokenError(errAlgorithm)
	}
	if err != nil {
		return principal{}, tokenError(err, want)
	}
	sub := c.subject()
	if sub == "" || len(sub) > 255 || !utf8.ValidString(sub) || strings.ContainsRune(sub, 0) {
		return principal{}, tokenError(fmt.Errorf("%w: no usable subject", errClaimsDisagree))
	}
	id, err := st.UpsertExternalUser(ctx, issuer, sub, claimText(c.Email, 254), claimText(c.Name, 100))
	if err != nil {
		return principal{}, err
	}
	return principal{UserID: id, Subject: sub, Expires: c.ExpiresAt.Add(ba.leeway)}, nil
}

// claimText keeps a profile claim only if it is text that fits the users table, trimmed
// to max runes.
func claimText(claim any, maxRunes int) *string {
	s, ok := claim.(string)
	if !ok || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return nil
	}
	v, _ := cleanText(s)
	if v == "" {
		return nil
	}
	if utf8.RuneCountInString(v) > maxRunes {
		if maxRunes == 254 { // a cut email is a wrong email
			return nil
		}
		v = string([]rune(v)[:maxRunes])
	}
	return &v
}

// keyFor picks the key by the token's kid and accepts only the algorithm that the key's
// type allows, so that no key verifies under another algorithm (no RSA key read as an
// HMAC secret, no "none").
func (ba *betterAuth) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, fmt.Errorf("%w: the token names none", errUnknownKid)
	}
	k, ok := ba.lookup(ctx, kid)
	if !ok {
		return nil, errUnknownKid
	}
	if alg := t.Method.Alg(); !k.allows(alg) {
		return nil, fmt.Errorf("%w: key %q does not allow %s", errAlgorithm, kid, alg)
	}
	return k.key, nil
}

func (k jwk) allows(alg string) bool {
	switch k.key.(type) {
	case ed25519.PublicKey:
		return alg == "EdDSA"
	case *ecdsa.PublicKey:
		return alg == "ES256"
	case *rsa.PublicKey:
		return (alg == "RS256" || alg == "PS256") && (k.alg == "" || k.alg == alg)
	}
	return false
}

// lookup finds kid in the cached set. A known key is answered from the cache at once,
// even when the set is stale: the refresh then runs in the background, so that a hanging
// endpoint delays no request that the cache can serve. Only an unknown kid waits for a
// fetch, at most one per refresh interval whatever the number of unknown kids.
func (ba *betterAuth) lookup(ctx context.Context, kid string) (jwk, bool) {
	ba.mu.RLock()
	k, ok := ba.keys[kid]
	fresh := time.Since(ba.lastAttempt) < ba.staleAfter
	ba.mu.RUnlock()
	if ok {
		if !fresh && ba.fetchMu.TryLock() {
			go func() {
				defer ba.fetchMu.Unlock()
				ba.refreshLocked(context.Background())
			}()
		}
		return k, true
	}
	ba.fetchMu.Lock()
	ba.refreshLocked(ctx)
	ba.fetchMu.Unlock()
	ba.mu.RLock()
	defer ba.mu.RUnlock()
	k, ok = ba.keys[kid]
	return k, ok
}

// refreshLocked fetches the set, unless a fetch was attempted within the refresh
// interval; the caller holds fetchMu. A failed fetch keeps the cached keys.
func (ba *betterAuth) refreshLocked(ctx context.Context) {
	ba.mu.RLock()
	recent := !ba.lastAttempt.IsZero() && time.Since(ba.lastAttempt) < ba.refreshEvery
	ba.mu.RUnlock()
	if recent {
		return
	}
	keys, err := ba.fetch(ctx)
	ba.mu.Lock()
	defer ba.mu.Unlock()
	ba.lastAttempt = time.Now()
	if err != nil {
		ba.log.Warn("better auth: JWKS fetch failed; keeping cached keys", "error", err.Error(), "cached", len(ba.keys))
		return
	}
	ba.keys = keys
}

// fetch reads the key set, keeping the keys it can use and skipping the rest.
func (ba *betterAuth) fetch(ctx context.Context) (map[string]jwk, error) {
	// Detached from the request's cancellation: the set serves every later request too.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ba.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ba.jwksURL, nil)
	if err != nil {
		return nil, err
	}
	res, err := ba.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS answered %s", res.Status)
	}
	var set struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	keys := map[string]jwk{}
	for _, rk := range set.Keys {
		k, err := rk.parse()
		if err != nil {
			ba.log.Warn("better auth: skipping JWKS key", "kid", rk.Kid, "error", err.Error())
			continue
		}
		keys[rk.Kid] = k
	}
	// A set without one usable key is a broken answer (an empty object, a half-deployed
	// auth server), not a revocation of every key: replacing the cache with it would sign
	// every user out.
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS holds no usable key (%d listed)", len(set.Keys))
	}
	return keys, nil
}

// rawJWK is a JSON Web Key as served (RFC 7517/8037).
type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func (rk rawJWK) parse() (jwk, error) {
	if rk.Kid == "" {
		return jwk{}, errors.New("no kid")
	}
	if rk.Use != "" && rk.Use != "sig" {
		return jwk{}, errors.New("not a signing key")
	}
	b64 := base64.RawURLEncoding.DecodeString
	switch {
	case rk.Kty == "OKP" && rk.Crv == "Ed25519":
		x, err := b64(rk.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return jwk{}, errors.New("bad Ed25519 key")
		}
		return jwk{alg: "EdDSA", key: ed25519.PublicKey(x)}, nil
	case rk.Kty == "EC" && rk.Crv == "P-256":
		x, err1 := b64(rk.X)
		y, err2 := b64(rk.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return jwk{}, errors.New("bad P-256 key")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return jwk{}, fmt.Errorf("bad P-256 key: %w", err)
		}
		return jwk{alg: "ES256", key: pub}, nil
	case rk.Kty == "RSA":
		n, err1 := b64(rk.N)
		e, err2 := b64(rk.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			return jwk{}, errors.New("bad RSA key")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 || pub.E < 3 {
			return jwk{}, errors.New("RSA key too weak")
		}
		if rk.Alg != "" && rk.Alg != "RS256" && rk.Alg != "PS256" {
			return jwk{}, fmt.Errorf("unsupported RSA alg %q", rk.Alg)
		}
		return jwk{alg: rk.Alg, key: pub}, nil
	}
	return jwk{}, fmt.Errorf("unsupported key type %s %s", rk.Kty, rk.Crv)
}
