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
	for {
		done, err := st.migrateStep(ctx, ms, want, log)
		if err != nil || done {
			return err
		}
	}
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
