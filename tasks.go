package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ---- list queries ----

// taskFilter narrows lists and bulk writes; a nil field is a filter not set.
type taskFilter struct {
	Completed *bool
	Q         *string
	Priority  *int16
	Tag       *string
	DueBefore *time.Time
	DueAfter  *time.Time
	Recurring *bool
}

// likePattern is Q as an ILIKE pattern that matches it literally anywhere: %, _ and \
// in the search text are escaped.
func (f taskFilter) likePattern() *string {
	if f.Q == nil {
		return nil
	}
	p := "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(*f.Q) + "%"
	return &p
}

// listQuery is a parsed list request.
type listQuery struct {
	taskFilter
	Sort   string // a key of sortColumns
	Desc   bool
	Limit  int
	Offset int        // section 6 routes only
	After  *cursorPos // keyset position from a cursor; /api/v1 only
}

// cursorPos is where a page ends: the sort key's value of its last task, and its id.
type cursorPos struct {
	Time *time.Time // created_at, updated_at, due_date (nil: no due date)
	Int  int16      // priority
	Text string     // title
	ID   int64
}

// queryParams reads a query string by the names one route variant accepts, naming each
// failure by the parameter the client sent.
type queryParams struct {
	v    url.Values
	errs fieldErrors
}

// get returns the first non-empty value among names, and the name it came under.
func (qp *queryParams) get(names ...string) (string, string) {
	for _, n := range names {
		if v := qp.v.Get(n); v != "" {
			return v, n
		}
	}
	return "", ""
}

// boolean reads a true/false parameter: nil when absent or not a boolean (then an error
// names it).
func (qp *queryParams) boolean(name string) *bool {
	s, n := qp.get(name)
	switch strings.ToLower(s) {
	case "":
		return nil
	case "true":
		return ptr(true)
	case "false":
		return ptr(false)
	}
	qp.errs.add(n, "must be true or false")
	return nil
}

// parseListQuery reads a list query. hackathon selects the section 6 variant: its
// aliases, its limits, and offset instead of cursor.
func parseListQuery(v url.Values, hackathon bool) (listQuery, fieldErrors) {
	qp := &queryParams{v: v}
	q := listQuery{Sort: "created_at", Desc: true, Limit: 20}
	maxLimit := 100
	if hackathon {
		q.Limit, maxLimit = 100, 1000
	}
	alias := func(name, hackAlias string) []string {
		if hackathon {
			return []string{name, hackAlias}
		}
		return []string{name}
	}

	q.Completed = qp.boolean("completed")
	q.Recurring = qp.boolean("recurring")
	if s, name := qp.get("status"); name != "" {
		var c *bool
		switch s = strings.ToLower(s); {
		case s == "all":
		case s == "pending", hackathon && s == "open":
			c = ptr(false)
		case s == "completed", hackathon && s == "done":
			c = ptr(true)
		case hackathon:
			qp.errs.add(name, "must be one of all, pending, completed, open, done")
		default:
			qp.errs.add(name, "must be one of all, pending, completed")
		}
		if c != nil && q.Completed != nil && *c != *q.Completed {
			qp.errs.add(name, "contradicts completed")
		} else if c != nil {
			q.Completed = c
		}
	}
	if s, name := qp.get(alias("q", "search")...); name != "" {
		s, ok := cleanText(s)
		switch {
		case !ok:
			qp.errs.add(name, "must not contain NUL characters")
		case !utf8.ValidString(s): // a %-escape can decode to bytes PostgreSQL refuses
			qp.errs.add(name, "must be valid UTF-8")
		case utf8.RuneCountInString(s) > 500:
			qp.errs.add(name, "must be at most 500 characters")
		case s != "":
			q.Q = &s
		}
	}
	if s, name := qp.get("priority"); name != "" {
		if p, ok := parsePriority(strings.ToLower(s)); ok {
			q.Priority = &p
		} else {
			qp.errs.add(name, "must be one of low, medium, high")
		}
	}
	if s, name := qp.get(alias("tag", "tags")...); name != "" {
		t, ok := cleanText(strings.ToLower(s))
		if n := utf8.RuneCountInString(t); !ok || n == 0 || n > 50 || !utf8.ValidString(s) {
			qp.errs.add(name, "must be a tag of 1 to 50 characters")
		} else {
			q.Tag = &t
		}
	}
	for _, d := range []struct {
		names []string
		dst   **time.Time
	}{
		{alias("due_before", "due_date_to"), &q.DueBefore},
		{alias("due_after", "due_date_from"), &q.DueAfter},
	} {
		if s, name := qp.get(d.names...); name != "" {
			if t, ok := parseDue(s); ok {
				*d.dst = &t
			} else {
				qp.errs.add(name, "must be an RFC 3339 time or a YYYY-MM-DD date")
			}
		}
	}
	qp.parseSort(&q, hackathon)
	if s, name := qp.get("limit"); name != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			qp.errs.add(name, "must be a whole number from 1 to "+strconv.Itoa(maxLimit))
		} else {
			q.Limit = n
		}
	}
	if hackathon {
		if s, name := qp.get("offset", "skip"); name != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > 1_000_000_000 {
				qp.errs.add(name, "must be a whole number of at least 0")
			} else {
				q.Offset = n
			}
		}
	}
	return q, qp.errs
}

// parseSort reads sort (and on section 6 routes sort_by with sort_order or order).
func (qp *queryParams) parseSort(q *listQuery, hackathon bool) {
	if hackathon {
		if by, name := qp.get("sort_by"); name != "" {
			if _, ok := sortColumns[by]; !ok {
				qp.errs.add(name, "must be one of created_at, updated_at, due_date, priority, title")
				return
			}
			q.Sort, q.Desc = by, false
			if dir, dname := qp.get("sort_order", "order"); dname != "" {
				switch strings.ToLower(dir) {
				case "asc":
				case "desc":
					q.Desc = true
				default:
					qp.errs.add(dname, "must be asc or desc")
				}
			}
			return
		}
	}
	s, name := qp.get("sort")
	if name == "" {
		return
	}
	if hackathon {
		switch s {
		case "created":
			q.Sort, q.Desc = "created_at", true
			return
		case "updated":
			q.Sort, q.Desc = "updated_at", true
			return
		}
	}
	key, desc := strings.CutPrefix(s, "-")
	if _, ok := sortColumns[key]; !ok {
		qp.errs.add(name, "must be one of created_at, updated_at, due_date, priority, title, optionally with a leading -")
		return
	}
	q.Sort, q.Desc = key, desc
}

func ptr[T any](v T) *T { return &v }

// ---- cursors ----

// cursorPayload is what a cursor carries; its signature binds it to the user and the query.
type cursorPayload struct {
	T *int64 `json:"t,omitempty"` // unix microseconds
	P int16  `json:"p,omitempty"`
	// B is the title's bytes: a JSON string would escape a title of 255 "<" or control
	// characters to six bytes each, past maxCursorLen, where the bytes (base64, at most
	// 1,020 of them) always fit. S is the form cursors made before, still read.
	B  []byte `json:"b,omitempty"`
	S  string `json:"s,omitempty"`
	ID int64  `json:"i"`
}

// maxCursorLen bounds what decodeCursor reads; every cursor the service makes is shorter
// (at most 1,879 characters: a title of 255 four-byte characters).
const maxCursorLen = 2048

// canonical identifies the query a cursor belongs to: filters and sort, not the limit.
func (q listQuery) canonical() string {
	var b strings.Builder
	b.WriteString(q.Sort)
	if q.Desc {
		b.WriteString(" desc")
	}
	f := q.taskFilter
	if f.Completed != nil {
		b.WriteString("|c=" + strconv.FormatBool(*f.Completed))
	}
	if f.Q != nil {
		b.WriteString("|q=" + strconv.Quote(*f.Q))
	}
	if f.Priority != nil {
		b.WriteString("|p=" + strconv.Itoa(int(*f.Priority)))
	}
	if f.Tag != nil {
		b.WriteString("|t=" + strconv.Quote(*f.Tag))
	}
	if f.DueBefore != nil {
		b.WriteString("|b=" + f.DueBefore.Format(time.RFC3339Nano))
	}
	if f.DueAfter != nil {
		b.WriteString("|a=" + f.DueAfter.Format(time.RFC3339Nano))
	}
	if f.Recurring != nil {
		b.WriteString("|r=" + strconv.FormatBool(*f.Recurring))
	}
	return b.String()
}

func (a *Authenticator) cursorMAC(userID int64, q listQuery, payload string) []byte {
	msg := strconv.FormatInt(userID, 10) + "\x00" + q.canonical() + "\x00" + payload
	return hmacSum(a.cursorKey, []byte(msg))[:16]
}

// encodeCursor makes the opaque cursor that continues q after t.
func (a *Authenticator) encodeCursor(userID int64, q listQuery, t Task) string {
	p := cursorPayload{ID: t.ID}
	switch q.Sort {
	case "created_at":
		p.T = ptr(t.CreatedAt.UnixMicro())
	case "updated_at":
		p.T = ptr(t.UpdatedAt.UnixMicro())
	case "due_date":
		if t.DueDate != nil {
			p.T = ptr(t.DueDate.UnixMicro())
		}
	case "priority":
		p.P = t.Priority
	case "title":
		p.B = []byte(t.Title)
	}
	raw, _ := json.Marshal(p)
	payload := base64.RawURLEncoding.EncodeToString(raw)
	return payload + "." + base64.RawURLEncoding.EncodeToString(a.cursorMAC(userID, q, payload))
}

// decodeCursor checks a cursor's signature against the user and query and returns its
// position; an error for a tampered, foreign or other query's cursor.
func (a *Authenticator) decodeCursor(userID int64, q listQuery, cursor string) (*cursorPos, error) {
	bad := errors.New("bad cursor")
	payload, sig, ok := strings.Cut(cursor, ".")
	if !ok || len(cursor) > maxCursorLen {
		return nil, bad
	}
	// Compared as text: decoding first would also accept other spellings of the same
	// bytes (unused trailing bits, line breaks), so a modified cursor would pass.
	want := base64.RawURLEncoding.EncodeToString(a.cursorMAC(userID, q, payload))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, bad
	}
	var p cursorPayload
	if err := json.Unmarshal(raw, &p); err != nil || p.ID <= 0 {
		return nil, bad
	}
	pos := &cursorPos{ID: p.ID, Int: p.P, Text: p.S}
	if p.B != nil {
		pos.Text = string(p.B)
	}
	if p.T != nil {
		t := time.UnixMicro(*p.T).UTC()
		pos.Time = &t
	}
	return pos, nil
}

// ---- handlers ----

// hackathonUser is the {user_id} of a section 6 route, or "" on /api/v1.
func hackathonUser(r *http.Request) string { return r.PathValue("user_id") }

// taskID reads {id}; anything but a positive 64-bit integer names no task: 404.
func taskID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, notFound("task")
	}
	return id, nil
}

func taskLocation(r *http.Request, id int64) string {
	if u := hackathonUser(r); u != "" {
		return "/api/" + url.PathEscape(u) + "/tasks/" + strconv.FormatInt(id, 10)
	}
	return "/api/v1/tasks/" + strconv.FormatInt(id, 10)
}

// writeTask answers one task with its ETag.
func writeTask(w http.ResponseWriter, r *http.Request, status int, t Task) error {
	w.Header().Set("ETag", t.ETag())
	return writeJSONBody(w, status, append(appendTask(make([]byte, 0, 512), t, hackathonUser(r)), '\n'))
}

// validIdempotencyKey: 1–255 printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// handleTaskCreate serves POST /api/v1/tasks and POST /api/{user_id}/tasks: 201 with the
// task, Location and ETag; 422 listing every bad field. With an Idempotency-Key, a
// repeat of the same body answers the first answer and creates nothing.
func (s *Server) handleTaskCreate(w http.ResponseWriter, r *http.Request) error {
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	c := readTaskInput(&b).change(modeCreate, &b.errs)
	if len(b.errs) > 0 {
		return validationFailed(b.errs)
	}
	userID := principalFrom(r.Context()).UserID
	key, hasKey := r.Header["Idempotency-Key"]
	if !hasKey {
		t, err := s.st.CreateTask(r.Context(), userID, c)
		if err != nil {
			return err
		}
		w.Header().Set("Location", taskLocation(r, t.ID))
		return writeTask(w, r, http.StatusCreated, t)
	}
	if len(key) != 1 || !validIdempotencyKey(key[0]) {
		return validationFailed([]fieldError{{Field: "Idempotency-Key", Message: "must be 1 to 255 printable ASCII characters"}})
	}
	sum := sha256.Sum256(canonicalJSON(b.raw))
	ans, err := s.st.CreateTaskOnce(r.Context(), userID, key[0], sum[:], c, func(t Task) (idempotentAnswer, error) {
		return idempotentAnswer{Status: http.StatusCreated, Body: appendTask(nil, t, hackathonUser(r))}, nil
	})
	if err != nil {
		return err
	}
	var created struct {
		ID int64 `json:"id"`
	}
	if json.Unmarshal(ans.Body, &created) == nil && created.ID > 0 {
		w.Header().Set("Location", taskLocation(r, created.ID))
	}
	w.Header().Set("ETag", `"1"`) // the first answer shows the task at its first version
	return writeJSONBody(w, ans.Status, append(ans.Body, '\n'))
}

// canonicalJSON is one spelling of a body's JSON value, so that the same value hashes
// alike however it was written: object keys sorted at every depth, strings with one
// escaping ("café" and "caf\u00e9" alike), numbers by their value, no white space.
func canonicalJSON(raw map[string]json.RawMessage) []byte {
	v := make(map[string]any, len(raw))
	for k, r := range raw {
		var x any
		json.Unmarshal(r, &x) // decodeObject has checked that each value is JSON
		v[k] = x
	}
	b, _ := json.Marshal(v)
	return b
}

// handleTaskList serves GET /api/v1/tasks (a page with a cursor) and GET
// /api/{user_id}/tasks (a plain array, total in X-Total-Count).
func (s *Server) handleTaskList(w http.ResponseWriter, r *http.Request) error {
	pathUser := hackathonUser(r)
	query := r.URL.Query()
	q, errs := parseListQuery(query, pathUser != "")
	if len(errs) > 0 {
		return invalidQuery(errs)
	}
	userID := principalFrom(r.Context()).UserID
	if pathUser != "" { // a plain array; the total goes in a header
		tasks, total, err := s.st.ListTasks(r.Context(), userID, q)
		if err != nil {
			return err
		}
		w.Header().Set("X-Total-Count", strconv.FormatInt(total, 10))
		body := appendTasks(make([]byte, 0, 64+512*len(tasks)), tasks, pathUser)
		return writeJSONBody(w, http.StatusOK, append(body, '\n'))
	}
	tasks, next, total, err := s.listPage(r.Context(), userID, q, query.Get("cursor"))
	if err != nil {
		return err
	}
	body := appendTasks(append(make([]byte, 0, 64+512*len(tasks)), `{"items":`...), tasks, "")
	body = append(body, `,"next_cursor":`...)
	if next == nil {
		body = append(body, "null"...)
	} else {
		body = appendJSONString(body, *next)
	}
	body = append(body, `,"total":`...)
	body = strconv.AppendInt(body, total, 10)
	return writeJSONBody(w, http.StatusOK, append(body, "}\n"...))
}

// listPage is one page of the user's tasks for q after the cursor (if any), the cursor
// of the next page (nil on the last) and the total: what GET /api/v1/tasks and the
// list_tasks tool answer. invalid_query for a cursor of another user or query.
func (s *Server) listPage(ctx context.Context, userID int64, q listQuery, cursor string) ([]Task, *string, int64, error) {
	if cursor != "" {
		pos, err := s.auth.decodeCursor(userID, q, cursor)
		if err != nil {
			return nil, nil, 0, invalidQuery([]fieldError{{Field: "cursor", Message: "is not a cursor of this query"}})
		}
		q.After = pos
	}
	limit := q.Limit
	q.Limit++ // one more than asked tells whether a next page exists
	tasks, total, err := s.st.ListTasks(ctx, userID, q)
	if err != nil {
		return nil, nil, 0, err
	}
	var next *string
	if len(tasks) > limit {
		tasks = tasks[:limit]
		next = ptr(s.auth.encodeCursor(userID, q, tasks[limit-1]))
	}
	return tasks, next, total, nil
}

// appendTasks appends tasks as a JSON array.
func appendTasks(b []byte, tasks []Task, pathUserID string) []byte {
	b = append(b, '[')
	for i, t := range tasks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTask(b, t, pathUserID)
	}
	return append(b, ']')
}

// etagMatches reports whether an If-None-Match list names etag (or is *).
func etagMatches(header, etag string) bool {
	for _, e := range strings.Split(header, ",") {
		e = strings.TrimPrefix(strings.TrimSpace(e), "W/") // weak comparison, as for GET
		if e == "*" || e == etag {
			return true
		}
	}
	return false
}

// ifMatchVersions reads If-Match: nil when absent or * (any existing task), else the
// versions its strong ETags name (possibly none, which no task matches).
func ifMatchVersions(r *http.Request) []int64 {
	h, ok := r.Header["If-Match"]
	if !ok {
		return nil
	}
	versions := []int64{}
	for _, e := range strings.Split(strings.Join(h, ","), ",") {
		e = strings.TrimSpace(e)
		if e == "*" {
			return nil
		}
		if len(e) >= 3 && e[0] == '"' && e[len(e)-1] == '"' {
			if v, err := strconv.ParseInt(e[1:len(e)-1], 10, 64); err == nil {
				versions = append(versions, v)
			}
		}
	}
	return versions
}

// handleTaskGet serves GET one task: 200 with its ETag, 304 when If-None-Match has it.
func (s *Server) handleTaskGet(w http.ResponseWriter, r *http.Request) error {
	id, err := taskID(r)
	if err != nil {
		return err
	}
	t, err := s.st.FindTask(r.Context(), principalFrom(r.Context()).UserID, id)
	if err != nil {
		return err
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, t.ETag()) {
		w.Header().Set("ETag", t.ETag())
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	return writeTask(w, r, http.StatusOK, t)
}

// handleTaskReplace serves PUT /api/v1/tasks/{id}: a full replace, omitted optional
// fields back to their defaults.
func (s *Server) handleTaskReplace(w http.ResponseWriter, r *http.Request) error {
	return s.updateTask(w, r, modeReplace)
}

// handleTaskUpdate serves PATCH /api/v1/tasks/{id} and PUT /api/{user_id}/tasks/{id}:
// absent fields unchanged, null clears a nullable field.
func (s *Server) handleTaskUpdate(w http.ResponseWriter, r *http.Request) error {
	return s.updateTask(w, r, modePatch)
}

func (s *Server) updateTask(w http.ResponseWriter, r *http.Request, mode writeMode) error {
	id, err := taskID(r)
	if err != nil {
		return err
	}
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	c := readTaskInput(&b).change(mode, &b.errs)
	if len(b.errs) > 0 {
		return validationFailed(b.errs)
	}
	t, err := s.st.UpdateTask(r.Context(), principalFrom(r.Context()).UserID, id, c, ifMatchVersions(r))
	if err != nil {
		return err
	}
	return writeTask(w, r, http.StatusOK, t)
}

// handleTaskComplete serves PATCH …/tasks/{id}/complete: with no body it toggles
// completed; {"completed": bool} sets it.
func (s *Server) handleTaskComplete(w http.ResponseWriter, r *http.Request) error {
	id, err := taskID(r)
	if err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	c := taskChange{Toggle: true}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := requireJSON(r); err != nil {
			return err
		}
		b, err := parseObject(body)
		if err != nil {
			return err
		}
		if done := field[bool](&b, "completed", "must be true or false"); done.Value != nil {
			c = taskChange{SetCompleted: true, Completed: *done.Value}
		} else if done.Set && !b.errs.has("completed") {
			b.errs.add("completed", "must be true or false")
		}
		if len(b.errs) > 0 {
			return validationFailed(b.errs)
		}
	}
	t, err := s.st.UpdateTask(r.Context(), principalFrom(r.Context()).UserID, id, c, ifMatchVersions(r))
	if err != nil {
		return err
	}
	return writeTask(w, r, http.StatusOK, t)
}

// handleTaskDelete serves DELETE one task: 204.
func (s *Server) handleTaskDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := taskID(r)
	if err != nil {
		return err
	}
	if err := s.st.DeleteTask(r.Context(), principalFrom(r.Context()).UserID, id, ifMatchVersions(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// filtersOnly drops the list parameters that do not apply to a bulk write (paging and
// order), so that they are ignored like any unknown parameter rather than checked.
func filtersOnly(v url.Values) url.Values {
	f := maps.Clone(v)
	for _, k := range []string{"limit", "cursor", "sort", "offset", "skip"} {
		delete(f, k)
	}
	return f
}

// handleTaskBulkDelete serves DELETE /api/v1/tasks?completed=true: clears the completed
// tasks matching the filters. Without completed=true (or status=completed) it refuses,
// so that open tasks are never bulk-deleted.
func (s *Server) handleTaskBulkDelete(w http.ResponseWriter, r *http.Request) error {
	q, errs := parseListQuery(filtersOnly(r.URL.Query()), false)
	if len(errs) == 0 && (q.Completed == nil || !*q.Completed) {
		errs.add("completed", "must be true: only completed tasks can be deleted in bulk")
	}
	if len(errs) > 0 {
		return invalidQuery(errs)
	}
	n, err := s.st.DeleteCompletedTasks(r.Context(), principalFrom(r.Context()).UserID, q.taskFilter)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]int64{"deleted": n})
}

// handleTaskBulkComplete serves PATCH /api/v1/tasks: {"completed": bool} on every task
// matching the filters; answers how many changed state.
func (s *Server) handleTaskBulkComplete(w http.ResponseWriter, r *http.Request) error {
	q, errs := parseListQuery(filtersOnly(r.URL.Query()), false)
	if len(errs) > 0 {
		return invalidQuery(errs)
	}
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	done := field[bool](&b, "completed", "must be true or false")
	if done.Value == nil {
		b.errs.add("completed", "is required: true or false")
	}
	if len(b.errs) > 0 {
		return validationFailed(b.errs)
	}
	n, err := s.st.SetTasksCompleted(r.Context(), principalFrom(r.Context()).UserID, q.taskFilter, *done.Value)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]int64{"updated": n})
}

// handleTaskStats serves GET /api/v1/tasks/stats.
func (s *Server) handleTaskStats(w http.ResponseWriter, r *http.Request) error {
	stats, err := s.st.TaskStats(r.Context(), principalFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, stats)
}
