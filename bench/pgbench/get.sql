-- The ceiling of GET /api/v1/tasks/{id}: the statements one request runs, as the service
-- sends them: the bearer check (does the token's user still exist?) and the task, in one
-- round trip, as the service's pgx batch sends them. Variables: see bench/run.sh.
\set u random(2, 1 + :nusers)
\set tid (:u - 1) + random(0, :tasks_per_user - 1) * :task_users
\startpipeline
SELECT EXISTS (SELECT 1 FROM users WHERE id = :u AND issuer IS NULL);
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version FROM tasks
	WHERE user_id = :u AND id = :tid;
\endpipeline
