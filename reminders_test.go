package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// reminderEvents reads the user's task.reminder events from the outbox: task id → late.
func reminderEvents(t *testing.T, st *Store, userID int64) map[int64][]bool {
	t.Helper()
	evs, err := st.ReadEvents(context.Background(), userID, 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64][]bool{}
	for _, e := range evs {
		if e.Type != eventReminder {
			continue
		}
		var p struct {
			Task struct {
				ID int64 `json:"id"`
			} `json:"task"`
			Late bool `json:"late"`
		}
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatal(err)
		}
		got[p.Task.ID] = append(got[p.Task.ID], p.Late)
	}
	return got
}

// TestRemindersFireOnceAcrossReplicas: reminders due in 1–3 s, two replicas running their
// schedulers: each fires once, on time, not late, and reaches a stream as task.reminder
// with the task; a completed or deleted task's reminder does not fire; a changed
// remind_at fires again.
func TestRemindersFireOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	envA := newTestEnv(t)
	envB := newTestEnvWith(t, envA.cfg)
	startFeedServer(t, envA)
	b := startFeedServer(t, envB)
	token, user := envA.registerUser("reminded@example.com")
	c, _ := openStream(t, b.url, token, "", nil)
	c.quiet(t, 50*time.Millisecond)

	at := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339Nano) }
	var due []wireTask
	for i := range 6 {
		env := []*testEnv{envA, envB}[i%2]
		due = append(due, env.createTask(token, fmt.Sprintf(`{"title":"due %d","remind_at":%q}`, i, at(time.Second+time.Duration(i)*400*time.Millisecond))))
	}
	done := envA.createTask(token, fmt.Sprintf(`{"title":"done first","remind_at":%q}`, at(1500*time.Millisecond)))
	gone := envA.createTask(token, fmt.Sprintf(`{"title":"deleted first","remind_at":%q}`, at(1500*time.Millisecond)))
	envA.do("PATCH", envA.taskPath(done.ID)+"/complete", "", token).want(200, "")
	envA.do("DELETE", envA.taskPath(gone.ID), "", token).want(204, "")
	if due[0].RemindAt == nil {
		t.Fatal("remind_at is not answered")
	}

	seen := map[int64]bool{}
	for len(seen) < len(due) {
		m := c.next(t)
		if m.Event != eventReminder {
			continue
		}
		var p struct {
			Task wireTask `json:"task"`
			Late *bool    `json:"late"`
		}
		if err := json.Unmarshal([]byte(m.Data), &p); err != nil || p.Late == nil || *p.Late {
			t.Fatalf("reminder data %s", m.Data)
		}
		if seen[p.Task.ID] {
			t.Fatalf("task %d reminded twice", p.Task.ID)
		}
		seen[p.Task.ID] = true
		if p.Task.RemindAt == nil || time.Since(*p.Task.RemindAt) > 5*time.Second {
			t.Errorf("task %d reminded %v after its time", p.Task.ID, time.Since(*p.Task.RemindAt))
		}
	}
	c.quiet(t, time.Second)
	got := reminderEvents(t, envA.st, user.ID)
	for _, d := range due {
		if len(got[d.ID]) != 1 {
			t.Errorf("task %d: %d reminders", d.ID, len(got[d.ID]))
		}
	}
	if len(got[done.ID])+len(got[gone.ID]) != 0 {
		t.Errorf("a completed or deleted task was reminded: %v", got)
	}

	// Re-armed: a new time fires again; the same time does not.
	envB.do("PATCH", envB.taskPath(due[0].ID), fmt.Sprintf(`{"remind_at":%q}`, at(500*time.Millisecond)), token).want(200, "")
	if m := c.next(t); m.Event != eventUpdated {
		t.Fatalf("got %+v", m)
	}
	if m := c.next(t); m.Event != eventReminder || !json.Valid([]byte(m.Data)) {
		t.Fatalf("got %+v", m)
	}
	if n := len(reminderEvents(t, envA.st, user.ID)[due[0].ID]); n != 2 {
		t.Errorf("re-armed reminder fired %d times in all, want 2", n)
	}
}

// TestReminderDueWhileNoReplicaRan: a reminder whose time passed while no scheduler ran
// fires when one starts, as late when more than five minutes late.
func TestReminderDueWhileNoReplicaRan(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("late@example.com")
	past := time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)
	recent := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	late := env.createTask(token, `{"title":"missed","remind_at":"`+past+`"}`)
	onTime := env.createTask(token, `{"title":"just missed","remind_at":"`+recent+`"}`)
	startFeedServer(t, env)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := reminderEvents(t, env.st, user.ID)
		if len(got) == 2 {
			if fmt.Sprint(got[late.ID], got[onTime.ID]) != "[true] [false]" {
				t.Errorf("late flags %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reminders fired after the start: %v", got)
		}
	}
	if n := env.srv.reminders.late.Load(); n != 1 {
		t.Errorf("late count %d", n)
	}
}

// TestReminderFields: remind_at on every task route, checked, and carried to a recurring
// task's successor at the same distance from its due date.
func TestReminderFields(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("fields@example.com")
	uid := strconv.FormatInt(user.ID, 10)
	r := env.do("POST", "/api/v1/tasks", `{"title":"x","remind_at":"tomorrow"}`, token).want(422, "validation_error")
	if f := fieldsOf(r.envelope()); fmt.Sprint(f) != "[remind_at]" {
		t.Errorf("fields %v", f)
	}
	env.do("POST", "/api/v1/tasks", `{"title":"x","remind_at":5}`, token).want(422, "validation_error")
	task := env.createTask(token, `{"title":"weekly","due_date":"2030-01-07T09:00:00Z","remind_at":"2030-01-07T08:30:00+00:00","recurrence":"FREQ=WEEKLY"}`)
	if task.RemindAt == nil || !task.RemindAt.Equal(time.Date(2030, 1, 7, 8, 30, 0, 0, time.UTC)) {
		t.Fatalf("remind_at %v", task.RemindAt)
	}
	var done wireTask
	env.do("PATCH", "/api/"+uid+"/tasks/"+strconv.FormatInt(task.ID, 10)+"/complete", "", token).want(200, "").json(&done)
	var next wireTask
	env.do("GET", env.taskPath(*done.NextTaskID), "", token).want(200, "").json(&next)
	if next.RemindAt == nil || !next.RemindAt.Equal(time.Date(2030, 1, 14, 8, 30, 0, 0, time.UTC)) {
		t.Errorf("successor's remind_at %v, want a week later", next.RemindAt)
	}
	var patched wireTask
	env.do("PATCH", env.taskPath(next.ID), `{"remind_at":null}`, token).want(200, "").json(&patched)
	if patched.RemindAt != nil {
		t.Errorf("remind_at not cleared")
	}
	var put wireTask
	env.do("PUT", env.taskPath(next.ID), `{"title":"replaced","remind_at":"2031-01-01T00:00:00Z"}`, token).want(200, "").json(&put)
	if put.RemindAt == nil {
		t.Errorf("PUT dropped remind_at")
	}
}
