-- The ceiling of GET /api/v1/tasks?limit=20 (page 1): the page (limit + 1 rows, to know
-- whether a next page exists) and the total, in one round trip, as the service's pgx
-- batch sends them; the total is the sum of the user's counter rows (the user check runs only for an empty page). No filter is set, so
-- the statements name none. The user is random between u_lo and u_hi (the heavy user
-- alone for the heavy-user scenario).
\set u random(:u_lo, :u_hi)
\set lim 21
\startpipeline
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id FROM tasks WHERE user_id = :u ORDER BY created_at DESC, id DESC LIMIT :lim;
SELECT coalesce(sum(total), 0)::bigint FROM task_counts WHERE user_id = :u;
\endpipeline
