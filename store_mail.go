package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Account e-mail's SQL (contract §12, migrations/010_account_email.sql).

// Kinds of account mail, and of their tokens.
const (
	mailVerify = "verify"
	mailReset  = "reset"
)

const queueMailSQL = `INSERT INTO mail_queue (user_id, kind, recipient, created_at, next_attempt_at)
	VALUES ($1, $2, $3, $4, $4)`

// QueueMail queues a mail of kind to the user's address.
func (st *Store) QueueMail(ctx context.Context, userID int64, kind, to string) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	if _, err := st.pool.Exec(ctx, queueMailSQL, userID, kind, to, time.Now()); err != nil {
		if isForeignKeyViolation(err) {
			return tokenError(errUserGone)
		}
		return fmt.Errorf("queue mail: %w", err)
	}
	return nil
}

// CreateUserWithMail is CreateUser that also queues the verification mail, in the same
// transaction: the account exists exactly when its mail is queued.
func (st *Store) CreateUserWithMail(ctx context.Context, email string, name *string, hash string) (User, error) {
	var u User
	err := st.inTx(ctx, "create user", func(tx pgx.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRow(ctx, `INSERT INTO users (email, name, password_hash)
			VALUES ($1, $2, $3) RETURNING `+userColumns, email, name, hash))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, queueMailSQL, u.ID, mailVerify, email, time.Now())
		return err
	})
	if isUniqueViolation(err) {
		return User{}, errEmailTaken
	}
	return u, err
}

// EmailVerified reports whether the user's address is verified.
func (st *Store) EmailVerified(ctx context.Context, userID int64) (bool, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var ok bool
	err := st.pool.QueryRow(ctx, `SELECT email_verified_at IS NOT NULL FROM users WHERE id = $1`, userID).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, st.miss(ctx, notFound("user"))
	}
	return ok, err
}

// queuedMail is a claimed mail.
type queuedMail struct {
	UserID, ID int64
	Kind, To   string
	CreatedAt  time.Time
	Attempts   int
}

// DueMail returns at most limit mails due at now, the oldest first.
func (st *Store) DueMail(ctx context.Context, now time.Time, limit int) ([][2]int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	rows, err := st.pool.Query(ctx, `SELECT user_id, id FROM mail_queue
		WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("read due mail: %w", err)
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]int64, error) {
		var d [2]int64
		err := row.Scan(&d[0], &d[1])
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read due mail: %w", err)
	}
	return due, nil
}

// ClaimMail leases a due mail for lease (see ClaimDelivery); ok is false when another
// worker took it.
func (st *Store) ClaimMail(ctx context.Context, userID, id int64, now time.Time, lease time.Duration) (queuedMail, bool, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	m := queuedMail{UserID: userID, ID: id}
	err := st.pool.QueryRow(ctx, `UPDATE mail_queue SET attempts = attempts + 1, next_attempt_at = $4
		WHERE user_id = $1 AND id = $2 AND next_attempt_at <= $3
		RETURNING kind, recipient, created_at, attempts`, userID, id, now, now.Add(lease)).
		Scan(&m.Kind, &m.To, &m.CreatedAt, &m.Attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return queuedMail{}, false, nil
	}
	if err != nil {
		return queuedMail{}, false, fmt.Errorf("claim mail %d: %w", id, err)
	}
	return m, true, nil
}

// IssueAccountToken stores a token's hash for the user; a reset token voids the user's
// earlier ones.
func (st *Store) IssueAccountToken(ctx context.Context, userID int64, kind string, hash []byte, expires time.Time) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var batch pgx.Batch
	batch.Queue("BEGIN")
	if kind == mailReset {
		batch.Queue(`DELETE FROM account_tokens WHERE user_id = $1 AND kind = 'reset'`, userID)
	}
	batch.Queue(`DELETE FROM account_tokens WHERE user_id = $1 AND expires_at < $2`, userID, time.Now())
	batch.Queue(`INSERT INTO account_tokens (user_id, hash, kind, expires_at) VALUES ($1, $2, $3, $4)`, userID, hash, kind, expires)
	batch.Queue("COMMIT")
	if err := st.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return fmt.Errorf("issue %s token: %w", kind, err)
	}
	return nil
}

// MailDone records the outcome of a send: sent, failed for good, or to be tried at next.
func (st *Store) MailDone(ctx context.Context, m queuedMail, now time.Time, sent, permanent bool, next time.Time, why string) error {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	var err error
	switch {
	case sent:
		_, err = st.pool.Exec(ctx, `UPDATE mail_queue SET next_attempt_at = NULL, sent_at = $3, last_error = NULL
			WHERE user_id = $1 AND id = $2`, m.UserID, m.ID, now)
	case permanent:
		_, err = st.pool.Exec(ctx, `UPDATE mail_queue SET next_attempt_at = NULL, failed_at = $3, last_error = $4
			WHERE user_id = $1 AND id = $2`, m.UserID, m.ID, now, why)
	default:
		_, err = st.pool.Exec(ctx, `UPDATE mail_queue SET next_attempt_at = $3, last_error = $4
			WHERE user_id = $1 AND id = $2`, m.UserID, m.ID, next, why)
	}
	if err != nil {
		return fmt.Errorf("record mail %d: %w", m.ID, err)
	}
	return nil
}

// VerifyEmail redeems a verification token: the address is verified; false when the
// token is unknown, used or expired.
func (st *Store) VerifyEmail(ctx context.Context, userID int64, hash []byte) (bool, error) {
	ok := false
	err := st.inTx(ctx, "verify e-mail", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM account_tokens WHERE user_id = $1 AND hash = $2 AND kind = 'verify'
			AND expires_at > $3`, userID, hash, time.Now())
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		ok = true
		_, err = tx.Exec(ctx, `UPDATE users SET email_verified_at = coalesce(email_verified_at, $2) WHERE id = $1`,
			userID, time.Now())
		return err
	})
	return ok, err
}

// ResetPassword redeems a reset token: the new hash, a new password epoch, every refresh
// token revoked, in one transaction; false when the token is unknown, used or expired.
func (st *Store) ResetPassword(ctx context.Context, userID int64, hash []byte, newHash string) (bool, error) {
	ok := false
	err := st.inTx(ctx, "reset password", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM account_tokens WHERE user_id = $1 AND hash = $2 AND kind = 'reset'
			AND expires_at > $3`, userID, hash, time.Now())
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		ok = true
		if _, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2, password_epoch = password_epoch + 1,
				email_verified_at = coalesce(email_verified_at, $3), updated_at = $3
			WHERE id = $1 AND issuer IS NULL`, userID, newHash, time.Now()); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL`,
			userID, time.Now())
		return err
	})
	return ok, err
}

// CleanMail deletes the queue's rows of mails sent or given up before before: kept a
// while for an operator's questions, not for ever.
func (st *Store) CleanMail(ctx context.Context, before time.Time) (int64, error) {
	ctx, cancel := st.timeout(ctx)
	defer cancel()
	tag, err := st.pool.Exec(ctx, `DELETE FROM mail_queue WHERE next_attempt_at IS NULL AND created_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("clean mail: %w", err)
	}
	return tag.RowsAffected(), nil
}
