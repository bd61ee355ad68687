-- The ceiling of POST /api/v1/tasks with {"title","priority":"high","tags":[…]}: the
-- insert and the user's counters in one statement (the user check runs only on a foreign-key violation). pgbench cannot bind
-- NULL: a parameter the service binds as NULL is NULLIF(:nul, 'NULL') with nul set to
-- NULL, still a parameter. Each title is new, as the load generator's are: it is
-- indexed.
\set u random(2, 1 + :nusers)
\set prio 2
\set n random(1, 1000000000)
WITH t AS (
	INSERT INTO tasks (user_id, title, description, completed, priority, tags, due_date, completed_at)
	VALUES (:u, 'Bench task ' || :n, NULLIF(:nul, 'NULL'), :f, :prio, :tags, NULLIF(:nul, 'NULL')::timestamptz,
		CASE WHEN :f::boolean THEN now() END)
	RETURNING id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id),
counted AS (INSERT INTO task_counts AS c (user_id, slot, total, completed)
	SELECT :u, id % 8, 1, completed::int FROM t
	ON CONFLICT (user_id, slot) DO UPDATE SET total = c.total + 1, completed = c.completed + excluded.completed)
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id FROM t;
