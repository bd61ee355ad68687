package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"html"
	"log/slog"
	mrand "math/rand/v2"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Account e-mail (contract §12): verification of a local user's address and password
// reset, the mails sent from a queue in PostgreSQL through SMTP (net/smtp: the standard
// library speaks what is needed — STARTTLS, implicit TLS, PLAIN — and nothing else is
// linked for it).

const (
	verifyTTL = 24 * time.Hour
	resetTTL  = time.Hour
	// mailLease: a send takes at most mailSendLimit; a worker that dies leaves the mail
	// to be claimed again after this.
	mailLease     = time.Minute
	mailSendLimit = 30 * time.Second
	mailGiveUp    = 48 * time.Hour // retried at least 24 hours
	mailPoll      = time.Second
)

// mailConfig is SMTP_URL, MAIL_FROM and APP_URL, read by loadConfig.
type mailConfig struct {
	server *url.URL      // smtp:// or smtps://, with user and password when it wants them
	from   *mail.Address // MAIL_FROM
	appURL string        // APP_URL, without a trailing slash
}

func (c mailConfig) enabled() bool { return c.server != nil }

var errMailOff = &apiError{Status: http.StatusServiceUnavailable, Code: "service_unavailable",
	Detail: "E-mail is not configured on this server (SMTP_URL): verification and password reset are off."}

// newAccountToken makes a token "<user id>.<random>" and its stored hash.
func newAccountToken(userID int64) (string, []byte) {
	token := strconv.FormatInt(userID, 10) + "." + newOpaque(32)
	sum := sha256.Sum256([]byte(token))
	return token, sum[:]
}

// parseAccountToken reads the user id and hash of a token; ok is false for a malformed one.
func parseAccountToken(token string) (int64, []byte, bool) {
	idText, _, found := strings.Cut(token, ".")
	id, err := strconv.ParseInt(idText, 10, 64)
	if !found || err != nil || id <= 0 || len(token) > 200 {
		return 0, nil, false
	}
	sum := sha256.Sum256([]byte(token))
	return id, sum[:], true
}

var errBadAccountToken = validationFailed([]fieldError{{Field: "token", Message: "is unknown, used or expired"}})

// handleVerify serves POST /api/v1/auth/verify {"token"}: the token is the proof.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	token := field[string](&b, "token", "must be a string")
	if len(b.errs) > 0 {
		return validationFailed(b.errs)
	}
	if token.Value == nil {
		return validationFailed([]fieldError{{Field: "token", Message: "is required"}})
	}
	if !s.cfg.mail.enabled() {
		return errMailOff
	}
	userID, hash, ok := parseAccountToken(*token.Value)
	if !ok {
		return errBadAccountToken
	}
	if ok, err = s.st.VerifyEmail(r.Context(), userID, hash); err != nil {
		return err
	} else if !ok {
		return errBadAccountToken
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"email_verified": true})
}

// handleVerifyResend serves POST /api/v1/auth/verify/resend: another verification mail to
// the signed-in local user, unless the address is verified already (or belongs to a Better
// Auth user).
func (s *Server) handleVerifyResend(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	if !s.cfg.mail.enabled() {
		return errMailOff
	}
	u, err := s.st.FindUser(r.Context(), principalFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	// A Better Auth user's provider verifies the address: nothing to send here.
	if !u.EmailVerified && u.Issuer == nil && u.Email != nil {
		if err := s.st.QueueMail(r.Context(), u.ID, mailVerify, *u.Email); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusAccepted, map[string]bool{"email_verified": u.EmailVerified})
}

// handleForgot serves POST /api/v1/auth/password/forgot {"email"}: 202 with the same body
// whether or not a local account has the address; a reset mail is queued when one does.
// Rate-limited per client address and per e-mail, like logins.
func (s *Server) handleForgot(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	email := field[string](&b, "email", "must be a string")
	addr := ""
	if !b.errs.has("email") {
		if email.Value == nil {
			b.errs.add("email", "is required")
		} else if a, msg := normalizeEmail(*email.Value); msg != "" {
			b.errs.add("email", msg)
		} else {
			addr = a
		}
	}
	if len(b.errs) > 0 {
		return validationFailed(b.errs)
	}
	if !s.cfg.mail.enabled() {
		return errMailOff
	}
	if err := s.limits.loginFailures.take(r.Context(), s.limits.addrKey(r)); err != nil {
		return err
	}
	if err := s.limits.loginFailures.take(r.Context(), "forgot:"+addr); err != nil {
		return err
	}
	u, _, err := s.st.FindLocalUserByEmail(r.Context(), addr)
	var ae *apiError
	switch {
	case err == nil:
		if err := s.st.QueueMail(r.Context(), u.ID, mailReset, *u.Email); err != nil {
			return err
		}
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
	default:
		return err
	}
	return writeJSON(w, http.StatusAccepted, map[string]string{
		"detail": "If an account has this address, a reset link is on its way."})
}

// handleReset serves POST /api/v1/auth/password/reset {"token","new_password"}.
func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	token := field[string](&b, "token", "must be a string")
	password := field[string](&b, "new_password", "must be a string")
	if !b.errs.has("token") && token.Value == nil {
		b.errs.add("token", "is required")
	}
	if !b.errs.has("new_password") {
		checkPassword(&b.errs, "new_password", password.Value)
	}
	if len(b.errs) > 0 {
		return validationFailed(b.errs.inOrder("token", "new_password"))
	}
	if !s.cfg.mail.enabled() {
		return errMailOff
	}
	userID, hash, ok := parseAccountToken(*token.Value)
	if !ok {
		return errBadAccountToken
	}
	newHash, err := s.auth.hashPassword(r.Context(), *password.Value)
	if err != nil {
		return err
	}
	if ok, err = s.st.ResetPassword(r.Context(), userID, hash, newHash); err != nil {
		return err
	} else if !ok {
		return errBadAccountToken
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- sending ----

// mailer sends the queued mails: every replica runs one, in the shape of the webhook
// deliverer — a look at the queue's index every second, a single-row lease per mail, the
// outcome recorded. A 4xx answer or a network error is retried (1 minute doubling to an
// hour, with jitter) for two days; a 5xx answer is a permanent failure, recorded and not
// retried.
type mailer struct {
	st   *Store
	log  *slog.Logger
	cfg  mailConfig
	now  func() time.Time
	send func(to string, msg []byte) error // smtpSend; the tests' fault injection aside
	// Outcomes, for the metrics.
	sent, retried, failed atomic.Int64
}

func newMailer(st *Store, log *slog.Logger, cfg mailConfig) *mailer {
	m := &mailer{st: st, log: log, cfg: cfg, now: time.Now}
	m.send = m.smtpSend
	return m
}

func (m *mailer) run(ctx context.Context) error {
	if !m.cfg.enabled() {
		return nil
	}
	tick := time.NewTicker(mailPoll)
	defer tick.Stop()
	for {
		if err := m.step(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("mail", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// step sends every mail due now, one after another.
func (m *mailer) step(ctx context.Context) error {
	now := m.now()
	due, err := m.st.DueMail(ctx, now, 50)
	if err != nil {
		return err
	}
	for _, k := range due {
		q, ok, err := m.st.ClaimMail(ctx, k[0], k[1], now, mailLease)
		if err != nil {
			return err
		}
		if ok {
			m.deliver(ctx, q)
		}
	}
	return nil
}

func (m *mailer) deliver(ctx context.Context, q queuedMail) {
	token, hash := newAccountToken(q.UserID)
	ttl := verifyTTL
	if q.Kind == mailReset {
		ttl = resetTTL
	}
	err := m.st.IssueAccountToken(ctx, q.UserID, q.Kind, hash, time.Now().Add(ttl))
	var msg []byte
	if err == nil {
		msg, err = m.compose(q, token)
	}
	if err == nil {
		err = m.send(q.To, msg)
	}
	now := m.now()
	var perm *textproto.Error
	permanent := errors.As(err, &perm) && perm.Code >= 500
	switch {
	case err == nil:
		m.sent.Add(1)
	case permanent || now.Sub(q.CreatedAt) >= mailGiveUp:
		permanent = true
		m.failed.Add(1)
		m.log.Warn("mail failed for good", "user_id", q.UserID, "kind", q.Kind, "error", err.Error())
	default:
		m.retried.Add(1)
	}
	why := ""
	if err != nil {
		why = err.Error()
	}
	if rerr := m.st.MailDone(ctx, q, now, err == nil, permanent, now.Add(mailRetryDelay(q.Attempts)), why); rerr != nil {
		m.log.Warn("mail", "error", rerr.Error())
	}
}

// mailRetryDelay is the wait after n failed attempts: a minute doubling to an hour, times
// a random factor in [0.5, 1).
func mailRetryDelay(n int) time.Duration {
	d := time.Minute
	for i := 1; i < n && d < time.Hour; i++ {
		d *= 2
	}
	d = min(d, time.Hour)
	return time.Duration(float64(d) * (0.5 + mrand.Float64()/2))
}

// compose writes the mail: headers, then a plain-text and an HTML part, UTF-8, quoted-
// printable. The only header values that come from users are the recipient's address,
// written by net/mail (which encodes anything but a plain address), and nothing else.
func (m *mailer) compose(q queuedMail, token string) ([]byte, error) {
	var subject, intro, action, path, after string
	switch q.Kind {
	case mailVerify:
		subject, intro, action, path, after = "Confirm your e-mail address",
			"Please confirm that this address is yours.", "Confirm my address", "/verify-email",
			"The link works once, for 24 hours. If you did not create an account, ignore this mail."
	default:
		subject, intro, action, path, after = "Reset your password",
			"Someone (we hope you) asked to reset the password of your account.", "Choose a new password", "/reset-password",
			"The link works once, for one hour. If you did not ask for it, ignore this mail: your password stays as it is."
	}
	link := m.cfg.appURL + path + "?token=" + url.QueryEscape(token)
	var buf bytes.Buffer
	domain := "localhost"
	if _, d, ok := strings.Cut(m.cfg.from.Address, "@"); ok {
		domain = d
	}
	to := (&mail.Address{Address: q.To}).String()
	if strings.ContainsAny(to, "\r\n") {
		return nil, errors.New("recipient address holds a line break")
	}
	mw := multipart.NewWriter(&buf)
	fmt.Fprintf(&buf, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/alternative; boundary=%q\r\n\r\n",
		m.cfg.from.String(), to, mime.QEncoding.Encode("utf-8", subject), time.Now().UTC().Format(time.RFC1123Z),
		newOpaque(16), domain, mw.Boundary())
	part := func(ctype, body string) error {
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", ctype+"; charset=utf-8")
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		pw, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		qp := quotedprintable.NewWriter(pw)
		if _, err := qp.Write([]byte(body)); err != nil {
			return err
		}
		return qp.Close()
	}
	text := intro + "\r\n\r\n" + action + ":\r\n" + link + "\r\n\r\n" + after + "\r\n"
	page := `<!doctype html><html><body><p>` + html.EscapeString(intro) + `</p><p><a href="` + html.EscapeString(link) + `">` +
		html.EscapeString(action) + `</a></p><p>` + html.EscapeString(after) + `</p></body></html>`
	if err := part("text/plain", text); err != nil {
		return nil, err
	}
	if err := part("text/html", page); err != nil {
		return nil, err
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// smtpSend hands one mail to the SMTP server: implicit TLS for smtps://, STARTTLS when the
// server offers it, PLAIN authentication when the URL carries a user.
func (m *mailer) smtpSend(to string, msg []byte) error {
	u := m.cfg.server
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = map[bool]string{true: "465", false: "25"}[u.Scheme == "smtps"]
	}
	addr := net.JoinHostPort(host, port)
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	var conn net.Conn
	var err error
	if u.Scheme == "smtps" {
		conn, err = tls.DialWithDialer(dialer, "tcp", addr, &tls.Config{ServerName: host})
	} else {
		conn, err = dialer.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(mailSendLimit))
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok && u.Scheme == "smtp" {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return err
		}
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		if err := c.Auth(smtp.PlainAuth("", u.User.Username(), pass, host)); err != nil {
			return err
		}
	}
	if err := c.Mail(m.cfg.from.Address); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write(msg); err != nil {
		return err
	}
	if err := wc.Close(); err != nil {
		return err
	}
	return c.Quit()
}
