-- The ceiling of GET /api/v1/tasks/{id}: the one statement a request runs. The bearer's
-- user check runs only when it finds no row, which never happens here. Variables: see
-- bench/run.sh.
\set u random(2, 1 + :nusers)
\set tid (:u - 1) + random(0, :tasks_per_user - 1) * :task_users
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id FROM tasks
	WHERE user_id = :u AND id = :tid;
