package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Webhooks' SQL (contract §10, migrations/009_webhooks.sql). Every statement names the
// user; the delivery worker's scan for due deliveries reads every shard on Citus, each
// claim and each outcome one row of one user.

// webhook is one subscription as stored.
type webhook struct {
	ID           int64
	URL          string
	Events       []string
	Secret       string
	CreatedAt    time.Time
	FailingSince *time.Time
	DisabledAt   *time.Time
}

const webhookColumns = `id, url, events, secret, created_at, failing_since, disabled_at`

func scanWebhook(row pgx.CollectableRow) (webhook, error) {
	var w webhook
	err := row.Scan(&w.ID, &w.URL, &w.Events, &w.Secret, &w.CreatedAt, &w.FailingSince, &w.DisabledAt)
	return w, err
}

// maxWebhooks is the contract's limit of subscriptions per user.
const maxWebhooks = 10

var errTooManyWebhooks = validationFailed([]fieldError{{Field: "url", Message: fmt.Sprintf("a user has at most %d webhooks", maxWebhooks)}})

// CreateWebhook stores a subscription, unless the user already has maxWebhooks. The
// count and the insert hold the user's advisory lock, so two at once cannot both pass.
func (st *Store) CreateWebhook(ctx context.Context, userID int64, url string, events []string, secret string) (webhook, error) {
	var w webhook
	err := st.inTx(ctx, "create webhook", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, webhookLockKey, int32(userID)); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhooks WHERE user_id = $1`, userID).Scan(&n); err != nil {
			return err
		}
		if n >= maxWebhooks {
			return errTooManyWebhooks
		}
		rows, err := tx.Query(ctx, `INSERT INTO webhooks (user_id, url, events, secret, created_at)
			VALUES ($1, $2, $3, $4, $5) RETURNING `+webhookColumns, userID, url, events, secret, time.Now())
		if err != nil {
			return err
		}
		w, err = pgx.CollectExactlyOneRow(rows, scanWebhook)
		return err
	})
	if isForeignKeyViolation(err) {
		return webhook{}, tokenError(errUserGone)
	}
	return w, err
}

// webhookLockKey is the first half of the advisory lock that serialises a user's
// webhook creations (the user id, folded to 32 bits, is the second).
const webhookLockKey = 7_305_114

// ListWebhooks returns the user's subscriptions, oldest first.
func (st *Store) ListWebhooks(ctx context.Context, userID int64) ([]webhook, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	rows, err := st.pool.Query(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE user_id = $1 ORDER BY id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	ws, err := pgx.CollectRows(rows, scanWebhook)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	if len(ws) == 0 {
		return ws, st.miss(ctx, nil)
	}
	return ws, nil
}

// DeleteWebhook deletes the user's subscription and its pending deliveries.
func (st *Store) DeleteWebhook(ctx context.Context, userID, id int64) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	tag, err := st.pool.Exec(ctx, `DELETE FROM webhooks WHERE user_id = $1 AND id = $2`, userID, id)
	if err != nil {
		return fmt.Errorf("delete webhook %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return st.miss(ctx, notFound("webhook"))
	}
	return nil
}

// delivery is a claimed delivery with what sending it needs.
type delivery struct {
	UserID, ID, WebhookID, EventID int64
	Type                           string
	Payload                        []byte
	CreatedAt                      time.Time
	Attempts                       int
	URL, Secret                    string
}

// DueDeliveries returns at most limit deliveries due at now, the oldest first.
func (st *Store) DueDeliveries(ctx context.Context, now time.Time, limit int) ([][2]int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	rows, err := st.pool.Query(ctx, `SELECT user_id, id FROM webhook_deliveries
		WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("read due deliveries: %w", err)
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]int64, error) {
		var d [2]int64
		err := row.Scan(&d[0], &d[1])
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read due deliveries: %w", err)
	}
	return due, nil
}

// ClaimDelivery takes a due delivery for lease: its next attempt moves to now + lease, so
// that another worker leaves it alone while this one sends it, and tries it again if this
// one dies. ok is false when another worker took it first, or its webhook is disabled or
// gone.
func (st *Store) ClaimDelivery(ctx context.Context, userID, id int64, now time.Time, lease time.Duration) (delivery, bool, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	d := delivery{UserID: userID, ID: id}
	err := st.pool.QueryRow(ctx, `UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = $4
		FROM webhooks w
		WHERE d.user_id = $1 AND d.id = $2 AND d.next_attempt_at <= $3
			AND w.user_id = $1 AND w.id = d.webhook_id AND w.disabled_at IS NULL
		RETURNING d.webhook_id, d.event_id, d.type, d.payload, d.created_at, d.attempts, w.url, w.secret`,
		userID, id, now, now.Add(lease)).
		Scan(&d.WebhookID, &d.EventID, &d.Type, &d.Payload, &d.CreatedAt, &d.Attempts, &d.URL, &d.Secret)
	if errors.Is(err, pgx.ErrNoRows) {
		return delivery{}, false, nil
	}
	if err != nil {
		return delivery{}, false, fmt.Errorf("claim delivery %d: %w", id, err)
	}
	return d, true, nil
}

// DeliverySucceeded removes the delivery and ends its webhook's run of failures.
func (st *Store) DeliverySucceeded(ctx context.Context, d delivery) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var batch pgx.Batch
	batch.Queue(`DELETE FROM webhook_deliveries WHERE user_id = $1 AND id = $2`, d.UserID, d.ID)
	batch.Queue(`UPDATE webhooks SET failing_since = NULL WHERE user_id = $1 AND id = $2 AND failing_since IS NOT NULL`,
		d.UserID, d.WebhookID)
	if err := st.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return fmt.Errorf("record delivery %d: %w", d.ID, err)
	}
	return nil
}

// DeliveryFailed schedules the delivery's next attempt at next, or drops it when giveUp;
// the webhook's run of failures starts now if it had none, and the webhook is disabled
// once that run is older than disableAfter. It answers whether the webhook is disabled.
func (st *Store) DeliveryFailed(ctx context.Context, d delivery, now, next time.Time, giveUp bool, why string,
	disableAfter time.Duration) (bool, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var batch pgx.Batch
	if giveUp {
		batch.Queue(`DELETE FROM webhook_deliveries WHERE user_id = $1 AND id = $2`, d.UserID, d.ID)
	} else {
		batch.Queue(`UPDATE webhook_deliveries SET next_attempt_at = $3, last_error = $4 WHERE user_id = $1 AND id = $2`,
			d.UserID, d.ID, next, why)
	}
	var disabled bool
	batch.Queue(`UPDATE webhooks SET failing_since = coalesce(failing_since, $3),
			disabled_at = CASE WHEN coalesce(failing_since, $3) <= $4 THEN $3 END
		WHERE user_id = $1 AND id = $2 RETURNING disabled_at IS NOT NULL`,
		d.UserID, d.WebhookID, now, now.Add(-disableAfter)).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&disabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // deleted meanwhile
		}
		return err
	})
	if err := st.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return false, fmt.Errorf("record failed delivery %d: %w", d.ID, err)
	}
	if disabled {
		// A disabled webhook gets nothing more, queued or not.
		if _, err := st.pool.Exec(ctx, `DELETE FROM webhook_deliveries WHERE user_id = $1 AND webhook_id = $2`,
			d.UserID, d.WebhookID); err != nil {
			return true, fmt.Errorf("drop the deliveries of disabled webhook %d: %w", d.WebhookID, err)
		}
	}
	return disabled, nil
}

// DeliveryQueue is the number of queued deliveries and the age of the oldest, for the
// metrics.
func (st *Store) DeliveryQueue(ctx context.Context, now time.Time) (n int64, oldest time.Duration, err error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var first *time.Time
	err = st.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM webhook_deliveries`).Scan(&n, &first)
	if err != nil {
		return 0, 0, fmt.Errorf("read the delivery queue: %w", err)
	}
	if first != nil {
		oldest = now.Sub(*first)
	}
	return n, oldest, nil
}
