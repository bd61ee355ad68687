package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// apiError is every error a client can see: Status and Code come from the contract's
// table, Detail is safe to show, Err is the cause, logged and never sent.
type apiError struct {
	Status     int
	Code       string
	Detail     string
	Fields     []fieldError
	Err        error
	RetryAfter int    // seconds, for 429
	reason     string // a refused token's failed check, for the log (rejections.go)
}

func (e *apiError) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Detail + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Detail
}

func (e *apiError) Unwrap() error { return e.Err }

// fieldError names one failing body field or query parameter by the name the client sent.
type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// errorBody is the envelope of section 2 of the contract.
type errorBody struct {
	Detail    string       `json:"detail"`
	ErrorCode string       `json:"error_code"`
	Timestamp string       `json:"timestamp"`
	RequestID string       `json:"request_id"`
	Errors    []fieldError `json:"errors,omitempty"`
}

func newError(status int, code, detail string) *apiError {
	return &apiError{Status: status, Code: code, Detail: detail}
}

func validationFailed(fields []fieldError) *apiError {
	return &apiError{Status: http.StatusUnprocessableEntity, Code: "validation_error",
		Detail: "The request body is invalid.", Fields: fields}
}

func invalidQuery(fields []fieldError) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_query",
		Detail: "The query string is invalid.", Fields: fields}
}

func invalidJSON(detail string) *apiError {
	return newError(http.StatusBadRequest, "invalid_json", detail)
}

func notFound(what string) *apiError {
	return newError(http.StatusNotFound, "not_found", what+" not found")
}

var (
	errNotAuthenticated = newError(http.StatusUnauthorized, "not_authenticated", "Authentication is required.")
	errInvalidToken     = newError(http.StatusUnauthorized, "invalid_token", "The token is invalid.")
	errTokenExpired     = newError(http.StatusUnauthorized, "token_expired", "The token has expired.")
	errBadCredentials   = newError(http.StatusUnauthorized, "invalid_credentials", "Incorrect email or password.")
	errForbidden        = newError(http.StatusForbidden, "forbidden", "This path belongs to another user.")
	errPrecondition     = newError(http.StatusPreconditionFailed, "precondition_failed", "The task has changed since the given ETag.")
	errEmailTaken       = newError(http.StatusConflict, "email_taken", "An account with this email already exists.")
	errIdempotencyReuse = newError(http.StatusUnprocessableEntity, "idempotency_key_reused",
		"This Idempotency-Key was already used with a different request body.")
	errUnavailable = newError(http.StatusServiceUnavailable, "service_unavailable",
		"The service is temporarily unavailable; try again shortly.")
	errInternal = newError(http.StatusInternalServerError, "internal_error", "An internal error occurred.")
)

// errorKind sorts the errors no handler turned into an *apiError, for the answer and for
// todo_db_errors_total: the database did not answer in time, could not be reached, or
// refused a transaction it may take on a retry (all 503: they heal when it does), or
// anything else (500, a bug).
type errorKind int

const (
	kindInternal errorKind = iota
	kindTimeout
	kindUnavailable
	kindConflict
	numErrorKinds
)

var errorKindNames = [numErrorKinds]string{"internal", "timeout", "unavailable", "conflict"}

func classifyError(err error) errorKind {
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return kindTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return kindUnavailable
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return kindUnavailable
	}
	var ne net.Error
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return kindTimeout
		}
		return kindUnavailable
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && pe.Code[:2] == "08", // connection exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, cannot connect now
			pe.Code == "53300": // too many connections
			return kindUnavailable
		case pe.Code == "57014": // statement timeout
			return kindTimeout
		case pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock: retryable
			return kindConflict
		}
	}
	return kindInternal
}

// databaseUnavailable reports whether err means the database could not be reached or did
// not answer in time, as opposed to a bug: those answer 503 and heal when it returns.
func databaseUnavailable(err error) bool { return classifyError(err) != kindInternal }

// writeError answers err in the contract's envelope. Anything that is not an *apiError is
// a 503 when the database is unreachable, else a 500 whose cause is logged, never sent.
// A failure after the client went away is neither: see clientClosed.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	isAPIError := errors.As(err, &ae)
	if (!isAPIError || ae.Status >= 500) && r.Context().Err() != nil {
		s.clientClosed(w, r, err)
		return
	}
	if !isAPIError {
		kind := classifyError(err)
		s.metrics.dbError(kind)
		if kind == kindInternal {
			ae = errInternal
		} else {
			ae = errUnavailable
		}
	}
	info := requestInfoFrom(r.Context())
	if ae.Status >= 500 {
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("request_id", info.id), slog.String("error", err.Error()))
	}
	h := w.Header()
	switch ae.Status {
	case http.StatusUnauthorized:
		if ae.Code == "not_authenticated" {
			h.Set("WWW-Authenticate", `Bearer`)
		} else if ae.Code != "invalid_credentials" {
			h.Set("WWW-Authenticate", bearerChallenge(ae.Detail))
		}
		if info.resourceMetadata != "" && ae.Code != "invalid_credentials" {
			sep := ", " // after the challenge's other parameters; a bare scheme takes a space
			if h.Get("WWW-Authenticate") == "Bearer" {
				sep = " "
			}
			h.Set("WWW-Authenticate", h.Get("WWW-Authenticate")+sep+`resource_metadata="`+info.resourceMetadata+`"`)
		}
		if ae.reason != "" {
			s.rejections.write(r, r.Pattern, ae.reason, info.presented)
		}
	case http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(max(1, ae.RetryAfter)))
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	writeJSON(w, ae.Status, errorBody{
		Detail:    ae.Detail,
		ErrorCode: ae.Code,
		Timestamp: time.Now().UTC().Format(time.RFC3339),
		RequestID: info.id,
		Errors:    ae.Fields,
	})
}

// clientClosed ends a request whose own context is done: its client closed the
// connection, so the query or wait that failed was cancelled for it, and the server is
// not at fault. The status is nginx's 499, for the access log and the metrics; nobody
// reads the answer. A query's own timeout leaves the request's context alive, so it stays
// a 503 logged as an error.
func (s *Server) clientClosed(w http.ResponseWriter, r *http.Request, err error) {
	s.log.LogAttrs(r.Context(), slog.LevelDebug, "client closed request",
		slog.String("request_id", requestInfoFrom(r.Context()).id), slog.String("error", err.Error()))
	w.WriteHeader(statusClientClosed)
}
