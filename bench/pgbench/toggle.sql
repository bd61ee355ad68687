-- The ceiling of PATCH /api/v1/tasks/{id}/complete with no body: the service's
-- BEGIN, lockTaskSQL, completeOneTripSQL (its event included), COMMIT and the notice in
-- one pipeline, as completeTask sends
-- them for a task that needs no successor (the bench's tasks do not recur), with toggle
-- set and every other change unset.
-- NULL parameters are NULLIF(:nul, 'NULL'), see create.sql. The title, bound but unused
-- since set_title is false, is '' in the service; pgbench cannot bind an empty string.
\set u random(2, 1 + :nusers)
\set tid (:u - 1) + random(0, :tasks_per_user - 1) * :task_users
\set prio 0
\startpipeline
BEGIN;
SELECT FROM tasks WHERE user_id = :u AND id = :tid FOR UPDATE;
WITH prior AS (SELECT completed AS was_completed FROM tasks WHERE user_id = :u AND id = :tid),
t AS (UPDATE tasks SET
	title = CASE WHEN :f THEN :title::text ELSE title END,
	description = CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE description END,
	completed = CASE WHEN :t THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END,
	priority = CASE WHEN :f THEN :prio::smallint ELSE priority END,
	tags = CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text[] ELSE tags END,
	due_date = CASE WHEN :f THEN NULLIF(:nul, 'NULL')::timestamptz ELSE due_date END,
	recurrence = CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE recurrence END,
	recurrence_start = CASE WHEN :f OR :f THEN (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::timestamptz ELSE due_date END) ELSE recurrence_start END,
	completed_at = CASE WHEN NOT (CASE WHEN :t THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END) THEN NULL
		WHEN completed THEN completed_at ELSE now() END,
	updated_at = CASE WHEN ((CASE WHEN :f THEN :title::text ELSE title END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE description END), (CASE WHEN :t THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END), (CASE WHEN :f THEN :prio::smallint ELSE priority END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text[] ELSE tags END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::timestamptz ELSE due_date END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE recurrence END)) IS DISTINCT FROM
		(title, description, completed, priority, tags, due_date, recurrence) THEN now() ELSE updated_at END,
	version = version + CASE WHEN ((CASE WHEN :f THEN :title::text ELSE title END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE description END), (CASE WHEN :t THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END), (CASE WHEN :f THEN :prio::smallint ELSE priority END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text[] ELSE tags END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::timestamptz ELSE due_date END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE recurrence END)) IS DISTINCT FROM
		(title, description, completed, priority, tags, due_date, recurrence) THEN 1 ELSE 0 END
	WHERE user_id = :u AND id = :tid AND NOT (recurrence IS NOT NULL AND next_task_id IS NULL AND NOT completed AND (CASE WHEN :t THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END)) AND (NULLIF(:nul, 'NULL')::bigint[] IS NULL OR version = ANY (NULLIF(:nul, 'NULL')::bigint[]))
	RETURNING id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id, remind_at),
counted AS (UPDATE task_counts SET completed = task_counts.completed + CASE WHEN t.completed THEN 1 ELSE -1 END
	FROM t, prior WHERE task_counts.user_id = :u AND slot = t.id % 8 AND t.completed <> prior.was_completed
	RETURNING 1),
ev_src AS (SELECT row_number() OVER (ORDER BY t.id) AS n, to_jsonb(t) AS payload FROM t
	WHERE t.updated_at >= now() AND (SELECT count(*) FROM counted) >= 0),
ev_seq AS (INSERT INTO event_seqs AS s (user_id, last_id) SELECT :u, count(*) FROM ev_src HAVING count(*) > 0
	ON CONFLICT (user_id) DO UPDATE SET last_id = s.last_id + excluded.last_id RETURNING last_id),
ev AS (INSERT INTO events (user_id, id, type, payload, created_at)
	SELECT :u, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, 'task.updated', ev_src.payload, now() FROM ev_src, ev_seq),
ev_hooks AS (INSERT INTO webhook_deliveries (user_id, webhook_id, event_id, type, payload, created_at, next_attempt_at)
	SELECT :u, w.id, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, 'task.updated', ev_src.payload, now(), now()
	FROM ev_src, ev_seq, webhooks w WHERE w.user_id = :u AND w.disabled_at IS NULL AND 'task.updated' = ANY (w.events))
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id, prior.was_completed FROM t, prior;
COMMIT;
SELECT set_config('synchronous_commit', 'off', true), pg_notify('todo_events', :u::text);
\endpipeline

