-- Version 4: per-user task counters, so that the total of the lists every frontend loads
-- (unfiltered, or by status) and /api/v1/tasks/stats cost the same for a user with 100
-- tasks or 100,000: at most eight rows read, never a count of the user's tasks.
--
-- Kept exact by the task writes themselves: every statement that inserts, deletes or
-- changes the completion of tasks updates its user's counters in the same statement (store.go),
-- so the counters move in the transaction that moves the tasks. No trigger: triggers are
-- refused on distributed tables (specs/scale-out/spec.md). A counter row is created by the
-- first task that counts in it; no row reads as zero.
--
-- A user's counters are split into eight slots, a task counting in slot id % 8, so that
-- a user's concurrent writes rarely wait on the same counter row (store.go, taskSlot).
CREATE TABLE task_counts (
    user_id   bigint   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slot      smallint NOT NULL CHECK (slot BETWEEN 0 AND 7),
    total     bigint   NOT NULL DEFAULT 0,
    completed bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, slot),
    -- A write that forgot its counter would break this sooner or later: fail loudly
    -- rather than answer a wrong total for ever.
    CONSTRAINT task_counts_consistent CHECK (completed BETWEEN 0 AND total)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('task_counts', 'user_id', colocate_with => 'tasks');
    END IF;
END
$citus$;

-- The counters of the tasks users already have. Writers of an older binary still running
-- are held off until this transaction commits (SHARE conflicts with every write, not with
-- reads), so no write falls between the count and the commit.
LOCK TABLE tasks IN SHARE MODE;
INSERT INTO task_counts (user_id, slot, total, completed)
SELECT user_id, id % 8, count(*), count(*) FILTER (WHERE completed)
FROM tasks
GROUP BY user_id, id % 8;

-- Overdue (not completed, due before now) moves with the clock, so no counter can keep
-- it: /stats counts it from this index, which holds only the open tasks that have a due
-- date, so the count reads the user's overdue tasks alone, from the index.
--
-- Inside EXECUTE: Citus sends a CREATE INDEX on a distributed table to the workers with the
-- text of the query that holds it, and this file is one query of several statements, which
-- the workers refuse.
DO $index$
BEGIN
    EXECUTE 'CREATE INDEX tasks_user_open_due ON tasks (user_id, due_date)
        WHERE NOT completed AND due_date IS NOT NULL';
END
$index$;
