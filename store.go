package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store holds all SQL of the service. Every method takes the request's context and runs
// each statement under the per-query timeout; errors come back as *apiError for what a
// client did wrong, or as wrapped driver errors that writeError turns into 503 or 500.
type Store struct {
	pool         *pgxpool.Pool
	queryTimeout time.Duration
}

// OpenStore makes the pool. It does not connect: the first query does, so that a database
// that is down at start is retried by applySchemaWithRetry rather than fatal.
func OpenStore(ctx context.Context, cfg Config) (*Store, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		// The parser's message can quote the URL, password included.
		return nil, errors.New("DATABASE_URL: cannot be parsed as a PostgreSQL URL")
	}
	pc.MaxConns = cfg.DBMaxConns
	pc.HealthCheckPeriod = 5 * time.Second
	if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > 2*time.Second {
		pc.ConnConfig.ConnectTimeout = 2 * time.Second
	}
	// Backstops to the per-query context timeout, enforced by the server itself.
	pc.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.QueryTimeout.Milliseconds(), 10)
	pc.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "30000"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	return &Store{pool: pool, queryTimeout: cfg.QueryTimeout}, nil
}

// Close waits for borrowed connections to return and closes the pool.
func (st *Store) Close() { st.pool.Close() }

func (st *Store) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, st.queryTimeout)
}

// applySchemaWithRetry waits up to limit for a database that is still starting.
func (st *Store) applySchemaWithRetry(ctx context.Context, log *slog.Logger, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := st.migrate(ctx, migrations, log)
		if err == nil || !databaseUnavailable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		log.Warn("database not reachable yet; retrying", "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Ready reports whether the database answers and holds the current schema version.
func (st *Store) Ready(ctx context.Context) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var v int
	if err := st.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v); err != nil {
		return fmt.Errorf("readiness: %w", err)
	}
	if v != schemaVersion {
		return fmt.Errorf("readiness: schema version %d, want %d", v, schemaVersion)
	}
	return nil
}

// isUniqueViolation maps by SQLSTATE only: constraint names differ on Citus.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// ---- the user check, on a miss ----

// userCheck is the existence check owed by a request whose local access token was
// verified without the database (a deleted user's token must be refused). It costs a
// statement only when the request's own statement finds none of the user's rows: a task
// or user row returned proves the user exists, since tasks go with their user in the
// transaction that deletes it, and an insert for a user who is gone fails on the
// foreign key. So a read, write or list that finds something pays nothing for it.
type userCheck struct {
	id   int64
	done bool
}

type userCheckKey struct{}

const userExistsSQL = `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND issuer IS NULL)`

func withUserCheck(ctx context.Context, id int64) context.Context {
	return context.WithValue(ctx, userCheckKey{}, &userCheck{id: id})
}

// pendingUserCheck is the request's check if it has not run yet.
func pendingUserCheck(ctx context.Context) *userCheck {
	if uc, ok := ctx.Value(userCheckKey{}).(*userCheck); ok && !uc.done {
		return uc
	}
	return nil
}

// settle reads the check's answer: invalid_token when the user no longer exists.
func (uc *userCheck) settle(row pgx.Row) error {
	var ok bool
	if err := row.Scan(&ok); err != nil {
		return fmt.Errorf("check user %d: %w", uc.id, err)
	}
	if !ok {
		return tokenError(errUserGone)
	}
	uc.done = true
	return nil
}

// miss runs the request's pending user check after a statement over the user's rows
// found none: the miss may be the user's absence, which the request must then report
// (invalid_token) rather than missErr, returned when the user exists or nothing is
// pending. missErr is nil where finding nothing is an answer (an empty list).
func (st *Store) miss(ctx context.Context, missErr error) error {
	if uc := pendingUserCheck(ctx); uc != nil {
		if err := uc.settle(st.pool.QueryRow(ctx, userExistsSQL, uc.id)); err != nil {
			return err
		}
	}
	return missErr
}

// isForeignKeyViolation is an insert for a user who is gone (SQLSTATE only, as above).
func isForeignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}

// ---- users ----

const userColumns = `id, email, name, created_at, issuer, subject, timezone, email_verified_at IS NOT NULL`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt, &u.Issuer, &u.Subject, &u.Timezone, &u.EmailVerified)
	return u, err
}

// CreateUser inserts a local account; email_taken when the email is in use.
func (st *Store) CreateUser(ctx context.Context, email string, name *string, hash string) (User, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	u, err := scanUser(st.pool.QueryRow(ctx, `INSERT INTO users (email, name, password_hash)
		VALUES ($1, $2, $3) RETURNING `+userColumns, email, name, hash))
	if isUniqueViolation(err) {
		return User{}, errEmailTaken
	} else if err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// FindLocalUserByEmail returns the local account and its password hash, or not_found.
func (st *Store) FindLocalUserByEmail(ctx context.Context, email string) (User, string, error) {
	if strings.ContainsRune(email, 0) || !utf8.ValidString(email) {
		// PostgreSQL text holds neither NUL nor invalid UTF-8 (which a form login's
		// %-escapes can produce), so no account has such an email; asking would be an
		// error rather than a miss.
		return User{}, "", notFound("user")
	}
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var u User
	var hash string
	err := st.pool.QueryRow(ctx, `SELECT `+userColumns+`, password_hash, password_epoch FROM users
		WHERE email = $1 AND issuer IS NULL`, email).
		Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt, &u.Issuer, &u.Subject, &u.Timezone, &u.EmailVerified, &hash, &u.PasswordEpoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, "", notFound("user")
	} else if err != nil {
		return User{}, "", fmt.Errorf("find user by email: %w", err)
	}
	return u, hash, nil
}

// FindUser returns the user with the given id, or not_found.
func (st *Store) FindUser(ctx context.Context, id int64) (User, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	u, err := scanUser(st.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, st.miss(ctx, notFound("user"))
	} else if err != nil {
		return User{}, fmt.Errorf("find user %d: %w", id, err)
	}
	return u, nil
}

// FindPasswordHash returns a local user's password hash, or not_found.
func (st *Store) FindPasswordHash(ctx context.Context, id int64) (string, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var hash *string
	err := st.pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, id).Scan(&hash)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && hash == nil) {
		return "", notFound("user")
	} else if err != nil {
		return "", fmt.Errorf("find password of user %d: %w", id, err)
	}
	return *hash, nil
}

// UpdateUser sets or clears the user's name and sets the time zone, each only when its
// set flag is.
func (st *Store) UpdateUser(ctx context.Context, id int64, setName bool, name *string, setTimezone bool, timezone string) (User, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	u, err := scanUser(st.pool.QueryRow(ctx, `UPDATE users SET
			name = CASE WHEN $2 THEN $3 ELSE name END,
			timezone = CASE WHEN $4 THEN $5 ELSE timezone END,
			updated_at = $6
		WHERE id = $1 RETURNING `+userColumns, id, setName, name, setTimezone, timezone, time.Now()))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, st.miss(ctx, notFound("user"))
	} else if err != nil {
		return User{}, fmt.Errorf("update user %d: %w", id, err)
	}
	return u, nil
}

// UpdatePasswordHash stores a rehash of the same password under stronger parameters.
func (st *Store) UpdatePasswordHash(ctx context.Context, id int64, oldHash, newHash string) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	// Only over the hash it replaces, so that a concurrent password change wins.
	_, err := st.pool.Exec(ctx, `UPDATE users SET password_hash = $3
		WHERE id = $1 AND password_hash = $2`, id, oldHash, newHash)
	if err != nil {
		return fmt.Errorf("rehash password of user %d: %w", id, err)
	}
	return nil
}

// ChangePassword replaces the hash, starts a new password epoch, revokes every refresh
// token of the user and stores the new one, in one transaction. The revocation reaches the
// tokens this statement sees; one that a concurrent login or refresh writes meanwhile
// carries the old epoch, and no refresh accepts it (RotateRefreshToken).
func (st *Store) ChangePassword(ctx context.Context, id int64, newHash string, rt refreshToken) error {
	return st.inTx(ctx, "change password", func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE users SET password_hash = $2, password_epoch = password_epoch + 1,
				updated_at = now()
			WHERE id = $1 AND issuer IS NULL RETURNING password_epoch`, id, newHash).Scan(&rt.PasswordEpoch)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("user")
		} else if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now()
			WHERE user_id = $1 AND revoked_at IS NULL`, id); err != nil {
			return err
		}
		return insertRefreshToken(ctx, tx, rt)
	})
}

// DeleteUser removes the user with all their tasks, tokens and keys in one transaction.
// Each per-user table is cleared by user_id first, so that on Citus every statement
// stays on the user's shard rather than relying on a cascade from the reference table.
func (st *Store) DeleteUser(ctx context.Context, id int64) error {
	err := st.inTx(ctx, "delete user", func(tx pgx.Tx) error {
		for _, q := range []string{
			`DELETE FROM tasks WHERE user_id = $1`,
			`DELETE FROM task_counts WHERE user_id = $1`, // after the tasks: the writers' lock order
			`DELETE FROM refresh_tokens WHERE user_id = $1`,
			`DELETE FROM idempotency_keys WHERE user_id = $1`,
			`DELETE FROM events WHERE user_id = $1`,
			`DELETE FROM event_seqs WHERE user_id = $1`,
			`DELETE FROM event_tickets WHERE user_id = $1`,
			`DELETE FROM webhook_deliveries WHERE user_id = $1`,
			`DELETE FROM webhooks WHERE user_id = $1`,
			`DELETE FROM account_tokens WHERE user_id = $1`,
			`DELETE FROM mail_queue WHERE user_id = $1`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
		if err == nil && tag.RowsAffected() == 0 {
			return notFound("user")
		}
		return err
	})
	if err == nil {
		// Ends the user's streams on every replica (events.go).
		st.notify(ctx, strconv.FormatInt(id, 10)+accountGone)
	}
	return err
}

// UpsertExternalUser finds or creates the user bound to (issuer, subject), refreshing the
// email and name the token carries (a token without them leaves the stored ones).
// Concurrent first requests meet in ON CONFLICT.
func (st *Store) UpsertExternalUser(ctx context.Context, issuer, subject string, email, name *string) (int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	// The usual request finds its user as the token describes it: a read, and nothing
	// else. On Citus users is a reference table, and any INSERT into it, even one whose
	// ON CONFLICT changes nothing, is a write to every node with a two-phase commit.
	var (
		id              int64
		curEmail, cName *string
	)
	err := st.pool.QueryRow(ctx, `SELECT id, email, name FROM users
		WHERE issuer = $1 AND subject = $2 AND issuer IS NOT NULL`, issuer, subject).Scan(&id, &curEmail, &cName)
	switch {
	case err == nil && claimKept(curEmail, email) && claimKept(cName, name):
		return id, nil
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("find external user: %w", err)
	}
	// The DO UPDATE writes only when a claim changed, so that the usual request costs
	// a read; the UNION finds the row when nothing changed and the UPDATE returned none.
	// updated_at takes the service's clock ($5): Citus allows only immutable functions in
	// the DO UPDATE of an INSERT into a distributed or reference table.
	const q = `WITH up AS (
			INSERT INTO users (issuer, subject, email, name) VALUES ($1, $2, $3, $4)
			ON CONFLICT (issuer, subject) WHERE issuer IS NOT NULL DO UPDATE
				SET email = coalesce(EXCLUDED.email, users.email), name = coalesce(EXCLUDED.name, users.name),
					updated_at = $5
				WHERE (users.email, users.name) IS DISTINCT FROM
					(coalesce(EXCLUDED.email, users.email), coalesce(EXCLUDED.name, users.name))
			RETURNING id)
		SELECT id FROM up
		UNION ALL
		SELECT id FROM users WHERE issuer = $1 AND subject = $2 AND issuer IS NOT NULL
		LIMIT 1`
	err = st.pool.QueryRow(ctx, q, issuer, subject, email, name, time.Now()).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		// A concurrent first request inserted the row after this statement's snapshot was
		// taken: the conflict hid it from both branches. A second statement sees it.
		err = st.pool.QueryRow(ctx, q, issuer, subject, email, name, time.Now()).Scan(&id)
	}
	if err != nil {
		return 0, fmt.Errorf("upsert external user: %w", err)
	}
	return id, nil
}

// claimKept: a claim absent from the token keeps the stored value; a present one must
// equal it.
func claimKept(stored, claim *string) bool {
	return claim == nil || (stored != nil && *stored == *claim)
}

// inTx runs fn in a transaction under the per-query timeout, committing when it returns
// nil. A pending user check runs first, inside the transaction.
func (st *Store) inTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
		if uc := pendingUserCheck(ctx); uc != nil {
			if err := uc.settle(tx.QueryRow(ctx, userExistsSQL, uc.id)); err != nil {
				return err
			}
		}
		return fn(tx)
	})
	var ae *apiError
	if err != nil && !errors.As(err, &ae) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return err
}

// ---- refresh tokens ----

// refreshToken is one stored refresh token: its hash, never the token itself.
type refreshToken struct {
	UserID        int64
	Hash          []byte
	FamilyID      [16]byte
	ExpiresAt     time.Time
	PasswordEpoch int32 // the user's password epoch it was issued under
}

func insertRefreshToken(ctx context.Context, tx pgx.Tx, rt refreshToken) error {
	_, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (user_id, token_hash, family_id, expires_at, password_epoch)
		VALUES ($1, $2, $3, $4, $5)`, rt.UserID, rt.Hash, rt.FamilyID, rt.ExpiresAt, rt.PasswordEpoch)
	return err
}

// StoreRefreshToken saves a new login's first refresh token, and forgets the user's
// tokens that expired, so the table does not grow without bound. The login's password
// must still be the user's: a login whose check raced a password change is refused
// (invalid_credentials) rather than given a session under the old password.
func (st *Store) StoreRefreshToken(ctx context.Context, rt refreshToken) error {
	return st.inTx(ctx, "store refresh token", func(tx pgx.Tx) error {
		var epoch int32
		err := tx.QueryRow(ctx, `SELECT password_epoch FROM users WHERE id = $1`, rt.UserID).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && epoch != rt.PasswordEpoch) {
			return errBadCredentials
		} else if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND expires_at < now()`,
			rt.UserID); err != nil {
			return err
		}
		return insertRefreshToken(ctx, tx, rt)
	})
}

// maxRevocationRounds bounds the revocation of a family (RotateRefreshToken). Each round
// that revokes anything found a token a concurrent refresh had just committed; a family
// grows by one token per refresh, and every refresh that starts after the first round
// finds its token revoked, so a few rounds end it.
const maxRevocationRounds = 16

// RotateRefreshToken retires the presented token, stores its successor in the same family
// and answers the token's user, in one transaction: an error anywhere (the database gone
// between the statements) leaves the presented token as it was, so that a retry can
// still use it. A token rotates only while its user's password epoch is the one it was
// issued under (ChangePassword).
//
// A token that was already rotated is being reused: the whole family is revoked and the
// answer is invalid_token, as for an unknown, expired or revoked one. The revocation runs
// until a round finds nothing left: a refresh in flight holds the lock of the token it
// rotates, so the round that meets it waits for its commit, and the next round, with a
// new snapshot, sees and revokes the successor it wrote. So once the answer is given, no
// token of the family works, including one written while it ran.
func (st *Store) RotateRefreshToken(ctx context.Context, userID int64, oldHash []byte, next refreshToken) (User, error) {
	var (
		u               User
		rotated, reused bool
	)
	err := st.inTx(ctx, "rotate refresh token", func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE refresh_tokens SET rotated_at = now()
			WHERE user_id = $1 AND token_hash = $2
			  AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now()
			  AND password_epoch = (SELECT password_epoch FROM users WHERE id = $1)
			RETURNING family_id, password_epoch`, userID, oldHash).Scan(&next.FamilyID, &next.PasswordEpoch)
		if errors.Is(err, pgx.ErrNoRows) {
			var family [16]byte
			err := tx.QueryRow(ctx, `SELECT family_id FROM refresh_tokens
				WHERE user_id = $1 AND token_hash = $2 AND rotated_at IS NOT NULL`, userID, oldHash).Scan(&family)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			} else if err != nil {
				return err
			}
			for round := 0; ; round++ {
				if round == maxRevocationRounds {
					return errors.New("refresh token family still growing after the last revocation round")
				}
				tag, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now()
					WHERE user_id = $1 AND family_id = $2 AND revoked_at IS NULL`, userID, family)
				if err != nil {
					return err
				}
				if tag.RowsAffected() == 0 {
					break
				}
				reused = true
			}
			return nil // commit the revocation; the caller still answers invalid_token
		} else if err != nil {
			return err
		}
		u, err = scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, userID))
		if err != nil {
			return err // a token's user exists: tokens go with their user
		}
		rotated = true
		return insertRefreshToken(ctx, tx, next)
	})
	switch {
	case err != nil:
		return User{}, err
	case reused:
		return User{}, &apiError{Status: errInvalidToken.Status, Code: errInvalidToken.Code,
			Detail: "The refresh token was already used; every token of this login is revoked.", reason: "refresh_token_reused"}
	case !rotated:
		return User{}, refreshTokenRefused
	}
	return u, nil
}

// RevokeRefreshToken revokes one live refresh token (logout); invalid_token when it is
// unknown, expired, revoked or rotated.
func (st *Store) RevokeRefreshToken(ctx context.Context, userID int64, hash []byte) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	tag, err := st.pool.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now()
		WHERE user_id = $1 AND token_hash = $2
		  AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now()`, userID, hash)
	if err != nil {
		return fmt.Errorf("revoke refresh token: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return refreshTokenRefused
	}
	return nil
}

// ---- tasks ----

const taskColumns = `id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id, remind_at`

func scanTask(row pgx.CollectableRow) (Task, error) {
	var t Task
	err := row.Scan(taskFields(&t)...)
	return t, err
}

func taskFields(t *Task) []any {
	return []any{&t.ID, &t.UserID, &t.Title, &t.Description, &t.Completed, &t.Priority, &t.Tags,
		&t.DueDate, &t.CreatedAt, &t.UpdatedAt, &t.CompletedAt, &t.Version, &t.Recurrence, &t.RecurrenceStart, &t.NextTaskID, &t.RemindAt}
}

func collectTask(rows pgx.Rows, err error) (Task, error) {
	if err != nil {
		return Task{}, err
	}
	return pgx.CollectExactlyOneRow(rows, scanTask)
}

// Task timestamps come from the service's clock (@now), never from now() in the
// statement: Citus refuses a non-immutable function inside CASE in the UPDATE of a
// distributed table, and one clock for a task's created_at and its later updated_at keeps
// them ordered.
//
// insertTaskSQL records the task.created event; insertTaskQuietSQL leaves it to the end of
// its transaction (store_events.go).
var (
	insertTaskSQL      = insertTask(true)
	insertTaskQuietSQL = insertTask(false)
)

func insertTask(record bool) string {
	events := ""
	if record {
		events = ", " + eventsCTE("@user_id::bigint", "@now::timestamptz", "t", eventCreated, "true", "counted")
	}
	return bindNames(`WITH t AS (
		INSERT INTO tasks (user_id, title, description, completed, priority, tags, due_date,
			created_at, updated_at, completed_at, recurrence, recurrence_start, remind_at)
		VALUES (@user_id, @title, @description, @completed, @priority, @tags, @due_date,
			@now, @now, CASE WHEN @completed::boolean THEN @now::timestamptz END, @recurrence, @recurrence_start, @remind_at)
		RETURNING `+taskColumns+`),
	counted AS (`+countCreated+`)`+events+`
	SELECT `+taskColumns+` FROM t`,
		"user_id", "title", "description", "completed", "priority", "tags", "due_date", "now", "recurrence", "recurrence_start", "remind_at")
}

// The task counters (migrations/003_task_counts.sql) move in the statement that moves the
// tasks, as a data-modifying WITH that PostgreSQL runs exactly once whether or not the
// statement reads it: one statement, one round trip, one shard on Citus. Each takes the
// counter's row lock after the tasks' own, in every statement, so two writers never wait
// on each other in opposite orders.
//
// A user's counters are eight rows, a task counting in the row of its slot (taskSlot):
// a counter row is locked from the write to the commit, so with one row a user's writes
// from several devices or tabs would take turns; with eight, two of them rarely meet. A
// slot's tasks never change, so each row stays a true count of its own tasks (and its
// CHECK holds). A total is the sum of at most eight rows.
const (
	taskSlot     = `id % 8`
	countCreated = `INSERT INTO task_counts AS c (user_id, slot, total, completed)
		SELECT @user_id, ` + taskSlot + `, 1, completed::int FROM t
		ON CONFLICT (user_id, slot) DO UPDATE SET total = c.total + 1, completed = c.completed + excluded.completed
		RETURNING 1`
)

// insertTaskArgs binds a new task; a recurring one starts its series at its due date.
func insertTaskArgs(userID int64, c taskChange) []any {
	var start *time.Time
	if c.Recurrence != nil {
		start = c.DueDate
	}
	return []any{userID, c.Title, c.Description, c.Completed, c.Priority, c.Tags, c.DueDate, time.Now(), c.Recurrence, start, c.RemindAt}
}

// bindNames rewrites the @name placeholders of a statement to $1, $2… in the order names
// are given, once at start: statements read with names, and no call pays for rewriting.
// A placeholder not in names is a programming error caught by any test.
func bindNames(sql string, names ...string) string {
	return namedParam.ReplaceAllStringFunc(sql, func(m string) string {
		i := slices.Index(names, m[1:])
		if i < 0 {
			panic("bindNames: no parameter " + m)
		}
		return "$" + strconv.Itoa(i+1)
	})
}

var namedParam = regexp.MustCompile(`@[a-z_]+`)

// CreateTask inserts a task for the user.
func (st *Store) CreateTask(ctx context.Context, userID int64, c taskChange) (Task, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var t Task
	err := st.writeNoticed(ctx, userID, nil, notice(userID, c.RemindAt != nil), insertTaskSQL, insertTaskArgs(userID, c), func(rows pgx.Rows) (err error) {
		t, err = collectTask(rows, nil)
		return err
	})
	if isForeignKeyViolation(err) {
		err = st.miss(ctx, err)
	}
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return Task{}, ae
		}
		return Task{}, fmt.Errorf("create task: %w", err)
	}
	return t, nil
}

// idempotentAnswer is the remembered first answer to a create with an Idempotency-Key.
type idempotentAnswer struct {
	Status int
	Body   []byte
}

// idempotencyTTL is how long a key is remembered; the contract asks for at least 24 hours.
const idempotencyTTL = "24 hours"

// CreateTaskOnce creates the task unless the user already used key: then it returns the
// first answer when requestHash matches, or idempotency_key_reused. A racing repeat waits
// on the key's row until the first commits (or aborts, and then creates in its stead).
// render makes the answer to remember from the new task.
func (st *Store) CreateTaskOnce(ctx context.Context, userID int64, key string, requestHash []byte,
	c taskChange, render func(Task) (idempotentAnswer, error)) (idempotentAnswer, error) {
	var (
		ans     idempotentAnswer
		created bool
	)
	err := st.inTx(ctx, "create task once", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM idempotency_keys
			WHERE user_id = $1 AND created_at < now() - interval '`+idempotencyTTL+`'`, userID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (user_id, key, request_hash, status, response)
			VALUES ($1, $2, $3, 0, '') ON CONFLICT (user_id, key) DO NOTHING`, userID, key, requestHash)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			var hash []byte
			err := tx.QueryRow(ctx, `SELECT request_hash, status, response FROM idempotency_keys
				WHERE user_id = $1 AND key = $2`, userID, key).Scan(&hash, &ans.Status, &ans.Body)
			if err != nil {
				return err
			}
			if string(hash) != string(requestHash) {
				return errIdempotencyReuse
			}
			return nil
		}
		t, err := collectTask(tx.Query(ctx, insertTaskSQL, insertTaskArgs(userID, c)...))
		if err != nil {
			return err
		}
		if ans, err = render(t); err != nil {
			return err
		}
		created = true
		_, err = tx.Exec(ctx, `UPDATE idempotency_keys SET status = $3, response = $4
			WHERE user_id = $1 AND key = $2`, userID, key, ans.Status, ans.Body)
		return err
	})
	if err == nil && created {
		st.notify(ctx, notice(userID, c.RemindAt != nil))
	}
	return ans, err
}

// FindTask returns the user's task, or not_found. Another user's task reads as missing.
func (st *Store) FindTask(ctx context.Context, userID, id int64) (Task, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	t, err := collectTask(st.pool.Query(ctx, `SELECT `+taskColumns+` FROM tasks
		WHERE user_id = $1 AND id = $2`, userID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Task{}, st.miss(ctx, notFound("task"))
	} else if err != nil {
		return Task{}, fmt.Errorf("find task %d: %w", id, err)
	}
	return t, nil
}

// The new value of each column under a taskChange; the version moves only when one of
// them differs, so that an ETag stays while the task is unchanged.
const (
	newTitle       = `CASE WHEN @set_title THEN @title::text ELSE title END`
	newDescription = `CASE WHEN @set_description THEN @description::text ELSE description END`
	newCompleted   = `CASE WHEN @toggle THEN NOT completed WHEN @set_completed THEN @completed::boolean ELSE completed END`
	newPriority    = `CASE WHEN @set_priority THEN @priority::smallint ELSE priority END`
	newTags        = `CASE WHEN @set_tags THEN @tags::text[] ELSE tags END`
	newDueDate     = `CASE WHEN @set_due_date THEN @due_date::timestamptz ELSE due_date END`
	newRecurrence  = `CASE WHEN @set_recurrence THEN @recurrence::text ELSE recurrence END`
	newRemindAt    = `CASE WHEN @set_remind_at THEN @remind_at::timestamptz ELSE remind_at END`
	taskChanged    = `((` + newTitle + `), (` + newDescription + `), (` + newCompleted + `), (` + newPriority +
		`), (` + newTags + `), (` + newDueDate + `), (` + newRecurrence + `), (` + newRemindAt + `)) IS DISTINCT FROM
		(title, description, completed, priority, tags, due_date, recurrence, remind_at)`
	// ifMatches is the optimistic-concurrency check, inside the statement so that of
	// concurrent writers holding one ETag exactly one wins.
	ifMatches = `(@if_match::bigint[] IS NULL OR version = ANY (@if_match::bigint[]))`

	updateTaskTemplate = `UPDATE tasks SET
		title = ` + newTitle + `,
		description = ` + newDescription + `,
		completed = ` + newCompleted + `,
		priority = ` + newPriority + `,
		tags = ` + newTags + `,
		due_date = ` + newDueDate + `,
		recurrence = ` + newRecurrence + `,
		remind_at = ` + newRemindAt + `,
		-- A reminder set to another time is armed again.
		reminded_at = CASE WHEN (` + newRemindAt + `) IS DISTINCT FROM remind_at THEN NULL ELSE reminded_at END,
		-- A rule or a due date set anew starts the series anew, from the due date.
		recurrence_start = CASE WHEN @set_recurrence OR @set_due_date THEN ` + newDueDate + ` ELSE recurrence_start END,
		completed_at = CASE WHEN NOT (` + newCompleted + `) THEN NULL
			WHEN completed THEN completed_at ELSE @now::timestamptz END,
		updated_at = CASE WHEN ` + taskChanged + ` THEN @now::timestamptz ELSE updated_at END,
		version = version + CASE WHEN ` + taskChanged + ` THEN 1 ELSE 0 END
	WHERE user_id = @user_id AND id = @id AND ` + ifMatches + `
	RETURNING ` + taskColumns

	// A change that may complete or reopen the task also moves the counters. prior reads
	// whether the task was completed, which RETURNING cannot tell once the row is updated.
	// That is only right if no other write changes the row between the statement's
	// snapshot and its UPDATE, so UpdateTask first locks the row in a statement of its own,
	// in the same transaction (write): this statement's snapshot is then taken once
	// no one else can change the row. Locking inside this statement is not enough: a
	// statement that waited reads the counter rows and the task as of its older snapshot
	// where PostgreSQL re-reads them for a concurrent change (measured: a toggle that
	// waited on another toggle counted from the counter's old value). A change that leaves
	// completion alone needs neither, and sends updateTaskTemplate alone.
	completeTaskTemplate = `WITH prior AS (
		SELECT completed AS was_completed FROM tasks WHERE user_id = @user_id AND id = @id),
	t AS (` + updateTaskTemplate + `),
	counted AS (UPDATE task_counts SET completed = task_counts.completed + CASE WHEN t.completed THEN 1 ELSE -1 END
		FROM t, prior WHERE task_counts.user_id = @user_id AND slot = t.` + taskSlot + `
			AND t.completed <> prior.was_completed
		RETURNING 1)`
	completeTaskAnswer = `
	SELECT ` + taskColumns + `, prior.was_completed, t.updated_at = @now::timestamptz AS changed FROM t, prior`
)

// A write records task.updated only when it changed the task: updated_at then holds this
// write's clock.
var (
	updateEvents   = eventsCTE("@user_id::bigint", "@now::timestamptz", "t", eventUpdated, `t.updated_at = @now::timestamptz`, "")
	completeEvents = eventsCTE("@user_id::bigint", "@now::timestamptz", "t", eventUpdated, `t.updated_at = @now::timestamptz`, "counted")
)

// updateParams names the parameters of the update statements, in the order UpdateTask
// binds them.
var updateParams = []string{"user_id", "id", "if_match",
	"set_title", "title", "set_description", "description", "toggle", "set_completed", "completed",
	"set_priority", "priority", "set_tags", "tags", "set_due_date", "due_date", "now", "set_recurrence", "recurrence",
	"set_remind_at", "remind_at"}

var (
	lockTaskSQL   = `SELECT FROM tasks WHERE user_id = $1 AND id = $2 FOR UPDATE`
	updateTaskSQL = bindNames(`WITH t AS (`+updateTaskTemplate+`), `+updateEvents+`
	SELECT `+taskColumns+` FROM t`, updateParams...)
	// completeTaskSQL is the first statement of a completion's transaction of several,
	// which records its events at its end.
	completeTaskSQL = bindNames(completeTaskTemplate+completeTaskAnswer, updateParams...)
	// completeOneTripSQL is completeTaskSQL that leaves alone a task whose completion would
	// need a successor (recurring, completed by this change, none yet): completeTask then
	// takes the longer way for it, and every other completion keeps to one round trip.
	completeOneTripSQL = bindNames(strings.Replace(completeTaskTemplate,
		"WHERE user_id = @user_id AND id = @id AND ",
		"WHERE user_id = @user_id AND id = @id AND NOT (recurrence IS NOT NULL AND next_task_id IS NULL AND NOT completed AND "+
			newCompleted+") AND ", 1)+", "+completeEvents+completeTaskAnswer, updateParams...)
	deleteTaskSQL = bindNames(`WITH t AS (
		DELETE FROM tasks WHERE user_id = @user_id AND id = @id AND `+ifMatches+` RETURNING id, completed),
	counted AS (UPDATE task_counts SET total = total - 1, completed = task_counts.completed - t.completed::int
		FROM t WHERE task_counts.user_id = @user_id AND slot = t.`+taskSlot+` RETURNING 1), `+
		eventsCTE("@user_id::bigint", "@now::timestamptz", "t", eventDeleted, "true", "counted")+`
	SELECT count(*) FROM t`,
		"user_id", "id", "if_match", "now")
)

// write sends, in one round trip, a transaction that locks the user's task lock (when
// not nil) and runs sql, whose result read reads, and after its COMMIT the change feed's
// notice (store_events.go). The transaction is explicit (BEGIN … COMMIT in the batch) rather
// than the implicit one of a pipeline: Citus holds a worker's row lock across statements
// only inside a transaction block, and without one the lock would end with its own
// statement. A statement that fails leaves the connection in a failed transaction, which
// the pool then closes rather than reuses.
func (st *Store) write(ctx context.Context, userID int64, lock *int64, sql string, args []any, read func(pgx.Rows) error) error {
	return st.writeNoticed(ctx, userID, lock, notice(userID, false), sql, args, read)
}

// writeNoticed is write with the notice given: one that also wakes the reminder
// schedulers, for a write that may arm a reminder.
func (st *Store) writeNoticed(ctx context.Context, userID int64, lock *int64, note, sql string, args []any, read func(pgx.Rows) error) error {
	var batch pgx.Batch
	batch.Queue("BEGIN")
	if lock != nil {
		batch.Queue(lockTaskSQL, userID, *lock)
	}
	batch.Queue(sql, args...).Query(read)
	batch.Queue("COMMIT")
	batch.Queue(noticeSQL, note)
	return st.pool.SendBatch(ctx, &batch).Close()
}

// UpdateTask applies c to the user's task. ifMatch holds the acceptable versions (nil:
// any). not_found when the task is missing or another user's; precondition_failed when
// it exists at another version; validation_error on recurrence when the change would
// leave a recurring task without a due date.
func (st *Store) UpdateTask(ctx context.Context, userID, id int64, c taskChange, ifMatch []int64) (Task, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	args := []any{userID, id, ifMatch,
		c.SetTitle, c.Title, c.SetDescription, c.Description, c.Toggle, c.SetCompleted, c.Completed,
		c.SetPriority, c.Priority, c.SetTags, c.Tags, c.SetDueDate, c.DueDate, time.Now(), c.SetRecurrence, c.Recurrence,
		c.SetRemindAt, c.RemindAt}
	var (
		t   Task
		err error
	)
	if c.Toggle || c.SetCompleted {
		t, err = st.completeTask(ctx, userID, id, args)
	} else {
		err = st.writeNoticed(ctx, userID, nil, notice(userID, c.SetRemindAt && c.RemindAt != nil), updateTaskSQL, args, func(rows pgx.Rows) (err error) {
			t, err = collectTask(rows, nil)
			return err
		})
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Task{}, st.missOrStale(ctx, userID, id, ifMatch)
	case isCheckViolation(err) && (c.SetRecurrence || c.SetDueDate):
		return Task{}, errRecurrenceNeedsDue
	case err != nil:
		return Task{}, fmt.Errorf("update task %d: %w", id, err)
	}
	return t, nil
}

var errRecurrenceNeedsDue = validationFailed([]fieldError{{Field: "recurrence", Message: "needs a due_date: occurrences follow from it"}})

// isCheckViolation: by SQLSTATE, as everywhere (constraint names differ on Citus). Task
// writes check their input before the statement, so the one CHECK a task write can meet
// is a recurring task left without a due date by a PATCH.
func isCheckViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23514"
}

// completeTask is a change that may complete or reopen the task: in one transaction, the
// task locked, the change and its counters (completeTaskSQL), and, when it completes a
// recurring task for the first time, the successor (createSuccessor). The transaction is
// explicit (BEGIN in the batch) rather than the implicit one of a pipeline: Citus holds a
// worker's row lock across statements only inside a transaction block.
//
// Most completions need no successor and are sent as one round trip, COMMIT included,
// with completeOneTripSQL; when that changes nothing (the task needs a successor, or is
// missing, or its ETag is stale) the change is sent again the long way: the batch without
// COMMIT, the successor computed here, then COMMIT.
func (st *Store) completeTask(ctx context.Context, userID, id int64, args []any) (Task, error) {
	var (
		t          Task
		was, found bool
	)
	// readCompleted reads the answer of completeTaskSQL or completeOneTripSQL: the task and
	// whether it was completed before, if it was changed.
	var changed bool
	readCompleted := func(rows pgx.Rows) error {
		for rows.Next() {
			found = true
			if err := rows.Scan(append(taskFields(&t), &was, &changed)...); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	// A reopened task's reminder may be due again.
	if err := st.writeNoticed(ctx, userID, &id, notice(userID, true), completeOneTripSQL, args, readCompleted); err != nil || found {
		return t, err
	}
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		return Task{}, err
	}
	// A connection left inside a transaction (an error below) is closed on release, not
	// reused.
	defer conn.Release()
	var batch pgx.Batch
	batch.Queue("BEGIN")
	batch.Queue(lockTaskSQL, userID, id)
	batch.Queue(completeTaskSQL, args...).Query(readCompleted)
	if err := conn.SendBatch(ctx, &batch).Close(); err != nil {
		return Task{}, err
	}
	var events eventChanges
	if found && t.Completed && !was && t.Recurrence != nil && t.NextTaskID == nil {
		if t.NextTaskID, err = createSuccessor(ctx, conn, userID, t); err != nil {
			return Task{}, err
		}
		if t.NextTaskID != nil {
			events.add(*t.NextTaskID, eventCreated)
			events.arms = t.RemindAt != nil
		}
	}
	if changed {
		events.add(t.ID, eventUpdated)
	}
	if err := events.record(ctx, conn, userID); err != nil {
		return Task{}, err
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return Task{}, err
	}
	if len(events.ids) > 0 {
		// On this connection: taking a second one from the pool while holding this one
		// would wait for ever once every connection is held by a request doing the same.
		conn.Exec(ctx, noticeSQL, notice(userID, events.arms))
	}
	if !found {
		return Task{}, pgx.ErrNoRows
	}
	return t, nil
}

// querier is a connection or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var countInRule = regexp.MustCompile(`COUNT=\d+`)

// createSuccessor creates the next occurrence of the recurring task t, which has just
// been completed, in the caller's transaction (which holds t's row lock): the same
// title, description, priority, tags and rule, due at the rule's next occurrence after
// t's due date in the owner's time zone, COUNT one less; and links t to it, so that t
// never gets a second. None (nil) when COUNT or UNTIL is spent.
func createSuccessor(ctx context.Context, q querier, userID int64, t Task) (*int64, error) {
	rule, msg := parseRRule(*t.Recurrence)
	if msg != "" || t.DueDate == nil || rule.count == 1 {
		return nil, nil // a stored rule was checked when it was written
	}
	var zone string
	if err := q.QueryRow(ctx, `SELECT timezone FROM users WHERE id = $1`, userID).Scan(&zone); err != nil {
		return nil, err
	}
	loc := loadTimezone(zone)
	if loc == nil {
		loc = time.UTC
	}
	start := t.DueDate
	if t.RecurrenceStart != nil {
		start = t.RecurrenceStart
	}
	next, ok := rule.nextOccurrence(*start, *t.DueDate, loc)
	if !ok {
		return nil, nil
	}
	nextRule := *t.Recurrence
	if rule.count > 1 {
		nextRule = countInRule.ReplaceAllString(nextRule, "COUNT="+strconv.Itoa(rule.count-1))
	}
	next = next.UTC()
	// The reminder keeps its distance to the due date.
	var remind *time.Time
	if t.RemindAt != nil {
		r := t.RemindAt.Add(next.Sub(*t.DueDate))
		remind = &r
	}
	succ, err := collectTask(q.Query(ctx, insertTaskQuietSQL, userID, t.Title, t.Description, false, t.Priority, t.Tags,
		&next, time.Now(), &nextRule, start, remind))
	if err != nil {
		return nil, fmt.Errorf("create the next occurrence of task %d: %w", t.ID, err)
	}
	if _, err := q.Exec(ctx, `UPDATE tasks SET next_task_id = $3 WHERE user_id = $1 AND id = $2`, userID, t.ID, succ.ID); err != nil {
		return nil, fmt.Errorf("link task %d to its next occurrence: %w", t.ID, err)
	}
	return &succ.ID, nil
}

// missOrStale tells why a conditional write touched no row: the task is not the user's
// (not_found, or invalid_token when the user is gone), or it is at another version
// (precondition_failed).
func (st *Store) missOrStale(ctx context.Context, userID, id int64, ifMatch []int64) error {
	if ifMatch == nil {
		return st.miss(ctx, notFound("task"))
	}
	var exists bool
	err := st.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tasks WHERE user_id = $1 AND id = $2)`,
		userID, id).Scan(&exists)
	switch {
	case err != nil:
		return fmt.Errorf("check task %d: %w", id, err)
	case exists:
		return errPrecondition
	}
	return st.miss(ctx, notFound("task"))
}

// DeleteTask deletes the user's task under the same rules as UpdateTask, locking it first
// for the same reason: a DELETE that waited on a concurrent write answers RETURNING from
// the row as its snapshot saw it, and the counters would miss a completion made meanwhile.
func (st *Store) DeleteTask(ctx context.Context, userID, id int64, ifMatch []int64) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var deleted int64
	err := st.write(ctx, userID, &id, deleteTaskSQL, []any{userID, id, ifMatch, time.Now()}, func(rows pgx.Rows) error {
		var err error
		deleted, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return fmt.Errorf("delete task %d: %w", id, err)
	}
	if deleted == 0 {
		return st.missOrStale(ctx, userID, id, ifMatch)
	}
	return nil
}

// sqlArgs assembles a statement from constant fragments, numbering its parameters.
type sqlArgs struct {
	sql  strings.Builder
	args []any
}

func (b *sqlArgs) add(fragment string) { b.sql.WriteString(fragment) }

// arg adds v as the next parameter and returns its placeholder.
func (b *sqlArgs) arg(v any) string {
	b.args = append(b.args, v)
	return "$" + strconv.Itoa(len(b.args))
}

// where writes the WHERE of every list and bulk statement: always the caller's own tasks,
// then only the filters that are set, so that the planner sees the exact shape (an unset
// filter costs nothing per row).
func (b *sqlArgs) where(userID int64, f taskFilter) (user string) {
	user = b.arg(userID)
	b.add(" WHERE user_id = " + user)
	if f.Completed != nil {
		b.add(" AND completed = " + b.arg(*f.Completed))
	}
	if p := f.likePattern(); p != nil {
		q := b.arg(*p)
		b.add(" AND (title ILIKE " + q + " OR description ILIKE " + q + ")")
	}
	if f.Priority != nil {
		b.add(" AND priority = " + b.arg(*f.Priority))
	}
	if f.Tag != nil {
		b.add(" AND tags @> ARRAY[" + b.arg(*f.Tag) + "::text]")
	}
	if f.DueBefore != nil {
		b.add(" AND due_date < " + b.arg(*f.DueBefore))
	}
	if f.DueAfter != nil {
		b.add(" AND due_date >= " + b.arg(*f.DueAfter))
	}
	if f.Recurring != nil {
		if *f.Recurring {
			b.add(" AND recurrence IS NOT NULL")
		} else {
			b.add(" AND recurrence IS NULL")
		}
	}
	return user
}

// sortColumns gives, per sort key, the ordered expression (the one its index holds) for
// ascending and descending order, and the type of a cursor's position.
var sortColumns = map[string]struct{ asc, desc, cast string }{
	"created_at": {`created_at`, `created_at`, `::timestamptz`},
	"updated_at": {`updated_at`, `updated_at`, `::timestamptz`},
	"priority":   {`priority`, `priority`, `::smallint`},
	"title":      {`title`, `title`, `::text`},
	// Tasks without a due date come last both ways: +infinity ascending, -infinity descending.
	"due_date": {`coalesce(due_date, 'infinity'::timestamptz)`, `coalesce(due_date, '-infinity'::timestamptz)`,
		`::timestamptz`},
}

// listSQL is the page statement of q: the filters, then, after a cursor, the keyset
// condition (key, id) > (position) in the index's order, so that a page is a range scan of
// the sort key's index starting where the previous page ended, whatever its depth.
func listSQL(userID int64, q listQuery) (string, []any) {
	col := sortColumns[q.Sort]
	expr, dir, cmp := col.asc, " ASC", " > "
	if q.Desc {
		expr, dir, cmp = col.desc, " DESC", " < "
	}
	var b sqlArgs
	b.add("SELECT " + taskColumns + " FROM tasks")
	b.where(userID, q.taskFilter)
	if a := q.After; a != nil {
		var pos any
		switch q.Sort {
		case "priority":
			pos = a.Int
		case "title":
			pos = a.Text
		default:
			pos = a.Time
		}
		p := b.arg(pos) + col.cast
		if q.Sort == "due_date" { // a task without a due date sits at the end it sorts to
			p = strings.Replace(expr, "due_date", p, 1)
		}
		b.add(" AND (" + expr + ", id)" + cmp + "(" + p + ", " + b.arg(a.ID) + "::bigint)")
	}
	b.add(" ORDER BY " + expr + dir + ", id" + dir + " LIMIT " + b.arg(q.Limit))
	if q.Offset > 0 {
		b.add(" OFFSET " + b.arg(q.Offset))
	}
	return b.sql.String(), b.args
}

// ListTasks returns one page of the user's tasks matching q, and how many match in all.
// Both statements go in one round trip; the user check runs only for an empty page.
func (st *Store) ListTasks(ctx context.Context, userID int64, q listQuery) ([]Task, int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var (
		tasks []Task
		total int64
		batch pgx.Batch
		count sqlArgs
	)
	page, args := listSQL(userID, q)
	batch.Queue(page, args...).Query(func(rows pgx.Rows) error {
		var err error
		tasks, err = pgx.CollectRows(rows, scanTask)
		return err
	})
	countSQL(&count, userID, q.taskFilter)
	batch.Queue(count.sql.String(), count.args...).QueryRow(func(row pgx.Row) error { return row.Scan(&total) })
	if err := st.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return nil, 0, fmt.Errorf("list tasks: %w", err)
	}
	if len(tasks) == 0 {
		if err := st.miss(ctx, nil); err != nil {
			return nil, 0, err
		}
	}
	return tasks, total, nil
}

// countSQL is the statement of a list's total: the user's counters when the filter is
// one they answer (none, or completion alone), which costs the same for 100 tasks or
// 100,000; otherwise a count of the matching tasks.
func countSQL(b *sqlArgs, userID int64, f taskFilter) {
	if f.Q != nil || f.Priority != nil || f.Tag != nil || f.DueBefore != nil || f.DueAfter != nil || f.Recurring != nil {
		b.add("SELECT count(*) FROM tasks")
		b.where(userID, f)
		return
	}
	col := "total"
	if f.Completed != nil {
		col = "total - completed"
		if *f.Completed {
			col = "completed"
		}
	}
	b.add("SELECT coalesce(sum(" + col + "), 0)::bigint FROM task_counts WHERE user_id = " + b.arg(userID))
}

// DeleteCompletedTasks deletes the user's completed tasks that match f, and counts them.
func (st *Store) DeleteCompletedTasks(ctx context.Context, userID int64, f taskFilter) (int64, error) {
	var b sqlArgs
	b.add("WITH t AS (DELETE FROM tasks")
	user := lockMatching(&b, userID, f, "completed")
	b.add(" RETURNING id), " + countBulk(user, "total = total - n, completed = completed - n") + ", " +
		eventsCTE(user, b.arg(time.Now())+"::timestamptz", "t", eventDeleted, "true", "counted") + " SELECT count(*) FROM t")
	return st.bulkWrite(ctx, userID, "delete completed tasks", b)
}

// SetTasksCompleted sets completed on every task of the user matching f, and counts the
// tasks whose state changed.
func (st *Store) SetTasksCompleted(ctx context.Context, userID int64, f taskFilter, completed bool) (int64, error) {
	var b sqlArgs
	done := b.arg(completed) + "::boolean"
	now := b.arg(time.Now()) + "::timestamptz" // not now(): see insertTaskSQL
	b.add("WITH t AS (UPDATE tasks SET completed = " + done + ", completed_at = CASE WHEN " + done + " THEN " + now + " END, " +
		"updated_at = " + now + ", version = version + 1")
	user := lockMatching(&b, userID, f, "completed <> "+done)
	if !completed {
		b.add(" RETURNING " + taskColumns + "), " +
			countBulk(user, "completed = completed + CASE WHEN "+done+" THEN n ELSE -n END") + ", " +
			eventsCTE(user, now, "t", eventUpdated, "true", "counted") + " SELECT count(*) FROM t")
		return st.bulkWrite(ctx, userID, "set tasks completed", b)
	}
	b.add(" RETURNING id, recurrence IS NOT NULL AND next_task_id IS NULL AS needs_next), " +
		countBulk(user, "completed = completed + CASE WHEN "+done+" THEN n ELSE -n END") +
		" SELECT count(*), coalesce(array_agg(id ORDER BY id), '{}'), coalesce(array_agg(id ORDER BY id) FILTER (WHERE needs_next), '{}') FROM t")
	// Marking tasks done completes recurring ones too: each gets its successor in the
	// same transaction, which holds their row locks; the events come last (store_events.go).
	var (
		n      int64
		events eventChanges
	)
	err := st.inTx(ctx, "set tasks completed", func(tx pgx.Tx) error {
		var changed, recurring []int64
		if err := tx.QueryRow(ctx, b.sql.String(), b.args...).Scan(&n, &changed, &recurring); err != nil {
			return err
		}
		events = eventChanges{}
		for _, id := range recurring {
			t, err := collectTask(tx.Query(ctx, `SELECT `+taskColumns+` FROM tasks WHERE user_id = $1 AND id = $2`, userID, id))
			if err != nil {
				return err
			}
			next, err := createSuccessor(ctx, tx, userID, t)
			if err != nil {
				return err
			}
			if next != nil {
				events.add(*next, eventCreated)
				events.arms = events.arms || t.RemindAt != nil
			}
		}
		for _, id := range changed {
			events.add(id, eventUpdated)
		}
		return events.record(ctx, tx, userID)
	})
	if err != nil {
		return 0, err
	}
	if len(events.ids) > 0 {
		st.notify(ctx, notice(userID, events.arms))
	}
	if n == 0 {
		return 0, st.miss(ctx, nil)
	}
	return n, nil
}

// Lock order. Two bulk writes of one user would deadlock if each locked its rows in the
// order its plan happens to visit them (a priority filter and a completed filter scan
// different indexes; a hash aggregate returns slots in any order). So every write locks
// the tasks it changes before any counter row, bulk writes lock tasks by ascending id and
// counter rows by ascending slot, and a single-task write locks its one task, then its one
// counter row. In that one order no two writes can wait on each other.

// lockMatching ends a bulk write's UPDATE or DELETE of tasks with the condition that picks
// the user's tasks matching f and cond, locked in id order by a subquery: the statement
// then changes only rows that the subquery has already locked. It returns the user's
// placeholder.
func lockMatching(b *sqlArgs, userID int64, f taskFilter, cond string) (user string) {
	b.add(" WHERE id IN (SELECT id FROM tasks")
	user = b.where(userID, f)
	b.add(" AND " + cond + " ORDER BY id FOR UPDATE) AND user_id = " + user)
	return user
}

// countBulk ends a bulk write whose WITH t holds the id of each task changed: each of the
// user's counter rows moves by n, the number of them in its slot (set by the caller's
// assignment). The counter rows are locked in slot order by the subquery before the
// UPDATE reaches them. user is the user's placeholder.
func countBulk(user, set string) string {
	return "counted AS (UPDATE task_counts SET " + set + " FROM (SELECT c.slot AS changed_slot, g.n FROM task_counts c" +
		" JOIN (SELECT " + taskSlot + " AS slot, count(*) AS n FROM t GROUP BY 1) AS g ON g.slot = c.slot" +
		" WHERE c.user_id = " + user + " ORDER BY c.slot FOR UPDATE OF c) AS changed" +
		" WHERE user_id = " + user + " AND slot = changed_slot RETURNING 1)"
}

// bulkWrite runs a statement built by DeleteCompletedTasks or SetTasksCompleted, which
// answers how many tasks it changed.
func (st *Store) bulkWrite(ctx context.Context, userID int64, op string, b sqlArgs) (int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var n int64
	err := st.write(ctx, userID, nil, b.sql.String(), b.args, func(rows pgx.Rows) (err error) {
		n, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if n == 0 {
		return 0, st.miss(ctx, nil)
	}
	return n, nil
}

// taskStats is the answer of GET /api/v1/tasks/stats.
type taskStats struct {
	Total     int64 `json:"total"`
	Completed int64 `json:"completed"`
	Pending   int64 `json:"pending"`
	Overdue   int64 `json:"overdue"`
}

// TaskStats answers the user's totals from their counters, and counts the overdue tasks
// (not completed, due before now) from the index that holds only open tasks with a due
// date; both in one round trip.
func (st *Store) TaskStats(ctx context.Context, userID int64) (taskStats, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var (
		s     taskStats
		batch pgx.Batch
	)
	batch.Queue(`SELECT coalesce(sum(total), 0)::bigint, coalesce(sum(completed), 0)::bigint FROM task_counts
		WHERE user_id = $1`,
		userID).QueryRow(func(row pgx.Row) error { return row.Scan(&s.Total, &s.Completed) })
	batch.Queue(`SELECT count(*) FROM tasks WHERE user_id = $1 AND NOT completed AND due_date IS NOT NULL
		AND due_date < $2`, userID, time.Now()).QueryRow(func(row pgx.Row) error { return row.Scan(&s.Overdue) })
	if err := st.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return taskStats{}, fmt.Errorf("task stats: %w", err)
	}
	if s.Total == 0 {
		if err := st.miss(ctx, nil); err != nil {
			return taskStats{}, err
		}
	}
	s.Pending = s.Total - s.Completed
	return s, nil
}

// ---- rate limits ----

// refilled is a bucket's tokens now: what it held, plus what flowed in since, up to the
// burst. The clock is the service's ($4), as in every write Citus must route; a replica
// whose clock lags another's adds nothing rather than taking away.
const refilled = `least($2::float8, r.tokens + $3::float8 *
	greatest(0, extract(epoch FROM $4::timestamptz - r.updated_at)::float8))`

// RateTake counts one event against the bucket key when it has a token left, in one
// statement: whether it had one, and the tokens it holds after. A first event makes a
// full bucket less one.
func (st *Store) RateTake(ctx context.Context, key []byte, burst, perSec float64) (bool, float64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var allowed bool
	var tokens float64
	err := st.pool.QueryRow(ctx, `INSERT INTO rate_limits AS r (key, tokens, updated_at)
		VALUES ($1, $2::float8 - 1, $4)
		ON CONFLICT (key) DO UPDATE SET
			tokens = CASE WHEN `+refilled+` >= 1 THEN `+refilled+` - 1 ELSE `+refilled+` END,
			allowed = `+refilled+` >= 1,
			updated_at = $4
		RETURNING tokens, allowed`,
		key, burst, perSec, time.Now()).Scan(&tokens, &allowed)
	if err != nil {
		return false, 0, fmt.Errorf("rate limit: %w", err)
	}
	return allowed, tokens, nil
}

// RateGive returns one token to the bucket key, up to its burst: an attempt taken before
// a password check that then succeeded.
func (st *Store) RateGive(ctx context.Context, key []byte, burst, perSec float64) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	_, err := st.pool.Exec(ctx, `UPDATE rate_limits AS r SET tokens = least($2::float8, `+refilled+` + 1), updated_at = $4
		WHERE key = $1`, key, burst, perSec, time.Now())
	if err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	return nil
}

// CleanRateLimits forgets buckets untouched since before: by then they are full, which is
// what a missing row means. On Citus it is one statement over every shard, run by each
// replica once a minute, never by a request.
func (st *Store) CleanRateLimits(ctx context.Context, before time.Time) (int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	tag, err := st.pool.Exec(ctx, `DELETE FROM rate_limits WHERE updated_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("clean rate limits: %w", err)
	}
	return tag.RowsAffected(), nil
}
