package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// counterUser is a user of the workload: their token, their id on the section-6 routes,
// and the ids of the tasks created for them (some deleted since).
type counterUser struct {
	token, id string
	userID    int64
	mu        sync.Mutex
	tasks     []int64
}

func (u *counterUser) remember(id int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.tasks = append(u.tasks, id)
}

func (u *counterUser) pick(r *rand.Rand) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.tasks) == 0 {
		return 1 << 40 // missing: a 404 is an answer too
	}
	return u.tasks[r.IntN(len(u.tasks))]
}

// TestCountersMatchTheTasksAfterAConcurrentWorkload: every write the API has (creates on
// both route families, repeated Idempotency-Keys, PATCH, PUT, toggles, deletes, stale
// If-Match, bulk completion with filters, bulk delete), run by four concurrent writers
// per user in a random mix, leaves each user's counters equal to a count of their tasks,
// and the totals the lists and /stats answer equal to those counts.
func TestCountersMatchTheTasksAfterAConcurrentWorkload(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	users := make([]*counterUser, 3)
	for i := range users {
		token, u := env.registerUser(fmt.Sprintf("counted%d@example.com", i))
		users[i] = &counterUser{token: token, id: strconv.FormatInt(u.ID, 10), userID: u.ID}
	}

	const writers, steps = 4, 60
	var wg sync.WaitGroup
	for ui, u := range users {
		for w := range writers {
			r := rand.New(rand.NewPCG(seed, uint64(ui*writers+w)))
			wg.Go(func() { counterWorkload(t, env, u, r, steps) })
		}
	}
	wg.Wait()
	logErrors(t, env)

	ctx := context.Background()
	for _, u := range users {
		total, completed := checkCounters(t, env.st, u.userID)
		t.Logf("user %d: %d tasks, %d completed", u.userID, total, completed)
		for query, want := range map[string]int64{
			"": total, "status=all": total, "status=pending": total - completed, "completed=false": total - completed,
			"status=completed": completed, "completed=true": completed,
		} {
			if got := env.list(u.token, query).Total; got != want {
				t.Errorf("user %d: total of ?%s is %d, want %d", u.userID, query, got, want)
			}
		}
		r := env.do("GET", "/api/"+u.id+"/tasks?status=done", "", u.token).want(200, "")
		if got := r.Header().Get("X-Total-Count"); got != strconv.FormatInt(completed, 10) {
			t.Errorf("user %d: X-Total-Count of status=done is %s, want %d", u.userID, got, completed)
		}
		var stats taskStats
		env.do("GET", "/api/v1/tasks/stats", "", u.token).want(200, "").json(&stats)
		if stats.Total != total || stats.Completed != completed || stats.Pending != total-completed {
			t.Errorf("user %d: stats %+v, want total %d, completed %d", u.userID, stats, total, completed)
		}
	}

	// Deleting the account takes its counters with it.
	gone := users[0]
	env.do("DELETE", "/api/v1/auth/me", "", gone.token).want(204, "")
	var rows int
	if err := env.st.pool.QueryRow(ctx, `SELECT count(*) FROM task_counts WHERE user_id = $1`, gone.userID).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Errorf("a deleted user's counters remain")
	}
}

// checkCounters fails t unless each of the user's counter rows counts the tasks of its
// slot, and returns the user's totals as the tasks give them.
func checkCounters(t *testing.T, st *Store, userID int64) (total, completed int64) {
	t.Helper()
	type counts struct{ total, completed int64 }
	read := func(sql string) map[int64]counts {
		rows, err := st.pool.Query(context.Background(), sql, userID)
		if err != nil {
			t.Fatal(err)
		}
		m := map[int64]counts{}
		for rows.Next() {
			var slot int64
			var c counts
			if err := rows.Scan(&slot, &c.total, &c.completed); err != nil {
				t.Fatal(err)
			}
			if c.total != 0 { // a row counted to zero is no row
				m[slot] = c
			}
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		return m
	}
	tasks := read(`SELECT id % 8, count(*), count(*) FILTER (WHERE completed) FROM tasks WHERE user_id = $1 GROUP BY 1`)
	counters := read(`SELECT slot, total, completed FROM task_counts WHERE user_id = $1`)
	if !maps.Equal(tasks, counters) {
		t.Errorf("user %d: counters by slot %v, the tasks by slot %v", userID, counters, tasks)
	}
	for _, c := range tasks {
		total += c.total
		completed += c.completed
	}
	return total, completed
}

// counterWorkload sends steps random writes as u. It runs on its own goroutine, so it
// reports with Errorf; an answer of 500 or above is the only failure, since a write may
// find its task deleted (404) or its ETag stale (412) by a concurrent one.
func counterWorkload(t *testing.T, env *testEnv, u *counterUser, r *rand.Rand, steps int) {
	bools := []string{"true", "false"}
	priorities := []string{"low", "medium", "high"}
	body := func() string {
		return fmt.Sprintf(`{"title":"t%d","completed":%s,"priority":%q,"tags":[%q]}`,
			r.IntN(1000), bools[r.IntN(2)], priorities[r.IntN(3)], "tag"+strconv.Itoa(r.IntN(3)))
	}
	for range steps {
		var method, path, payload string
		var headers header
		v1 := "/api/v1/tasks"
		v6 := "/api/" + u.id + "/tasks"
		task := "/" + strconv.FormatInt(u.pick(r), 10)
		switch r.IntN(12) {
		case 0, 1:
			method, path, payload = "POST", v1, body()
		case 2:
			method, path, payload = "POST", v6, body()
		case 3: // a few keys, each repeated with the same body (the first answer) or another (422)
			key := strconv.Itoa(r.IntN(4))
			method, path, payload = "POST", v1, `{"title":"once `+key+`","completed":`+bools[r.IntN(2)]+`}`
			headers = header{"Idempotency-Key": "k" + key}
		case 4:
			method, path, payload = "PATCH", v1+task, `{"completed":`+bools[r.IntN(2)]+`}`
			if r.IntN(2) == 0 { // no change of completion: no lock, no counter
				payload = `{"title":"renamed","priority":"low"}`
			}
		case 5:
			method, path, payload = "PUT", v1+task, body()
		case 6:
			method, path, payload = "PUT", v6+task, `{"completed":`+bools[r.IntN(2)]+`}`
		case 7:
			method, path = "PATCH", []string{v1, v6}[r.IntN(2)]+task+"/complete"
		case 8:
			method, path = "DELETE", []string{v1, v6}[r.IntN(2)]+task
		case 9: // a stale ETag changes nothing
			method, path, payload = "PATCH", v1+task, `{"completed":true}`
			headers = header{"If-Match": `"999999"`}
			if r.IntN(2) == 0 {
				method, payload = "DELETE", ""
			}
		case 10:
			method, path, payload = "PATCH", v1+"?priority="+priorities[r.IntN(3)], `{"completed":`+bools[r.IntN(2)]+`}`
		case 11:
			method, path = "DELETE", v1+"?completed=true"
			if r.IntN(2) == 0 {
				path += "&tag=tag" + strconv.Itoa(r.IntN(3))
			}
		}
		res := env.do(method, path, payload, u.token, headers)
		if res.Code >= 500 {
			t.Errorf("%s %s: %d %s", method, path, res.Code, res.Body)
			continue
		}
		if headers["If-Match"] != "" && res.Code != http.StatusPreconditionFailed && res.Code != http.StatusNotFound {
			t.Errorf("%s %s with a stale ETag: %d", method, path, res.Code)
		}
		if method == "POST" && res.Code == http.StatusCreated {
			var created wireTask
			res.json(&created)
			u.remember(created.ID)
		}
	}
}

// TestListTotalsReadTheCounters: the unfiltered list, the status filters, the section-6
// list and /stats send no count over the user's tasks; a filter the counters cannot
// answer (priority) still counts the matching tasks, and gets it right.
func TestListTotalsReadTheCounters(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, u := env.registerUser("totals@example.com")
	for i := range 5 {
		env.createTask(token, fmt.Sprintf(`{"title":"t%d","completed":%t,"priority":"high"}`, i, i < 2))
	}
	env.createTask(token, `{"title":"low one","priority":"low"}`)

	var log statementLog
	traced := env.traced(&log)
	for _, c := range []struct {
		path   string
		total  string
		counts bool
	}{
		{"/api/v1/tasks", "6", false},
		{"/api/v1/tasks?status=pending", "4", false},
		{"/api/v1/tasks?completed=true&sort=title", "2", false},
		{"/api/" + strconv.FormatInt(u.ID, 10) + "/tasks?status=open", "4", false},
		{"/api/v1/tasks?priority=high", "5", true},
		{"/api/v1/tasks?status=pending&priority=high", "3", true},
	} {
		r := traced.do("GET", c.path, "", token).want(200, "")
		got := r.Header().Get("X-Total-Count")
		if got == "" {
			var p taskPage
			r.json(&p)
			got = strconv.FormatInt(p.Total, 10)
		}
		if got != c.total {
			t.Errorf("%s: total %s, want %s", c.path, got, c.total)
		}
		counted := false
		for _, sql := range log.take() {
			counted = counted || strings.Contains(sql, "count(*) FROM tasks")
		}
		if counted != c.counts {
			t.Errorf("%s: counted the tasks %t, want %t", c.path, counted, c.counts)
		}
	}

	var stats taskStats
	traced.do("GET", "/api/v1/tasks/stats", "", token).want(200, "").json(&stats)
	if stats != (taskStats{Total: 6, Completed: 2, Pending: 4}) {
		t.Errorf("stats %+v", stats)
	}
	for _, sql := range log.take() {
		// Overdue alone is counted, from the open tasks that have a due date.
		if strings.Contains(sql, "FROM tasks") && !strings.Contains(sql, "NOT completed AND due_date IS NOT NULL") {
			t.Errorf("/stats read the user's tasks: %s", sql)
		}
	}
}

// TestCountersFollowAWriteThatWaited: a write that waits on another's lock of the task
// and then changes what the other left (a toggle after a toggle, a completion after a
// completion, a delete after a completion) moves the counters by the change it made, not
// by the one it would have made on the task as it was when it started.
func TestCountersFollowAWriteThatWaited(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ctx := context.Background()
	token, u := env.registerUser("waited@example.com")
	task := env.createTask(token, `{"title":"contended"}`)
	for _, second := range []struct{ method, path, body string }{
		{"PATCH", "/complete", `{}`},
		{"PATCH", "/complete", `{"completed":true}`},
		{"PATCH", "/complete", `{"completed":false}`},
		{"PUT", "", `{"title":"replaced","completed":true}`},
		{"DELETE", "", ""}, // last: the task is gone
	} {
		tx, err := env.st.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) // after a commit, a no-op; after a failure, frees the pool's close
		if _, err := tx.Exec(ctx, lockTaskSQL, u.ID, task.ID); err != nil {
			t.Fatal(err)
		}
		// The first write: a toggle, as UpdateTask sends it, left uncommitted.
		rows, err := tx.Query(ctx, completeTaskSQL, u.ID, task.ID, nil, false, "", false, nil,
			true, false, false, false, nil, false, []string{}, false, nil, time.Now(), false, nil, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		var first Task
		var was, changed bool
		for rows.Next() {
			if err := rows.Scan(append(taskFields(&first), &was, &changed)...); err != nil {
				t.Fatal(err)
			}
		}
		if rows.Err() != nil || first.ID != task.ID {
			t.Fatalf("the first write: %v", rows.Err())
		}
		answered := make(chan response, 1)
		go func() {
			answered <- env.do(second.method, env.taskPath(task.ID)+second.path, second.body, token)
		}()
		waitForALockWait(t, env)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if r := <-answered; r.Code >= 300 {
			t.Fatalf("second write %s %s %s: %d %s", second.method, second.path, second.body, r.Code, r.Body)
		}
		checkCounters(t, env.st, u.ID)
	}
}

// waitForALockWait returns once another session waits on a lock, or runs the row lock of
// a write, which can only be waiting since the test holds the row (on Citus the wait is
// on a worker, and the coordinator shows the statement active).
func waitForALockWait(t *testing.T, env *testEnv) {
	t.Helper()
	for range 500 {
		var waiting bool
		if err := env.st.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND state = 'active'
				AND (query = $1 OR (datname = current_database() AND wait_event_type = 'Lock')))`,
			lockTaskSQL).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the second write never waited on the first")
}

// TestConcurrentBulkWritesOfAUserNeverDeadlock: bulk writes of one user whose filters
// make the database visit the tasks in different orders (priority, tag, completion), run
// at once with single-task toggles and creates, never wait on each other in a cycle (which
// the database would break by failing one of them with a deadlock, a 503).
func TestConcurrentBulkWritesOfAUserNeverDeadlock(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, u := env.registerUser("bulky@example.com")
	// Enough tasks that bulk writes overlap, written directly with counters to match.
	ctx := context.Background()
	if _, err := env.st.pool.Exec(ctx, `INSERT INTO tasks (user_id, title, priority, tags, completed)
		SELECT $1, 't' || i, i % 3, ARRAY['tag' || i % 4], i % 2 = 0 FROM generate_series(1, 600) AS i`, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.st.pool.Exec(ctx, `INSERT INTO task_counts (user_id, slot, total, completed)
		SELECT user_id, id % 8, count(*), count(*) FILTER (WHERE completed) FROM tasks WHERE user_id = $1 GROUP BY 1, 2
		ON CONFLICT (user_id, slot) DO UPDATE SET total = excluded.total, completed = excluded.completed`, u.ID); err != nil {
		t.Fatal(err)
	}
	ids := env.list(token, "limit=100").Items
	priorities := []string{"low", "medium", "high"}
	var wg sync.WaitGroup
	for w := range 8 {
		r := rand.New(rand.NewPCG(uint64(w), 7))
		wg.Go(func() {
			for range 20 {
				var method, path, body string
				switch r.IntN(5) {
				case 0:
					method, path, body = "PATCH", "/api/v1/tasks?priority="+priorities[r.IntN(3)], fmt.Sprintf(`{"completed":%t}`, r.IntN(2) == 0)
				case 1:
					method, path, body = "PATCH", "/api/v1/tasks?tag=tag"+strconv.Itoa(r.IntN(4)), fmt.Sprintf(`{"completed":%t}`, r.IntN(2) == 0)
				case 2:
					method, path = "DELETE", "/api/v1/tasks?completed=true&priority="+priorities[r.IntN(3)]
				case 3:
					method, path, body = "PATCH", env.taskPath(ids[r.IntN(len(ids))].ID)+"/complete", `{}`
				case 4:
					method, path, body = "PATCH", "/api/v1/tasks?completed="+strconv.FormatBool(r.IntN(2) == 0), fmt.Sprintf(`{"completed":%t}`, r.IntN(2) == 0)
				}
				if res := env.do(method, path, body, token); res.Code >= 500 {
					t.Errorf("%s %s: %d %s", method, path, res.Code, res.Body)
				}
			}
		})
	}
	wg.Wait()
	logErrors(t, env)
	checkCounters(t, env.st, u.ID)
}

// logErrors shows a failed test the errors its service logged.
func logErrors(t *testing.T, env *testEnv) {
	if !t.Failed() {
		return
	}
	for line := range strings.Lines(env.logs.String()) {
		if strings.Contains(line, `"level":"ERROR"`) {
			t.Log(strings.TrimSpace(line))
		}
	}
}
