-- The ceiling of PATCH /api/v1/tasks/{id} with {"title","priority":"low"}: the one
-- UPDATE that applies any change with its event (the service's updateTaskSQL), inside
-- BEGIN … COMMIT, then the notice, in one pipeline, with the parameters the
-- service binds for that body (the user check runs only when it finds no row). NULL
-- parameters are NULLIF(:nul, 'NULL'), see create.sql. Each title is new, as the load
-- generator's are.
\set u random(2, 1 + :nusers)
\set tid (:u - 1) + random(0, :tasks_per_user - 1) * :task_users
\set prio 0
\set n random(1, 1000000000)
\startpipeline
BEGIN;
WITH t AS (UPDATE tasks SET
	title = CASE WHEN :t THEN ('Patched ' || :n)::text ELSE title END,
	description = CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE description END,
	completed = CASE WHEN :f THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END,
	priority = CASE WHEN :t THEN :prio::smallint ELSE priority END,
	tags = CASE WHEN :f THEN :empty_tags::text[] ELSE tags END,
	due_date = CASE WHEN :f THEN NULLIF(:nul, 'NULL')::timestamptz ELSE due_date END,
	completed_at = CASE WHEN NOT (CASE WHEN :f THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END) THEN NULL
		WHEN completed THEN completed_at ELSE now() END,
	updated_at = CASE WHEN ((CASE WHEN :t THEN ('Patched ' || :n)::text ELSE title END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE description END), (CASE WHEN :f THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END), (CASE WHEN :t THEN :prio::smallint ELSE priority END), (CASE WHEN :f THEN :empty_tags::text[] ELSE tags END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::timestamptz ELSE due_date END)) IS DISTINCT FROM
		(title, description, completed, priority, tags, due_date) THEN now() ELSE updated_at END,
	version = version + CASE WHEN ((CASE WHEN :t THEN ('Patched ' || :n)::text ELSE title END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::text ELSE description END), (CASE WHEN :f THEN NOT completed WHEN :f THEN :f::boolean ELSE completed END), (CASE WHEN :t THEN :prio::smallint ELSE priority END), (CASE WHEN :f THEN :empty_tags::text[] ELSE tags END), (CASE WHEN :f THEN NULLIF(:nul, 'NULL')::timestamptz ELSE due_date END)) IS DISTINCT FROM
		(title, description, completed, priority, tags, due_date) THEN 1 ELSE 0 END
	WHERE user_id = :u AND id = :tid AND (NULLIF(:nul, 'NULL')::bigint[] IS NULL OR version = ANY (NULLIF(:nul, 'NULL')::bigint[]))
	RETURNING id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id, remind_at),
ev_src AS (SELECT row_number() OVER (ORDER BY t.id) AS n, to_jsonb(t) AS payload FROM t
	WHERE t.updated_at >= now()),
ev_seq AS (INSERT INTO event_seqs AS s (user_id, last_id) SELECT :u, count(*) FROM ev_src HAVING count(*) > 0
	ON CONFLICT (user_id) DO UPDATE SET last_id = s.last_id + excluded.last_id RETURNING last_id),
ev AS (INSERT INTO events (user_id, id, type, payload, created_at)
	SELECT :u, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, 'task.updated', ev_src.payload, now() FROM ev_src, ev_seq),
ev_hooks AS (INSERT INTO webhook_deliveries (user_id, webhook_id, event_id, type, payload, created_at, next_attempt_at)
	SELECT :u, w.id, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, 'task.updated', ev_src.payload, now(), now()
	FROM ev_src, ev_seq, webhooks w WHERE w.user_id = :u AND w.disabled_at IS NULL AND 'task.updated' = ANY (w.events))
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id, remind_at FROM t;
COMMIT;
SELECT set_config('synchronous_commit', 'off', true), pg_notify('todo_events', :u::text);
\endpipeline
