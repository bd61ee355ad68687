-- Benchmark data, generated in the database. Run by bench/run.sh with psql variables:
--
--   users           how many local users (ids 1 .. users; emails user<id>@bench.example)
--   task_users      how many of them, from id 2 on, hold tasks_per_user tasks each
--   tasks_per_user  tasks of each of those users
--   heavy_tasks     tasks of the heavy user, id 1 (0 for none)
--   hash            the Argon2id PHC hash every user gets, made by the service itself
--
-- Task ids are deterministic, so that the load generator and the pgbench scripts can pick
-- a random task of a given user without asking the database: the tasks of user u
-- (2 <= u <= task_users + 1) are ids (u - 1) + n * task_users for n in [0, tasks_per_user);
-- they are interleaved, so that one user's tasks lie on different heap pages, as they do
-- when many users write at once. The heavy user's tasks follow, with ids
-- task_users * tasks_per_user + 1 onwards. created_at grows with id, one second apart,
-- the newest task being now.
\set ON_ERROR_STOP on
\timing off

BEGIN;
-- CASCADE: every per-user table references users.
TRUNCATE users, tasks, task_counts, refresh_tokens, idempotency_keys, events, event_seqs, event_tickets CASCADE;

INSERT INTO users (id, email, name, password_hash)
SELECT g, 'user' || g || '@bench.example', 'Bench user ' || g, :'hash'
FROM generate_series(1, :users) AS g;
SELECT setval(pg_get_serial_sequence('users', 'id'), :users) \gset

-- Loading into a table with seven indexes is several times slower than building them
-- afterwards: the secondary indexes are dropped and rebuilt from their own definitions.
CREATE TEMP TABLE bench_task_indexes ON COMMIT DROP AS
    SELECT indexdef FROM pg_indexes
    WHERE schemaname = current_schema() AND tablename = 'tasks' AND indexname <> 'tasks_pkey';
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT indexname FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'tasks' AND indexname <> 'tasks_pkey'
    LOOP
        EXECUTE format('DROP INDEX %I', r.indexname);
    END LOOP;
END
$$;

\set regular (:task_users * :tasks_per_user)
\set total (:regular + :heavy_tasks)
INSERT INTO tasks (user_id, id, title, description, completed, priority, tags, due_date,
                   created_at, updated_at, completed_at)
SELECT CASE WHEN g <= :regular THEN 2 + (g - 1) % :task_users ELSE 1 END,
       g,
       'Task ' || g || ' of the benchmark',
       CASE WHEN g % 3 = 0 THEN 'Description of task ' || g || ', long enough to look real.' END,
       g % 4 = 0,
       (g % 3)::smallint,
       (CASE g % 5 WHEN 0 THEN '{home}' WHEN 1 THEN '{work,urgent}' ELSE '{}' END)::text[],
       CASE WHEN g % 2 = 0 THEN date_trunc('day', now()) + (g % 90 - 30) * interval '1 day' END,
       ts, ts,
       CASE WHEN g % 4 = 0 THEN ts END
FROM generate_series(1, :total) AS g,
     LATERAL (SELECT now() - (:total - g) * interval '1 second' AS ts) AS t;
SELECT setval(pg_get_serial_sequence('tasks', 'id'), :total) \gset
INSERT INTO task_counts (user_id, slot, total, completed)
SELECT user_id, id % 8, count(*), count(*) FILTER (WHERE completed) FROM tasks GROUP BY 1, 2;

SET LOCAL maintenance_work_mem = '256MB';
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT indexdef FROM bench_task_indexes LOOP
        EXECUTE r.indexdef;
    END LOOP;
END
$$;
COMMIT;

-- Statistics and the visibility map, so that plans and index-only scans are those of a
-- settled table.
VACUUM (ANALYZE) users;
VACUUM (ANALYZE) tasks;
VACUUM (ANALYZE) task_counts;
