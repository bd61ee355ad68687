-- Version 10: account e-mail (contract section 12).
--
-- users.email_verified_at: when a local user proved the address (NULL: not yet).
--
-- account_tokens: the verification and password-reset tokens, by their SHA-256 only. A
-- token is "<user id>.<random>", so redeeming it is one lookup on the user's shard.
--
-- mail_queue: the mails to send. A row says what to send (kind) to whom; the mail itself,
-- and its token, are made when it is sent, so that no usable token is ever stored. The
-- worker claims a row by moving next_attempt_at ahead (a lease), and clears next_attempt_at
-- once the mail is sent (sent_at) or refused for good (failed_at).
--
-- Both per user, distributed by user_id and co-located with tasks on Citus; users stays a
-- reference table; mail_queue's ids come from a sequence, as in migration 9. Each change
-- inside EXECUTE (Citus).
DO $alter$
BEGIN
    EXECUTE 'ALTER TABLE users ADD COLUMN email_verified_at timestamptz';
END
$alter$;

CREATE TABLE account_tokens (
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash       bytea       NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('verify', 'reset')),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, hash)
);

CREATE TABLE mail_queue (
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id              bigserial,
    kind            text        NOT NULL CHECK (kind IN ('verify', 'reset')),
    recipient       text        NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    sent_at         timestamptz,
    failed_at       timestamptz,
    last_error      text,
    PRIMARY KEY (user_id, id)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('account_tokens', 'user_id', colocate_with => 'tasks');
        PERFORM create_distributed_table('mail_queue', 'user_id', colocate_with => 'tasks');
    END IF;
END
$citus$;

DO $index$
BEGIN
    EXECUTE 'CREATE INDEX mail_queue_due ON mail_queue (next_attempt_at) WHERE next_attempt_at IS NOT NULL';
END
$index$;
