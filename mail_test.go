package main

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// smtpServer is Debian's aiosmtpd, a real SMTP server, storing what it receives in a
// Maildir (testdata/smtp/handlers.py, which refuses recipients named reject…); it can be
// stopped and started again on the same port.
type smtpServer struct {
	addr, maildir string
	cmd           *exec.Cmd
}

func startSMTP(t *testing.T) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &smtpServer{addr: addr, maildir: filepath.Join(t.TempDir(), "maildir")}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *smtpServer) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command("/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", s.addr, "-c", "handlers.Store", s.maildir)
	s.cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(wd(t), "testdata", "smtp"))
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("aiosmtpd (python3-aiosmtpd): %v", err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("aiosmtpd did not start")
		}
	}
}

func (s *smtpServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// received is one mail as the server stored it, parsed.
type received struct {
	to, subject, text, html string
	header                  mail.Header
}

// mails parses every mail in the Maildir.
func (s *smtpServer) mails(t *testing.T) []received {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.maildir, "new", "*"))
	var out []received
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := mail.ReadMessage(strings.NewReader(string(raw)))
		if err != nil {
			t.Fatalf("%s is not a mail: %v", f, err)
		}
		subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		if err != nil {
			t.Fatal(err)
		}
		r := received{to: msg.Header.Get("To"), subject: subject, header: msg.Header}
		mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/alternative" {
			t.Fatalf("content type %q: %v", msg.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(msg.Body, params["boundary"])
		for {
			p, err := mr.NextRawPart() // raw: NextPart would decode and drop Content-Transfer-Encoding
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			ct, cp, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			if cp["charset"] != "utf-8" || p.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
				t.Errorf("part header %v", p.Header)
			}
			body, err := io.ReadAll(quotedprintable.NewReader(p))
			if err != nil {
				t.Fatal(err)
			}
			switch ct {
			case "text/plain":
				r.text = string(body)
			case "text/html":
				r.html = string(body)
			}
		}
		out = append(out, r)
	}
	return out
}

// waitMails waits until the Maildir holds n mails.
func (s *smtpServer) waitMails(t *testing.T, n int, step func()) []received {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		step()
		if got := s.mails(t); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails arrived, want %d", len(s.mails(t)), n)
		}
	}
}

var tokenLink = regexp.MustCompile(`https://app\.example\.com/(verify-email|reset-password)\?token=(\S+)`)

// linkToken returns the token of the mail's link to path, checking that the HTML part
// carries the same link.
func linkToken(t *testing.T, m received, path string) string {
	t.Helper()
	found := tokenLink.FindStringSubmatch(m.text)
	if found == nil || found[1] != path {
		t.Fatalf("no %s link in %q", path, m.text)
	}
	if !strings.Contains(m.html, `href="`+strings.ReplaceAll(found[0], "&", "&amp;")+`"`) {
		t.Errorf("the HTML part lacks the link: %s", m.html)
	}
	token, err := url.QueryUnescape(found[2])
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func mailEnv(t *testing.T, smtpAddr string) *testEnv {
	t.Helper()
	cfg := testConfig(newTestDatabase(t))
	cfg.mail = mailConfig{server: &url.URL{Scheme: "smtp", Host: smtpAddr}, from: &mail.Address{Name: "Todo", Address: "todo@example.com"},
		appURL: "https://app.example.com"}
	return newTestEnvWith(t, cfg)
}

// TestEmailVerificationAndPasswordReset: registration mails a verification link that
// verifies the address once; forgot-password answers the same for unknown and known
// addresses and mails the known one a reset link; the reset sets the password, revokes
// every refresh token, works once, and a newer reset voids the older link. The mails are
// what a real SMTP server received, parsed as MIME.
func TestEmailVerificationAndPasswordReset(t *testing.T) {
	t.Parallel()
	smtpd := startSMTP(t)
	env := mailEnv(t, smtpd.addr)
	ctx := context.Background()
	step := func() {
		if err := env.srv.mailer.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var reg tokenResponse
	env.do("POST", "/api/v1/auth/register", `{"email":"mailer@example.com","password":"correct horse battery","name":"Ada\r\nBcc: x@evil.example"}`, "").
		want(201, "").json(&reg)
	if reg.User.EmailVerified {
		t.Fatal("verified before any mail")
	}
	got := smtpd.waitMails(t, 1, step)
	m := got[0]
	if !strings.Contains(m.to, "mailer@example.com") || m.subject != "Confirm your e-mail address" ||
		m.header.Get("Message-ID") == "" || m.header.Get("Date") == "" || !strings.Contains(m.header.Get("From"), "todo@example.com") ||
		m.header.Get("Bcc") != "" {
		t.Errorf("verification mail headers %v", m.header)
	}
	if _, err := m.header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	token := linkToken(t, m, "verify-email")
	env.do("POST", "/api/v1/auth/verify", fmt.Sprintf(`{"token":%q}`, token), "").want(200, "")
	env.do("POST", "/api/v1/auth/verify", fmt.Sprintf(`{"token":%q}`, token), "").want(422, "validation_error")
	env.do("POST", "/api/v1/auth/verify", `{"token":"1.forged"}`, "").want(422, "validation_error")
	var me userJSON
	env.do("GET", "/api/v1/auth/me", "", reg.AccessToken).want(200, "").json(&me)
	if !me.EmailVerified {
		t.Error("email_verified is false after the link")
	}
	env.do("POST", "/api/v1/auth/verify/resend", "", reg.AccessToken).want(202, "")

	// Forgot: the same answer for an unknown and a known address.
	unknown := env.do("POST", "/api/v1/auth/password/forgot", `{"email":"nobody@example.com"}`, "").want(202, "")
	known := env.do("POST", "/api/v1/auth/password/forgot", `{"email":"MAILER@example.com"}`, "").want(202, "")
	if unknown.Body.String() != known.Body.String() {
		t.Errorf("forgot answers differ: %s / %s", unknown.Body, known.Body)
	}
	got = smtpd.waitMails(t, 2, step)
	first := ""
	for _, m := range got {
		if m.subject == "Reset your password" {
			first = linkToken(t, m, "reset-password")
		}
	}
	env.do("POST", "/api/v1/auth/password/forgot", `{"email":"mailer@example.com"}`, "").want(202, "")
	got = smtpd.waitMails(t, 3, step)
	second := ""
	for _, m := range got {
		if m.subject == "Reset your password" {
			if tok := linkToken(t, m, "reset-password"); tok != first {
				second = tok
			}
		}
	}
	if first == "" || second == "" {
		t.Fatalf("reset tokens %q %q", first, second)
	}
	env.do("POST", "/api/v1/auth/password/reset", fmt.Sprintf(`{"token":%q,"new_password":"a brand new password"}`, first), "").
		want(422, "validation_error") // voided by the newer one
	env.do("POST", "/api/v1/auth/password/reset", fmt.Sprintf(`{"token":%q,"new_password":"short"}`, second), "").
		want(422, "validation_error")
	env.do("POST", "/api/v1/auth/password/reset", fmt.Sprintf(`{"token":%q,"new_password":"a brand new password"}`, second), "").
		want(204, "")
	env.do("POST", "/api/v1/auth/password/reset", fmt.Sprintf(`{"token":%q,"new_password":"yet another password"}`, second), "").
		want(422, "validation_error")
	env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+reg.RefreshToken+`"}`, "").want(401, "")
	loginAs(env, "mailer@example.com", "a brand new password")
	if n := len(smtpd.mails(t)); n != 3 {
		t.Errorf("%d mails in all, want 3", n)
	}
}

// TestMailWaitsForTheSMTPServer: with the SMTP server down, registrations still answer at
// once and their mails wait in the queue; once it is back (the retry time reached by
// moving the mailer's clock), every mail arrives, once.
func TestMailWaitsForTheSMTPServer(t *testing.T) {
	t.Parallel()
	smtpd := startSMTP(t)
	smtpd.stop()
	env := mailEnv(t, smtpd.addr)
	ctx := context.Background()
	const n = 8
	for i := range n {
		env.do("POST", "/api/v1/auth/register", fmt.Sprintf(`{"email":"burst%d@example.com","password":"correct horse battery"}`, i), "").want(201, "")
	}
	if err := env.srv.mailer.step(ctx); err != nil {
		t.Fatal(err)
	}
	var waiting int
	env.st.pool.QueryRow(ctx, `SELECT count(*) FROM mail_queue WHERE sent_at IS NULL AND attempts = 1 AND next_attempt_at IS NOT NULL`).Scan(&waiting)
	if waiting != n {
		t.Fatalf("%d mails waiting for a retry, want %d", waiting, n)
	}
	smtpd.start(t)
	later := time.Now().Add(2 * time.Hour)
	env.srv.mailer.now = func() time.Time { return later }
	smtpd.waitMails(t, n, func() { env.srv.mailer.step(ctx) })
	time.Sleep(200 * time.Millisecond)
	env.srv.mailer.step(ctx)
	got := smtpd.mails(t)
	if len(got) != n {
		t.Errorf("%d mails, want %d, once each", len(got), n)
	}
	seen := map[string]bool{}
	for _, m := range got {
		seen[m.to] = true
	}
	if len(seen) != n {
		t.Errorf("recipients %v", seen)
	}
	// Sent mails leave the queue a week later; none before.
	if k, err := env.st.CleanMail(ctx, time.Now().Add(-time.Hour)); err != nil || k != 0 {
		t.Errorf("cleaned %d fresh rows: %v", k, err)
	}
	if k, err := env.st.CleanMail(ctx, time.Now().Add(8*24*time.Hour)); err != nil || k != n {
		t.Errorf("cleaned %d rows, want %d: %v", k, n, err)
	}
}

// TestMailOff: without SMTP_URL the flows answer 503 with a clear detail, and
// registration works as before.
func TestMailOff(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("no-mail@example.com")
	for _, c := range []struct{ path, body, token string }{
		{"/api/v1/auth/verify", `{"token":"1.x"}`, ""},
		{"/api/v1/auth/verify/resend", "", token},
		{"/api/v1/auth/password/forgot", `{"email":"no-mail@example.com"}`, ""},
		{"/api/v1/auth/password/reset", `{"token":"1.x","new_password":"correct horse battery"}`, ""},
	} {
		r := env.do("POST", c.path, c.body, c.token).want(503, "service_unavailable")
		if !strings.Contains(r.envelope().Detail, "SMTP_URL") {
			t.Errorf("%s: %s", c.path, r.Body)
		}
	}
}

func wd(t *testing.T) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestMailRefusedForGood: a 5xx answer to a recipient is a permanent failure, recorded
// with the server's words and not retried, while the other mails go out.
func TestMailRefusedForGood(t *testing.T) {
	t.Parallel()
	smtpd := startSMTP(t)
	env := mailEnv(t, smtpd.addr)
	ctx := context.Background()
	env.do("POST", "/api/v1/auth/register", `{"email":"reject-me@example.com","password":"correct horse battery"}`, "").want(201, "")
	env.do("POST", "/api/v1/auth/register", `{"email":"accept-me@example.com","password":"correct horse battery"}`, "").want(201, "")
	smtpd.waitMails(t, 1, func() { env.srv.mailer.step(ctx) })
	var failedAt *time.Time
	var why string
	var next *time.Time
	if err := env.st.pool.QueryRow(ctx, `SELECT failed_at, last_error, next_attempt_at FROM mail_queue WHERE recipient = 'reject-me@example.com'`).
		Scan(&failedAt, &why, &next); err != nil {
		t.Fatal(err)
	}
	if failedAt == nil || next != nil || !strings.Contains(why, "550") {
		t.Errorf("refused mail: failed_at %v, next attempt %v, error %q", failedAt, next, why)
	}
	later := time.Now().Add(3 * time.Hour)
	env.srv.mailer.now = func() time.Time { return later }
	env.srv.mailer.step(ctx)
	if got := smtpd.mails(t); len(got) != 1 || !strings.Contains(got[0].to, "accept-me@example.com") {
		t.Errorf("mails %v", got)
	}
}
