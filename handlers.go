package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Server is the HTTP face of the service: routes, middleware and handlers. It holds no
// state a second replica would need.
type Server struct {
	log    *slog.Logger
	cfg    Config
	st     *Store
	auth   *Authenticator
	limits *rateLimits
	events *eventHub
	// reminders fires due reminders; run by run() beside the listener.
	reminders *reminderScheduler
	// webhooks sends the queued webhook deliveries.
	webhooks *webhookDeliverer
	// mailer sends the queued account mail.
	mailer  *mailer
	handler http.Handler
	routed  []string // every pattern registered, in order (see route)
	metrics *metrics // served on METRICS_ADDR; nil records nothing
	// rejections logs refused tokens, at most a line per reason per second.
	rejections *rejectionLog
}

// NewServer wires the routes and middleware around the given dependencies.
func NewServer(log *slog.Logger, cfg Config, st *Store, auth *Authenticator) *Server {
	s := &Server{log: log, cfg: cfg, st: st, auth: auth, limits: newRateLimits(cfg, st),
		rejections: newRejectionLog(log)}
	s.events = newEventHub(st, log, cfg)
	s.reminders = newReminderScheduler(st, log)
	s.events.onReminder = s.reminders.poke
	s.webhooks = newWebhookDeliverer(st, log, cfg.WebhookAllowPrivate)
	s.mailer = newMailer(st, log, cfg.mail)
	mux := http.NewServeMux()
	s.routes(mux)
	s.metrics = newMetrics(s)
	s.metrics.countRefusals(s.limits)
	s.handler = s.withRequestInfo(s.logRequests(s.recoverPanics(s.cors(s.jsonFallback(mux)))))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// routes is the contract on one screen, in contract order.
func (s *Server) routes(mux *http.ServeMux) {
	s.route(mux, "POST /api/v1/auth/register", s.handle(s.handleRegister))
	s.route(mux, "POST /api/v1/auth/login", s.handle(s.handleLogin))
	s.route(mux, "POST /api/v1/auth/refresh", s.handle(s.handleRefresh))
	s.route(mux, "POST /api/v1/auth/logout", s.handle(s.handleLogout))
	s.route(mux, "GET /api/v1/auth/me", s.authed(s.handleMe))
	s.route(mux, "PATCH /api/v1/auth/me", s.authed(s.handleMeUpdate))
	s.route(mux, "POST /api/v1/auth/password", s.authed(s.handlePasswordChange))
	s.route(mux, "DELETE /api/v1/auth/me", s.authed(s.handleMeDelete))
	s.route(mux, "POST /api/v1/auth/verify", s.handle(s.handleVerify))
	s.route(mux, "POST /api/v1/auth/verify/resend", s.authed(s.handleVerifyResend))
	s.route(mux, "POST /api/v1/auth/password/forgot", s.handle(s.handleForgot))
	s.route(mux, "POST /api/v1/auth/password/reset", s.handle(s.handleReset))

	s.route(mux, "POST /api/v1/tasks", s.authed(s.handleTaskCreate))
	s.route(mux, "GET /api/v1/tasks", s.authed(s.handleTaskList))
	s.route(mux, "GET /api/v1/tasks/stats", s.authed(s.handleTaskStats)) // literal beats {id}
	s.route(mux, "GET /api/v1/tasks/{id}", s.authed(s.handleTaskGet))
	s.route(mux, "PUT /api/v1/tasks/{id}", s.authed(s.handleTaskReplace))
	s.route(mux, "PATCH /api/v1/tasks/{id}", s.authed(s.handleTaskUpdate))
	s.route(mux, "PATCH /api/v1/tasks/{id}/complete", s.authed(s.handleTaskComplete))
	s.route(mux, "DELETE /api/v1/tasks/{id}", s.authed(s.handleTaskDelete))
	s.route(mux, "DELETE /api/v1/tasks", s.authed(s.handleTaskBulkDelete))
	s.route(mux, "PATCH /api/v1/tasks", s.authed(s.handleTaskBulkComplete))

	// Section 6: the same handlers; they tell the variant by the {user_id} path value.
	s.route(mux, "GET /api/{user_id}/tasks", s.authed(s.handleTaskList))
	s.route(mux, "POST /api/{user_id}/tasks", s.authed(s.handleTaskCreate))
	s.route(mux, "GET /api/{user_id}/tasks/{id}", s.authed(s.handleTaskGet))
	s.route(mux, "PUT /api/{user_id}/tasks/{id}", s.authed(s.handleTaskUpdate))
	s.route(mux, "DELETE /api/{user_id}/tasks/{id}", s.authed(s.handleTaskDelete))
	s.route(mux, "PATCH /api/{user_id}/tasks/{id}/complete", s.authed(s.handleTaskComplete))

	// Section 8: the change feed.
	s.route(mux, "GET /api/v1/events", s.handle(s.handleEvents))
	s.route(mux, "POST /api/v1/events/ticket", s.authed(s.handleEventTicket))

	// Section 10: webhooks.
	s.route(mux, "POST /api/v1/webhooks", s.authed(s.handleWebhookCreate))
	s.route(mux, "GET /api/v1/webhooks", s.authed(s.handleWebhookList))
	s.route(mux, "DELETE /api/v1/webhooks/{id}", s.authed(s.handleWebhookDelete))

	// Section 11: the MCP endpoint and the document that tells its clients where tokens
	// come from.
	s.route(mux, "POST /mcp", s.mcpResource(s.authed(s.handleMCP)))
	s.route(mux, "GET /.well-known/oauth-protected-resource", s.handle(s.handleProtectedResource))
	s.route(mux, "GET /.well-known/oauth-protected-resource/mcp", s.handle(s.handleProtectedResource))

	s.route(mux, "GET /healthz", s.handle(s.handleHealth))
	s.route(mux, "GET /readyz", s.handle(s.handleReady))
	s.docRoutes(mux)
}

// route registers h for pattern and records the pattern, so that the tests can hold the
// API description (openapi.json) to exactly the routes served.
func (s *Server) route(mux *http.ServeMux, pattern string, h http.Handler) {
	s.routed = append(s.routed, pattern)
	mux.Handle(pattern, h)
}

// handlerFunc is a handler that returns its error for writeError to answer, so that no
// handler can forget to stop after a failure.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// requestInfo travels in the context so that the access log, written after the handler,
// can name the user that authentication found deeper down.
type requestInfo struct {
	id        string
	userID    int64
	presented presented // what a refused bearer token claimed, for the log
	// resourceMetadata is the RFC 9728 document a 401 of the MCP endpoint points to.
	resourceMetadata string
	// hijacked: the handler answered 200 on a connection it took over (an event stream).
	hijacked bool
}

type requestInfoKey struct{}

func requestInfoFrom(ctx context.Context) *requestInfo {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

// validRequestID accepts the client's X-Request-ID when it is 1–128 characters of
// A-Z a-z 0-9 . _ : -, so that it is safe to log and echo.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Server) withRequestInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-ID", id)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		ctx := context.WithValue(r.Context(), requestInfoKey{}, &requestInfo{id: id})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// statusWriter remembers the status for the access log and whether headers went out.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (sw *statusWriter) WriteHeader(code int) {
	if sw.status == 0 {
		sw.status = code
	}
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *statusWriter) Write(b []byte) (int, error) {
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	return sw.ResponseWriter.Write(b)
}

func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// logRequests writes one line per request and counts it in the metrics. It wraps the mux
// directly (through middleware that keeps the same *http.Request), so r.Pattern is the
// matched route.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		s.metrics.requestStarted()
		defer s.metrics.requestEnded() // also when the handler aborts with a panic
		next.ServeHTTP(sw, r)
		elapsed := time.Since(start)
		info := requestInfoFrom(r.Context())
		if sw.status == 0 && info.hijacked {
			sw.status = http.StatusOK
		}
		s.metrics.observe(r.Pattern, r.Method, sw.status, elapsed)
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("route", r.Pattern),
			slog.Int("status", sw.status),
			slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
			slog.String("request_id", info.id),
		}
		if info.userID != 0 {
			attrs = append(attrs, slog.Int64("user_id", info.userID))
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic", "request_id", requestInfoFrom(r.Context()).id,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if sw, ok := w.(*statusWriter); ok && sw.status != 0 {
				return // too late for a clean answer; the client sees a cut response
			}
			s.writeError(w, r, errInternal)
		}()
		next.ServeHTTP(w, r)
	})
}

var (
	corsAllowHeaders = "Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key, Last-Event-ID, X-Request-ID"
	corsExpose       = "ETag, Location, Retry-After, X-Request-ID, X-Total-Count"
	corsMethods      = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
)

// cors answers preflights for the configured origins and marks their responses readable.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || len(s.cfg.CORSAllowedOrigins) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		wildcard := slices.Contains(s.cfg.CORSAllowedOrigins, "*")
		if !wildcard && !slices.Contains(s.cfg.CORSAllowedOrigins, origin) {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if !wildcard {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExpose)
		next.ServeHTTP(w, r)
	})
}

// jsonFallback turns the mux's own plain-text 404 and 405 into the JSON envelope, keeping
// the Allow header the mux sets (golang/go#65648). Registering "/" instead would swallow
// the mux's 405s.
func (s *Server) jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&fallbackWriter{ResponseWriter: w, s: s, r: r}, r)
	})
}

type fallbackWriter struct {
	http.ResponseWriter
	s        *Server
	r        *http.Request
	replaced bool
}

func (f *fallbackWriter) WriteHeader(code int) {
	if (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) &&
		strings.HasPrefix(f.Header().Get("Content-Type"), "text/plain") {
		f.replaced = true
		if code == http.StatusNotFound {
			f.s.writeError(f.ResponseWriter, f.r, notFound("route"))
		} else {
			f.s.writeError(f.ResponseWriter, f.r, newError(http.StatusMethodNotAllowed,
				"method_not_allowed", "Method "+f.r.Method+" is not allowed here."))
		}
		return
	}
	f.ResponseWriter.WriteHeader(code)
}

func (f *fallbackWriter) Write(b []byte) (int, error) {
	if f.replaced {
		return len(b), nil
	}
	return f.ResponseWriter.Write(b)
}

func (f *fallbackWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// writeJSON sends v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	return writeJSONBody(w, status, append(b, '\n'))
}

// writeJSONBody sends body, JSON ending in a newline, with the given status.
func writeJSONBody(w http.ResponseWriter, status int, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// requireJSON is the 415 check of every body-bearing route.
func requireJSON(r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return newError(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"The request body must be application/json.")
	}
	return nil
}

// readBody reads the whole body under the configured cap: 413 beyond it, 400 when it is
// not valid UTF-8.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, newError(http.StatusRequestEntityTooLarge, "payload_too_large",
				fmt.Sprintf("The request body must not exceed %d bytes.", s.cfg.MaxBodyBytes))
		}
		return nil, invalidJSON("The request body could not be read.")
	}
	if !utf8.Valid(body) {
		return nil, invalidJSON("The request body is not valid UTF-8.")
	}
	return body, nil
}

// decodeObject is the one way a JSON body is read: 415, 413, then 400 unless the body is
// a single well-formed JSON object. Fields are then read one by one (see bodyFields), so
// that every wrong-typed field can be listed at once and absent differs from null.
func (s *Server) decodeObject(w http.ResponseWriter, r *http.Request) (bodyFields, error) {
	if err := requireJSON(r); err != nil {
		return bodyFields{}, err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return bodyFields{}, err
	}
	return parseObject(body)
}

func parseObject(body []byte) (bodyFields, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return bodyFields{}, invalidJSON("The request body must not be empty.")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return bodyFields{}, invalidJSON("The request body must be a JSON object.")
		}
		return bodyFields{}, invalidJSON("The request body is not well-formed JSON.")
	}
	if raw == nil {
		return bodyFields{}, invalidJSON("The request body must be a JSON object.")
	}
	return bodyFields{raw: raw}, nil
}

// handleHealth serves GET /healthz: 200 while the process runs.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady serves GET /readyz: 200 when the database answers and the schema is
// current, else 503 service_unavailable.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) error {
	if err := s.st.Ready(r.Context()); err != nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "service_unavailable",
			Detail: "The database is not ready.", Err: err}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
