package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Reminders (contract §10): when a task's remind_at comes, task.reminder goes to the
// owner's change feed (and webhooks), once, whichever replicas run.
//
// Every replica runs a reminderScheduler. It sleeps until the earliest armed reminder
// (one read of the partial index of armed reminders), or until a write that may arm an
// earlier one wakes it (its notice, through the change feed's listener), and at most
// reminderMaxSleep; then it claims each due reminder with a single-row statement that
// records the event (Store.FireReminder). Two schedulers claiming one reminder fire it
// once. Reminders that came due while no replica ran are due at the first look after a
// start, and fire "late" when more than five minutes late. So while nothing is due the
// database answers one index lookup per replica every reminderMaxSleep.
type reminderScheduler struct {
	st   *Store
	log  *slog.Logger
	wake chan struct{}
	// fired and late count reminders fired by this replica, for the metrics.
	fired, late atomic.Int64
}

const (
	// reminderMaxSleep bounds a scheduler's sleep: a wake-up notice lost while the
	// listener was away delays a reminder by at most this.
	reminderMaxSleep = 30 * time.Second
	reminderBatch    = 100
)

func newReminderScheduler(st *Store, log *slog.Logger) *reminderScheduler {
	return &reminderScheduler{st: st, log: log, wake: make(chan struct{}, 1)}
}

// poke wakes the scheduler to look at the next reminder again; it never blocks.
func (rs *reminderScheduler) poke() {
	select {
	case rs.wake <- struct{}{}:
	default:
	}
}

// run fires reminders until ctx ends.
func (rs *reminderScheduler) run(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		wait, err := rs.step(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			failures++
			wait = min(time.Duration(failures)*time.Second, 10*time.Second)
			rs.log.Warn("reminders", "error", err.Error(), "retry_in_ms", wait.Milliseconds())
		} else {
			failures = 0
		}
		if wait <= 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-timer.C:
		case <-rs.wake:
		}
		timer.Stop()
	}
	return nil
}

// step fires what is due and says how long to sleep before the next look.
func (rs *reminderScheduler) step(ctx context.Context) (time.Duration, error) {
	now := time.Now()
	due, err := rs.st.DueReminders(ctx, now, reminderBatch)
	if err != nil {
		return 0, err
	}
	for _, r := range due {
		fired, late, err := rs.st.FireReminder(ctx, r, now)
		if err != nil {
			return 0, err
		}
		if fired {
			rs.fired.Add(1)
			if late {
				rs.late.Add(1)
			}
		}
	}
	if len(due) == reminderBatch {
		return 0, nil // more are due
	}
	next, ok, err := rs.st.NextReminder(ctx)
	if err != nil {
		return 0, err
	}
	if !ok {
		return reminderMaxSleep, nil
	}
	return min(time.Until(next), reminderMaxSleep), nil
}
