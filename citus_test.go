//go:build citus

package main

// Tests of the Citus test mode only (go test -tags citus, with TEST_CITUS_URL): the
// schema really distributed, and every statement a request sends routed to one shard.
// The rest of the suite runs there too, each test in its own schema (newTestSchema).

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestCitusModeIsOn(t *testing.T) {
	if citusURL() == "" {
		t.Fatal("built with -tags citus but TEST_CITUS_URL is not set: see README, \"Testing on Citus\"")
	}
}

// TestCitusTablesAreDistributed: users is a reference table, rate_limits is distributed by
// its key, and every other table of the schema but schema_version is distributed by
// user_id, all in one co-location group, so that a user's rows of every table sit on one
// shard.
func TestCitusTablesAreDistributed(t *testing.T) {
	t.Parallel()
	checkDistributed(t, newTestEnv(t).st)
}

// checkDistributed fails t unless st's tables are held by Citus as the service wants.
func checkDistributed(t *testing.T, st *Store) {
	t.Helper()
	ctx := context.Background()
	rows, err := st.pool.Query(ctx, `SELECT c.relname, coalesce(p.partmethod::text, ''),
			coalesce(column_to_column_name(p.logicalrelid, p.partkey), ''), coalesce(p.colocationid, 0)
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
		LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
		WHERE c.relkind IN ('r', 'p') ORDER BY c.relname`)
	if err != nil {
		t.Fatal(err)
	}
	type dist struct {
		method, column string
		colocation     int
	}
	tables := map[string]dist{}
	for rows.Next() {
		var name string
		var d dist
		if err := rows.Scan(&name, &d.method, &d.column, &d.colocation); err != nil {
			t.Fatal(err)
		}
		tables[name] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if d := tables["users"]; d.method != "n" {
		t.Errorf("users: partition method %q, want n (reference table)", d.method)
	}
	group := tables["tasks"].colocation
	perUser := 0
	for name, d := range tables {
		switch name {
		case "users":
		case "rate_limits": // no user: one bucket per limiter key
			if d.method != "h" || d.column != "key" {
				t.Errorf("rate_limits: method %q by %q, want hash-distributed by key", d.method, d.column)
			}
		case "schema_version":
			if d.method != "" {
				t.Errorf("schema_version is in Citus metadata (%q); it stays a table of the coordinator", d.method)
			}
		default:
			perUser++
			if d.method != "h" || d.column != "user_id" || d.colocation != group || group == 0 {
				t.Errorf("%s: method %q by %q in group %d, want hash-distributed by user_id in tasks' group %d",
					name, d.method, d.column, d.colocation, group)
			}
		}
	}
	if perUser < 4 {
		t.Errorf("found %d per-user tables (%v), want tasks, refresh_tokens, idempotency_keys and task_counts at least", perUser, tables)
	}
}

// writesUsers: users is a reference table, written on every node; its writes are the
// exception to the one-shard rule (registration, profile and password changes, account
// deletion, a Better Auth user's first request).
func writesUsers(sql string) bool {
	s := strings.ToLower(strings.Join(strings.Fields(sql), " "))
	return strings.HasPrefix(s, "insert into users") || strings.HasPrefix(s, "update users") ||
		strings.HasPrefix(s, "delete from users") || strings.Contains(s, "as ( insert into users")
}

// TestCitusStatementsRouteToOneShard sends the routes a frontend uses most through a
// service whose pool records every statement, then EXPLAINs each statement with the
// arguments it was sent with: every one must be planned as a single task on one shard
// ("Task Count: 1"), users' writes aside.
func TestCitusStatementsRouteToOneShard(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	var log statementLog
	traced := env.traced(&log)

	var tr tokenResponse
	traced.do("POST", "/api/v1/auth/register", `{"email":"routed@example.com","password":"`+testPassword+`"}`, "").
		want(201, "").json(&tr)
	token := tr.AccessToken
	task := traced.createTask(token, `{"title":"routed","tags":["a"]}`)
	path := traced.taskPath(task.ID)
	var refreshed tokenResponse
	steps := []struct {
		name                string
		method, path, body  string
		status              int
		headers             header
		withToken, useFresh bool
	}{
		{"login", "POST", "/api/v1/auth/login", `{"email":"routed@example.com","password":"` + testPassword + `"}`, 200, nil, false, false},
		{"refresh", "POST", "/api/v1/auth/refresh", `{"refresh_token":"` + tr.RefreshToken + `"}`, 200, nil, false, false},
		{"me", "GET", "/api/v1/auth/me", "", 200, nil, true, false},
		{"create", "POST", "/api/v1/tasks", `{"title":"second","priority":"high"}`, 201, nil, true, false},
		{"create once", "POST", "/api/v1/tasks", `{"title":"third"}`, 201, header{"Idempotency-Key": "k1"}, true, false},
		{"create once, repeated", "POST", "/api/v1/tasks", `{"title":"third"}`, 201, header{"Idempotency-Key": "k1"}, true, false},
		{"get", "GET", path, "", 200, nil, true, false},
		{"get missing", "GET", "/api/v1/tasks/999999999", "", 404, nil, true, false},
		{"list", "GET", "/api/v1/tasks", "", 200, nil, true, false},
		{"list filtered", "GET", "/api/v1/tasks?status=pending&q=rout&tag=a&sort=title&limit=1", "", 200, nil, true, false},
		{"patch", "PATCH", path, `{"title":"renamed"}`, 200, nil, true, false},
		{"patch if-match stale", "PATCH", path, `{"title":"again"}`, 412, header{"If-Match": `"1"`}, true, false},
		{"put", "PUT", path, `{"title":"replaced"}`, 200, nil, true, false},
		{"toggle", "PATCH", path + "/complete", "", 200, nil, true, false},
		{"stats", "GET", "/api/v1/tasks/stats", "", 200, nil, true, false},
		{"complete a recurring task (its successor)", "PATCH", traced.taskPath(traced.createTask(token,
			`{"title":"weekly","due_date":"2026-03-02T09:00:00Z","recurrence":"FREQ=WEEKLY"}`).ID) + "/complete", "", 200, nil, true, false},
		{"mcp tool call", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_task","arguments":{"title":"via mcp"}}}`,
			200, header{"Accept": "application/json, text/event-stream"}, true, false},
		{"delete", "DELETE", traced.taskPath(traced.createTask(token, `{"title":"gone"}`).ID), "", 204, nil, true, false},
		{"mark all done (a recurring task among them)", "PATCH", "/api/v1/tasks", `{"completed":true}`, 200, nil, true, false},
		{"clear completed", "DELETE", "/api/v1/tasks?completed=true", "", 200, nil, true, false},
		{"event ticket", "POST", "/api/v1/events/ticket", "", 200, nil, true, false},
		{"event stream", "GET", "/api/v1/events", "", 200, nil, true, false},
		{"event stream resumed", "GET", "/api/v1/events?last_event_id=1", "", 200, nil, true, false},
		{"logout", "POST", "/api/v1/auth/logout", "", 204, nil, false, true},
	}
	log.take()
	ctx := context.Background()
	conn, err := env.st.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The check itself tells a statement over every shard from one over one.
	var fanOut []map[string]any
	if err := conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) SELECT count(*) FROM tasks").Scan(&fanOut); err != nil {
		t.Fatal(err)
	}
	if counts := taskCounts(fanOut[0]["Plan"].(map[string]any)); !slices.Equal(counts, []float64{4}) {
		t.Fatalf("a count over every shard shows task counts %v, want [%s]", counts, citusShardCount)
	}
	for _, s := range steps {
		tok := ""
		if s.withToken {
			tok = token
		}
		body := s.body
		if s.useFresh {
			body = `{"refresh_token":"` + refreshed.RefreshToken + `"}`
		}
		rctx := context.Background()
		if strings.HasPrefix(s.name, "event stream") {
			var cancel context.CancelFunc
			rctx, cancel = context.WithTimeout(rctx, 300*time.Millisecond) // a stream answers until the client goes
			defer cancel()
		}
		r := traced.doCtx(rctx, s.method, s.path, body, tok, s.headers)
		if r.Code != s.status {
			t.Fatalf("%s: %d %s, want %d", s.name, r.Code, r.Body, s.status)
		}
		if s.name == "refresh" {
			r.json(&refreshed)
		}
		checked := 0
		for _, st := range log.takeSent() {
			head := strings.ToLower(strings.TrimSpace(st.sql))
			// The change feed's notice names no table: it runs on the coordinator, where
			// the listeners are (store_events.go).
			if head == "begin" || head == "commit" || head == "rollback" || writesUsers(st.sql) || st.sql == noticeSQL {
				continue
			}
			checked++
			rows, err := conn.Query(ctx, "EXPLAIN (FORMAT JSON) "+st.sql, st.args...)
			if err != nil {
				t.Errorf("%s: EXPLAIN %s: %v", s.name, oneLine(st.sql), err)
				continue
			}
			var plans [][]map[string]any
			plan, err := pgx.CollectRows(rows, pgx.RowTo[[]map[string]any])
			plans = append(plans, plan...)
			if err != nil {
				t.Errorf("%s: EXPLAIN %s: %v", s.name, oneLine(st.sql), err)
				continue
			}
			b, _ := json.Marshal(plans)
			counts := taskCounts(plans[0][0]["Plan"].(map[string]any))
			if len(counts) == 0 || slices.ContainsFunc(counts, func(n float64) bool { return n != 1 }) {
				t.Errorf("%s: %s\n  task counts %v, want one task on one shard\n  %s", s.name, oneLine(st.sql), counts, b)
			}
		}
		if checked == 0 {
			t.Errorf("%s: no statement checked", s.name)
		}
	}
}

// taskCounts gathers the "Task Count" of every distributed node of a JSON plan.
func taskCounts(p map[string]any) []float64 {
	var out []float64
	if dq, ok := p["Distributed Query"].(map[string]any); ok {
		if job, ok := dq["Job"].(map[string]any); ok {
			if n, ok := job["Task Count"].(float64); ok {
				out = append(out, n)
			}
		}
	}
	if kids, ok := p["Plans"].([]any); ok {
		for _, k := range kids {
			out = append(out, taskCounts(k.(map[string]any))...)
		}
	}
	return out
}

func oneLine(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return fmt.Sprintf("%q", s)
}
