-- Version 8: reminders (contract section 10).
--
-- remind_at is when the task's reminder comes; reminded_at when it fired (NULL while it is
-- armed). A write that sets remind_at clears reminded_at, so a changed time fires again;
-- the scheduler claims a due reminder by setting reminded_at in a single-row statement that
-- also records its task.reminder event, so of two replicas one fires it. Completed tasks
-- hold no armed reminder: the index leaves them out and the claim checks it.
--
-- The scheduler reads the next due reminder, and the due ones, from this partial index:
-- it holds only armed reminders, so waiting costs one index lookup, not a scan of tasks.
-- Each change inside EXECUTE, as in migration 6 (Citus).
DO $alter$
BEGIN
    EXECUTE 'ALTER TABLE tasks ADD COLUMN remind_at timestamptz';
    EXECUTE 'ALTER TABLE tasks ADD COLUMN reminded_at timestamptz';
    EXECUTE 'CREATE INDEX tasks_reminders_armed ON tasks (remind_at)
        WHERE remind_at IS NOT NULL AND reminded_at IS NULL AND NOT completed';
END
$alter$;
