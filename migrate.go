package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The schema's history: schema.sql is version 1, the picture of the schema as first
// released, and migrations/NNN_name.sql take a database from version NNN-1 to NNN. Every
// database, new or years old, runs the same files in the same order, so what an upgraded
// database holds is what a new one holds. Files are never edited once released.

//go:embed schema.sql
var schemaSQL string

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered step of the schema.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations is the schema's history, in order; loaded once at start.
var migrations = loadMigrations()

// schemaVersion is the version this binary brings a database to; /readyz wants it.
var schemaVersion = migrations[len(migrations)-1].version

func loadMigrations() []migration {
	ms := []migration{{version: 1, name: "schema.sql", sql: schemaSQL}}
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	for _, n := range names { // fs.Glob sorts them
		base := path.Base(n)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil || v != ms[len(ms)-1].version+1 {
			panic("migrations: " + base + " is not numbered next after version " + strconv.Itoa(ms[len(ms)-1].version))
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			panic(err)
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	return ms
}

// schemaLockKey is the advisory lock that serialises schema changes across replicas.
const schemaLockKey = 7_305_114_511_223

// errSchemaNewer stops a start against a database that a newer binary has migrated:
// running old code over a newer schema could lose data, and there is no way down.
var errSchemaNewer = errors.New("database schema is newer than this binary")

// applySchema brings the database to schemaVersion.
func (st *Store) applySchema(ctx context.Context) error {
	return st.migrate(ctx, migrations, nil)
}

// migrate applies the steps of ms the database lacks, each in its own transaction that
// holds the advisory lock and reads the version again under it, so that replicas
// starting together apply each step once, and a step that fails leaves the database at
// the version before it.
func (st *Store) migrate(ctx context.Context, ms []migration, log *slog.Logger) error {
	want := ms[len(ms)-1].version
	// Before the steps: a step that distributes a new table co-locates it with tasks,
	// which must then already be distributed.
	if err := st.distributeOnCitus(ctx, log); err != nil {
		return err
	}
	for {
		done, err := st.migrateStep(ctx, ms, want, log)
		if err != nil || done {
			return err
		}
	}
}

// citusTables are the service's tables as Citus holds them, in the order they can be
// distributed: users a reference table, the per-user tables by user_id co-located with
// tasks, rate_limits by its key alone; schema_version stays a table of the coordinator.
var citusTables = []struct{ name, column, colocate string }{
	{"users", "", ""},
	{"tasks", "user_id", ""},
	{"refresh_tokens", "user_id", "tasks"},
	{"idempotency_keys", "user_id", "tasks"},
	{"task_counts", "user_id", "tasks"},
	{"events", "user_id", "tasks"},
	{"event_seqs", "user_id", "tasks"},
	{"event_tickets", "user_id", "tasks"},
	{"webhooks", "user_id", "tasks"},
	{"webhook_deliveries", "user_id", "tasks"},
	{"account_tokens", "user_id", "tasks"},
	{"mail_queue", "user_id", "tasks"},
	{"rate_limits", "key", "none"},
}

// distributeOnCitus moves the tables of a database that started on one PostgreSQL onto
// Citus, rows and all, once the operator has created the extension (on every node) and
// registered the workers: the growth path from one server to a cluster. It runs at every
// start under the schema lock and acts only on tables that exist and Citus does not hold
// yet, so a second run, a replica starting beside it, or a database that was on Citus
// from the start changes nothing. On a database without the extension it reads one row.
//
// On start, rather than as a command of its own: the operator's steps are then the
// cluster's (extension, workers) and a restart, and no replica can run against a database
// that is half plain and half distributed, since the lock holds the others off until the
// transaction commits. The copy takes as long as the data takes to copy; the step has no
// statement timeout, like a migration.
func (st *Store) distributeOnCitus(ctx context.Context, log *slog.Logger) error {
	var citus bool
	if err := st.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')`).Scan(&citus); err != nil {
		return fmt.Errorf("distribute on Citus: %w", err)
	}
	if !citus {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	tx, err := st.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("distribute on Citus: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for _, q := range []string{"SET LOCAL statement_timeout = 0", "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(schemaLockKey, 10) + ")",
		// Otherwise making users a reference table turns every table with a foreign key
		// to it into a "Citus local table", which can no longer be distributed.
		"SET LOCAL citus.enable_local_reference_table_foreign_keys = off"} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("distribute on Citus: %w", err)
		}
	}
	var moved []string
	for _, t := range citusTables {
		var local bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL AND NOT EXISTS (
				SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass($1))`, t.name).Scan(&local); err != nil {
			return fmt.Errorf("distribute on Citus: %s: %w", t.name, err)
		}
		if !local {
			continue
		}
		var err error
		switch {
		case t.column == "":
			_, err = tx.Exec(ctx, `SELECT create_reference_table($1)`, t.name)
		case t.colocate == "":
			_, err = tx.Exec(ctx, `SELECT create_distributed_table($1, $2)`, t.name, t.column)
		default:
			_, err = tx.Exec(ctx, `SELECT create_distributed_table($1, $2, colocate_with => $3)`, t.name, t.column, t.colocate)
		}
		if err != nil {
			return fmt.Errorf("distribute on Citus: %s: %w", t.name, err)
		}
		moved = append(moved, t.name)
	}
	// The copies are on the shards now; the local rows are no longer visible but still on
	// disk. Per-user tables first: they hold the foreign keys to users.
	for i := len(moved) - 1; i >= 0; i-- {
		if _, err := tx.Exec(ctx, `SELECT truncate_local_data_after_distributing_table($1)`, moved[i]); err != nil {
			return fmt.Errorf("distribute on Citus: free the local rows of %s: %w", moved[i], err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("distribute on Citus: commit: %w", err)
	}
	if len(moved) > 0 && log != nil {
		log.Info("schema distributed on Citus", "tables", strings.Join(moved, ","))
	}
	return nil
}

func (st *Store) migrateStep(ctx context.Context, ms []migration, want int, log *slog.Logger) (done bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	tx, err := st.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("apply schema: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// A step can outlast the short per-query timeout on a large table.
	if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
		return false, fmt.Errorf("apply schema: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLockKey)); err != nil {
		return false, fmt.Errorf("apply schema: lock: %w", err)
	}
	have, err := currentVersion(ctx, tx)
	if err != nil {
		return false, fmt.Errorf("apply schema: read version: %w", err)
	}
	switch {
	case have > want:
		return false, fmt.Errorf("%w: the database is at version %d, this binary knows up to %d; run a newer release",
			errSchemaNewer, have, want)
	case have == want:
		return true, tx.Commit(ctx)
	}
	m := ms[have] // versions are 1, 2, …: ms[have] is version have+1
	if _, err := tx.Conn().PgConn().Exec(ctx, m.sql).ReadAll(); err != nil {
		return false, fmt.Errorf("apply schema version %d (%s): %w", m.version, m.name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1) ON CONFLICT (version) DO NOTHING`,
		m.version); err != nil {
		return false, fmt.Errorf("apply schema version %d: record: %w", m.version, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("apply schema version %d: commit: %w", m.version, err)
	}
	if log != nil {
		log.Info("schema migrated", "version", m.version, "file", m.name)
	}
	return m.version == want, nil
}

// currentVersion is the database's schema version, 0 when it has none yet.
func currentVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var v int
	err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}
