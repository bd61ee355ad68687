#!/usr/bin/env bash
# A throwaway 3-node Citus cluster on this machine: a coordinator and two workers, each
# in its own data directory, on free loopback ports, trusting local connections (so the
# nodes reach each other without a password).
#
#   scripts/citus.sh start   start the nodes, create the extension on each, register the workers
#   scripts/citus.sh url     print the coordinator's URL (DATABASE_URL=$(scripts/citus.sh url) make run)
#   scripts/citus.sh stop    stop the nodes and remove their directories
#
# CITUS_DIR (default $TMPDIR/todo-citus) holds the nodes; CITUS_DB (default postgres) is
# the database the extension is created in. Citus itself must be installed in the server's
# library directory: README, "Testing on Citus".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg.sh

DIR=${CITUS_DIR:-${TMPDIR:-/tmp}/todo-citus}
DB=${CITUS_DB:-postgres}
NODES=(coordinator worker1 worker2)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sql() { # sql PORT STATEMENT
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d "$DB" -c "$2" >/dev/null
}

port_of() { cat "$DIR/$1.port"; }

start() {
  pg_find_bin
  local lib
  lib=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo "$PG_BIN/../lib")
  if [ ! -f "$lib/citus.so" ]; then
    echo "Citus is not installed in $lib: build it from https://github.com/citusdata/citus (./configure --without-libcurl; make install), see README \"Testing on Citus\"" >&2
    exit 1
  fi
  if [ -f "$DIR/coordinator.port" ]; then
    echo "a cluster already runs in $DIR (scripts/citus.sh stop first)" >&2
    exit 1
  fi
  mkdir -p "$DIR"
  local node port
  for node in "${NODES[@]}"; do
    port=$(free_port)
    PG_EXTRA_OPTS="-c shared_preload_libraries=citus -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
      pg_start "$DIR/$node" "$port" || { stop; exit 1; }
    echo "$port" >"$DIR/$node.port"
    if [ "$DB" != postgres ]; then
      "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE $DB" >/dev/null
    fi
    # On every node, in the service's database, before the workers are registered.
    sql "$port" "CREATE EXTENSION IF NOT EXISTS citus"
  done
  local coord
  coord=$(port_of coordinator)
  sql "$coord" "SELECT citus_set_coordinator_host('127.0.0.1', $coord)"
  for node in worker1 worker2; do
    sql "$coord" "SELECT citus_add_node('127.0.0.1', $(port_of "$node"))"
  done
  echo "Citus cluster up: $(url)" >&2
}

url() {
  [ -f "$DIR/coordinator.port" ] || { echo "no cluster in $DIR (scripts/citus.sh start)" >&2; exit 1; }
  echo "postgres://postgres@127.0.0.1:$(port_of coordinator)/$DB"
}

stop() {
  local node
  for node in "${NODES[@]}"; do
    if [ -d "$DIR/$node" ]; then pg_stop "$DIR/$node"; fi
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  url) url ;;
  stop) stop ;;
  *) echo "usage: scripts/citus.sh start|url|stop" >&2; exit 2 ;;
esac
