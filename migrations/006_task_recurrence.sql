-- Version 6: recurring tasks (contract section 9).
--
-- recurrence is the task's RRULE as the client sent it, upper-cased; recurrence_start the
-- series' first due date, whose wall time in the owner's zone is the rule's DTSTART,
-- carried from task to task; next_task_id the successor created when the task was
-- completed, set once, so that completing the task again never creates a second.
-- A recurring task needs a due date: the service says so with a 422 before this CHECK
-- could fire. On Citus the columns are added on every shard; every statement still names
-- user_id.
--
-- One change per statement, each inside EXECUTE: Citus refuses an ALTER TABLE that adds a
-- constraint beside other subcommands, and it sends a distributed table's DDL to the
-- workers with the text of the query that holds it, which for this file is several
-- statements the workers refuse (as for the index of migration 4).
DO $alter$
BEGIN
    EXECUTE 'ALTER TABLE tasks ADD COLUMN recurrence text
        CONSTRAINT tasks_recurrence_length CHECK (char_length(recurrence) <= 500)';
    EXECUTE 'ALTER TABLE tasks ADD COLUMN recurrence_start timestamptz';
    EXECUTE 'ALTER TABLE tasks ADD COLUMN next_task_id bigint';
    EXECUTE 'ALTER TABLE tasks ADD CONSTRAINT tasks_recurrence_due
        CHECK (recurrence IS NULL OR due_date IS NOT NULL)';
END
$alter$;
