package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// A refused token says why (contract §2, RFC 6750 §3): the 401's detail and its
// WWW-Authenticate error_description name the check that failed, and one log line per
// reason and second tells the operator, with what the token claimed. The time between "it
// doesn't work" and the fix is usually a misconfigured issuer or audience, which only
// this makes visible. Nothing of the token's own content reaches the client; the expected
// issuer and audience are configuration, not secrets.

// Reasons a token was refused that golang-jwt does not tell apart by itself.
var (
	errMalformedToken = errors.New("malformed token")
	errAlgorithm      = errors.New("signing algorithm not accepted")
	errUnknownKid     = errors.New("no key with this kid")
	errNotIssuedHere  = errors.New("token not issued by this service")
	errClaimsDisagree = errors.New("claims name no single user")
	errUserGone       = errors.New("user no longer exists")
)

// expectation is what a verifier checks iss and aud against; "" is not checked.
type expectation struct{ iss, aud string }

// tokenError refuses a token: token_expired for an expired one (the client should
// refresh), invalid_token otherwise, with the reason in detail. want names the issuer and
// audience the verifier expected, if it had any.
func tokenError(err error, want ...expectation) error {
	var w expectation
	if len(want) > 0 {
		w = want[0]
	}
	reason, detail := tokenReason(err, w)
	base := errInvalidToken
	if reason == "expired" {
		base = errTokenExpired
	}
	return &apiError{Status: base.Status, Code: base.Code, Detail: detail, Err: err, reason: reason}
}

// tokenReason is the short key (for the log) and the sentence (for the client) of why err
// refused a token. Faults of configuration come before faults of time: an expired token
// for the wrong audience is not helped by a refresh.
func tokenReason(err error, want expectation) (string, string) {
	has := func(target error) bool { return errors.Is(err, target) }
	switch {
	case has(errMalformedToken) || has(jwt.ErrTokenMalformed):
		return "malformed", "The token is malformed: not a JWT with a JSON header and numeric time claims."
	case has(errAlgorithm) || (has(jwt.ErrTokenSignatureInvalid) && strings.Contains(err.Error(), "signing method")) ||
		(has(jwt.ErrTokenUnverifiable) && strings.Contains(err.Error(), "signing method")):
		return "algorithm", "The token's signing algorithm is not accepted."
	case has(errUnknownKid):
		return "unknown_kid", "The token's key id (kid) is not in the key set."
	case has(jwt.ErrTokenSignatureInvalid):
		return "signature", "The token's signature is invalid."
	case has(errNotIssuedHere):
		return "issuer", "The token's issuer is not accepted" + expected(want.iss) + "."
	case has(jwt.ErrTokenInvalidIssuer):
		return "issuer", "The token's issuer is not accepted" + expected(want.iss) + "."
	case has(jwt.ErrTokenInvalidAudience):
		return "audience", "The token's audience is not accepted" + expected(want.aud) + "."
	case has(jwt.ErrTokenRequiredClaimMissing):
		for _, c := range []string{"exp", "iss", "aud"} {
			if strings.Contains(err.Error(), c+" claim is required") {
				return "missing_claim", "The token lacks the required claim " + c + "."
			}
		}
		return "missing_claim", "The token lacks a required claim."
	case has(jwt.ErrTokenNotValidYet) || has(jwt.ErrTokenUsedBeforeIssued):
		return "not_yet_valid", "The token is not valid yet (nbf or iat is in the future)."
	case has(jwt.ErrTokenExpired):
		return "expired", "The token has expired."
	case has(errClaimsDisagree):
		return "claims", "The token's claims name no single user (sub, user_id)."
	case has(errUserGone):
		return "user_gone", "The token's user no longer exists."
	}
	return "invalid", "The token is invalid."
}

func expected(v string) string {
	if v == "" {
		return ""
	}
	return "; expected " + v
}

// refreshTokenRefused is the answer to a refresh token that is unknown, expired, revoked
// or already rotated: the service cannot tell a client which without helping a thief.
var refreshTokenRefused = &apiError{Status: http.StatusUnauthorized, Code: "invalid_token",
	Detail: "The refresh token is unknown, expired, revoked or already used.", reason: "refresh_token"}

// bearerChallenge is the WWW-Authenticate value of a refused token (RFC 6750 §3): the
// description holds only the characters the RFC allows (no quote, no backslash, printable
// ASCII), so that a configured issuer with odd characters cannot break the header.
func bearerChallenge(detail string) string {
	d := []byte(detail)
	for i, c := range d {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			d[i] = '?'
		}
	}
	if len(d) > 300 {
		d = d[:300]
	}
	return `Bearer error="invalid_token", error_description="` + string(d) + `"`
}

// presented is what a refused token claimed, unverified, for the log: never the token.
type presented struct{ kid, iss, aud string }

// presentedClaims reads kid, iss and aud from a token without trusting them, each cut to
// 100 bytes; the fields it cannot read stay empty.
func presentedClaims(token string) presented {
	var p presented
	if len(token) > 16<<10 || strings.Count(token, ".") != 2 {
		return p
	}
	head, rest, _ := strings.Cut(token, ".")
	claims, _, _ := strings.Cut(rest, ".")
	var h struct {
		Kid any `json:"kid"`
	}
	var c struct {
		Iss any `json:"iss"`
		Aud any `json:"aud"`
	}
	if b, err := base64.RawURLEncoding.DecodeString(head); err == nil && json.Unmarshal(b, &h) == nil {
		p.kid = clip(h.Kid)
	}
	if b, err := base64.RawURLEncoding.DecodeString(claims); err == nil && json.Unmarshal(b, &c) == nil {
		p.iss, p.aud = clip(c.Iss), clip(c.Aud)
	}
	return p
}

func clip(v any) string {
	var s string
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		s = v
	default:
		b, _ := json.Marshal(v)
		s = string(b)
	}
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return s
}

// rejectionLog writes one line per refused token at info, at most one per reason per
// second: a flood of bad tokens costs a line a second, and the line after a quiet
// second says how many were not written.
type rejectionLog struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	quiet map[string]int // refusals not written since the reason's last line
}

func newRejectionLog(log *slog.Logger) *rejectionLog {
	return &rejectionLog{log: log, every: time.Second, last: map[string]time.Time{}, quiet: map[string]int{}}
}

func (l *rejectionLog) write(r *http.Request, route, reason string, p presented) {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.last[reason]) < l.every {
		l.quiet[reason]++
		l.mu.Unlock()
		return
	}
	suppressed := l.quiet[reason]
	l.last[reason], l.quiet[reason] = now, 0
	l.mu.Unlock()
	l.log.LogAttrs(r.Context(), slog.LevelInfo, "token refused",
		slog.String("reason", reason), slog.String("route", route),
		slog.String("request_id", requestInfoFrom(r.Context()).id),
		slog.String("kid", p.kid), slog.String("iss", p.iss), slog.String("aud", p.aud),
		slog.Int("suppressed", suppressed))
}

// logBetterAuthSetup states at start how Better Auth tokens are checked, so that a
// mismatch with the frontend's issuer or audience shows before the first request.
func logBetterAuthSetup(log *slog.Logger, cfg Config) {
	if cfg.BetterAuthJWKSURL == "" && len(cfg.BetterAuthSecret) == 0 {
		log.Info("better auth: off (only this service's own tokens are accepted)")
		return
	}
	notChecked := func(v string) string { return orDefault(v, "not checked") }
	attrs := []any{"hs256_accepted", len(cfg.BetterAuthSecret) > 0}
	if cfg.BetterAuthJWKSURL != "" {
		attrs = append(attrs, "jwks_url", cfg.BetterAuthJWKSURL,
			"issuer", orDefault(cfg.BetterAuthIssuer, cfg.BetterAuthURL),
			"audience", orDefault(cfg.BetterAuthAudience, cfg.BetterAuthURL),
			"algorithms", strings.Join(asymmetricAlgs, ","))
	}
	if len(cfg.BetterAuthSecret) > 0 {
		attrs = append(attrs, "hs256_issuer", notChecked(cfg.BetterAuthIssuer),
			"hs256_audience", notChecked(cfg.BetterAuthAudience))
	}
	log.Info("better auth", attrs...)
}
