-- The ceiling of PATCH /api/v1/tasks/{id} with {"title","priority":"low"}: the one
-- UPDATE that applies any change (the service's updateTaskSQL), with the parameters the
-- service binds for that body (the user check runs only when it finds no row). NULL
-- parameters are NULLIF(:nul, 'NULL'), see create.sql. Each title is new, as the load
-- generator's are.
\set u random(2, 1 + :nusers)
\set tid (:u - 1) + random(0, :tasks_per_user - 1) * :task_users
\set prio 0
\set n random(1, 1000000000)
UPDATE tasks SET
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
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id;
