#!/usr/bin/env bash
# The benchmark (make bench; make bench-quick is BENCH_QUICK=1 make bench).
#
# Starts a throwaway PostgreSQL cluster in a fresh temporary directory, seeds it through
# SQL (bench/seed.sql), starts the real binary, and drives it over HTTP from a separate
# process (bench/loadgen) in each scenario; in the same run, pgbench runs the very SQL
# statements each scenario's request runs (bench/pgbench/*.sql) with the same client
# count: the ceiling. Prints the table (and keeps it, with the raw records, in
# bench/out/<UTC time>/); see specs/bench/ for what is measured and why.
#
# Knobs (environment): BENCH_QUICK=1 (about a minute: a small data set, one round, short
# runs), BENCH_ROUNDS, BENCH_DURATION and BENCH_WARMUP (seconds), BENCH_CONNS (32),
# BENCH_PORT (18080), BENCH_LOG_LEVEL (the service's LOG_LEVEL, default info). Other variables
# the service reads (DB_MAX_CONNS, HASH_CONCURRENCY, GOMAXPROCS, ...) pass through.
# On a machine with cores to spare, BENCH_CORES_DB, BENCH_CORES_SERVICE and
# BENCH_CORES_LOAD (taskset core lists, e.g. 0-3, 4-11, 12-15) pin PostgreSQL, the service,
# and the load generator with pgbench, so that the database, not the machine, is the
# limit and the ratio to the ceiling reads as the service's overhead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
. scripts/pg.sh

QUICK=${BENCH_QUICK:-0}
CONNS=${BENCH_CONNS:-32}
MEM_CONNS=256
PORT=${BENCH_PORT:-18080}
URL="http://127.0.0.1:$PORT"
PASSWORD="bench-password-1"
HEAVY=1 # the heavy user's id; the load uses it and NUSERS regular users, ids 2 onwards

# Data sets: label users task_users tasks_per_user heavy_tasks deep_page, and what runs.
if [ "$QUICK" = 1 ]; then
  ROUNDS=${BENCH_ROUNDS:-1}
  DURATION=${BENCH_DURATION:-2}
  WARMUP=${BENCH_WARMUP:-1}
  PGB_WARMUP=0
  NUSERS=32
  SIZES=("100k 1000 900 100 10000 100")
  SIZE_DESC=("100k=1,000 users, 100,000 tasks (heavy user: 10,000; deep page: 100)")
  MAIN_SCENARIOS="get list list-heavy list-deep patch toggle create"
else
  ROUNDS=${BENCH_ROUNDS:-3}
  DURATION=${BENCH_DURATION:-15}
  WARMUP=${BENCH_WARMUP:-5}
  PGB_WARMUP=3
  NUSERS=100
  SIZES=("1M 10000 9000 100 100000 1000" "10k 10000 100 100 0 0")
  SIZE_DESC=("1M=10,000 users, 1,000,000 tasks (heavy user: 100,000; deep page: 1,000)"
    "10k=10,000 users, 10,000 tasks (100 users with 100 each)")
  MAIN_SCENARIOS="get list list-heavy list-deep patch toggle create"
fi
# The change feed: idle streams, then the fan-out to one stream per user of FEED_FAN users.
FEED_STREAMS=${BENCH_FEED_STREAMS:-10000}
if [ "$QUICK" = 1 ]; then
  FEED_FAN=200 FEED_IDLE=5s FEED_WRITE=5s
else
  FEED_FAN=1000 FEED_IDLE=20s FEED_WRITE=20s
fi
SMALL_SCENARIOS="get list"
TOKEN_IDS="$HEAVY,2-$((1 + NUSERS))"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/out/$STAMP"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

WORK=$(mktemp -d)                          # binaries, tokens, pgbench logs
PGDIR=$(mktemp -d /tmp/todo-bench-pg.XXXXXX) # the cluster and its socket, owned by its user
SERVER_PID=""
cleanup() {
  for p in $(ps -o pid= --ppid $$); do kill -TERM "$p" 2>/dev/null || true; done
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  pg_stop "$PGDIR" || true
  rm -rf "$WORK" "$PGDIR"
}
trap cleanup EXIT
say() { printf '[%4ds] %s\n' "$SECONDS" "$*" >&2; }
trap 'say "failed: line $LINENO: $BASH_COMMAND"' ERR

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  say "port $PORT is in use; set BENCH_PORT"
  exit 1
fi

# Pinning: this script (so the load generator, pgbench and psql it starts) first; the
# cluster and the service are moved to their own cores once started.
if [ -n "${BENCH_CORES_LOAD:-}" ]; then taskset -p -c "$BENCH_CORES_LOAD" $$ >/dev/null; fi

say "== build"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$WORK/todo" .
go build -o "$WORK/loadgen" ./bench/loadgen
LOADGEN="$WORK/loadgen"

say "== PostgreSQL (throwaway cluster)"
# Everything fits in shared buffers; no checkpoint or autovacuum runs in the middle of a
# measurement (the script vacuums between rounds); pg_stat_statements counts statements.
PG_EXTRA_OPTS="-c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=1h -c autovacuum=off \
  -c shared_preload_libraries=pg_stat_statements" pg_start "$PGDIR"
PSQL="$PG_BIN/psql"
PGBENCH="$PG_BIN/pgbench"
[ -x "$PSQL" ] || PSQL=psql
[ -x "$PGBENCH" ] || PGBENCH=pgbench
PG_PID=$(head -n 1 "$PGDIR/postmaster.pid")
if [ -n "${BENCH_CORES_DB:-}" ]; then # backends forked later inherit the postmaster's cores
  for p in $PG_PID $(ps -o pid= --ppid "$PG_PID"); do taskset -p -c "$BENCH_CORES_DB" "$p" >/dev/null; done
fi
CLK=$(getconf CLK_TCK)
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -U postgres "$@"; }
sql -d postgres -c "CREATE DATABASE bench" -c "CREATE EXTENSION pg_stat_statements"
stmt_calls() {
  sql -d postgres -At -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')"
}

SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
# Metrics on, as by default, on a free loopback port so that a busy :9464 cannot stop
# the run; METRICS_ADDR= (empty) measures the service without them. Every login of the
# load generator comes from one address, and a login takes its attempt from the failed-
# login budget while its hash runs: the login scenario measures hashing, not that limit,
# so the limit is out of its way.
start_server() {
  METRICS_ADDR=${METRICS_ADDR-127.0.0.1:0} LOGIN_RATE_LIMIT=1000000 \
  DATABASE_URL="postgres://postgres@/bench?host=$PGDIR" PORT=$PORT JWT_SECRET_KEY=$SECRET \
    LOG_LEVEL=${BENCH_LOG_LEVEL:-info} JWT_ACCESS_TTL=12h APP_ENV=production \
    ${BENCH_CORES_SERVICE:+taskset -c "$BENCH_CORES_SERVICE"} "$WORK/todo" >>"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  "$LOADGEN" wait -url "$URL" -timeout 60s
}
stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
}

say "== the password hash, made by the service"
start_server
"$LOADGEN" register -url "$URL" -email "hash@bench.example" -password "$PASSWORD"
HASH=$(sql -d bench -At -c "SELECT password_hash FROM users WHERE email = 'hash@bench.example'")
stop_server

# summary of a record for the progress log
brief() {
  sed -E 's/.*"rps":([0-9.]+).*"p50_ms":([0-9.]+).*"p99_ms":([0-9.]+).*"errors":([0-9]+).*/\1 req\/s  p50 \2 ms  p99 \3 ms  errors \4/' <<<"$1" |
    awk '{ $1 = sprintf("%.0f", $1); print }'
}

# record appends a run's record with the statements the database ran meanwhile.
record() {
  local line=$1 calls=$2
  line=${line/\"stmt_calls\":0/\"stmt_calls\":$calls}
  printf '%s\n' "$line" >>"$RESULTS"
}

api_run() { # scenario conns round
  local scenario=$1 conns=$2 round=$3 c0 c1 line
  c0=$(stmt_calls)
  line=$("$LOADGEN" run -url "$URL" -scenario "$scenario" -c "$conns" \
    -warmup "${WARMUP}s" -d "${DURATION}s" -tokens "$WORK/tokens" -cursor "${CURSOR:-}" \
    -password "$PASSWORD" -heavy-user "$HEAVY" -task-users "$TASK_USERS" -tasks-per-user "$PER_USER" \
    -pid "$SERVER_PID" -db-pid "$PG_PID" -clk-tck "$CLK" -size "$SIZE" -round "$round")
  c1=$(stmt_calls)
  record "$line" $((c1 - c0))
  say "$(printf '%-5s r%d %-10s api     c=%-3d %s' "$SIZE" "$round" "$scenario" "$conns" "$(brief "$line")")"
}

pgbench_run() { # scenario round
  local scenario=$1 round=$2 script=$1 lo=2 hi=$((1 + NUSERS)) c0 c1 line
  case $scenario in
    list-heavy) script=list lo=$HEAVY hi=$HEAVY ;;
  esac
  c0=$(stmt_calls)
  line=$("$LOADGEN" pgbench -scenario "$scenario" -size "$SIZE" -round "$round" -c "$CONNS" \
    -db-pid "$PG_PID" -clk-tck "$CLK" -warmup "${PGB_WARMUP}s" -logdir "$WORK" -- \
    "$PGBENCH" -n -M prepared -c "$CONNS" -j 2 -T "$DURATION" -f "bench/pgbench/$script.sql" \
    -D nusers="$NUSERS" -D task_users="$TASK_USERS" -D tasks_per_user="$PER_USER" \
    -D u_lo="$lo" -D u_hi="$hi" -D heavy="$HEAVY" -D nul=NULL -D t=true -D f=false \
    -D title="Bench task" -D tags="{bench,load}" -D empty_tags="{}" \
    -D k_time="${CURSOR_TIME:-0}" -D k_id="${CURSOR_ID:-0}" \
    -h "$PGDIR" -U postgres bench)
  c1=$(stmt_calls)
  record "$line" $((c1 - c0))
  say "$(printf '%-5s r%d %-10s pgbench c=%-3d %s' "$SIZE" "$round" "$scenario" "$CONNS" "$(brief "$line")")"
}

# settle writes every dirty page out, so that no measurement waits for the writeback of
# what seeding or vacuuming left behind (a commit's fsync would queue behind it).
settle() {
  sql -d bench -c "CHECKPOINT"
  sync
}

# forget_created removes what create runs added, so that every round lists the same data.
forget_created() {
  sql -d bench -c "DELETE FROM tasks WHERE id > $SEEDED_TASKS"
}

for i in "${!SIZES[@]}"; do
  read -r SIZE USERS TASK_USERS PER_USER HEAVY_TASKS DEEP_PAGE <<<"${SIZES[$i]}"
  SEEDED_TASKS=$((TASK_USERS * PER_USER + HEAVY_TASKS))
  say "== data set $SIZE: seeding $USERS users, $SEEDED_TASKS tasks"
  sql -d bench -v users="$USERS" -v task_users="$TASK_USERS" -v tasks_per_user="$PER_USER" \
    -v heavy_tasks="$HEAVY_TASKS" -v hash="$HASH" -f bench/seed.sql
  settle

  say "== tokens (logins through the API) and the deep-page cursor"
  start_server
  "$LOADGEN" tokens -url "$URL" -password "$PASSWORD" -ids "$TOKEN_IDS" -out "$WORK/tokens"
  CURSOR="" CURSOR_TIME="" CURSOR_ID=""
  scenarios=$MAIN_SCENARIOS
  if [ "$HEAVY_TASKS" -eq 0 ]; then
    scenarios=$SMALL_SCENARIOS
  else
    "$LOADGEN" cursor -url "$URL" -tokens "$WORK/tokens" -user "$HEAVY" -page "$DEEP_PAGE" >"$WORK/cursor"
    . "$WORK/cursor"
  fi
  # A fresh process for the measurements, so that its memory shows no login.
  stop_server
  start_server

  for round in $(seq 1 "$ROUNDS"); do
    for scenario in $scenarios; do
      api_run "$scenario" "$CONNS" "$round"
      [ "$scenario" = create ] && forget_created
      pgbench_run "$scenario" "$round"
      [ "$scenario" = create ] && forget_created
    done
    sql -d bench -c "VACUUM (ANALYZE) tasks"
    settle
  done

  if [ "$i" -eq 0 ]; then
    say "== memory under $MEM_CONNS connections (a fresh process; logins excluded)"
    stop_server
    start_server
    api_run mix "$MEM_CONNS" 1
    forget_created
    sql -d bench -c "VACUUM (ANALYZE) tasks"
    settle

    say "== login (Argon2id)"
    for round in $(seq 1 "$ROUNDS"); do
      api_run login "$CONNS" "$round"
      pgbench_run login "$round"
    done

    say "== the change feed: $FEED_STREAMS idle streams, then the fan-out to $FEED_FAN users (a fresh process)"
    "$LOADGEN" tokens -url "$URL" -password "$PASSWORD" -ids "1-$FEED_FAN" -out "$WORK/fan-tokens"
    stop_server
    EVENTS_MAX_PER_USER=1000 start_server
    "$LOADGEN" feed -url "$URL" -tokens "$WORK/tokens" -fan-tokens "$WORK/fan-tokens" -streams "$FEED_STREAMS" \
      -idle "$FEED_IDLE" -d "$FEED_WRITE" -pid "$SERVER_PID" -db-pid "$PG_PID" -clk-tck "$CLK" -- \
      "$PSQL" -X -At -h "$PGDIR" -U postgres -d postgres -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')" >"$OUT/feed.md"
    say "$(grep -E 'idle streams|p50' "$OUT/feed.md" | tr '\n' ' ')"
    forget_created
  fi
  stop_server
done

say "== report"
{
  echo "### Benchmark run $STAMP"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores," \
    "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)"
  echo "- Go: $(go env GOVERSION); PostgreSQL: $("$PG_BIN/postgres" --version | sed 's/.*) //')"
  echo "- service: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- '*.go' 2>/dev/null || echo ' with local changes')"
  # The service's own start line says how it sized itself for the cores it was given.
  start=$(grep -m1 '"msg":"listening"' "$OUT/server.log" || true)
  echo "- service: GOMAXPROCS $(sed -nE 's/.*"gomaxprocs":([0-9]+).*/\1/p' <<<"$start")," \
    "HASH_CONCURRENCY $(sed -nE 's/.*"hash_concurrency":([0-9]+).*/\1/p' <<<"$start")," \
    "soft memory limit $(sed -nE 's/.*"memory_limit_bytes":([0-9]+).*/\1/p' <<<"$start" | awk '{ printf "%d MiB", $1 / 1048576 }')"
  echo "- pinning: database ${BENCH_CORES_DB:-any core}, service ${BENCH_CORES_SERVICE:-any core}, load and pgbench ${BENCH_CORES_LOAD:-any core}"
  echo "- $CONNS connections, $ROUNDS round(s), ${WARMUP} s warm-up, ${DURATION} s measured; medians over rounds; ratio = median of same-round API ÷ ceiling"
  desc=()
  for d in "${SIZE_DESC[@]}"; do desc+=(-size "$d"); done
  "$LOADGEN" report -in "$RESULTS" "${desc[@]}"
  [ -f "$OUT/feed.md" ] && { echo; cat "$OUT/feed.md"; }
} | tee "$OUT/report.md"
gzip -f "$OUT/server.log" # a line per request: about half a gigabyte for a full run
say "records and report: $OUT"
