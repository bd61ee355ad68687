package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The change feed (contract §8): GET /api/v1/events streams a user's task events as
// Server-Sent Events, and POST /api/v1/events/ticket gives a browser's EventSource, which
// cannot send an Authorization header, a single-use ticket for the URL instead.
//
// How an event travels. A write records it in the outbox, numbered by the user's sequence,
// and notifies (store_events.go). Each replica has one listener connection (eventHub.run);
// a notice for a user with open streams here makes the hub read that user's new events
// once, render them once, and hand the same bytes to each of the user's streams. A stream
// knows the id it sent last, and since a user's ids have no gaps it can tell when
// something is missing (it joined while a read was in flight, resumed from an older id, or
// the listener was away): it then reads the missing ids itself before sending more. So an
// idle stream costs no database work, and a stream never skips or repeats an id.

const (
	eventsPing       = 15 * time.Second
	eventsRetry      = 2 * time.Second // the retry: of the first message
	eventTicketTTL   = 60 * time.Second
	eventsReadBatch  = 500
	streamBuffer     = 32               // batches a stream may fall behind before it is closed
	streamWriteLimit = 10 * time.Second // a client that takes longer to take a message is closed
	// eventsRetentionSlack is kept beyond EVENTS_RETENTION: an event's created_at is its
	// transaction's clock, which may be older than that of an event with a smaller id by as
	// long as a transaction can run, and the clean-up deletes by id.
	eventsRetentionSlack = time.Minute
)

// sseEvent is one event rendered as its Server-Sent Events message.
type sseEvent struct {
	id  int64
	msg []byte
}

// eventStream is one open GET /api/v1/events.
type eventStream struct {
	userID int64
	ch     chan []sseEvent
	end    chan struct{} // closed to end the stream: account gone, too slow, shutdown
	once   sync.Once
}

func (s *eventStream) stop() { s.once.Do(func() { close(s.end) }) }

// feed is a user's streams on this replica and the last event the hub handed them.
// last is -1 until the first stream has read where the user's events stand.
type feed struct {
	userID   int64
	streams  map[*eventStream]struct{}
	last     int64
	fetching bool // a read of new events is running
	dirty    bool // a notice came during that read, or before last was known
}

// eventHub is the replica's side of the feed: the listener and the open streams.
type eventHub struct {
	st         *Store
	log        *slog.Logger
	maxPerUser int
	maxStreams int
	ping       time.Duration
	open       atomic.Int64 // streams open, for the cap and the metrics
	mu         sync.Mutex
	feeds      map[int64]*feed
	closed     bool
	done       chan struct{} // closed at shutdown
	reads      chan struct{} // bounds the hub's concurrent reads
	listening  atomic.Bool
	onReminder func()        // the reminder scheduler's wake-up, for a notice that may arm one
	ready      chan struct{} // closed once the listener first listens
	readyOnce  sync.Once
}

func newEventHub(st *Store, log *slog.Logger, cfg Config) *eventHub {
	return &eventHub{st: st, log: log, maxPerUser: cfg.EventsMaxPerUser, maxStreams: cfg.EventsMaxStreams,
		ping: eventsPing, feeds: map[int64]*feed{}, done: make(chan struct{}), reads: make(chan struct{}, 8),
		ready: make(chan struct{})}
}

var (
	errTooManyStreamsOfUser = &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Detail: "Too many open event streams for this user.", RetryAfter: 5}
	errTooManyStreams = &apiError{Status: http.StatusServiceUnavailable, Code: "service_unavailable",
		Detail: "This server holds as many event streams as it can; try again shortly."}
	errShuttingDown = &apiError{Status: http.StatusServiceUnavailable, Code: "service_unavailable",
		Detail: "The server is shutting down; try again shortly."}
)

// join registers a stream of the user, within the caps.
func (h *eventHub) join(userID int64) (*eventStream, *feed, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, errShuttingDown
	}
	f := h.feeds[userID]
	if f != nil && len(f.streams) >= h.maxPerUser {
		return nil, nil, errTooManyStreamsOfUser
	}
	if h.open.Load() >= int64(h.maxStreams) {
		return nil, nil, errTooManyStreams
	}
	if f == nil {
		f = &feed{userID: userID, streams: map[*eventStream]struct{}{}, last: -1}
		h.feeds[userID] = f
	}
	s := &eventStream{userID: userID, ch: make(chan []sseEvent, streamBuffer), end: make(chan struct{})}
	f.streams[s] = struct{}{}
	h.open.Add(1)
	return s, f, nil
}

// leave frees the stream's slot at once.
func (h *eventHub) leave(s *eventStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f := h.feeds[s.userID]; f != nil {
		if _, ok := f.streams[s]; ok {
			delete(f.streams, s)
			h.open.Add(-1)
		}
		if len(f.streams) == 0 && !f.fetching {
			delete(h.feeds, s.userID)
		}
	}
}

// known sets where a new feed's events stand, read by its first stream after it joined.
func (h *eventHub) known(f *feed, last int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.last < 0 {
		f.last = last
		if f.dirty {
			f.dirty = false
			h.startRead(f)
		}
	}
}

// notice handles a notification: new events of a user, or the user's account gone.
func (h *eventHub) notice(payload string) {
	idText, gone := strings.CutSuffix(payload, accountGone)
	idText, arms := strings.CutSuffix(idText, reminderArmed)
	userID, err := strconv.ParseInt(idText, 10, 64)
	if err != nil {
		return
	}
	if arms && h.onReminder != nil {
		h.onReminder()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[userID]
	if f == nil {
		return
	}
	if gone {
		for s := range f.streams {
			s.stop()
		}
		return
	}
	h.poke(f)
}

// poke reads the feed's new events, or has the running read read again. h.mu held.
func (h *eventHub) poke(f *feed) {
	if f.fetching || f.last < 0 {
		f.dirty = true
		return
	}
	h.startRead(f)
}

func (h *eventHub) startRead(f *feed) {
	f.fetching = true
	go h.read(f)
}

// read hands the feed's streams every event after f.last, until a read finds nothing new
// that no notice came for meanwhile.
func (h *eventHub) read(f *feed) {
	select {
	case h.reads <- struct{}{}:
		defer func() { <-h.reads }()
	case <-h.done:
		return
	}
	for {
		h.mu.Lock()
		after := f.last
		f.dirty = false
		h.mu.Unlock()
		evs, err := h.st.ReadEvents(context.Background(), f.userID, after, eventsReadBatch)
		var batch []sseEvent
		if err == nil {
			batch, err = renderEvents(evs)
		}
		h.mu.Lock()
		if err != nil {
			// Read again in a second; if the database is away, the listener's return reads
			// again for every feed as well.
			h.log.Warn("read events", "user_id", f.userID, "error", err.Error())
			f.fetching = false
			f.dirty = false
			h.dropIfIdle(f)
			h.mu.Unlock()
			time.AfterFunc(time.Second, func() {
				h.mu.Lock()
				defer h.mu.Unlock()
				if !h.closed && h.feeds[f.userID] == f {
					h.poke(f)
				}
			})
			return
		}
		if len(batch) > 0 {
			f.last = batch[len(batch)-1].id
			for s := range f.streams {
				select {
				case s.ch <- batch:
				default:
					s.stop() // too slow: it resumes by id
				}
			}
		}
		if len(evs) < eventsReadBatch && !f.dirty {
			f.fetching = false
			h.dropIfIdle(f)
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// dropIfIdle forgets a feed whose last stream left while it was read. h.mu held.
func (h *eventHub) dropIfIdle(f *feed) {
	if len(f.streams) == 0 && h.feeds[f.userID] == f {
		delete(h.feeds, f.userID)
	}
}

// caughtUp has every feed read what was committed while the listener was away, and ends
// the streams of users deleted meanwhile (their notice may be lost).
func (h *eventHub) caughtUp(ctx context.Context) {
	h.mu.Lock()
	ids := make([]int64, 0, len(h.feeds))
	for id, f := range h.feeds {
		ids = append(ids, id)
		h.poke(f)
	}
	h.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	exist, err := h.st.UsersExist(ctx, ids)
	if err != nil {
		return // the next return of the listener asks again
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if f := h.feeds[id]; f != nil && !exist[id] {
			for s := range f.streams {
				s.stop()
			}
		}
	}
}

// run is the listener: one connection that LISTENs for the feed's notices, opened again
// (with a back-off) whenever it is lost, followed each time by a catch-up read of every
// feed, so that nothing committed while it was away is skipped. It ends with ctx.
func (h *eventHub) run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listen(ctx)
		h.listening.Store(false)
		if ctx.Err() != nil {
			break
		}
		h.log.Warn("event listener lost its connection; reconnecting", "error", err.Error(), "in_ms", backoff.Milliseconds())
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func (h *eventHub) listen(ctx context.Context) error {
	cfg := h.st.pool.Config().ConnConfig.Copy()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+eventsChannel); err != nil {
		return err
	}
	h.listening.Store(true)
	h.readyOnce.Do(func() { close(h.ready) })
	h.caughtUp(ctx)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		h.notice(n.Payload)
	}
}

// shutdown ends every stream at once: http.Server.Shutdown waits for handlers, and a
// stream's would otherwise last until its token expires.
func (h *eventHub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.done)
	for _, f := range h.feeds {
		for s := range f.streams {
			s.stop()
		}
	}
}

// renderEvents renders stored events as the messages a stream sends: a task event's data
// is the task as GET /api/v1/tasks/{id} answers it (appendTask), a deletion's {"id": n}.
func renderEvents(evs []storedEvent) ([]sseEvent, error) {
	out := make([]sseEvent, 0, len(evs))
	for _, e := range evs {
		data, err := renderData(e.Type, e.Payload)
		if err != nil {
			return nil, err
		}
		out = append(out, sseEvent{id: e.ID, msg: sseMessage(nil, e.ID, e.Type, data)})
	}
	return out, nil
}

// renderData is the data of an event, from its stored payload: the task as GET
// /api/v1/tasks/{id} answers it (appendTask), {"id": n} for a deletion, {"task", "late"}
// for a reminder. The change feed and the webhooks send the same bytes.
func renderData(typ string, payload []byte) ([]byte, error) {
	switch typ {
	case eventReminder:
		var p struct {
			Task taskRow `json:"task"`
			Late bool    `json:"late"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return nil, err
		}
		data := appendTask([]byte(`{"task":`), p.Task.task(), "")
		return append(strconv.AppendBool(append(data, `,"late":`...), p.Late), '}'), nil
	case eventDeleted:
		var row taskRow
		if err := json.Unmarshal(payload, &row); err != nil {
			return nil, err
		}
		return append(strconv.AppendInt([]byte(`{"id":`), row.ID, 10), '}'), nil
	default:
		var row taskRow
		if err := json.Unmarshal(payload, &row); err != nil {
			return nil, err
		}
		return appendTask(nil, row.task(), ""), nil
	}
}

func sseMessage(b []byte, id int64, typ string, data []byte) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, "\nevent: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// taskRow is a task as an event's payload holds it: the row's columns as PostgreSQL's
// to_jsonb writes them.
type taskRow struct {
	ID              int64      `json:"id"`
	UserID          int64      `json:"user_id"`
	Title           string     `json:"title"`
	Description     *string    `json:"description"`
	Completed       bool       `json:"completed"`
	Priority        int16      `json:"priority"`
	Tags            []string   `json:"tags"`
	DueDate         *time.Time `json:"due_date"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	CompletedAt     *time.Time `json:"completed_at"`
	Version         int64      `json:"version"`
	Recurrence      *string    `json:"recurrence"`
	RecurrenceStart *time.Time `json:"recurrence_start"`
	NextTaskID      *int64     `json:"next_task_id"`
	RemindAt        *time.Time `json:"remind_at"`
}

func (r taskRow) task() Task {
	if r.Priority < 0 || int(r.Priority) >= len(priorityNames) {
		r.Priority = 0 // the table's CHECK keeps it in range
	}
	return Task(r)
}

// ---- HTTP ----

// handleEventTicket serves POST /api/v1/events/ticket: a ticket "<user id>.<random>" (the
// id keeps its redemption on the user's shard), stored as its hash, good for one stream
// opened within 60 seconds.
func (s *Server) handleEventTicket(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	ticket := strconv.FormatInt(p.UserID, 10) + "." + newOpaque(32)
	sum := sha256.Sum256([]byte(ticket))
	now := time.Now()
	if err := s.st.CreateEventTicket(r.Context(), p.UserID, sum[:], now.Add(eventTicketTTL), p.Expires); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"ticket": ticket, "expires_in": int(eventTicketTTL.Seconds())})
}

var errBadTicket = &apiError{Status: http.StatusUnauthorized, Code: "invalid_token",
	Detail: "The event ticket is unknown, used or expired; ask for a new one.", reason: "ticket"}

// streamCaller authenticates GET /api/v1/events: a ticket in the URL, or a bearer token in
// the header, never a token in the URL. It returns the user and when the stream ends.
func (s *Server) streamCaller(r *http.Request) (int64, time.Time, error) {
	if ticket := r.URL.Query().Get("ticket"); ticket != "" {
		idText, _, ok := strings.Cut(ticket, ".")
		userID, err := strconv.ParseInt(idText, 10, 64)
		if !ok || err != nil || userID <= 0 || len(ticket) > 200 {
			return 0, time.Time{}, errBadTicket
		}
		sum := sha256.Sum256([]byte(ticket))
		expires, ok, err := s.st.RedeemEventTicket(r.Context(), userID, sum[:], time.Now())
		if err != nil {
			return 0, time.Time{}, err
		}
		if !ok {
			return 0, time.Time{}, errBadTicket
		}
		return userID, expires, nil
	}
	token, ok := bearerToken(r)
	if !ok {
		return 0, time.Time{}, errNotAuthenticated
	}
	p, err := s.auth.Authenticate(r.Context(), token)
	if err != nil {
		requestInfoFrom(r.Context()).presented = presentedClaims(token)
		return 0, time.Time{}, err
	}
	return p.UserID, p.Expires, nil
}

// lastEventID reads where a client resumes: the Last-Event-ID header (which EventSource
// sends on reconnecting) or last_event_id=; -1 when neither is given.
func lastEventID(r *http.Request) (int64, error) {
	v, name := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if v == "" {
		v, name = r.URL.Query().Get("last_event_id"), "last_event_id"
	}
	if v == "" {
		return -1, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || strings.TrimLeft(v, "0123456789") != "" {
		return 0, invalidQuery([]fieldError{{Field: name, Message: "must be an event id: a decimal integer"}})
	}
	return n, nil
}

// handleEvents serves GET /api/v1/events.
//
// Once the stream is open the handler hands its connection over to a goroutine of the
// stream's own (http.Hijacker) and returns: an open stream then holds its connection, that
// goroutine with a shallow stack, and one that waits for the client to hang up, and none
// of the request's buffers and state, which the server frees — about a third of what it
// costs to hold the request open (specs/realtime). Where the connection cannot be taken
// over (HTTP/2, a test's recorder) the stream runs in the handler.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) error {
	resume, err := lastEventID(r)
	if err != nil {
		return err
	}
	userID, expires, err := s.streamCaller(r)
	if err != nil {
		return err
	}
	requestInfoFrom(r.Context()).userID = userID
	h := s.events
	es, f, err := h.join(userID)
	if err != nil {
		return err
	}
	// Read after joining, so that an event committed from here on reaches this stream
	// through the feed, or through the stream's own read of what it is missing.
	last, exists, err := s.st.EventsStart(r.Context(), userID)
	if err == nil && !exists {
		err = tokenError(errUserGone)
	}
	if err != nil {
		h.leave(es)
		return err
	}
	h.known(f, last)

	st := &streamState{userID: userID, es: es, expires: expires, resume: resume, last: last}
	st.out.buf = append(st.out.buf, "retry: "...)
	st.out.buf = strconv.AppendInt(st.out.buf, eventsRetry.Milliseconds(), 10)
	st.out.buf = append(st.out.buf, "\n\n"...)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")

	rc := http.NewResponseController(w)
	if conn, _, err := rc.Hijack(); err == nil {
		requestInfoFrom(r.Context()).hijacked = true
		head := []byte("HTTP/1.1 200 OK\r\n")
		hd.Set("Connection", "close") // the body ends when the stream does
		for k, vs := range hd {
			for _, v := range vs {
				head = append(append(append(append(head, k...), ": "...), v...), "\r\n"...)
			}
		}
		st.out.buf = append(append(head, "\r\n"...), st.out.buf...)
		st.out.conn = conn
		go func() {
			defer h.leave(es)
			defer conn.Close()
			gone := make(chan struct{})
			go func() {
				// The client sends nothing more: a read ends when it hangs up (or when the
				// stream closes the connection).
				var b [1]byte
				for {
					if _, err := conn.Read(b[:]); err != nil {
						close(gone)
						return
					}
				}
			}()
			s.stream(gone, st)
		}()
		return nil
	}
	defer h.leave(es)
	// The server's read and write timeouts are for requests; a stream lasts until its
	// token expires, and each write has its own deadline instead.
	rc.SetReadDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	st.out.w, st.out.rc = w, rc
	s.stream(r.Context().Done(), st)
	return nil
}

// streamState is an open stream: whose, where its events stand, and where it writes.
type streamState struct {
	userID  int64
	es      *eventStream
	expires time.Time
	resume  int64 // Last-Event-ID, -1 without
	last    int64 // the user's latest event when the stream opened
	out     sseWriter
}

// stream sends the stream's first message and then its events until gone closes, the
// hub ends it, its token expires, or a write fails.
func (s *Server) stream(gone <-chan struct{}, st *streamState) {
	// The stream's own reads are bounded by the query timeout.
	ctx := context.Background()
	out, userID, sent := &st.out, st.userID, st.last
	var err error
	switch {
	case st.resume > st.last:
		out.reset(st.last, "unknown_id")
	case st.resume >= 0 && st.resume < st.last:
		// The stream's own read of what it missed begins at resume.
		if sent, err = s.catchUp(ctx, out, userID, st.resume, st.last); err != nil {
			return // the stream ends; the client resumes by id
		}
	}
	if out.flush() != nil {
		return
	}
	ping := time.NewTicker(s.events.ping)
	defer ping.Stop()
	expiry := time.NewTimer(time.Until(st.expires))
	defer expiry.Stop()
	for {
		select {
		case <-gone:
			return
		case <-st.es.end:
			return
		case <-expiry.C:
			return
		case <-ping.C:
			out.buf = append(out.buf, ": ping\n\n"...)
		case batch := <-st.es.ch:
			for _, e := range batch {
				if e.id <= sent {
					continue
				}
				if e.id > sent+1 {
					if sent, err = s.catchUp(ctx, out, userID, sent, e.id-1); err != nil {
						return
					}
					if e.id <= sent {
						continue
					}
				}
				out.buf = append(out.buf, e.msg...)
				sent = e.id
			}
		}
		if out.flush() != nil {
			return
		}
	}
}

// catchUp writes the user's events after sent up to through, read by this stream: those
// it joined too late for, or resumes from. When the first of them is gone (older than
// the retention) the client gets event: reset instead, and the stream goes on after
// through. It returns the id sent last.
func (s *Server) catchUp(ctx context.Context, out *sseWriter, userID, sent, through int64) (int64, error) {
	for sent < through {
		evs, err := s.st.ReadEvents(ctx, userID, sent, eventsReadBatch)
		if err != nil {
			return sent, err
		}
		if len(evs) == 0 || evs[0].ID != sent+1 {
			out.reset(through, "expired")
			return through, nil
		}
		batch, err := renderEvents(evs)
		if err != nil {
			return sent, err
		}
		for _, e := range batch {
			out.buf = append(out.buf, e.msg...)
			sent = e.id
		}
		if err := out.flush(); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// sseWriter gathers a stream's messages and sends them with a deadline each time, to the
// taken-over connection or, where there is none, through the ResponseWriter.
type sseWriter struct {
	conn net.Conn
	w    http.ResponseWriter
	rc   *http.ResponseController
	buf  []byte
}

// reset tells the client to reload: its events from its id on cannot be given. Its id
// moves the client's Last-Event-ID to where the stream goes on.
func (o *sseWriter) reset(id int64, reason string) {
	o.buf = sseMessage(o.buf, id, "reset", []byte(`{"reason":"`+reason+`"}`))
}

func (o *sseWriter) flush() error {
	if len(o.buf) == 0 {
		return nil
	}
	var err error
	if o.conn != nil {
		o.conn.SetWriteDeadline(time.Now().Add(streamWriteLimit))
		_, err = o.conn.Write(o.buf)
	} else {
		o.rc.SetWriteDeadline(time.Now().Add(streamWriteLimit))
		if _, err = o.w.Write(o.buf); err == nil {
			err = o.rc.Flush()
		}
		if errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
	}
	// A message can be large (a task of 10,000 characters); an idle stream keeps a small
	// buffer.
	if cap(o.buf) > 4096 {
		o.buf = nil
	} else {
		o.buf = o.buf[:0]
	}
	return err
}
