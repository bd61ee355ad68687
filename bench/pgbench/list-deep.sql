-- The ceiling of GET /api/v1/tasks?limit=20&cursor=… at the heavy user's deep page: as
-- list.sql, with the keyset condition the cursor adds. k_time and k_id are the position
-- the page's cursor holds (the last task of the page before), read by the load generator
-- while it walks the pages through the API.
\set u :heavy
\set lim 21
\startpipeline
SELECT id, user_id, title, description, completed, priority, tags, due_date,
	created_at, updated_at, completed_at, version, recurrence, recurrence_start, next_task_id FROM tasks WHERE user_id = :u AND (created_at, id) < (:k_time::timestamptz, :k_id::bigint) ORDER BY created_at DESC, id DESC LIMIT :lim;
SELECT coalesce(sum(total), 0)::bigint FROM task_counts WHERE user_id = :u;
\endpipeline
