-- The ceiling of POST /api/v1/tasks with {"title","priority":"high","tags":[…]}: the
-- insert, the user's counters and the change feed's event (and webhook deliveries) in one
-- statement, inside BEGIN … COMMIT, then the notice, in one pipeline as the service sends
-- them (the user check runs only on a foreign-key violation). pgbench cannot bind
-- NULL: a parameter the service binds as NULL is NULLIF(:nul, 'NULL') with nul set to
-- NULL, still a parameter. Each title is new, as the load generator's are: it is
-- indexed.
\set u random(2, 1 + :nusers)
\set prio 2
\set n random(1, 1000000000)
\startpipeline
BEGIN;
WITH t AS (
	INSERT INTO tasks (user_id, title, description, completed, priority, tags, due_date, completed_at)
	VALUES (:u, 'Bench task ' || :n, NULLIF(:nul, 'NULL'), :f, :prio, :tags, NULLIF(:nul, 'NULL')::timestamptz,
		CASE WHEN :f::boolean THEN now() END)
	RETURNING id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id, remind_at),
counted AS (INSERT INTO task_counts AS c (user_id, slot, total, completed)
	SELECT :u, id % 8, 1, completed::int FROM t
	ON CONFLICT (user_id, slot) DO UPDATE SET total = c.total + 1, completed = c.completed + excluded.completed
	RETURNING 1),
ev_src AS (SELECT row_number() OVER (ORDER BY t.id) AS n, to_jsonb(t) AS payload FROM t
	WHERE true AND (SELECT count(*) FROM counted) >= 0),
ev_seq AS (INSERT INTO event_seqs AS s (user_id, last_id) SELECT :u, count(*) FROM ev_src HAVING count(*) > 0
	ON CONFLICT (user_id) DO UPDATE SET last_id = s.last_id + excluded.last_id RETURNING last_id),
ev AS (INSERT INTO events (user_id, id, type, payload, created_at)
	SELECT :u, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, 'task.created', ev_src.payload, now() FROM ev_src, ev_seq),
ev_hooks AS (INSERT INTO webhook_deliveries (user_id, webhook_id, event_id, type, payload, created_at, next_attempt_at)
	SELECT :u, w.id, ev_seq.last_id - (SELECT count(*) FROM ev_src) + ev_src.n, 'task.created', ev_src.payload, now(), now()
	FROM ev_src, ev_seq, webhooks w WHERE w.user_id = :u AND w.disabled_at IS NULL AND 'task.created' = ANY (w.events))
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id, remind_at FROM t;
COMMIT;
SELECT set_config('synchronous_commit', 'off', true), pg_notify('todo_events', :u::text);
\endpipeline
