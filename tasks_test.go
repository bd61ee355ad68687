package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// wireTask is a task as a client reads it.
type wireTask struct {
	ID          int64      `json:"id"`
	UserID      any        `json:"user_id"`
	Title       string     `json:"title"`
	Description *string    `json:"description"`
	Completed   bool       `json:"completed"`
	Priority    string     `json:"priority"`
	Tags        []string   `json:"tags"`
	DueDate     *time.Time `json:"due_date"`
	RemindAt    *time.Time `json:"remind_at"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	CompletedAt *time.Time `json:"completed_at"`
	Recurrence  *string    `json:"recurrence"`
	NextTaskID  *int64     `json:"next_task_id"`
}

// taskPage is the client's view of an /api/v1 list answer.
type taskPage struct {
	Items      []wireTask `json:"items"`
	NextCursor *string    `json:"next_cursor"`
	Total      int64      `json:"total"`
}

func (e *testEnv) createTask(token, body string) wireTask {
	e.t.Helper()
	var t wireTask
	e.do("POST", "/api/v1/tasks", body, token).want(http.StatusCreated, "").json(&t)
	return t
}

func (e *testEnv) taskPath(id int64) string { return "/api/v1/tasks/" + strconv.FormatInt(id, 10) }

func fieldsOf(e errorBody) []string {
	var f []string
	for _, fe := range e.Errors {
		f = append(f, fe.Field)
	}
	return f
}

func TestTaskCreate(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("create@example.com")

	t.Run("minimal gets the defaults", func(t *testing.T) {
		t.Parallel()
		r := env.do("POST", "/api/v1/tasks", `{"title":"  Buy milk  "}`, token).want(201, "")
		var task wireTask
		r.json(&task)
		if task.ID <= 0 || task.UserID != float64(user.ID) || task.Title != "Buy milk" || task.Description != nil ||
			task.Completed || task.Priority != "medium" || task.Tags == nil || len(task.Tags) != 0 ||
			task.DueDate != nil || task.CompletedAt != nil || task.CreatedAt.IsZero() || !task.UpdatedAt.Equal(task.CreatedAt) {
			t.Errorf("task %+v", task)
		}
		if loc := r.Header().Get("Location"); loc != env.taskPath(task.ID) {
			t.Errorf("Location %q", loc)
		}
		if r.Header().Get("ETag") == "" {
			t.Error("no ETag")
		}
		if !strings.Contains(r.Body.String(), `"created_at":"`) || !strings.Contains(r.Body.String(), `Z"`) {
			t.Errorf("timestamps not RFC 3339 UTC: %s", r.Body.String())
		}
	})
	t.Run("every field", func(t *testing.T) {
		t.Parallel()
		task := env.createTask(token, `{"title":"Full","description":"  keep my spaces ","completed":true,"priority":"high",
			"tags":[" Home ","work","HOME","errands"],"due_date":"2026-12-01T10:30:00+02:00",
			"id":999,"user_id":12345,"created_at":"2000-01-01T00:00:00Z","unknown":{"nested":[1,2]}}`)
		if task.Description == nil || *task.Description != "  keep my spaces " || !task.Completed || task.CompletedAt == nil ||
			task.Priority != "high" || strings.Join(task.Tags, ",") != "home,work,errands" || task.ID == 999 ||
			task.UserID != float64(user.ID) || task.CreatedAt.Year() == 2000 {
			t.Errorf("task %+v", task)
		}
		if task.DueDate == nil || !task.DueDate.Equal(time.Date(2026, 12, 1, 8, 30, 0, 0, time.UTC)) {
			t.Errorf("due %v", task.DueDate)
		}
	})
	t.Run("date-only due date is midnight UTC", func(t *testing.T) {
		t.Parallel()
		r := env.do("POST", "/api/v1/tasks", `{"title":"d","due_date":"2026-11-30"}`, token).want(201, "")
		if !strings.Contains(r.Body.String(), `"due_date":"2026-11-30T00:00:00Z"`) {
			t.Errorf("body %s", r.Body.String())
		}
	})
	t.Run("lengths count characters", func(t *testing.T) {
		t.Parallel()
		env.createTask(token, `{"title":"`+strings.Repeat("é", 255)+`"}`)
		env.createTask(token, `{"title":"`+strings.Repeat("😀", 255)+`"}`)
		e := env.do("POST", "/api/v1/tasks", `{"title":"`+strings.Repeat("é", 256)+`"}`, token).want(422, "validation_error").envelope()
		if strings.Join(fieldsOf(e), ",") != "title" {
			t.Errorf("errors %+v", e.Errors)
		}
		env.createTask(token, `{"title":"d","description":"`+strings.Repeat("ж", 10000)+`"}`)
		env.do("POST", "/api/v1/tasks", `{"title":"d","description":"`+strings.Repeat("ж", 10001)+`"}`, token).want(422, "validation_error")
		env.createTask(token, `{"title":"t","tags":["`+strings.Repeat("ü", 50)+`"]}`)
		env.do("POST", "/api/v1/tasks", `{"title":"t","tags":["`+strings.Repeat("ü", 51)+`"]}`, token).want(422, "validation_error")
	})
	t.Run("tag limit counts after de-duplication", func(t *testing.T) {
		t.Parallel()
		tags := make([]string, 0, 25)
		for i := 0; i < 20; i++ {
			tags = append(tags, fmt.Sprintf("t%d", i))
		}
		tags = append(tags, "T1", " t2 ", "T3")
		b, _ := json.Marshal(map[string]any{"title": "tags", "tags": tags})
		task := env.createTask(token, string(b))
		if len(task.Tags) != 20 {
			t.Errorf("%d tags", len(task.Tags))
		}
		b, _ = json.Marshal(map[string]any{"title": "tags", "tags": append(tags, "t20")})
		env.do("POST", "/api/v1/tasks", string(b), token).want(422, "validation_error")
	})
	t.Run("every bad field listed at once", func(t *testing.T) {
		t.Parallel()
		e := env.do("POST", "/api/v1/tasks", `{"title":"   ","description":5,"completed":"yes","priority":"urgent","tags":["ok",""],"due_date":"tomorrow"}`, token).
			want(422, "validation_error").envelope()
		want := []string{"title", "description", "completed", "priority", "tags", "due_date"}
		if !slices.Equal(fieldsOf(e), want) {
			t.Errorf("fields %v, want %v", fieldsOf(e), want)
		}
	})
	for name, body := range map[string]string{
		"missing title":      `{}`,
		"null title":         `{"title":null}`,
		"numeric title":      `{"title":42}`,
		"tags not an array":  `{"title":"x","tags":"home"}`,
		"tag not a string":   `{"title":"x","tags":[1]}`,
		"bad date":           `{"title":"x","due_date":"2026-13-01"}`,
		"date without zone":  `{"title":"x","due_date":"2026-12-01T10:00:00"}`,
		"NUL in title":       `{"title":"a\u0000b"}`,
		"NUL in description": `{"title":"a","description":"\u0000"}`,
		"NUL in tag":         `{"title":"a","tags":["\u0000"]}`,
		"null completed":     `{"title":"a","completed":null}`,
		"priority as number": `{"title":"a","priority":2}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env.do("POST", "/api/v1/tasks", body, token).want(422, "validation_error")
		})
	}
}

func TestTaskGetAndConditionalRequests(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("get@example.com")
	task := env.createTask(token, `{"title":"read me"}`)
	r := env.do("GET", env.taskPath(task.ID), "", token).want(200, "")
	etag := r.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	r = env.do("GET", env.taskPath(task.ID), "", token, header{"If-None-Match": etag})
	if r.Code != 304 || r.Body.Len() != 0 || r.Header().Get("ETag") != etag {
		t.Errorf("If-None-Match: %d %q", r.Code, r.Body.String())
	}
	env.do("GET", env.taskPath(task.ID), "", token, header{"If-None-Match": `"999"`}).want(200, "")

	// Unchanged task keeps its ETag, even through a write that changes nothing.
	r = env.do("PATCH", env.taskPath(task.ID), `{"title":"read me"}`, token).want(200, "")
	if r.Header().Get("ETag") != etag {
		t.Errorf("no-op PATCH moved the ETag %s -> %s", etag, r.Header().Get("ETag"))
	}
	r = env.do("PATCH", env.taskPath(task.ID), `{"title":"changed"}`, token, header{"If-Match": etag}).want(200, "")
	newTag := r.Header().Get("ETag")
	if newTag == etag {
		t.Error("ETag did not change with the task")
	}
	for _, m := range []string{"PUT", "PATCH"} {
		env.do(m, env.taskPath(task.ID), `{"title":"stale write"}`, token, header{"If-Match": etag}).want(412, "precondition_failed")
	}
	env.do("PATCH", env.taskPath(task.ID)+"/complete", "", token, header{"If-Match": etag}).want(412, "precondition_failed")
	env.do("DELETE", env.taskPath(task.ID), "", token, header{"If-Match": etag}).want(412, "precondition_failed")
	env.do("DELETE", env.taskPath(task.ID), "", token, header{"If-Match": "garbage"}).want(412, "precondition_failed")
	var still wireTask
	env.do("GET", env.taskPath(task.ID), "", token).want(200, "").json(&still)
	if still.Title != "changed" || still.Completed {
		t.Errorf("a stale write changed the task: %+v", still)
	}
	env.do("PATCH", env.taskPath(task.ID), `{"priority":"low"}`, token, header{"If-Match": `"0", ` + newTag}).want(200, "")
	env.do("PATCH", env.taskPath(task.ID), `{"priority":"high"}`, token, header{"If-Match": "*"}).want(200, "")
	env.do("PATCH", env.taskPath(task.ID+1000), `{"priority":"high"}`, token, header{"If-Match": "*"}).want(404, "not_found")

	for _, id := range []string{"abc", "0", "-1", "99999999999999999999", "1.5"} {
		env.do("GET", "/api/v1/tasks/"+id, "", token).want(404, "not_found")
	}
}

func TestTaskConcurrentWritersOneWins(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("race@example.com")
	task := env.createTask(token, `{"title":"contended"}`)
	etag := env.do("GET", env.taskPath(task.ID), "", token).Header().Get("ETag")
	var wg sync.WaitGroup
	codes := make([]int, 20)
	start := make(chan struct{})
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i] = env.do("PATCH", env.taskPath(task.ID), fmt.Sprintf(`{"title":"writer %d"}`, i), token,
				header{"If-Match": etag}).Code
		}()
	}
	close(start)
	wg.Wait()
	ok, stale := 0, 0
	for _, c := range codes {
		switch c {
		case 200:
			ok++
		case 412:
			stale++
		}
	}
	if ok != 1 || stale != 19 {
		t.Fatalf("codes %v: %d×200 and %d×412, want 1 and 19", codes, ok, stale)
	}
}

func TestTaskReplaceAndPatch(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("update@example.com")
	full := `{"title":"full","description":"d","completed":true,"priority":"high","tags":["a"],"due_date":"2026-12-24"}`

	t.Run("PUT resets omitted fields", func(t *testing.T) {
		t.Parallel()
		task := env.createTask(token, full)
		var got wireTask
		env.do("PUT", env.taskPath(task.ID), `{"title":"replaced"}`, token).want(200, "").json(&got)
		if got.Title != "replaced" || got.Description != nil || got.Completed || got.CompletedAt != nil ||
			got.Priority != "medium" || len(got.Tags) != 0 || got.DueDate != nil {
			t.Errorf("after PUT %+v", got)
		}
		if !got.CreatedAt.Equal(task.CreatedAt) || got.UpdatedAt.Before(task.UpdatedAt) {
			t.Errorf("timestamps %v %v", got.CreatedAt, got.UpdatedAt)
		}
		e := env.do("PUT", env.taskPath(task.ID), `{"description":"no title"}`, token).want(422, "validation_error").envelope()
		if strings.Join(fieldsOf(e), ",") != "title" {
			t.Errorf("errors %+v", e.Errors)
		}
	})
	t.Run("PATCH leaves absent fields and null clears", func(t *testing.T) {
		t.Parallel()
		task := env.createTask(token, full)
		var got wireTask
		env.do("PATCH", env.taskPath(task.ID), `{"priority":"low"}`, token).want(200, "").json(&got)
		if got.Title != "full" || got.Description == nil || !got.Completed || got.Priority != "low" ||
			len(got.Tags) != 1 || got.DueDate == nil || got.CompletedAt == nil || !got.CompletedAt.Equal(*task.CompletedAt) {
			t.Errorf("after PATCH priority %+v", got)
		}
		env.do("PATCH", env.taskPath(task.ID), `{"description":null,"due_date":null,"tags":null}`, token).want(200, "").json(&got)
		if got.Description != nil || got.DueDate != nil || len(got.Tags) != 0 || got.Title != "full" {
			t.Errorf("after PATCH nulls %+v", got)
		}
		for _, body := range []string{`{"title":null}`, `{"title":""}`, `{"priority":null}`, `{"completed":null}`, `{"due_date":"soon"}`} {
			env.do("PATCH", env.taskPath(task.ID), body, token).want(422, "validation_error")
		}
		env.do("PATCH", env.taskPath(task.ID), `{"completed":false}`, token).want(200, "").json(&got)
		if got.Completed || got.CompletedAt != nil {
			t.Errorf("reopened %+v", got)
		}
		env.do("PATCH", env.taskPath(task.ID), `{}`, token).want(200, "")
	})
	t.Run("another user's task is not found", func(t *testing.T) {
		t.Parallel()
		task := env.createTask(token, full)
		other, _ := env.registerUser("intruder-update@example.com")
		env.do("PATCH", env.taskPath(task.ID), `{"title":"mine now"}`, other).want(404, "not_found")
		env.do("PUT", env.taskPath(task.ID), `{"title":"mine now"}`, other).want(404, "not_found")
	})
}

func TestTaskCompletion(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("complete@example.com")
	task := env.createTask(token, `{"title":"toggle me"}`)
	path := env.taskPath(task.ID) + "/complete"
	var got wireTask
	// No body, with any or no content type, toggles.
	env.do("PATCH", path, "", token).want(200, "").json(&got)
	if !got.Completed || got.CompletedAt == nil {
		t.Fatalf("toggle on: %+v", got)
	}
	first := *got.CompletedAt
	env.do("PATCH", path, "", token, header{"Content-Type": "text/plain"}).want(200, "").json(&got)
	if got.Completed || got.CompletedAt != nil {
		t.Fatalf("toggle off: %+v", got)
	}
	env.do("PATCH", path, `{"completed":true}`, token).want(200, "").json(&got)
	if !got.Completed || got.CompletedAt == nil || !got.CompletedAt.After(first) {
		t.Fatalf("set true: %+v", got)
	}
	at := *got.CompletedAt
	env.do("PATCH", path, `{"completed":true}`, token).want(200, "").json(&got)
	if !got.Completed || !got.CompletedAt.Equal(at) {
		t.Errorf("completed_at not kept when already completed: %v vs %v", got.CompletedAt, at)
	}
	env.do("PATCH", path, `{}`, token).want(200, "").json(&got)
	if got.Completed {
		t.Error("empty object did not toggle")
	}
	env.do("PATCH", path, `{"completed":"yes"}`, token).want(422, "validation_error")
	env.do("PATCH", path, `{"completed":null}`, token).want(422, "validation_error")
	env.do("PATCH", path, `{"completed":true}`, token, header{"Content-Type": "text/plain"}).want(415, "unsupported_media_type")
	env.do("PATCH", path, `{"completed":`, token).want(400, "invalid_json")
	env.do("PATCH", "/api/v1/tasks/424242/complete", "", token).want(404, "not_found")
}

func TestTaskDelete(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("delete@example.com")
	task := env.createTask(token, `{"title":"bye"}`)
	r := env.do("DELETE", env.taskPath(task.ID), "", token, header{"Content-Type": "text/plain"})
	if r.Code != 204 || r.Body.Len() != 0 {
		t.Fatalf("delete = %d %q", r.Code, r.Body.String())
	}
	env.do("GET", env.taskPath(task.ID), "", token).want(404, "not_found")
	env.do("DELETE", env.taskPath(task.ID), "", token).want(404, "not_found")
}

// listAll reads a list answer.
func (e *testEnv) list(token, query string) taskPage {
	e.t.Helper()
	var p taskPage
	e.do("GET", "/api/v1/tasks?"+query, "", token).want(200, "").json(&p)
	return p
}

func titles(p taskPage) []string {
	var out []string
	for _, t := range p.Items {
		out = append(out, t.Title)
	}
	return out
}

func TestTaskListFilters(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("filters@example.com")
	for _, body := range []string{
		`{"title":"Buy milk","priority":"high","tags":["home"],"due_date":"2026-01-10"}`,
		`{"title":"Write report","description":"quarterly 100% done_soon","tags":["work"],"due_date":"2026-02-10","completed":true}`,
		`{"title":"Call mom","priority":"low","tags":["home","family"]}`,
		`{"title":"50% off sale","description":"back\\slash"}`,
		`{"title":"snake_case naming","priority":"high","due_date":"2026-03-10"}`,
	} {
		env.createTask(token, body)
	}
	tests := []struct {
		query string
		want  []string // newest first
	}{
		{"", []string{"snake_case naming", "50% off sale", "Call mom", "Write report", "Buy milk"}},
		{"completed=true", []string{"Write report"}},
		{"completed=false&limit=2", []string{"snake_case naming", "50% off sale"}},
		{"status=completed", []string{"Write report"}},
		{"status=pending&priority=high", []string{"snake_case naming", "Buy milk"}},
		{"status=all&tag=HOME", []string{"Call mom", "Buy milk"}},
		{"tag=fam", nil},
		{"q=MILK", []string{"Buy milk"}},
		{"q=quarterly", []string{"Write report"}},
		{"q=" + url.QueryEscape("%"), []string{"50% off sale", "Write report"}},
		{"q=" + url.QueryEscape("_"), []string{"snake_case naming", "Write report"}},
		{"q=" + url.QueryEscape(`\`), []string{"50% off sale"}},
		{"q=" + url.QueryEscape("100% done"), []string{"Write report"}},
		{"due_before=2026-02-10", []string{"Buy milk"}},
		{"due_after=2026-02-10", []string{"snake_case naming", "Write report"}},
		{"due_after=2026-01-10T00:00:00Z&due_before=2026-03-10T00:00:00Z", []string{"Write report", "Buy milk"}},
		{"unknown=ignored", []string{"snake_case naming", "50% off sale", "Call mom", "Write report", "Buy milk"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			t.Parallel()
			p := env.list(token, tt.query)
			if !slices.Equal(titles(p), tt.want) {
				t.Errorf("got %v, want %v", titles(p), tt.want)
			}
			if !strings.Contains(tt.query, "limit") && p.Total != int64(len(tt.want)) {
				t.Errorf("total %d, want %d", p.Total, len(tt.want))
			}
		})
	}
	t.Run("total counts beyond the page", func(t *testing.T) {
		t.Parallel()
		p := env.list(token, "completed=false&limit=2")
		if p.Total != 4 || p.NextCursor == nil {
			t.Errorf("total %d cursor %v", p.Total, p.NextCursor)
		}
	})
	t.Run("invalid values name each parameter", func(t *testing.T) {
		t.Parallel()
		e := env.do("GET", "/api/v1/tasks?limit=0&status=maybe&sort=id&completed=perhaps&priority=urgent&due_before=x&due_after=y&tag=",
			"", token).want(400, "invalid_query").envelope()
		want := []string{"completed", "status", "priority", "due_before", "due_after", "sort", "limit"}
		if !slices.Equal(fieldsOf(e), want) {
			t.Errorf("fields %v, want %v", fieldsOf(e), want)
		}
		for _, q := range []string{"limit=101", "limit=abc", "limit=-1", "sort=-id", "status=open", "q=" + strings.Repeat("x", 501), "q=%00",
			"completed=true&status=pending"} {
			env.do("GET", "/api/v1/tasks?"+q, "", token).want(400, "invalid_query")
		}
		env.do("GET", "/api/v1/tasks?limit=100", "", token).want(200, "")
		env.do("GET", "/api/v1/tasks?limit=1", "", token).want(200, "")
	})
}

func TestTaskListSorting(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("sorting@example.com")
	// Created in this order; B and D share a due date and a priority to show the id tie-break.
	for _, body := range []string{
		`{"title":"C","priority":"low","due_date":"2026-03-01"}`,
		`{"title":"A","priority":"high"}`,
		`{"title":"B","priority":"medium","due_date":"2026-01-01"}`,
		`{"title":"E","priority":"medium"}`,
		`{"title":"D","priority":"medium","due_date":"2026-01-01"}`,
	} {
		env.createTask(token, body)
	}
	tests := map[string]string{
		"":            "DEBAC",
		"-created_at": "DEBAC",
		"created_at":  "CABED",
		"title":       "ABCDE",
		"-title":      "EDCBA",
		"priority":    "CBEDA", // low < medium < high, ties by id ascending
		"-priority":   "ADEBC",
		"due_date":    "BDCAE", // no due date last
		"-due_date":   "CDBEA", // no due date last here too, ties by id descending
	}
	for sort, want := range tests {
		t.Run(sort, func(t *testing.T) {
			t.Parallel()
			if got := strings.Join(titles(env.list(token, "sort="+sort)), ""); got != want {
				t.Errorf("sort=%s: %s, want %s", sort, got, want)
			}
		})
	}
	t.Run("updated_at", func(t *testing.T) {
		t.Parallel()
		p := env.list(token, "sort=title")
		env.do("PATCH", env.taskPath(p.Items[2].ID), `{"description":"touched"}`, token).want(200, "") // C
		if got := strings.Join(titles(env.list(token, "sort=-updated_at")), ""); got[0] != 'C' {
			t.Errorf("-updated_at: %s, want C first", got)
		}
	})
}

// TestTaskCursorWalk pages through 57 tasks ten at a time under every sort key and both
// directions, inserting and deleting tasks between pages, and checks that no task that
// existed throughout is skipped or repeated.
func TestTaskCursorWalk(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("walk@example.com")
	prios := []string{"low", "medium", "high"}
	for i := 0; i < 57; i++ {
		due := ""
		if i%4 != 0 {
			due = fmt.Sprintf(`,"due_date":"2026-01-%02d"`, 1+i%9) // many ties, some without a date
		}
		env.createTask(token, fmt.Sprintf(`{"title":"task %02d","priority":"%s"%s}`, i%13, prios[i%3], due))
	}
	sorts := []string{"created_at", "updated_at", "due_date", "priority", "title"}
	for _, key := range sorts {
		for _, dir := range []string{"", "-"} {
			for _, churn := range []bool{false, true} {
				name := dir + key
				if churn {
					name += " with churn"
				}
				t.Run(name, func(t *testing.T) {
					// Not parallel: the churning walks add and remove tasks the others would see.
					base := env.list(token, "limit=100&sort="+dir+key)
					stable := map[int64]bool{}
					for _, it := range base.Items {
						stable[it.ID] = true
					}
					seen := map[int64]int{}
					var added []int64
					cursor := ""
					for page := 0; page < 20; page++ {
						q := "limit=10&sort=" + dir + key
						if cursor != "" {
							q += "&cursor=" + url.QueryEscape(cursor)
						}
						p := env.list(token, q)
						for _, it := range p.Items {
							seen[it.ID]++
						}
						if churn && page < 4 {
							nt := env.createTask(token, fmt.Sprintf(`{"title":"churn %d","due_date":"2026-01-05"}`, page))
							added = append(added, nt.ID)
							// Delete one task not yet seen: it must simply not appear.
							for id := range stable {
								if seen[id] == 0 {
									env.do("DELETE", env.taskPath(id), "", token).want(204, "")
									delete(stable, id)
									break
								}
							}
						}
						if p.NextCursor == nil {
							break
						}
						cursor = *p.NextCursor
					}
					for id := range stable {
						if seen[id] != 1 {
							t.Errorf("task %d seen %d times", id, seen[id])
						}
					}
					for id, n := range seen {
						if n > 1 {
							t.Errorf("task %d repeated", id)
						}
					}
					for _, id := range added { // keep the set at 57 for the next walk
						env.do("DELETE", env.taskPath(id), "", token).want(204, "")
					}
					if churn {
						for len(env.list(token, "limit=100").Items) < 57 {
							env.createTask(token, `{"title":"refill","priority":"medium"}`)
						}
					}
				})
			}
		}
	}
}

func TestTaskCursorIsBound(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("cursor@example.com")
	other, _ := env.registerUser("cursor-other@example.com")
	for i := 0; i < 5; i++ {
		env.createTask(token, fmt.Sprintf(`{"title":"t%d"}`, i))
		env.createTask(other, fmt.Sprintf(`{"title":"o%d"}`, i))
	}
	p := env.list(token, "limit=2&sort=title")
	if p.NextCursor == nil {
		t.Fatal("no cursor")
	}
	c := *p.NextCursor
	next := env.list(token, "limit=2&sort=title&cursor="+url.QueryEscape(c))
	if got := strings.Join(titles(next), ","); got != "t2,t3" {
		t.Fatalf("next page %s", got)
	}
	// Changing the limit between pages is allowed; changing the query is not.
	env.list(token, "limit=3&sort=title&cursor="+url.QueryEscape(c))
	tampered := []string{
		c[:len(c)-2] + "xx",
		strings.Replace(c, c[:3], "eyJ", 1) + "A",
		"eyJpIjoxfQ." + c[strings.Index(c, ".")+1:],
		"nodot",
		"",
	}
	for _, bad := range tampered {
		if bad == "" || bad == c {
			continue
		}
		e := env.do("GET", "/api/v1/tasks?limit=2&sort=title&cursor="+url.QueryEscape(bad), "", token).want(400, "invalid_query").envelope()
		if len(e.Errors) != 1 || e.Errors[0].Field != "cursor" {
			t.Errorf("errors %+v", e.Errors)
		}
	}
	env.do("GET", "/api/v1/tasks?limit=2&sort=title&cursor="+url.QueryEscape(c), "", other).want(400, "invalid_query")
	env.do("GET", "/api/v1/tasks?limit=2&sort=-title&cursor="+url.QueryEscape(c), "", token).want(400, "invalid_query")
	env.do("GET", "/api/v1/tasks?limit=2&sort=title&q=t&cursor="+url.QueryEscape(c), "", token).want(400, "invalid_query")
}

func TestTaskBulkRoutesAndStats(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("bulk@example.com")
	other, _ := env.registerUser("bulk-other@example.com")
	past := time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339)
	future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	for _, body := range []string{
		`{"title":"done home","completed":true,"tags":["home"]}`,
		`{"title":"done work","completed":true,"tags":["work"]}`,
		`{"title":"late","due_date":"` + past + `"}`,
		`{"title":"late but done","completed":true,"due_date":"` + past + `"}`,
		`{"title":"upcoming","due_date":"` + future + `","tags":["home"]}`,
	} {
		env.createTask(token, body)
	}
	otherTask := env.createTask(other, `{"title":"theirs","completed":true}`)

	var stats taskStats
	env.do("GET", "/api/v1/tasks/stats", "", token).want(200, "").json(&stats)
	if stats != (taskStats{Total: 5, Completed: 3, Pending: 2, Overdue: 1}) {
		t.Errorf("stats %+v", stats)
	}

	env.do("DELETE", "/api/v1/tasks", "", token).want(400, "invalid_query")
	env.do("DELETE", "/api/v1/tasks?completed=false", "", token).want(400, "invalid_query")
	env.do("DELETE", "/api/v1/tasks?status=pending", "", token).want(400, "invalid_query")
	var res map[string]int64
	env.do("DELETE", "/api/v1/tasks?completed=true&tag=home", "", token).want(200, "").json(&res)
	if res["deleted"] != 1 {
		t.Errorf("deleted %v, want 1", res)
	}
	// Paging and order do not apply to bulk writes: ignored, not checked.
	env.do("DELETE", "/api/v1/tasks?status=completed&limit=500&sort=id&cursor=x", "", token).want(200, "").json(&res)
	if res["deleted"] != 2 {
		t.Errorf("deleted %v, want 2", res)
	}
	env.do("GET", env.taskPath(otherTask.ID), "", other).want(200, "")

	env.do("PATCH", "/api/v1/tasks", `{}`, token).want(422, "validation_error")
	env.do("PATCH", "/api/v1/tasks", `{"completed":"yes"}`, token).want(422, "validation_error")
	env.do("PATCH", "/api/v1/tasks?status=maybe", `{"completed":true}`, token).want(400, "invalid_query")
	env.do("PATCH", "/api/v1/tasks?tag=home&limit=0&sort=nope", `{"completed":true}`, token).want(200, "").json(&res)
	if res["updated"] != 1 {
		t.Errorf("updated %v, want 1", res)
	}
	env.do("PATCH", "/api/v1/tasks", `{"completed":true}`, token).want(200, "").json(&res)
	if res["updated"] != 1 { // only "late" changed state; "upcoming" already was
		t.Errorf("updated %v, want 1", res)
	}
	env.do("GET", "/api/v1/tasks/stats", "", token).want(200, "").json(&stats)
	if stats != (taskStats{Total: 2, Completed: 2, Pending: 0, Overdue: 0}) {
		t.Errorf("stats after mark-all %+v", stats)
	}
	p := env.list(token, "")
	for _, it := range p.Items {
		if it.CompletedAt == nil {
			t.Errorf("%s completed without completed_at", it.Title)
		}
	}
	env.do("PATCH", "/api/v1/tasks", `{"completed":false}`, token).want(200, "").json(&res)
	if res["updated"] != 2 {
		t.Errorf("reopen all: %v", res)
	}
	var theirs wireTask
	env.do("GET", env.taskPath(otherTask.ID), "", other).want(200, "").json(&theirs)
	if !theirs.Completed {
		t.Error("mark-all reached another user's task")
	}
}

// TestTaskIsolation shows that a second user can neither see nor touch the first user's
// task by any route: every single-task route answers 404 as for a missing task.
func TestTaskIsolation(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	owner, ownerUser := env.registerUser("owner@example.com")
	intruder, intruderUser := env.registerUser("intruder@example.com")
	task := env.createTask(owner, `{"title":"private","completed":true,"tags":["secret"]}`)
	path := env.taskPath(task.ID)
	hack := fmt.Sprintf("/api/%d/tasks/", intruderUser.ID)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/v1/tasks/%d", ""}, {"PUT", "/api/v1/tasks/%d", `{"title":"x"}`}, {"PATCH", "/api/v1/tasks/%d", `{"title":"x"}`},
		{"PATCH", "/api/v1/tasks/%d/complete", ""}, {"DELETE", "/api/v1/tasks/%d", ""},
		{"GET", hack + "%d", ""}, {"PUT", hack + "%d", `{"title":"x"}`},
		{"PATCH", hack + "%d/complete", ""}, {"DELETE", hack + "%d", ""},
	} {
		r := env.do(c.method, fmt.Sprintf(c.path, task.ID), c.body, intruder)
		missing := env.do(c.method, fmt.Sprintf(c.path, 987654321), c.body, intruder)
		if r.Code != 404 || r.code() != "not_found" || r.envelope().Detail != missing.envelope().Detail {
			t.Errorf("%s %s = %d %s; want the same 404 as a missing task", c.method, c.path, r.Code, r.Body.String())
		}
	}
	env.do("DELETE", "/api/v1/tasks?completed=true", "", intruder).want(200, "")
	env.do("PATCH", "/api/v1/tasks", `{"completed":false}`, intruder).want(200, "")
	if p := env.list(intruder, "q=private"); len(p.Items) != 0 || p.Total != 0 {
		t.Errorf("intruder lists %v", titles(p))
	}
	if p := env.list(intruder, "tag=secret&status=all"); len(p.Items) != 0 {
		t.Errorf("intruder lists %v", titles(p))
	}
	var stats taskStats
	env.do("GET", "/api/v1/tasks/stats", "", intruder).want(200, "").json(&stats)
	if stats.Total != 0 {
		t.Errorf("intruder stats %+v", stats)
	}
	var got wireTask
	env.do("GET", path, "", owner).want(200, "").json(&got)
	if got.Title != "private" || !got.Completed {
		t.Errorf("owner's task changed: %+v", got)
	}
	// A path naming the owner is forbidden to the intruder.
	env.do("GET", fmt.Sprintf("/api/%d/tasks", ownerUser.ID), "", intruder).want(403, "forbidden")
	env.do("GET", fmt.Sprintf("/api/%d/tasks/%d", ownerUser.ID, task.ID), "", intruder).want(403, "forbidden")
}

// TestHackathonRoutes covers section 6: the same tasks under /api/{user_id}/tasks with
// those frontends' list shape, aliases and PUT semantics.
func TestHackathonRoutes(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("hack@example.com")
	uid := strconv.FormatInt(user.ID, 10)
	base := "/api/" + uid + "/tasks"

	r := env.do("POST", base, `{"title":"from hackathon","description":"d","tags":["X"]}`, token).want(201, "")
	var created wireTask
	r.json(&created)
	if created.UserID != uid {
		t.Errorf("user_id rendered %#v, want the path's %q", created.UserID, uid)
	}
	if r.Header().Get("Location") != base+"/"+strconv.FormatInt(created.ID, 10) {
		t.Errorf("Location %q", r.Header().Get("Location"))
	}
	for i := 0; i < 4; i++ {
		env.createTask(token, fmt.Sprintf(`{"title":"v1 %d","priority":"%s","due_date":"2026-0%d-01"}`, i, []string{"low", "high"}[i%2], i+1))
	}
	env.do("PATCH", env.taskPath(created.ID)+"/complete", "", token).want(200, "")

	list := func(q string) ([]wireTask, string) {
		r := env.do("GET", base+"?"+q, "", token).want(200, "")
		var items []wireTask
		r.json(&items)
		if !strings.HasPrefix(strings.TrimSpace(r.Body.String()), "[") {
			t.Errorf("not a plain array: %s", r.Body.String())
		}
		return items, r.Header().Get("X-Total-Count")
	}
	items, total := list("")
	if len(items) != 5 || total != "5" || items[0].UserID != uid {
		t.Fatalf("list %d items, total %q", len(items), total)
	}
	names := func(items []wireTask) string {
		var s []string
		for _, it := range items {
			s = append(s, it.Title)
		}
		return strings.Join(s, ",")
	}
	tests := map[string]string{
		"limit=2&offset=1":                                "v1 2,v1 1",
		"limit=2&skip=1":                                  "v1 2,v1 1",
		"search=HACKATHON":                                "from hackathon",
		"status=done":                                     "from hackathon",
		"status=DONE":                                     "from hackathon",
		"status=open&priority=high":                       "v1 3,v1 1",
		"tags=x":                                          "from hackathon",
		"sort_by=title&sort_order=desc&limit=2":           "v1 3,v1 2",
		"sort_by=title&order=asc&limit=2":                 "from hackathon,v1 0",
		"sort_by=title&limit=1":                           "from hackathon",
		"sort=created&limit=1":                            "v1 3",
		"sort=title&limit=1":                              "from hackathon",
		"sort=due_date&limit=2":                           "v1 0,v1 1",
		"sort=-due_date&limit=1":                          "v1 3",
		"sort=priority&limit=2":                           "v1 0,v1 2",
		"due_date_from=2026-02-01&due_date_to=2026-04-01": "v1 2,v1 1",
	}
	// The reads, in parallel with each other, all done before the subtests below write
	// tasks of the same user (a group without t.Parallel waits for its parallel children).
	t.Run("reads", func(t *testing.T) {
		for q, want := range tests {
			t.Run(q, func(t *testing.T) {
				t.Parallel()
				items, _ := list(q)
				if got := names(items); got != want {
					t.Errorf("%s: %s, want %s", q, got, want)
				}
			})
		}
		t.Run("sort=updated is most recently changed first", func(t *testing.T) {
			t.Parallel()
			items, _ := list("sort=updated&limit=1")
			if items[0].ID != created.ID {
				t.Errorf("first %s", items[0].Title)
			}
		})
	})
	t.Run("limits", func(t *testing.T) {
		t.Parallel()
		env.do("GET", base+"?limit=1000", "", token).want(200, "")
		for _, q := range []string{"limit=1001", "limit=0", "offset=-1", "skip=x", "sort_by=id", "sort_by=title&order=sideways", "status=maybe"} {
			env.do("GET", base+"?"+q, "", token).want(400, "invalid_query")
		}
		// /api/v1 does not take the aliases.
		env.do("GET", "/api/v1/tasks?status=done", "", token).want(400, "invalid_query")
	})
	t.Run("PUT leaves absent fields", func(t *testing.T) {
		t.Parallel()
		task := env.createTask(token, `{"title":"keep","description":"keep me","priority":"high","tags":["a"]}`)
		var got wireTask
		env.do("PUT", base+"/"+strconv.FormatInt(task.ID, 10), `{"title":"renamed"}`, token).want(200, "").json(&got)
		if got.Title != "renamed" || got.Description == nil || *got.Description != "keep me" || got.Priority != "high" ||
			len(got.Tags) != 1 || got.UserID != uid {
			t.Errorf("after PUT %+v", got)
		}
		env.do("GET", base+"/"+strconv.FormatInt(task.ID, 10), "", token).want(200, "")
		env.do("PATCH", base+"/"+strconv.FormatInt(task.ID, 10)+"/complete", "", token).want(200, "")
		r := env.do("DELETE", base+"/"+strconv.FormatInt(task.ID, 10), "", token)
		if r.Code != 204 {
			t.Errorf("delete %d", r.Code)
		}
	})
	t.Run("other user's path is forbidden", func(t *testing.T) {
		t.Parallel()
		other, _ := env.registerUser("hack-other@example.com")
		env.do("GET", base, "", other).want(403, "forbidden")
		env.do("POST", base, `{"title":"x"}`, other).want(403, "forbidden")
		env.do("GET", "/api/"+uid+"x/tasks", "", token).want(403, "forbidden")
		env.do("GET", base, "", "").want(401, "not_authenticated")
	})
}

// TestListUsesIndexes checks, on 1,000,000 tasks over 10,000 users, that the default list
// and a deep cursor page are index range scans with no sort of the user's tasks, under
// both the custom and the generic plans a prepared statement can get.
func TestListUsesIndexes(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ctx := context.Background()
	conn, err := env.st.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, q := range []string{
		`SET statement_timeout = 0`,
		`INSERT INTO users (id, email, password_hash) SELECT g, 'u' || g || '@example.com', 'x' FROM generate_series(1, 10000) g`,
		// One heavy user with 100,000 tasks; the rest spread over every user.
		`INSERT INTO tasks (user_id, title, priority, due_date, created_at)
		 SELECT CASE WHEN g <= 100000 THEN 42 ELSE 1 + g % 10000 END, 'task ' || g, g % 3, CASE WHEN g % 5 > 0 THEN now() + g * interval '1 minute' END,
		        now() - g * interval '1 second'
		 FROM generate_series(1, 1000000) g`,
		`ANALYZE tasks`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	var heavy int
	conn.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE user_id = 42`).Scan(&heavy)
	if heavy < 100000 {
		t.Fatalf("heavy user has %d tasks", heavy)
	}
	var cursorAt time.Time
	var cursorID int64
	conn.QueryRow(ctx, `SELECT created_at, id FROM tasks WHERE user_id = 42 ORDER BY created_at DESC, id DESC OFFSET 500 LIMIT 1`).
		Scan(&cursorAt, &cursorID)
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name  string
			after *cursorPos
			sort  string
			desc  bool
		}{
			{"default first page", nil, "created_at", true},
			{"deep cursor page", &cursorPos{Time: &cursorAt, ID: cursorID}, "created_at", true},
			{"due date ascending, deep", &cursorPos{Time: &cursorAt, ID: cursorID}, "due_date", false},
			{"title descending", nil, "title", true},
		} {
			sql, args := listSQL(42, listQuery{Sort: c.sort, Desc: c.desc, Limit: 21, After: c.after})
			// A prepared statement, so that plan_cache_mode decides the plan; EXPLAIN with
			// bound parameters would plan for their values whatever the mode.
			if _, err := conn.Exec(ctx, "PREPARE list_page AS "+sql); err != nil {
				t.Fatalf("%s: prepare: %v", c.name, err)
			}
			var plan []map[string]any
			err := conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) EXECUTE list_page("+sqlLiterals(t, args)+")").Scan(&plan)
			conn.Exec(ctx, "DEALLOCATE list_page")
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			nodes := planNodes(plan[0]["Plan"].(map[string]any))
			if slices.Contains(nodes, "Sort") || slices.Contains(nodes, "Seq Scan") || !slices.Contains(nodes, "Index Scan") {
				b, _ := json.MarshalIndent(plan, "", " ")
				t.Errorf("%s (%s): plan nodes %v\n%s", c.name, mode, nodes, b)
			}
		}
	}
}

// sqlLiterals renders the list statement's parameters as SQL literals for EXECUTE.
func sqlLiterals(t *testing.T, args []any) string {
	out := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case int64:
			out[i] = strconv.FormatInt(v, 10)
		case int:
			out[i] = strconv.Itoa(v)
		case int16:
			out[i] = strconv.Itoa(int(v))
		case string:
			out[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		case *time.Time:
			out[i] = "'" + v.UTC().Format(time.RFC3339Nano) + "'"
		default:
			t.Fatalf("no literal for %T", a)
		}
	}
	return strings.Join(out, ", ")
}

// planNodes lists the node types of a JSON plan, depth first. On Citus it goes on into
// the plan each worker runs ("Distributed Query" → "Job" → "Tasks" → "Remote Plan").
func planNodes(p map[string]any) []string {
	out := []string{p["Node Type"].(string)}
	if kids, ok := p["Plans"].([]any); ok {
		for _, k := range kids {
			out = append(out, planNodes(k.(map[string]any))...)
		}
	}
	dq, _ := p["Distributed Query"].(map[string]any)
	job, _ := dq["Job"].(map[string]any)
	tasks, _ := job["Tasks"].([]any)
	for _, task := range tasks {
		remote, _ := task.(map[string]any)["Remote Plan"].([]any)
		for _, plans := range remote {
			for _, rp := range plans.([]any) {
				out = append(out, planNodes(rp.(map[string]any)["Plan"].(map[string]any))...)
			}
		}
	}
	return out
}
