-- Version 2: the login and registration rate limits, shared by every replica.
--
-- One token bucket per limiter key: tokens left as of updated_at. The key is a SHA-256 of
-- the limiter's name and the client address or e-mail, so no address or e-mail is stored.
-- A row is worth keeping only while its bucket is below full (a minute at the default
-- rates); each replica deletes older rows every minute (Store.CleanRateLimits).
-- A new, empty table: no rewrite of existing data.
-- allowed is the last counted event's verdict, so that one statement both counts and
-- answers.
CREATE TABLE rate_limits (
    key        bytea            PRIMARY KEY,
    tokens     double precision NOT NULL,
    allowed    boolean          NOT NULL DEFAULT true,
    updated_at timestamptz      NOT NULL
);
CREATE INDEX rate_limits_updated ON rate_limits (updated_at);

-- On Citus: distributed by its own key, so that each counted event is one single-shard
-- statement. It has no user_id and joins nothing, so it stays out of tasks' group.
DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('rate_limits', 'key', colocate_with => 'none');
    END IF;
END
$citus$;
