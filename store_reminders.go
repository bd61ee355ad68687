package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The reminder scheduler's SQL (contract §10, migrations/008_task_reminders.sql). The scan
// for due reminders reads every shard on Citus, from the partial index of armed reminders
// alone; each claim is one row of one user.

// reminderLate is how late a reminder may fire and still not be "late".
const reminderLate = 5 * time.Minute

// NextReminder is when the earliest armed reminder comes; ok is false when none is armed.
func (st *Store) NextReminder(ctx context.Context) (next time.Time, ok bool, err error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var at *time.Time
	err = st.pool.QueryRow(ctx, `SELECT min(remind_at) FROM tasks
		WHERE remind_at IS NOT NULL AND reminded_at IS NULL AND NOT completed`).Scan(&at)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the next reminder: %w", err)
	}
	if at == nil {
		return time.Time{}, false, nil
	}
	return *at, true, nil
}

// dueReminder is an armed reminder whose time has come.
type dueReminder struct {
	UserID, ID int64
	RemindAt   time.Time
}

// DueReminders returns at most limit armed reminders due at now, the oldest first.
func (st *Store) DueReminders(ctx context.Context, now time.Time, limit int) ([]dueReminder, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	rows, err := st.pool.Query(ctx, `SELECT user_id, id, remind_at FROM tasks
		WHERE remind_at <= $1 AND reminded_at IS NULL AND NOT completed
		ORDER BY remind_at LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("read due reminders: %w", err)
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (dueReminder, error) {
		var d dueReminder
		err := row.Scan(&d.UserID, &d.ID, &d.RemindAt)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read due reminders: %w", err)
	}
	return due, nil
}

// fireReminderSQL claims one due reminder and records its task.reminder event, in one
// single-row, single-shard statement: of two schedulers claiming it, the second finds
// reminded_at set and changes nothing. The task's version and updated_at stay: firing a
// reminder is not a change of the task.
var fireReminderSQL = bindNames(`WITH t AS (
		UPDATE tasks SET reminded_at = @now
		WHERE user_id = @user_id AND id = @id AND remind_at = @remind_at AND reminded_at IS NULL AND NOT completed
		RETURNING `+taskColumns+`), `+
	eventsCTEWith("@user_id::bigint", "@now::timestamptz", "t", eventReminder,
		`jsonb_build_object('task', to_jsonb(t), 'late', @late::boolean)`, "true", "")+`
	SELECT count(*) FROM t`,
	"user_id", "id", "remind_at", "now", "late")

// FireReminder fires r at now: fired is false when another scheduler did, or the task was
// completed, deleted or given another time meanwhile.
func (st *Store) FireReminder(ctx context.Context, r dueReminder, now time.Time) (fired, late bool, err error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	late = now.Sub(r.RemindAt) > reminderLate
	var n int64
	err = st.write(ctx, r.UserID, nil, fireReminderSQL, []any{r.UserID, r.ID, r.RemindAt, now, late}, func(rows pgx.Rows) (err error) {
		n, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return false, false, fmt.Errorf("fire the reminder of task %d: %w", r.ID, err)
	}
	return n == 1, late, nil
}
