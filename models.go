package main

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// User is an account: local (email + password) or first seen in a Better Auth token.
type User struct {
	ID        int64
	Email     *string
	Name      *string
	CreatedAt time.Time
	// Issuer and Subject are set for Better Auth users only.
	Issuer  *string
	Subject *string
	// Timezone is the IANA name recurring tasks are computed in (contract §9).
	Timezone string
	// EmailVerified: a local user proved the address (contract §12).
	EmailVerified bool
	// PasswordEpoch counts a local user's password changes: the refresh tokens of a login
	// work only while it is the one the login's password was checked under. Read where a
	// login starts (FindLocalUserByEmail), zero elsewhere.
	PasswordEpoch int32
}

// userJSON is the wire shape of a user.
type userJSON struct {
	ID        int64     `json:"id"`
	Email     *string   `json:"email"`
	Name      *string   `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	Timezone  string    `json:"timezone"`
	// EmailVerified is false for Better Auth users: their provider verifies addresses.
	EmailVerified bool `json:"email_verified"`
}

func (u User) wire() userJSON {
	return userJSON{ID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt.UTC(), Timezone: u.Timezone, EmailVerified: u.EmailVerified}
}

// loadTimezone reads an IANA time-zone name: nil when it names no zone. "Local" and ""
// (which Go reads as the machine's zone and as UTC) are not names a user sets.
func loadTimezone(name string) *time.Location {
	if name == "" || name == "Local" || len(name) > 64 {
		return nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil
	}
	return loc
}

// Task is one todo item. Priority is stored as 0 low, 1 medium, 2 high.
type Task struct {
	ID          int64
	UserID      int64
	Title       string
	Description *string
	Completed   bool
	Priority    int16
	Tags        []string
	DueDate     *time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CompletedAt *time.Time
	Version     int64
	// Recurrence is the task's RRULE, upper-cased (contract §9); RecurrenceStart the
	// series' first due date; NextTaskID the successor its completion created.
	Recurrence      *string
	RecurrenceStart *time.Time
	NextTaskID      *int64
	// RemindAt is when the task's reminder comes (contract §10).
	RemindAt *time.Time
}

var priorityNames = [...]string{"low", "medium", "high"}

func parsePriority(s string) (int16, bool) {
	for i, n := range priorityNames {
		if n == s {
			return int16(i), true
		}
	}
	return 0, false
}

// ETag is the task's strong entity tag; it changes exactly when the task does.
func (t Task) ETag() string { return `"` + strconv.FormatInt(t.Version, 10) + `"` }

// appendTask appends the wire form of t: the bytes encoding/json would write for the
// contract's task object, written without reflection because tasks are most of what the
// service sends (json.Marshal was a quarter of a list request's CPU). user_id is a number
// on /api/v1 and the path's {user_id}, a string, on a section 6 route (pathUserID set),
// so that a client reads back the id it addressed. Tags are [] rather than null; times
// are UTC, RFC 3339 with nanoseconds as time.Time marshals. A test holds the bytes equal
// to json.Marshal's, fuzzed strings included.
func appendTask(b []byte, t Task, pathUserID string) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, t.ID, 10)
	b = append(b, `,"user_id":`...)
	if pathUserID != "" {
		b = appendJSONString(b, pathUserID)
	} else {
		b = strconv.AppendInt(b, t.UserID, 10)
	}
	b = append(b, `,"title":`...)
	b = appendJSONString(b, t.Title)
	b = append(b, `,"description":`...)
	if t.Description == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *t.Description)
	}
	b = append(b, `,"completed":`...)
	b = strconv.AppendBool(b, t.Completed)
	b = append(b, `,"priority":`...)
	b = appendJSONString(b, priorityNames[t.Priority])
	b = append(b, `,"tags":[`...)
	for i, tag := range t.Tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, tag)
	}
	b = append(b, `],"due_date":`...)
	b = appendJSONTime(b, t.DueDate)
	b = append(b, `,"remind_at":`...)
	b = appendJSONTime(b, t.RemindAt)
	b = append(b, `,"created_at":`...)
	b = appendJSONTime(b, &t.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = appendJSONTime(b, &t.UpdatedAt)
	b = append(b, `,"completed_at":`...)
	b = appendJSONTime(b, t.CompletedAt)
	b = append(b, `,"recurrence":`...)
	if t.Recurrence == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *t.Recurrence)
	}
	b = append(b, `,"next_task_id":`...)
	if t.NextTaskID == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, *t.NextTaskID, 10)
	}
	return append(b, '}')
}

// appendJSONTime appends t in UTC as time.Time's MarshalJSON does, or null.
func appendJSONTime(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONString appends s as a JSON string, escaped as encoding/json escapes it by
// default: quote, backslash and control characters; <, > and & (so that a task's text
// pasted into HTML stays inert); U+2028 and U+2029 (line breaks to JavaScript); and
// invalid UTF-8 as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// optional is a body field that can be absent (Set false), null (Value nil) or a value.
type optional[T any] struct {
	Set   bool
	Value *T
}

// bodyFields reads a JSON object's fields one at a time, collecting one error per field.
type bodyFields struct {
	raw  map[string]json.RawMessage
	errs fieldErrors
}

// fieldErrors keeps the first error of each field, in the order they were found.
type fieldErrors []fieldError

func (fe *fieldErrors) add(field, msg string) {
	if !fe.has(field) {
		*fe = append(*fe, fieldError{Field: field, Message: msg})
	}
}

func (fe fieldErrors) has(field string) bool {
	for _, e := range fe {
		if e.Field == field {
			return true
		}
	}
	return false
}

// inOrder sorts the errors by the order the fields are listed in, so that a type error
// found while reading does not jump ahead of a rule broken by an earlier field.
func (fe fieldErrors) inOrder(names ...string) fieldErrors {
	rank := func(f string) int {
		for i, n := range names {
			if n == f {
				return i
			}
		}
		return len(names)
	}
	slices.SortStableFunc(fe, func(a, b fieldError) int { return rank(a.Field) - rank(b.Field) })
	return fe
}

// field decodes the named field as a T; a value of the wrong JSON type is a field error.
func field[T any](b *bodyFields, name, typeMsg string) optional[T] {
	raw, ok := b.raw[name]
	if !ok {
		return optional[T]{}
	}
	if string(raw) == "null" {
		return optional[T]{Set: true}
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		b.errs.add(name, typeMsg)
		return optional[T]{Set: true}
	}
	return optional[T]{Set: true, Value: &v}
}

// cleanText trims Unicode white space; ok is false when s holds a NUL, which PostgreSQL
// text cannot store.
func cleanText(s string) (string, bool) {
	return strings.TrimFunc(s, unicode.IsSpace), !strings.ContainsRune(s, 0)
}

// checkText applies the contract's length rule, in Unicode characters, to a trimmed text.
func checkText(errs *fieldErrors, name, s string, minLen, maxLen int) {
	if strings.ContainsRune(s, 0) {
		errs.add(name, "must not contain NUL characters")
		return
	}
	n := utf8.RuneCountInString(s)
	switch {
	case n < minLen && minLen == 1:
		errs.add(name, "must not be empty")
	case n < minLen:
		errs.add(name, "must be at least "+strconv.Itoa(minLen)+" characters")
	case n > maxLen:
		errs.add(name, "must be at most "+strconv.Itoa(maxLen)+" characters")
	}
}

// taskInput is a task body as sent, before defaults: what create, PUT and PATCH share.
type taskInput struct {
	Title       optional[string]
	Description optional[string]
	Completed   optional[bool]
	Priority    optional[string]
	Tags        optional[[]string]
	DueDate     optional[string]
	Recurrence  optional[string]
	RemindAt    optional[string]
}

// taskChange is a validated write: each Set field replaces the stored value.
type taskChange struct {
	SetTitle       bool
	Title          string
	SetDescription bool
	Description    *string
	SetCompleted   bool
	Completed      bool
	Toggle         bool
	SetPriority    bool
	Priority       int16
	SetTags        bool
	Tags           []string
	SetDueDate     bool
	DueDate        *time.Time
	SetRecurrence  bool
	Recurrence     *string
	SetRemindAt    bool
	RemindAt       *time.Time
}

// writeMode says how absent fields of a task body are read.
type writeMode int

const (
	modeCreate  writeMode = iota // absent optional fields take their defaults; title required
	modeReplace                  // PUT on /api/v1: the same as create
	modePatch                    // absent fields stay as they are
)

func readTaskInput(b *bodyFields) taskInput {
	return taskInput{
		Title:       field[string](b, "title", "must be a string"),
		Description: field[string](b, "description", "must be a string or null"),
		Completed:   field[bool](b, "completed", "must be true or false"),
		Priority:    field[string](b, "priority", "must be one of low, medium, high"),
		Tags:        field[[]string](b, "tags", "must be an array of strings"),
		DueDate:     field[string](b, "due_date", "must be an RFC 3339 time, a YYYY-MM-DD date, or null"),
		Recurrence:  field[string](b, "recurrence", "must be an RRULE string such as FREQ=WEEKLY;BYDAY=MO, or null"),
		RemindAt:    field[string](b, "remind_at", "must be an RFC 3339 time or null"),
	}
}

// change validates in for the given mode and lists every failing field, in field order.
func (in taskInput) change(mode writeMode, errs *fieldErrors) taskChange {
	full := mode != modePatch
	var c taskChange

	switch {
	case errs.has("title"):
	case in.Title.Set && in.Title.Value == nil:
		errs.add("title", "must not be null")
	case in.Title.Set:
		c.SetTitle = true
		c.Title, _ = cleanText(*in.Title.Value)
		checkText(errs, "title", c.Title, 1, 255)
	case full:
		errs.add("title", "is required")
	}

	c.SetDescription = full || in.Description.Set
	if in.Description.Value != nil {
		// Descriptions keep their white space: line breaks and indents are content.
		checkText(errs, "description", *in.Description.Value, 0, 10000)
		c.Description = in.Description.Value
	}

	switch {
	case errs.has("completed"):
	case in.Completed.Set && in.Completed.Value == nil:
		errs.add("completed", "must be true or false")
	case in.Completed.Set:
		c.SetCompleted, c.Completed = true, *in.Completed.Value
	case full:
		c.SetCompleted = true
	}

	c.SetPriority, c.Priority = full, 1
	switch {
	case errs.has("priority"):
	case in.Priority.Set && in.Priority.Value == nil:
		errs.add("priority", "must be one of low, medium, high")
	case in.Priority.Set:
		p, ok := parsePriority(strings.ToLower(strings.TrimSpace(*in.Priority.Value)))
		if !ok {
			errs.add("priority", "must be one of low, medium, high")
		}
		c.SetPriority, c.Priority = true, p
	}

	c.SetTags, c.Tags = full, []string{}
	switch {
	case errs.has("tags"):
	case in.Tags.Set && in.Tags.Value == nil:
		c.SetTags = true // null tags read as none
	case in.Tags.Set:
		c.SetTags = true
		c.Tags = normalizeTags(*in.Tags.Value, errs)
	}

	c.SetDueDate = full || in.DueDate.Set
	if in.DueDate.Value != nil && !errs.has("due_date") {
		d, ok := parseDue(*in.DueDate.Value)
		if !ok {
			errs.add("due_date", "must be an RFC 3339 time, a YYYY-MM-DD date, or null")
		}
		c.DueDate = &d
	}

	c.SetRecurrence = full || in.Recurrence.Set
	if in.Recurrence.Value != nil && !errs.has("recurrence") {
		rule := strings.ToUpper(strings.TrimSpace(*in.Recurrence.Value))
		if _, msg := parseRRule(rule); msg != "" {
			errs.add("recurrence", msg)
		}
		c.Recurrence = &rule
	}
	c.SetRemindAt = full || in.RemindAt.Set
	if in.RemindAt.Value != nil && !errs.has("remind_at") {
		r, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(*in.RemindAt.Value))
		if r = r.UTC(); err != nil || r.Year() < 1 || r.Year() > 9999 {
			errs.add("remind_at", "must be an RFC 3339 time or null")
		}
		c.RemindAt = &r
	}

	// A recurring task needs a due date; what a PATCH leaves as it was, the store checks.
	if c.Recurrence != nil && c.SetDueDate && c.DueDate == nil && !errs.has("due_date") && !errs.has("recurrence") {
		errs.add("recurrence", "needs a due_date: occurrences follow from it")
	}
	errs.inOrder("title", "description", "completed", "priority", "tags", "due_date", "recurrence", "remind_at")
	return c
}

// maxTags is the contract's limit of distinct tags on a task.
const maxTags = 20

// normalizeTags trims and lower-cases tags and drops repeats, keeping first occurrences in
// order; the limit of 20 counts after that. It stops at the 21st distinct tag: the work
// per tag is then a search of at most 20, so a body of a hundred thousand tags costs what
// reading it costs, not the square of it.
func normalizeTags(tags []string, errs *fieldErrors) []string {
	out := make([]string, 0, min(len(tags), maxTags+1))
	for _, t := range tags {
		t = strings.ToLower(strings.TrimFunc(t, unicode.IsSpace))
		n := utf8.RuneCountInString(t)
		switch {
		case strings.ContainsRune(t, 0):
			errs.add("tags", "tags must not contain NUL characters")
			continue
		case n == 0:
			errs.add("tags", "tags must not be empty")
			continue
		case n > 50:
			errs.add("tags", "each tag must be at most 50 characters")
			continue
		}
		if !slices.Contains(out, t) {
			if len(out) == maxTags {
				errs.add("tags", "must hold at most 20 distinct tags")
				break
			}
			out = append(out, t)
		}
	}
	return out
}

// parseDue reads an RFC 3339 time with offset, or YYYY-MM-DD as 00:00 UTC that day.
func parseDue(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if len(s) == len("2006-01-02") {
		t, err := time.Parse(time.DateOnly, s)
		return t, err == nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	// Checked in UTC, the form it is stored and answered in: an offset can carry
	// 9999-12-31 into year 10000, which no JSON answer could then encode.
	t = t.UTC()
	if err != nil || t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, false
	}
	return t, true
}
