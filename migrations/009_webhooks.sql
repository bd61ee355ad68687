-- Version 9: webhooks (contract section 10).
--
-- webhooks are a user's subscriptions: the URL, the event types it takes (task.created,
-- task.updated, task.deleted, task.reminder), and the signing secret, kept as is because
-- every delivery is signed with it. failing_since is when the current run of failed
-- deliveries began (NULL while deliveries succeed); disabled_at is set once it has lasted
-- three days.
--
-- webhook_deliveries is the delivery queue: one row per event and subscription, written by
-- the statement that records the event (store_events.go), so a delivery exists exactly when
-- its change committed, and carrying its own copy of the event's payload, so that the
-- feed's retention cannot outrun the retries. A delivery is claimed by moving its
-- next_attempt_at past now (a lease: a replica that dies mid-delivery leaves it to be
-- tried again), and deleted once delivered or given up.
--
-- Both per user, distributed by user_id and co-located with tasks on Citus. Their ids come
-- from sequences (bigserial), not identity columns, which Citus refuses to distribute here.
CREATE TABLE webhooks (
    user_id       bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id            bigserial,
    url           text        NOT NULL CHECK (char_length(url) <= 2048),
    events        text[]      NOT NULL,
    secret        text        NOT NULL,
    created_at    timestamptz NOT NULL,
    failing_since timestamptz,
    disabled_at   timestamptz,
    PRIMARY KEY (user_id, id)
);

CREATE TABLE webhook_deliveries (
    user_id         bigint      NOT NULL,
    id              bigserial,
    webhook_id      bigint      NOT NULL,
    event_id        bigint      NOT NULL,
    type            text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    PRIMARY KEY (user_id, id)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('webhooks', 'user_id', colocate_with => 'tasks');
        PERFORM create_distributed_table('webhook_deliveries', 'user_id', colocate_with => 'tasks');
    END IF;
END
$citus$;

-- A subscription's deliveries go with it. Added once both tables are distributed: Citus
-- refuses a foreign key from a table it does not hold yet to one it does. The delivery
-- worker reads the due deliveries from the index. Inside EXECUTE (Citus).
DO $keys$
BEGIN
    EXECUTE 'ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_webhook
        FOREIGN KEY (user_id, webhook_id) REFERENCES webhooks (user_id, id) ON DELETE CASCADE';
    EXECUTE 'CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)';
END
$keys$;
