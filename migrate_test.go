package main

// Schema versions (migrate.go) and the rate limits every replica shares.

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// versionsOf lists the versions schema_version records, in order.
func versionsOf(t *testing.T, st *Store) []int {
	t.Helper()
	rows, err := st.pool.Query(context.Background(), `SELECT version FROM schema_version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return vs
}

func allVersions() []int {
	var vs []int
	for _, m := range migrations {
		vs = append(vs, m.version)
	}
	return vs
}

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 {
			t.Errorf("migration %s is version %d at position %d", m.name, m.version, i)
		}
	}
	if schemaVersion != len(migrations) || schemaVersion < 2 {
		t.Errorf("schemaVersion %d with %d migrations", schemaVersion, len(migrations))
	}
}

// v1Database is a database at version 1, as the first release left it, holding a user
// with a password, a live refresh token, a task, and a task created with an
// Idempotency-Key, written by the statements that release ran.
type v1Database struct {
	url, email, refresh string
	taskID, onceID      int64
	other               int64 // a second user: 25 tasks, 8 completed, every one due in the past
	onceBody, onceKey   string
}

func newV1Database(t *testing.T) v1Database {
	t.Helper()
	ctx := context.Background()
	db := v1Database{url: newEmptyDatabase(t), email: "upgraded@example.com", onceBody: `{"title":"once"}`, onceKey: "key-1"}
	cfg := testConfig(db.url)
	st := newTestStore(t, cfg)
	if err := st.migrate(ctx, migrations[:1], nil); err != nil {
		t.Fatalf("migrate to version 1: %v", err)
	}
	if vs := versionsOf(t, st); !slices.Equal(vs, []int{1}) {
		t.Fatalf("versions %v, want [1]", vs)
	}
	auth, err := NewAuthenticator(cfg, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hash, err := auth.hashPassword(ctx, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	// Users, refresh tokens and tasks as the first release wrote them: by its own
	// statements, which know none of the later columns.
	createV1User := func(email string) (User, error) {
		var u User
		err := st.pool.QueryRow(ctx, `INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id`, email, hash).Scan(&u.ID)
		return u, err
	}
	u, err := createV1User(db.email)
	if err != nil {
		t.Fatal(err)
	}
	// The refresh token as the first release stored it, by its own statement.
	var rt refreshToken
	db.refresh, rt = auth.newRefreshToken(u.ID)
	if _, err := st.pool.Exec(ctx, `INSERT INTO refresh_tokens (user_id, token_hash, family_id, expires_at)
		VALUES ($1, $2, $3, $4)`, rt.UserID, rt.Hash, rt.FamilyID, rt.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	// The tasks as the first release wrote them: its own statements, which knew no
	// counters. A second user has tasks too, some completed, for the counters' build.
	err = st.pool.QueryRow(ctx, `INSERT INTO tasks (user_id, title, priority, tags)
		VALUES ($1, 'from version 1', 2, '{old}') RETURNING id`, u.ID).Scan(&db.taskID)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(db.onceBody))
	once := Task{UserID: u.ID, Title: "once", Priority: 1, Tags: []string{}, Version: 1}
	err = st.pool.QueryRow(ctx, `INSERT INTO tasks (user_id, title) VALUES ($1, 'once')
		RETURNING id, created_at, updated_at`, u.ID).Scan(&once.ID, &once.CreatedAt, &once.UpdatedAt)
	if err != nil {
		t.Fatal(err)
	}
	db.onceID = once.ID
	if _, err := st.pool.Exec(ctx, `INSERT INTO idempotency_keys (user_id, key, request_hash, status, response)
		VALUES ($1, $2, $3, 201, $4)`, u.ID, db.onceKey, sum[:], appendTask(nil, once, "")); err != nil {
		t.Fatal(err)
	}
	other, err := createV1User("other-" + db.email)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.pool.Exec(ctx, `INSERT INTO tasks (user_id, title, completed, completed_at, due_date)
		SELECT $1, 'task ' || g, g % 3 = 0, CASE WHEN g % 3 = 0 THEN now() END, now() - g * interval '1 hour'
		FROM generate_series(1, 25) AS g`, other.ID); err != nil {
		t.Fatal(err)
	}
	db.other = other.ID
	return db
}

// TestMigrationUpgradesAVersion1Database: the binary started on a version-1 database
// brings it to the current version, and every row and token of it still works.
func TestMigrationUpgradesAVersion1Database(t *testing.T) {
	t.Parallel()
	db := newV1Database(t)
	env := newTestEnvWith(t, testConfig(db.url))
	if err := env.st.Ready(context.Background()); err == nil {
		t.Fatal("ready at version 1")
	}
	if err := env.st.applySchema(context.Background()); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if vs := versionsOf(t, env.st); !slices.Equal(vs, allVersions()) {
		t.Fatalf("versions %v, want %v", vs, allVersions())
	}
	env.do("GET", "/readyz", "", "").want(200, "")

	var tr tokenResponse
	env.do("POST", "/api/v1/auth/refresh", `{"refresh_token":"`+db.refresh+`"}`, "").want(200, "").json(&tr)
	env.do("POST", "/api/v1/auth/login", `{"email":"`+db.email+`","password":"`+testPassword+`"}`, "").want(200, "")
	var task wireTask
	env.do("GET", env.taskPath(db.taskID), "", tr.AccessToken).want(200, "").json(&task)
	if task.Title != "from version 1" || task.Priority != "high" || !slices.Equal(task.Tags, []string{"old"}) {
		t.Errorf("task after the upgrade: %+v", task)
	}
	var again wireTask
	env.do("POST", "/api/v1/tasks", db.onceBody, tr.AccessToken, header{"Idempotency-Key": db.onceKey}).want(201, "").json(&again)
	if again.ID != db.onceID {
		t.Errorf("repeated create answered task %d, the first answer was task %d", again.ID, db.onceID)
	}
	var page taskPage
	env.do("GET", "/api/v1/tasks", "", tr.AccessToken).want(200, "").json(&page)
	if page.Total != 2 {
		t.Errorf("%d tasks after the upgrade, want 2", page.Total)
	}
	// The counters were built from the tasks already there.
	for _, u := range []int64{tr.User.ID, db.other} {
		checkCounters(t, env.st, u)
	}
	stats, err := env.st.TaskStats(context.Background(), db.other)
	if err != nil {
		t.Fatal(err)
	}
	if stats != (taskStats{Total: 25, Completed: 8, Pending: 17, Overdue: 17}) {
		t.Errorf("stats of the second user after the upgrade: %+v", stats)
	}
	// The new table works too: failed logins are counted.
	env.do("POST", "/api/v1/auth/login", `{"email":"`+db.email+`","password":"wrong password"}`, "").want(401, "invalid_credentials")
}

// TestMigrationReplicasStartTogether: four replicas starting at once, on an empty
// database and on a version-1 one, leave one record of each version; a fifth start
// after them changes nothing.
func TestMigrationReplicasStartTogether(t *testing.T) {
	t.Parallel()
	for name, url := range map[string]string{"empty": newEmptyDatabase(t), "version 1": newV1Database(t).url} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(url)
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Go(func() {
					st, err := OpenStore(context.Background(), cfg)
					if err != nil {
						errs[i] = err
						return
					}
					defer st.Close()
					errs[i] = st.applySchema(context.Background())
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
				}
			}
			// A restart applies nothing and is ready.
			st := newTestStore(t, cfg)
			if err := st.applySchema(context.Background()); err != nil {
				t.Fatalf("apply again: %v", err)
			}
			if err := st.Ready(context.Background()); err != nil {
				t.Errorf("not ready: %v", err)
			}
			if vs := versionsOf(t, st); !slices.Equal(vs, allVersions()) {
				t.Errorf("versions %v, want %v once each", vs, allVersions())
			}
		})
	}
}

// TestMigrationFailureRollsBack: a step that fails leaves no trace of itself and the
// version where it was; the start fails with the step named.
func TestMigrationFailureRollsBack(t *testing.T) {
	t.Parallel()
	db := newV1Database(t)
	st := newTestStore(t, testConfig(db.url))
	bad := append(slices.Clone(migrations[:1]), migration{version: 2, name: "002_bad.sql",
		sql: `CREATE TABLE half_done (x int); ALTER TABLE tasks ADD COLUMN doomed int; SELECT 1/0;`})
	err := st.migrate(context.Background(), bad, nil)
	if err == nil || !strings.Contains(err.Error(), "version 2 (002_bad.sql)") {
		t.Fatalf("error %v, want one naming version 2", err)
	}
	if vs := versionsOf(t, st); !slices.Equal(vs, []int{1}) {
		t.Errorf("versions %v after a failed step, want [1]", vs)
	}
	var half, doomed bool
	st.pool.QueryRow(context.Background(), `SELECT to_regclass('half_done') IS NOT NULL,
		EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'tasks' AND column_name = 'doomed'
			AND table_schema = current_schema())`).Scan(&half, &doomed)
	if half || doomed {
		t.Errorf("failed step left half_done=%v, tasks.doomed=%v", half, doomed)
	}
	// The real steps still apply afterwards.
	if err := st.applySchema(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationRefusesANewerDatabase: a binary older than its database does not start
// and says why in one line; /readyz is 503.
func TestMigrationRefusesANewerDatabase(t *testing.T) {
	t.Parallel()
	url := newTestDatabase(t)
	st := newTestStore(t, testConfig(url))
	newer := schemaVersion + 1
	if _, err := st.pool.Exec(context.Background(), `INSERT INTO schema_version (version) VALUES ($1)`, newer); err != nil {
		t.Fatal(err)
	}
	err := st.applySchema(context.Background())
	if !errors.Is(err, errSchemaNewer) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "version "+strconv.Itoa(newer)) {
		t.Fatalf("error %q, want one line saying the database is at version %d", err, newer)
	}
	var out syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runErr := run(ctx, func(k string) string {
		switch k {
		case "DATABASE_URL":
			return url
		case "JWT_SECRET_KEY":
			return "test-secret-key-that-is-long-enough-0123456789"
		case "PORT":
			return "0"
		}
		return ""
	}, &out)
	if !errors.Is(runErr, errSchemaNewer) {
		t.Errorf("run returned %v, want the newer-schema error", runErr)
	}
	if err := st.Ready(context.Background()); err == nil {
		t.Error("ready on a newer schema")
	}
}

// TestRateLimitsSharedByReplicas: failed logins and registrations spread over two
// replicas of one database hit the limit exactly where one replica would.
func TestRateLimitsSharedByReplicas(t *testing.T) {
	t.Parallel()
	cfg := testConfig(newTestDatabase(t))
	cfg.LoginFailuresPerMinute, cfg.RegistersPerMinute = 4, 3
	a, b := newTestEnvWith(t, cfg), newTestEnvWith(t, cfg)
	replicas := []*testEnv{a, b}
	a.registerUser("shared@example.com")
	bad := `{"email":"shared@example.com","password":"wrong password"}`
	for i := range 4 {
		replicas[i%2].do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
	}
	for i, env := range replicas {
		r := env.do("POST", "/api/v1/auth/login", bad, "")
		checkEnvelope(t, r, 429, "rate_limited")
		if ra, err := strconv.Atoi(r.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Errorf("replica %d: Retry-After %q", i, r.Header().Get("Retry-After"))
		}
	}
	// One registration went to a above; two more are allowed, on either replica.
	b.do("POST", "/api/v1/auth/register", `{"email":"r1@example.com","password":"`+testPassword+`"}`, "").want(201, "")
	a.do("POST", "/api/v1/auth/register", `{"email":"r2@example.com","password":"`+testPassword+`"}`, "").want(201, "")
	for _, env := range replicas {
		env.do("POST", "/api/v1/auth/register", `{"email":"r3@example.com","password":"`+testPassword+`"}`, "").
			want(429, "rate_limited")
	}
	var rows int
	a.st.pool.QueryRow(context.Background(), `SELECT count(*) FROM rate_limits`).Scan(&rows)
	if rows != 3 { // the address's login bucket, the e-mail's, the address's registrations
		t.Errorf("rate_limits holds %d rows, want 3", rows)
	}
	if n, err := a.st.CleanRateLimits(context.Background(), time.Now().Add(time.Minute)); err != nil || n != 3 {
		t.Errorf("cleaned %d rows (%v), want 3", n, err)
	}
	// Once forgotten, the buckets are full again.
	b.do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
}

// TestRateLimitsFailClosed: while the database is down a login answers 503, not a
// login let through uncounted; it recovers with the database.
func TestRateLimitsFailClosed(t *testing.T) {
	t.Parallel()
	proxy, proxied := newDBProxy(t, newTestDatabase(t))
	cfg := testConfig(proxied)
	cfg.LoginFailuresPerMinute = 3
	env := newTestEnvWith(t, cfg)
	env.registerUser("closed@example.com")
	bad := `{"email":"closed@example.com","password":"wrong password"}`
	env.do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
	proxy.setDown(true)
	env.do("POST", "/api/v1/auth/login", bad, "").want(503, "service_unavailable")
	proxy.setDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := env.do("POST", "/api/v1/auth/login", bad, "")
		if r.Code == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d %s 10 s after the database came back", r.Code, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Three failures counted (not the one during the outage): the fourth is limited.
	env.do("POST", "/api/v1/auth/login", bad, "").want(401, "invalid_credentials")
	env.do("POST", "/api/v1/auth/login", bad, "").want(429, "rate_limited")
}
