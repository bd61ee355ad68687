-- Version 7: the change feed (contract section 8).
--
-- events is the outbox: every task write records its events in its own transaction, in
-- the statement that changes the tasks (store_events.go), so an event exists exactly when
-- its change committed. A user's events are numbered 1, 2, 3… by event_seqs, whose one row
-- per user a write locks until it commits: a user's ids therefore increase in commit order,
-- with no gaps, and a stream that has sent id n knows the next one is n + 1. payload is the
-- task's row as the write left it (or {"id": n} for a deletion), rendered as the API's task
-- object when it is sent.
--
-- event_tickets are the single-use, 60-second tickets of POST /api/v1/events/ticket, held
-- by their hash; token_expires_at is when the bearer token that asked for one expires, which
-- is when a stream opened with it ends.
--
-- All three are per user, distributed by user_id and co-located with tasks on Citus, so
-- that recording events stays inside the write's single-shard statement.
CREATE TABLE events (
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id         bigint      NOT NULL,
    type       text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);

CREATE TABLE event_seqs (
    user_id bigint NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    last_id bigint NOT NULL CHECK (last_id >= 0)
);

CREATE TABLE event_tickets (
    user_id          bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash             bytea       NOT NULL,
    expires_at       timestamptz NOT NULL,
    token_expires_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, hash)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('events', 'user_id', colocate_with => 'tasks');
        PERFORM create_distributed_table('event_seqs', 'user_id', colocate_with => 'tasks');
        PERFORM create_distributed_table('event_tickets', 'user_id', colocate_with => 'tasks');
    END IF;
END
$citus$;

-- The retention clean-up finds users with events older than EVENTS_RETENTION from this
-- index, rather than reading every event. Inside EXECUTE for Citus, as in migration 4.
DO $index$
BEGIN
    EXECUTE 'CREATE INDEX events_created_at ON events (created_at)';
END
$index$;
