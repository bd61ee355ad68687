package main

import (
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// tokenResponse is the answer of register, login, refresh and password change.
type tokenResponse struct {
	AccessToken  string   `json:"access_token"`
	TokenType    string   `json:"token_type"`
	ExpiresIn    int64    `json:"expires_in"`
	RefreshToken string   `json:"refresh_token"`
	User         userJSON `json:"user"`
}

// issueTokens starts a new login for u: an access token and the first refresh token of
// a new family.
func (s *Server) issueTokens(r *http.Request, u User) (tokenResponse, error) {
	access, err := s.auth.issueAccessToken(u)
	if err != nil {
		return tokenResponse{}, err
	}
	refresh, rt := s.auth.newRefreshToken(u.ID)
	rt.PasswordEpoch = u.PasswordEpoch
	if err := s.st.StoreRefreshToken(r.Context(), rt); err != nil {
		return tokenResponse{}, err
	}
	return s.tokenAnswer(u, access, refresh), nil
}

func (s *Server) tokenAnswer(u User, access, refresh string) tokenResponse {
	return tokenResponse{AccessToken: access, TokenType: "bearer",
		ExpiresIn: int64(s.cfg.JWTAccessTTL.Seconds()), RefreshToken: refresh, User: u.wire()}
}

func noStore(w http.ResponseWriter) { w.Header().Set("Cache-Control", "no-store") }

// normalizeEmail trims and lower-cases an email and checks that it looks like an address:
// one @, a non-empty local part, a dot inside the domain, no spaces, at most 254 characters.
func normalizeEmail(raw string) (string, string) {
	e, _ := cleanText(raw)
	e = strings.ToLower(e)
	local, domain, ok := strings.Cut(e, "@")
	switch {
	case e == "":
		return e, "is required"
	case utf8.RuneCountInString(e) > 254:
		return e, "must be at most 254 characters"
	case !ok || local == "" || strings.Contains(domain, "@") ||
		strings.IndexFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 ||
		!strings.Contains(strings.Trim(domain, "."), ".") || strings.Contains(domain, ".."):
		return e, "must be a valid email address"
	}
	return e, ""
}

func checkPassword(errs *fieldErrors, field string, p *string) {
	if p == nil {
		errs.add(field, "is required")
		return
	}
	switch n := utf8.RuneCountInString(*p); {
	case n < 8:
		errs.add(field, "must be at least 8 characters")
	case n > 128:
		errs.add(field, "must be at most 128 characters")
	}
}

// handleRegister serves POST /api/v1/auth/register: 201 with tokens; 422 listing every
// bad field; 409 email_taken; 429 when one address registers too often.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	if err := s.limits.registers.take(r.Context(), s.limits.addrKey(r)); err != nil {
		return err
	}
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	email := field[string](&b, "email", "must be a string")
	password := field[string](&b, "password", "must be a string")
	name := field[string](&b, "name", "must be a string or null")
	var addr string
	if !b.errs.has("email") {
		if email.Value == nil {
			b.errs.add("email", "is required")
		} else if a, msg := normalizeEmail(*email.Value); msg != "" {
			b.errs.add("email", msg)
		} else {
			addr = a
		}
	}
	if !b.errs.has("password") {
		checkPassword(&b.errs, "password", password.Value)
	}
	nameValue := cleanName(&b.errs, name)
	if len(b.errs) > 0 {
		return validationFailed(b.errs.inOrder("email", "password", "name"))
	}
	hash, err := s.auth.hashPassword(r.Context(), *password.Value)
	if err != nil {
		return err
	}
	var u User
	if s.cfg.mail.enabled() {
		u, err = s.st.CreateUserWithMail(r.Context(), addr, nameValue, hash)
	} else {
		u, err = s.st.CreateUser(r.Context(), addr, nameValue, hash)
	}
	if err != nil {
		return err
	}
	resp, err := s.issueTokens(r, u)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/auth/me")
	return writeJSON(w, http.StatusCreated, resp)
}

// cleanName trims a name; null or "" clears it.
func cleanName(errs *fieldErrors, name optional[string]) *string {
	if errs.has("name") || name.Value == nil {
		return nil
	}
	n, _ := cleanText(*name.Value)
	checkText(errs, "name", n, 0, 100)
	if n == "" {
		return nil
	}
	return &n
}

// handleLogin serves POST /api/v1/auth/login, from JSON {"email","password"} or the
// OAuth2 password form {username, password}: 200 with tokens, or 401
// invalid_credentials, the same answer in the same time for an unknown email and a
// wrong password. Failures are rate-limited per address and per email.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	email, password, err := s.readCredentials(w, r)
	if err != nil {
		return err
	}
	email = strings.ToLower(strings.TrimSpace(email))
	ipKey, emailKey := s.limits.addrKey(r), "email:"+email
	failures := s.limits.loginFailures
	if err := failures.takeAttempt(r.Context(), ipKey, emailKey); err != nil {
		return err
	}
	u, hash, err := s.st.FindLocalUserByEmail(r.Context(), email)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		hash, err = s.auth.dummyHash, nil
	} else if err != nil {
		return err
	}
	ok, stale, err := s.auth.verifyPassword(r.Context(), password, hash)
	if err != nil {
		return err
	}
	if !ok || u.ID == 0 {
		return errBadCredentials // the attempt stays taken
	}
	failures.giveBack(r.Context(), ipKey, emailKey)
	if stale {
		if newHash, err := s.auth.hashPassword(r.Context(), password); err == nil {
			if err := s.st.UpdatePasswordHash(r.Context(), u.ID, hash, newHash); err != nil {
				s.log.Warn("rehash on login failed", "user_id", u.ID, "error", err.Error())
			}
		}
	}
	resp, err := s.issueTokens(r, u)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// readCredentials reads a login body: JSON, or the OAuth2 password grant's form.
func (s *Server) readCredentials(w http.ResponseWriter, r *http.Request) (string, string, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/x-www-form-urlencoded" {
		body, err := s.readBody(w, r)
		if err != nil {
			return "", "", err
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return "", "", invalidJSON("The form body is malformed.")
		}
		var errs fieldErrors
		for _, f := range []string{"username", "password"} {
			if form.Get(f) == "" {
				errs.add(f, "is required")
			}
		}
		if len(errs) > 0 {
			return "", "", validationFailed(errs)
		}
		return form.Get("username"), form.Get("password"), nil
	}
	b, err := s.decodeObject(w, r)
	if err != nil {
		return "", "", err
	}
	email := field[string](&b, "email", "must be a string")
	password := field[string](&b, "password", "must be a string")
	if email.Value == nil || *email.Value == "" {
		b.errs.add("email", "is required")
	}
	if password.Value == nil || *password.Value == "" {
		b.errs.add("password", "is required")
	}
	if len(b.errs) > 0 {
		return "", "", validationFailed(b.errs)
	}
	return *email.Value, *password.Value, nil
}

// readRefreshToken reads {"refresh_token"} and splits the token.
func (s *Server) readRefreshToken(w http.ResponseWriter, r *http.Request) (int64, []byte, error) {
	b, err := s.decodeObject(w, r)
	if err != nil {
		return 0, nil, err
	}
	tok := field[string](&b, "refresh_token", "must be a string")
	if !b.errs.has("refresh_token") && (tok.Value == nil || *tok.Value == "") {
		b.errs.add("refresh_token", "is required")
	}
	if len(b.errs) > 0 {
		return 0, nil, validationFailed(b.errs)
	}
	return parseRefreshToken(*tok.Value)
}

// handleRefresh serves POST /api/v1/auth/refresh: rotates the refresh token and answers
// a new pair; invalid_token for an unknown, expired, revoked or rotated one (and reuse
// of a rotated one revokes its whole login).
func (s *Server) handleRefresh(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	userID, hash, err := s.readRefreshToken(w, r)
	if err != nil {
		return err
	}
	refresh, next := s.auth.newRefreshToken(userID)
	u, err := s.st.RotateRefreshToken(r.Context(), userID, hash, next)
	if err != nil {
		return err
	}
	access, err := s.auth.issueAccessToken(u)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.tokenAnswer(u, access, refresh))
}

// handleLogout serves POST /api/v1/auth/logout: 204 after revoking the refresh token.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	userID, hash, err := s.readRefreshToken(w, r)
	if err != nil {
		return err
	}
	if err := s.st.RevokeRefreshToken(r.Context(), userID, hash); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleMe serves GET /api/v1/auth/me.
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	u, err := s.st.FindUser(r.Context(), principalFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, u.wire())
}

// handleMeUpdate serves PATCH /api/v1/auth/me: {"name", "timezone"}; a null or "" name
// clears it, a time zone is an IANA name; absent fields stay.
func (s *Server) handleMeUpdate(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	name := field[string](&b, "name", "must be a string or null")
	tz := field[string](&b, "timezone", "must be an IANA time-zone name such as Europe/Berlin")
	n := cleanName(&b.errs, name)
	if tz.Set && !b.errs.has("timezone") && (tz.Value == nil || loadTimezone(*tz.Value) == nil) {
		b.errs.add("timezone", "must be an IANA time-zone name such as Europe/Berlin")
	}
	if len(b.errs) > 0 {
		return validationFailed(b.errs.inOrder("name", "timezone"))
	}
	id := principalFrom(r.Context()).UserID
	if !name.Set && !tz.Set {
		return s.handleMe(w, r)
	}
	var zone string
	if tz.Value != nil {
		zone = *tz.Value
	}
	u, err := s.st.UpdateUser(r.Context(), id, name.Set, n, tz.Set, zone)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, u.wire())
}

// handlePasswordChange serves POST /api/v1/auth/password: checks the current password,
// stores the new one, revokes every earlier refresh token and answers a new pair.
func (s *Server) handlePasswordChange(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	current := field[string](&b, "current_password", "must be a string")
	next := field[string](&b, "new_password", "must be a string")
	if !b.errs.has("current_password") && (current.Value == nil || *current.Value == "") {
		b.errs.add("current_password", "is required")
	}
	if !b.errs.has("new_password") {
		checkPassword(&b.errs, "new_password", next.Value)
	}
	if len(b.errs) > 0 {
		return validationFailed(b.errs)
	}
	id := principalFrom(r.Context()).UserID
	u, err := s.st.FindUser(r.Context(), id)
	if err != nil {
		return err
	}
	if u.Issuer != nil {
		return validationFailed([]fieldError{{Field: "current_password",
			Message: "this account signs in through Better Auth and has no password here"}})
	}
	key := "email:" + *u.Email
	failures := s.limits.loginFailures
	if err := failures.takeAttempt(r.Context(), key); err != nil {
		return err
	}
	hash, err := s.st.FindPasswordHash(r.Context(), id)
	if err != nil {
		return err
	}
	ok, _, err := s.auth.verifyPassword(r.Context(), *current.Value, hash)
	if err != nil {
		return err
	}
	if !ok {
		return validationFailed([]fieldError{{Field: "current_password", Message: "is incorrect"}})
	}
	failures.giveBack(r.Context(), key)
	newHash, err := s.auth.hashPassword(r.Context(), *next.Value)
	if err != nil {
		return err
	}
	refresh, rt := s.auth.newRefreshToken(id)
	if err := s.st.ChangePassword(r.Context(), id, newHash, rt); err != nil {
		return err
	}
	access, err := s.auth.issueAccessToken(u)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.tokenAnswer(u, access, refresh))
}

// handleMeDelete serves DELETE /api/v1/auth/me: 204; the account, its tasks and its
// tokens are gone, and its access tokens stop working at once.
func (s *Server) handleMeDelete(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	if err := s.st.DeleteUser(r.Context(), principalFrom(r.Context()).UserID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
