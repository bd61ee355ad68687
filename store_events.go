package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// The change feed's SQL (contract §8, migrations/007_events.sql).
//
// Recording. A task write records its events in the statement that changes the tasks, as
// the WITH items eventsCTE returns: the user's event_seqs row moves by the number of
// events, and the events take the ids below its new value. That row stays locked until the
// write commits, so the next write of the same user numbers its events only once this one
// is visible: ids increase in commit order, without gaps. The lock comes last in every
// statement (after the tasks' and the counters' own, see lockMatching), and a transaction
// of several statements records its events in its last one (recordEventsSQL), so that no
// write waits for a lock while it holds the user's sequence.
//
// Pushing. Right after the write's COMMIT, in the same pipeline (one round trip), the
// service sends pg_notify(eventsChannel, user id) (noticeSQL), which PostgreSQL delivers
// to every replica's listener. The notice says only "this user has new events": a replica
// with streams of that user reads them from events (ReadEvents), so a notice lost while a
// listener was away costs nothing that the next read does not find.
//
// Not inside the write's transaction: a transaction that notifies holds a lock of the
// whole database's notification queue from its commit's start until its commit record
// is on disk, so every notifying write waited for the flush of the one before it
// (measured: creates fell from about 3,000 to 600–1,300 a second). After the COMMIT, in a
// transaction of its own that does not wait for its flush (it holds no data), the lock
// lasts microseconds. A statement before it that fails skips it (the pipeline stops at the
// first error), so a notice follows exactly the writes that committed; only a crash of the
// database between the two could lose one, and it also ends every listener's connection,
// whose return reads what its feeds missed.

const eventsChannel = "todo_events"

// noticeSQL names no table: on Citus it runs on the coordinator, where the listeners are.
const noticeSQL = `SELECT set_config('synchronous_commit', 'off', true), pg_notify('` + eventsChannel + `', $1)`

// notify sends a notice after a transaction of several round trips has committed. A
// failure is only logged by the caller's absence of a push: the events are recorded, and a
// stream that missed the push gets them with the user's next notice or when it resumes.
func (st *Store) notify(ctx context.Context, note string) {
	ctx, cancel := st.timeout(context.WithoutCancel(ctx))
	defer cancel()
	st.pool.Exec(ctx, noticeSQL, note)
}

// Event types of the feed.
const (
	eventCreated  = "task.created"
	eventUpdated  = "task.updated"
	eventDeleted  = "task.deleted"
	eventReminder = "task.reminder"
)

// eventsCTE returns the WITH items that record one event of type typ for each row of the
// WITH item src that satisfies cond, numbered in id order: payload is the row as JSON
// (src has taskColumns) or, for a deletion, its id. user and now are the statement's
// placeholders for the user and the service's clock. after, when set, names the WITH item
// that moves the counters, which must have taken its row locks before the sequence's:
// PostgreSQL runs the data-modifying WITH items that nothing reads in an order of its own
// (measured: the last written first), so the order is made by reading it.
func eventsCTE(user, now, src, typ, cond, after string) string {
	payload := `to_jsonb(` + src + `)`
	if typ == eventDeleted {
		payload = `jsonb_build_object('id', ` + src + `.id)`
	}
	return eventsCTEWith(user, now, src, typ, payload, cond, after)
}

// eventsCTEWith is eventsCTE with the payload's expression given.
func eventsCTEWith(user, now, src, typ, payload, cond, after string) string {
	if after != "" {
		cond += ` AND (SELECT count(*) FROM ` + after + `) >= 0`
	}
	return `ev_src AS (SELECT row_number() OVER (ORDER BY ` + src + `.id) AS n, ` + payload + ` AS payload
		FROM ` + src + ` WHERE ` + cond + `),
	ev_seq AS (INSERT INTO event_seqs AS s (user_id, last_id) SELECT ` + user + `, count(*) FROM ev_src HAVING count(*) > 0
		ON CONFLICT (user_id) DO UPDATE SET last_id = s.last_id + excluded.last_id RETURNING last_id),
	ev AS (INSERT INTO events (user_id, id, type, payload, created_at)
		SELECT ` + user + `, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, '` + typ + `', ev_src.payload, ` + now + `
		FROM ev_src, ev_seq),
	` + enqueueDeliveries(user, now, "'"+typ+"'")
}

// enqueueDeliveries is the WITH item that queues a webhook delivery of each event of
// ev_src to each of the user's enabled subscriptions that takes its type (typ: an SQL
// expression), in the statement that records the events. For the many users without
// webhooks it costs one probe of the webhooks primary key.
func enqueueDeliveries(user, now, typ string) string {
	return `ev_hooks AS (INSERT INTO webhook_deliveries (user_id, webhook_id, event_id, type, payload, created_at, next_attempt_at)
		SELECT ` + user + `, w.id, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, ` + typ + `, ev_src.payload, ` + now + `, ` + now + `
		FROM ev_src, ev_seq, webhooks w
		WHERE w.user_id = ` + user + ` AND w.disabled_at IS NULL AND ` + typ + ` = ANY (w.events))`
}

// recordEventsSQL records, as the last statement of a transaction of several, an event per
// (id, type) pair in the order given, from the tasks as the transaction left them (task
// creations and updates: a deletion is always a statement of its own). One router
// statement on Citus: the pairs are read from the array parameters in place, not from a
// WITH over unnest, which Citus would plan apart and send to the worker as an intermediate
// result over another connection while the transaction holds its locks.
var recordEventsSQL = `WITH ev_src AS (
		SELECT row_number() OVER (ORDER BY array_position($2::bigint[], cur.id)) AS n,
			($3::text[])[array_position($2::bigint[], cur.id)] AS type, to_jsonb(cur) AS payload
		FROM (SELECT ` + taskColumns + ` FROM tasks WHERE user_id = $1 AND id = ANY ($2::bigint[])) AS cur),
	ev_seq AS (INSERT INTO event_seqs AS s (user_id, last_id) SELECT $1, count(*) FROM ev_src HAVING count(*) > 0
		ON CONFLICT (user_id) DO UPDATE SET last_id = s.last_id + excluded.last_id RETURNING last_id),
	ev AS (INSERT INTO events (user_id, id, type, payload, created_at)
		SELECT $1, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, ev_src.type, ev_src.payload, $4
		FROM ev_src, ev_seq),
	` + enqueueDeliveries("$1::bigint", "$4::timestamptz", "ev_src.type") + `
	SELECT count(*) FROM ev_src`

// eventChanges collects the events a transaction of several statements records at its end.
type eventChanges struct {
	ids   []int64
	types []string
	arms  bool // a reminder may have been armed: the notice wakes the schedulers
}

func (c *eventChanges) add(id int64, typ string) {
	c.ids = append(c.ids, id)
	c.types = append(c.types, typ)
}

// record sends recordEventsSQL in the caller's transaction; the caller notifies once it
// has committed.
func (c *eventChanges) record(ctx context.Context, q querier, userID int64) error {
	if len(c.ids) == 0 {
		return nil
	}
	if _, err := q.Exec(ctx, recordEventsSQL, userID, c.ids, c.types, time.Now()); err != nil {
		return fmt.Errorf("record events: %w", err)
	}
	return nil
}

// notice is the payload of a write's notification: the user's id, followed by
// reminderArmed when the write may have armed a reminder, so that every replica's
// scheduler looks again when the next one is due (reminders.go).
func notice(userID int64, arms bool) string {
	s := strconv.FormatInt(userID, 10)
	if arms {
		s += reminderArmed
	}
	return s
}

// Suffixes of a notice after the user id.
const (
	accountGone   = " gone"
	reminderArmed = " remind"
)

// storedEvent is one row of events.
type storedEvent struct {
	ID      int64
	Type    string
	Payload []byte
}

// ReadEvents returns the user's events after id after, in order, at most limit of them.
func (st *Store) ReadEvents(ctx context.Context, userID, after int64, limit int) ([]storedEvent, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	rows, err := st.pool.Query(ctx, `SELECT id, type, payload FROM events
		WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3`, userID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events of user %d: %w", userID, err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storedEvent, error) {
		var e storedEvent
		err := row.Scan(&e.ID, &e.Type, &e.Payload)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read events of user %d: %w", userID, err)
	}
	return evs, nil
}

// EventsStart is where a stream of the user starts: the id of the user's latest event (0
// before the first), and whether the user exists. Two statements in one round trip: on
// Citus users is a reference table and event_seqs a distributed one.
func (st *Store) EventsStart(ctx context.Context, userID int64) (last int64, exists bool, err error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var batch pgx.Batch
	batch.Queue(`SELECT coalesce(max(last_id), 0) FROM event_seqs WHERE user_id = $1`, userID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&last)
	})
	batch.Queue(`SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)`, userID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&exists)
	})
	if err := st.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return 0, false, fmt.Errorf("read where the events of user %d stand: %w", userID, err)
	}
	return last, exists, nil
}

// UsersExist returns which of ids are still users: a replica's listener asks after it was
// away, since it may have missed the notice of an account deletion.
func (st *Store) UsersExist(ctx context.Context, ids []int64) (map[int64]bool, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	rows, err := st.pool.Query(ctx, `SELECT id FROM users WHERE id = ANY ($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("check users: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("check users: %w", err)
	}
	m := make(map[int64]bool, len(found))
	for _, id := range found {
		m[id] = true
	}
	return m, nil
}

// CreateEventTicket stores a ticket's hash for the user, good until expires; tokenExpires
// is when the bearer token that asked for it expires.
func (st *Store) CreateEventTicket(ctx context.Context, userID int64, hash []byte, expires, tokenExpires time.Time) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	_, err := st.pool.Exec(ctx, `INSERT INTO event_tickets (user_id, hash, expires_at, token_expires_at)
		VALUES ($1, $2, $3, $4)`, userID, hash, expires, tokenExpires)
	if isForeignKeyViolation(err) {
		return tokenError(errUserGone)
	}
	if err != nil {
		return fmt.Errorf("create event ticket: %w", err)
	}
	return nil
}

// RedeemEventTicket uses up the user's ticket: the expiry of the token behind it, or
// ok false when the ticket is unknown, used or expired. Deleting it is what makes it
// single use: of two redemptions, one deletes the row and the other finds none.
func (st *Store) RedeemEventTicket(ctx context.Context, userID int64, hash []byte, now time.Time) (tokenExpires time.Time, ok bool, err error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	err = st.pool.QueryRow(ctx, `DELETE FROM event_tickets WHERE user_id = $1 AND hash = $2
		RETURNING token_expires_at, expires_at > $3`, userID, hash, now).Scan(&tokenExpires, &ok)
	if err == pgx.ErrNoRows {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("redeem event ticket: %w", err)
	}
	return tokenExpires, ok, nil
}

// CleanEvents deletes, for at most users users, the events recorded before cutoff and the
// expired tickets, at most batch events per statement; it returns how many events it
// deleted. A user's events go oldest id first and only as a prefix (every id up to the
// newest one recorded before cutoff), so what is left of a user's ids stays contiguous and
// a stream can tell a gap from the end of the retention. Each statement names one user:
// on Citus the scan for users reads every shard, each deletion one.
func (st *Store) CleanEvents(ctx context.Context, cutoff time.Time, users, batch int) (int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	rows, err := st.pool.Query(ctx, `SELECT DISTINCT user_id FROM (
			SELECT user_id FROM events WHERE created_at < $1 LIMIT $2) old`, cutoff, users)
	if err != nil {
		return 0, fmt.Errorf("clean events: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("clean events: %w", err)
	}
	var n int64
	for _, id := range ids {
		for {
			tag, err := st.pool.Exec(ctx, `DELETE FROM events WHERE user_id = $1 AND id <= LEAST(
					(SELECT max(id) FROM events WHERE user_id = $1 AND created_at < $2),
					(SELECT min(id) FROM events WHERE user_id = $1) + $3 - 1)`, id, cutoff, batch)
			if err != nil {
				return n, fmt.Errorf("clean events of user %d: %w", id, err)
			}
			n += tag.RowsAffected()
			if tag.RowsAffected() < int64(batch) {
				break
			}
		}
	}
	// Tickets that were never used; each lives a minute.
	rows, err = st.pool.Query(ctx, `SELECT DISTINCT user_id FROM (
			SELECT user_id FROM event_tickets WHERE expires_at < $1 LIMIT $2) old`, time.Now(), users)
	if err != nil {
		return n, fmt.Errorf("clean event tickets: %w", err)
	}
	if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		return n, fmt.Errorf("clean event tickets: %w", err)
	}
	for _, id := range ids {
		if _, err := st.pool.Exec(ctx, `DELETE FROM event_tickets WHERE user_id = $1 AND expires_at < $2`, id, time.Now()); err != nil {
			return n, fmt.Errorf("clean event tickets of user %d: %w", id, err)
		}
	}
	return n, nil
}
