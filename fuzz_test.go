package main

// Fuzz targets for everything a client controls: JSON bodies of every route, list query
// strings, cursors, bearer tokens of both kinds; and the task encoder, against
// encoding/json. Without -fuzz, `go test` runs each target over its seeds
// (testdata/fuzz/<FuzzName>/ and the f.Add calls); the test command also runs each one
// for a few seconds of fuzzing.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// fzServe sends one request through the full handler chain.
func fzServe(s *Server, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// fzCheckAnswer fails unless the answer is below 500, every 4xx is the contract's error
// envelope, and every other body is JSON.
func fzCheckAnswer(t *testing.T, what string, rec *httptest.ResponseRecorder) errorBody {
	t.Helper()
	body := rec.Body.Bytes()
	if rec.Code >= 500 {
		t.Fatalf("%s: %d %s", what, rec.Code, body)
	}
	if rec.Code == http.StatusNoContent || rec.Code == http.StatusNotModified {
		return errorBody{}
	}
	if !json.Valid(body) {
		t.Fatalf("%s: %d with a body that is not JSON: %q", what, rec.Code, body)
	}
	if rec.Code < 400 {
		return errorBody{}
	}
	var e errorBody
	json.Unmarshal(body, &e)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: %d with Content-Type %q", what, rec.Code, ct)
	}
	if e.ErrorCode == "" || e.Detail == "" || e.RequestID == "" || e.RequestID != rec.Header().Get("X-Request-ID") {
		t.Fatalf("%s: %d is not the error envelope: %s", what, rec.Code, body)
	}
	if _, err := time.Parse(time.RFC3339, e.Timestamp); err != nil {
		t.Fatalf("%s: envelope timestamp %q", what, e.Timestamp)
	}
	return e
}

// fzContentTypes are the media types a fuzzed body is sent as.
var fzContentTypes = []string{"application/json", "application/x-www-form-urlencoded",
	"application/json; charset=utf-8", "text/plain", ""}

// FuzzJSONBodies sends arbitrary bodies to every route that reads one, as an
// authenticated user: the answer is never a 5xx, and every 4xx is the error envelope.
func FuzzJSONBodies(f *testing.F) {
	env := newTestEnv(f)
	token, user := env.registerUser("fuzz-bodies@example.com")
	var task wireTask
	env.do("POST", "/api/v1/tasks", `{"title":"fuzzed"}`, token).want(http.StatusCreated, "").json(&task)
	sub, id := strconv.FormatInt(user.ID, 10), strconv.FormatInt(task.ID, 10)
	routes := []struct{ method, path string }{
		{"POST", "/api/v1/auth/register"},
		{"POST", "/api/v1/auth/login"},
		{"POST", "/api/v1/auth/refresh"},
		{"POST", "/api/v1/auth/logout"},
		{"PATCH", "/api/v1/auth/me"},
		{"POST", "/api/v1/auth/password"},
		{"POST", "/api/v1/tasks"},
		{"PUT", "/api/v1/tasks/" + id},
		{"PATCH", "/api/v1/tasks/" + id},
		{"PATCH", "/api/v1/tasks/" + id + "/complete"},
		{"PATCH", "/api/v1/tasks?status=pending"},
		{"POST", "/api/" + sub + "/tasks"},
		{"PUT", "/api/" + sub + "/tasks/" + id},
		{"PATCH", "/api/" + sub + "/tasks/" + id + "/complete"},
	}
	for i := range routes {
		f.Add(uint8(i), uint8(0), []byte(`{"title":"seed","description":"d","priority":"high","tags":["a","B"],"due_date":"2030-01-02","completed":true}`))
	}
	f.Fuzz(func(t *testing.T, route, contentType uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		req := httptest.NewRequest(r.method, r.path, bytes.NewReader(body))
		if ct := fzContentTypes[int(contentType)%len(fzContentTypes)]; ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		fzCheckAnswer(t, r.method+" "+r.path, fzServe(env.srv, req))
	})
}

// FuzzListQuery feeds arbitrary query strings to both list variants: parseListQuery
// never panics, accepts only values in range and names each failure by the parameter
// the client sent; the list route answers 200 or 400 invalid_query, never a 5xx.
func FuzzListQuery(f *testing.F) {
	env := newTestEnv(f)
	token, user := env.registerUser("fuzz-query@example.com")
	for _, body := range []string{`{"title":"one","tags":["home"],"due_date":"2030-01-01","priority":"high"}`,
		`{"title":"two","description":"50% off","completed":true}`, `{"title":"three","due_date":"1999-12-31T23:00:00-05:00"}`} {
		env.do("POST", "/api/v1/tasks", body, token).want(http.StatusCreated, "")
	}
	sub := strconv.FormatInt(user.ID, 10)
	f.Add("status=pending&sort=-due_date&limit=2", false)
	f.Add("search=one&sort_by=title&order=desc&offset=1&tags=home", true)
	f.Fuzz(func(t *testing.T, raw string, hackathon bool) {
		v, _ := url.ParseQuery(raw)
		q, errs := parseListQuery(v, hackathon)
		maxLimit := 100
		if hackathon {
			maxLimit = 1000
		}
		for _, e := range errs {
			if _, sent := v[e.Field]; !sent {
				t.Fatalf("error names %q, which the query %q does not hold", e.Field, raw)
			}
		}
		if len(errs) == 0 {
			if _, ok := sortColumns[q.Sort]; !ok {
				t.Fatalf("sort %q accepted from %q", q.Sort, raw)
			}
			if q.Limit < 1 || q.Limit > maxLimit || q.Offset < 0 || (!hackathon && q.Offset != 0) {
				t.Fatalf("limit %d, offset %d accepted from %q", q.Limit, q.Offset, raw)
			}
			if q.Q != nil && (*q.Q == "" || strings.ContainsRune(*q.Q, 0) || utf8.RuneCountInString(*q.Q) > 500) {
				t.Fatalf("q %q accepted from %q", *q.Q, raw)
			}
			if q.Tag != nil && (*q.Tag == "" || strings.ContainsRune(*q.Tag, 0) || utf8.RuneCountInString(*q.Tag) > 50) {
				t.Fatalf("tag %q accepted from %q", *q.Tag, raw)
			}
			if q.Priority != nil && (*q.Priority < 0 || *q.Priority > 2) {
				t.Fatalf("priority %d accepted from %q", *q.Priority, raw)
			}
		}
		_ = q.canonical()

		path := "/api/v1/tasks"
		if hackathon {
			path = "/api/" + sub + "/tasks"
		}
		req := httptest.NewRequest("GET", path, nil)
		req.URL.RawQuery = raw
		req.Header.Set("Authorization", "Bearer "+token)
		rec := fzServe(env.srv, req)
		e := fzCheckAnswer(t, "GET "+path+"?"+raw, rec)
		switch {
		case rec.Code == http.StatusBadRequest && e.ErrorCode == "invalid_query" && len(e.Errors) > 0:
			if len(errs) == 0 && (hackathon || v.Get("cursor") == "") {
				t.Fatalf("parseListQuery accepted %q, the route refused it: %s", raw, rec.Body)
			}
		case rec.Code == http.StatusOK:
			if len(errs) > 0 {
				t.Fatalf("parseListQuery refused %q (%v), the route accepted it", raw, errs)
			}
		default:
			t.Fatalf("GET %s?%s: %d %s, want 200 or 400 invalid_query", path, raw, rec.Code, rec.Body)
		}
	})
}

// fzAuthenticator is an Authenticator without a database, for what needs none.
func fzAuthenticator(t testing.TB) *Authenticator {
	t.Helper()
	a, err := NewAuthenticator(testConfig("postgres://fuzz@localhost/fuzz"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fzCursors are genuine cursors of user 7, for every sort key and direction.
func fzCursors(a *Authenticator) (queries []listQuery, cursors []string) {
	due := time.Date(2031, 2, 3, 4, 5, 6, 789000, time.UTC)
	task := Task{ID: 4242, Title: "Ünïcode \"title\" .", Priority: 2, DueDate: &due,
		CreatedAt: due.Add(-time.Hour), UpdatedAt: due.Add(-time.Minute)}
	noDue := task
	noDue.DueDate = nil
	for key := range sortColumns {
		for _, desc := range []bool{false, true} {
			q := listQuery{Sort: key, Desc: desc, Limit: 20}
			queries = append(queries, q, q)
			cursors = append(cursors, a.encodeCursor(7, q, task), a.encodeCursor(7, q, noDue))
		}
	}
	filtered := listQuery{Sort: "title", Limit: 20, taskFilter: taskFilter{Q: ptr("milk"), Tag: ptr("home"), Completed: ptr(false)}}
	queries = append(queries, filtered)
	cursors = append(cursors, a.encodeCursor(7, filtered, task))
	return queries, cursors
}

// FuzzCursor feeds arbitrary strings to decodeCursor, which never panics and accepts
// only the genuine cursor of the query; and it modifies genuine cursors anywhere (a byte
// replaced, inserted or removed), which must then be refused.
func FuzzCursor(f *testing.F) {
	a := fzAuthenticator(f)
	queries, cursors := fzCursors(a)
	for i, c := range cursors {
		q := queries[i]
		if _, err := a.decodeCursor(7, q, c); err != nil {
			f.Fatalf("genuine cursor %q of %+v refused: %v", c, q, err)
		}
		if _, err := a.decodeCursor(8, q, c); err == nil {
			f.Fatalf("cursor of user 7 accepted for user 8")
		}
		other := q
		other.Desc = !q.Desc
		if _, err := a.decodeCursor(7, other, c); err == nil {
			f.Fatalf("cursor of %+v accepted for %+v", q, other)
		}
		f.Add(c, uint8(i), uint16(len(c)-1), byte('B'), uint8(0))
	}
	f.Fuzz(func(t *testing.T, s string, which uint8, pos uint16, b byte, op uint8) {
		q, genuine := queries[int(which)%len(cursors)], cursors[int(which)%len(cursors)]
		if _, err := a.decodeCursor(7, q, s); err == nil && s != genuine {
			// Two genuine cursors of one query differ only in their position.
			found := false
			for j, c := range cursors {
				found = found || (c == s && queries[j].canonical() == q.canonical())
			}
			if !found {
				t.Fatalf("forged cursor %q accepted for %+v", s, q)
			}
		}
		at := int(pos) % (len(genuine) + 1)
		var modified string
		switch op % 3 {
		case 0:
			if at == len(genuine) || genuine[at] == b {
				return
			}
			modified = genuine[:at] + string([]byte{b}) + genuine[at+1:]
		case 1:
			modified = genuine[:at] + string([]byte{b}) + genuine[at:]
		case 2:
			if at == len(genuine) {
				return
			}
			modified = genuine[:at] + genuine[at+1:]
		}
		if _, err := a.decodeCursor(7, q, modified); err == nil {
			t.Fatalf("cursor %q modified to %q was accepted", genuine, modified)
		}
	})
}

// fzSegments is a token without its signature: what the signature covers.
func fzSegments(token string) string {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return token
	}
	return token[:i]
}

// fzWantTokenError fails unless err is the 401 of a refused token.
func fzWantTokenError(t *testing.T, token string, err error) {
	t.Helper()
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || (ae.Code != "invalid_token" && ae.Code != "token_expired") {
		t.Fatalf("token %q: %v, want 401 invalid_token or token_expired", token, err)
	}
}

// FuzzAccessToken feeds arbitrary strings to the service's own token verification, and
// genuine tokens modified anywhere: it never panics, refuses with 401, and accepts only
// a token whose signed part is exactly what the service signed.
func FuzzAccessToken(f *testing.F) {
	env := newTestEnv(f)
	issued, user := env.registerUser("fuzz-token@example.com")
	a := env.srv.auth
	if _, err := a.Authenticate(context.Background(), issued); err != nil {
		f.Fatalf("a token the service issued is refused: %v", err)
	}
	// The genuine token is signed here, the same in every fuzzing process, since each
	// process runs this setup against a database of its own.
	far := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	genuine, err := jwt.NewWithClaims(jwt.GetSigningMethod(env.cfg.JWTAlgorithm), accessClaims{
		UserID: user.ID,
		Email:  "fuzz-token@example.com",
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: strconv.FormatInt(user.ID, 10), Issuer: env.cfg.JWTIssuer,
			Audience: jwt.ClaimStrings{env.cfg.JWTAudience}, ExpiresAt: jwt.NewNumericDate(far),
			IssuedAt: jwt.NewNumericDate(far.AddDate(-100, 0, 0)), ID: "fuzz",
		},
	}).SignedString(env.cfg.JWTSecret)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(genuine)
	f.Add(fzSegments(genuine) + ".")
	f.Add(strings.Replace(genuine, ".", "..", 1))
	f.Add(genuine + "\n")
	f.Fuzz(func(t *testing.T, token string) {
		p, err := a.Authenticate(context.Background(), token)
		if err != nil {
			fzWantTokenError(t, token, err)
			return
		}
		if fzSegments(token) != fzSegments(genuine) || p.UserID != user.ID || p.Subject != strconv.FormatInt(user.ID, 10) {
			t.Fatalf("token %q accepted as %+v", token, p)
		}
	})
}

// fzJWKS serves a key set holding one Ed25519 key.
func fzJWKS(t testing.TB, kid string, pub ed25519.PublicKey) string {
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
		"x": base64.RawURLEncoding.EncodeToString(pub),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(set)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

const (
	fzBAIssuer = "https://auth.example.com"
	fzBASecret = "better-auth-secret-for-fuzzing-0123456789"
	fzBAKid    = "fuzz-ed25519"
)

// FuzzBetterAuthToken builds tokens from arbitrary headers and claims, signed with the
// Better Auth secret, the JWKS's Ed25519 key, the service's own secret, or not at all,
// and verifies them with Better Auth configured both ways: never a panic, a refusal is a
// 401, and an accepted token names a usable subject and a user row.
func FuzzBetterAuthToken(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	jwksURL := fzJWKS(f, fzBAKid, pub)
	env := newTestEnv(f, func(c *Config) {
		c.BetterAuthURL = fzBAIssuer
		c.BetterAuthJWKSURL = jwksURL
		c.BetterAuthSecret = []byte(fzBASecret)
	})
	a := env.srv.auth
	localSecret := env.cfg.JWTSecret
	far := strconv.FormatInt(time.Now().Add(100*365*24*time.Hour).Unix(), 10)
	f.Add(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"ba-1","email":"ba@example.com","name":"B. A.","exp":`+far+`}`, uint8(0))
	f.Add(`{"alg":"HS256"}`, `{"user_id":12345678901234567890,"exp":`+far+`}`, uint8(0))
	f.Add(`{"alg":"EdDSA","kid":"`+fzBAKid+`"}`, `{"sub":"ba-2","iss":"`+fzBAIssuer+`","aud":"`+fzBAIssuer+`","exp":`+far+`,"name":7}`, uint8(1))
	f.Add(`{"alg":"HS256"}`, `{"sub":"1","user_id":1,"iss":"todo-api","aud":"todo-api","exp":`+far+`}`, uint8(2))
	f.Add(`{"alg":"none"}`, `{"sub":"x","exp":`+far+`}`, uint8(3))
	f.Fuzz(func(t *testing.T, header, claims string, how uint8) {
		enc := base64.RawURLEncoding.EncodeToString
		signed := enc([]byte(header)) + "." + enc([]byte(claims))
		var token string
		switch how % 4 {
		case 0:
			m := hmac.New(sha256.New, []byte(fzBASecret))
			m.Write([]byte(signed))
			token = signed + "." + enc(m.Sum(nil))
		case 1:
			token = signed + "." + enc(ed25519.Sign(priv, []byte(signed)))
		case 2:
			m := hmac.New(sha256.New, localSecret)
			m.Write([]byte(signed))
			token = signed + "." + enc(m.Sum(nil))
		case 3:
			token = header // the header string is the whole token, unsigned
		}
		p, err := a.Authenticate(context.Background(), token)
		if err != nil {
			fzWantTokenError(t, token, err)
			return
		}
		if how%4 == 3 {
			t.Fatalf("unsigned token %q accepted as %+v", token, p)
		}
		if p.UserID <= 0 || p.Subject == "" || len(p.Subject) > 255 || !utf8.ValidString(p.Subject) || strings.ContainsRune(p.Subject, 0) {
			t.Fatalf("token %q accepted as %+v", token, p)
		}
		// A local token's user is checked by the request's first statement, not by
		// Authenticate: run that check as a request would.
		ctx := context.Background()
		if p.checkUser {
			ctx = withUserCheck(ctx, p.UserID)
		}
		if _, err := env.st.FindUser(ctx, p.UserID); err != nil {
			var ae *apiError
			if p.checkUser && errors.As(err, &ae) && ae.Code == "invalid_token" {
				return // refused by the owed user check, as a request would be
			}
			t.Fatalf("token %q accepted as user %d, who cannot be found: %v", token, p.UserID, err)
		}
	})
}

// referenceTaskJSON is what json.Marshal writes for t: the bytes appendTask must match.
func referenceTaskJSON(t testing.TB, task Task, pathUserID string) []byte {
	t.Helper()
	b, err := json.Marshal(referenceTask(task, pathUserID))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// referenceTask is the contract's task object as a struct for encoding/json.
func referenceTask(task Task, pathUserID string) wireTask {
	utc := func(p *time.Time) *time.Time {
		if p == nil {
			return nil
		}
		u := p.UTC()
		return &u
	}
	w := wireTask{ID: task.ID, UserID: task.UserID, Title: task.Title, Description: task.Description,
		Completed: task.Completed, Priority: priorityNames[task.Priority], Tags: task.Tags,
		DueDate: utc(task.DueDate), RemindAt: utc(task.RemindAt), CreatedAt: task.CreatedAt.UTC(), UpdatedAt: task.UpdatedAt.UTC(),
		CompletedAt: utc(task.CompletedAt), Recurrence: task.Recurrence, NextTaskID: task.NextTaskID}
	if pathUserID != "" {
		w.UserID = pathUserID
	}
	if w.Tags == nil {
		w.Tags = []string{}
	}
	return w
}

// FuzzTaskJSON holds the hand-written task encoder to encoding/json's bytes for any text
// in a task's strings, any time and both shapes of user_id.
func FuzzTaskJSON(f *testing.F) {
	f.Add("Buy milk", "2 litres", "home", "", int64(1_700_000_000), uint32(123_456_789), false)
	f.Add(`quote " backslash \ slash / <b>&amp;</b>`, "tab\tnew\nline\rcr\bbs\fff\x00nul\x1fus\x7fdel", "é ü 日本 🎉", "user-42", int64(0), uint32(0), true)
	f.Add("line\u2028sep\u2029para", "bad \xff\xfe utf8 \xc3", "\xed\xa0\x80", "\"<id>\"", int64(-62135596800), uint32(1), false)
	f.Add("", "", "", "7", int64(253402300799-3600), uint32(999_999_999), true)
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+30*60), time.FixedZone("", -8*3600)}
	f.Fuzz(func(t *testing.T, title, description, tag, pathUser string, sec int64, nsec uint32, completed bool) {
		at := time.Unix(sec, int64(nsec%1_000_000_000)).In(zones[uint64(sec)%uint64(len(zones))])
		due := at.Add(time.Hour)
		if at.Year() < 1 || due.UTC().Year() > 9999 {
			return // outside what a due date may hold, and what time.Time marshals
		}
		task := Task{ID: sec & 0x7fffffff, UserID: int64(len(title)), Title: title, Completed: completed,
			Priority: int16(uint64(sec) % 3), CreatedAt: at, UpdatedAt: at.Add(time.Nanosecond)}
		if completed {
			task.Description, task.Tags, task.DueDate, task.CompletedAt, task.RemindAt = &description, []string{tag, title}, &due, &at, &at
		}
		for _, pu := range []string{"", pathUser} {
			want := referenceTaskJSON(t, task, pu)
			if got := appendTask(nil, task, pu); !bytes.Equal(got, want) {
				t.Fatalf("appendTask:\n got %s\nwant %s", got, want)
			}
		}
	})
}

// FuzzTaskInput reads arbitrary task bodies in each write mode: reading never panics, and
// a body it accepts keeps every rule of the contract (at most 20 distinct tags, each 1 to
// 50 characters, trimmed, lower-cased; a title of 1 to 255 characters).
func FuzzTaskInput(f *testing.F) {
	f.Add([]byte(`{"title":"t","tags":["a"," A ","b"],"priority":"HIGH","due_date":"2030-01-02"}`), uint8(0))
	f.Add([]byte(`{"tags":["`+strings.Repeat(`x","`, 30)+`y"]}`), uint8(2))
	f.Add([]byte(`{"title":"t","tags":[null,1,"",[]]}`), uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		var raw map[string]json.RawMessage
		if json.Unmarshal(body, &raw) != nil {
			return
		}
		b := bodyFields{raw: raw}
		c := readTaskInput(&b).change(writeMode(int(mode)%3), &b.errs)
		if len(b.errs) > 0 {
			return
		}
		if c.SetTitle && (c.Title == "" || utf8.RuneCountInString(c.Title) > 255) {
			t.Fatalf("accepted title %q", c.Title)
		}
		if len(c.Tags) > maxTags {
			t.Fatalf("accepted %d tags", len(c.Tags))
		}
		seen := map[string]bool{}
		for _, tag := range c.Tags {
			n := utf8.RuneCountInString(tag)
			if n < 1 || n > 50 || tag != strings.ToLower(tag) || tag != strings.TrimSpace(tag) || seen[tag] {
				t.Fatalf("accepted tags %q", c.Tags)
			}
			seen[tag] = true
		}
	})
}

// FuzzFeedAndMailInputs reads what clients send to the change feed, webhooks and account
// e-mail that no JSON decoder checks: a resume id (header and query), an event ticket or
// account token, a webhook URL. Nothing panics; an accepted resume id is a non-negative
// decimal integer that reads back as itself; an accepted token names a positive user; an
// accepted URL is https with a host and no user info, and names no non-public address.
func FuzzFeedAndMailInputs(f *testing.F) {
	for _, s := range []string{"0", "42", "-1", "+7", "007", "1e3", " 5", "9223372036854775808", "",
		"7.abc", "0.x", "-3.y", "7", "https://example.com/hook", "http://example.com", "https://127.0.0.1/x",
		"https://[::ffff:10.0.0.1]/", "https://user:pw@example.com", "https://example.com:99999/", "https://%zz"} {
		f.Add(s)
	}
	s := &Server{}
	f.Fuzz(func(t *testing.T, v string) {
		for _, viaHeader := range []bool{true, false} {
			r := httptest.NewRequest("GET", "/api/v1/events", nil)
			if viaHeader {
				r.Header.Set("Last-Event-ID", v)
			} else {
				r.URL.RawQuery = url.Values{"last_event_id": {v}}.Encode()
			}
			n, err := lastEventID(r)
			if err == nil && v != "" && (n < 0 || strconv.FormatInt(n, 10) != strings.TrimLeft(v, "0") && !(n == 0 && strings.Trim(v, "0") == "")) {
				t.Fatalf("resume id %q read as %d", v, n)
			}
		}
		if id, hash, ok := parseAccountToken(v); ok && (id <= 0 || len(hash) != 32) {
			t.Fatalf("token %q read as user %d", v, id)
		}
		if msg := s.checkWebhookURL(v); msg == "" {
			u, err := url.Parse(strings.TrimSpace(v))
			if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil {
				t.Fatalf("webhook URL %q accepted", v)
			}
			if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !publicAddr(a) {
				t.Fatalf("webhook URL %q to %s accepted", v, a)
			}
		}
	})
}
