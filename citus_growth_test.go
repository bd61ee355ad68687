//go:build citus

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// growthCluster is a database of its own on every node of the Citus test cluster, created
// without the extension: a deployment that started on one PostgreSQL.
type growthCluster struct {
	coordinator string   // URL of the database on the coordinator
	workers     []string // host:port of each worker
	urls        []string // URL of the database on every node
}

func newGrowthCluster(t *testing.T) growthCluster {
	t.Helper()
	base, err := url.Parse(citusURL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), citusURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(),
		`SELECT nodename || ':' || nodeport FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary' ORDER BY nodeid`)
	if err != nil {
		t.Fatal(err)
	}
	workers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(workers) == 0 {
		t.Fatalf("workers of the test cluster: %v %v", workers, err)
	}
	name := randomName("todo_grow_")
	g := growthCluster{workers: workers}
	for _, host := range append([]string{base.Host}, workers...) {
		node := *base
		node.Host = host
		execAt(t, node.String(), "CREATE DATABASE "+name)
		node.Path = "/" + name
		q := node.Query()
		q.Del("search_path")
		q.Set("citus.shard_count", citusShardCount)
		node.RawQuery = q.Encode()
		g.urls = append(g.urls, node.String())
		admin := *base
		admin.Host = host
		t.Cleanup(func() { execAt(t, admin.String(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	}
	g.coordinator = g.urls[0]
	return g
}

// addCitus is what the README's "Scaling out" asks of the operator: the extension in the
// service's database on every node, then the workers registered on the coordinator.
func (g growthCluster) addCitus(t *testing.T) {
	t.Helper()
	for _, u := range g.urls {
		execAt(t, u, "CREATE EXTENSION IF NOT EXISTS citus")
	}
	c, _ := url.Parse(g.coordinator)
	execAt(t, g.coordinator, fmt.Sprintf("SELECT citus_set_coordinator_host('%s', %s)", c.Hostname(), c.Port()))
	for _, w := range g.workers {
		host, port, _ := strings.Cut(w, ":")
		execAt(t, g.coordinator, fmt.Sprintf("SELECT citus_add_node('%s', %s)", host, port))
	}
}

// TestCitusGrowthFromOnePostgreSQL: a database migrated and filled on plain tables (users
// with passwords and refresh tokens, tasks and their counters, an idempotent create, a
// rate-limit row) moves onto Citus at the service's next start once the operator has added
// the extension and the workers: every row in place, every user logs in, refreshes with
// the token issued before, lists exactly their tasks with the right totals, repeats the
// idempotent create with the first answer. A second start changes nothing.
func TestCitusGrowthFromOnePostgreSQL(t *testing.T) {
	g := newGrowthCluster(t)
	ctx := context.Background()

	// One PostgreSQL: the database has no Citus.
	before := newTestEnvWith(t, testConfig(g.coordinator))
	if err := before.st.applySchema(ctx); err != nil {
		t.Fatalf("migrate on plain PostgreSQL: %v", err)
	}
	type account struct {
		email, refresh string
		tasks          map[int64]bool // id: completed
		onceID         int64
	}
	var accounts []*account
	for i := range 3 {
		a := &account{email: fmt.Sprintf("grower%d@example.com", i), tasks: map[int64]bool{}}
		token, _ := before.registerUser(a.email)
		for j := range 5 + i {
			task := before.createTask(token, fmt.Sprintf(`{"title":"task %d","completed":%t}`, j, j%2 == 0))
			a.tasks[task.ID] = task.Completed
		}
		var once wireTask
		before.do("POST", "/api/v1/tasks", `{"title":"once"}`, token, header{"Idempotency-Key": "grow-1"}).want(201, "").json(&once)
		a.onceID, a.tasks[once.ID] = once.ID, false
		a.refresh = loginAs(before, a.email, testPassword).RefreshToken
		accounts = append(accounts, a)
	}
	before.do("POST", "/api/v1/auth/login", `{"email":"grower0@example.com","password":"wrong password"}`, "").want(401, "invalid_credentials")
	var plainRows int
	if err := before.st.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM refresh_tokens)
		+ (SELECT count(*) FROM idempotency_keys) + (SELECT count(*) FROM task_counts) + (SELECT count(*) FROM rate_limits)`).
		Scan(&plainRows); err != nil {
		t.Fatal(err)
	}
	before.st.pool.Close()

	g.addCitus(t)
	after := newTestEnvWith(t, testConfig(g.coordinator))
	if err := after.st.applySchema(ctx); err != nil {
		t.Fatalf("the start that distributes: %v", err)
	}
	checkDistributed(t, after.st)
	var rows int
	if err := after.st.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM refresh_tokens)
		+ (SELECT count(*) FROM idempotency_keys) + (SELECT count(*) FROM task_counts) + (SELECT count(*) FROM rate_limits)`).
		Scan(&rows); err != nil {
		t.Fatal(err)
	}
	// The failed login above and the logins below add rows of their own; none is lost.
	if rows < plainRows {
		t.Errorf("%d rows on Citus, %d on plain PostgreSQL", rows, plainRows)
	}
	for _, a := range accounts {
		var tr tokenResponse
		after.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+a.refresh+`"}`, "").want(200, "").json(&tr)
		token := loginAs(after, a.email, testPassword).AccessToken
		page := after.list(token, "limit=100")
		completed := 0
		for _, task := range page.Items {
			done, ok := a.tasks[task.ID]
			if !ok || done != task.Completed {
				t.Errorf("%s: task %d (completed %t) is not one of theirs as it was", a.email, task.ID, task.Completed)
			}
			if done {
				completed++
			}
		}
		if len(page.Items) != len(a.tasks) || page.Total != int64(len(a.tasks)) {
			t.Errorf("%s: %d tasks, total %d, want %d", a.email, len(page.Items), page.Total, len(a.tasks))
		}
		if got := after.list(token, "status=completed").Total; got != int64(completed) {
			t.Errorf("%s: completed total %d, want %d", a.email, got, completed)
		}
		var again wireTask
		after.do("POST", "/api/v1/tasks", `{"title":"once"}`, token, header{"Idempotency-Key": "grow-1"}).want(201, "").json(&again)
		if again.ID != a.onceID {
			t.Errorf("%s: the idempotent repeat answered task %d, the first answer was %d", a.email, again.ID, a.onceID)
		}
		checkCounters(t, after.st, mustUserID(t, after, token))
	}

	// A second start: nothing left to move.
	var logs syncBuffer
	if err := after.st.migrate(ctx, migrations, slog.New(slog.NewJSONHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "distributed") {
		t.Errorf("the second start distributed again: %s", logs.String())
	}
	checkDistributed(t, after.st)
}

func mustUserID(t *testing.T, env *testEnv, token string) int64 {
	var me userJSON
	env.do("GET", "/api/v1/auth/me", "", token).want(200, "").json(&me)
	return me.ID
}
