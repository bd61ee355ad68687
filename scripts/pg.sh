#!/usr/bin/env bash
# Helpers to run a private PostgreSQL cluster for development and tests. Sourced by
# scripts/run.sh, scripts/test.sh and bench/run.sh; nothing here touches a system cluster.
#
#   pg_find_bin         sets PG_BIN, installing Debian's postgresql package when missing
#   pg_start DIR [PORT] initdb DIR if new, start it on a Unix socket in DIR (and PORT on
#                       127.0.0.1 when given), set PG_URL, PG_DATA, PG_SOCKET
#   pg_stop  DIR        stop the cluster in DIR

pg_find_bin() {
  local d
  for d in "${PG_BIN:-}" "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      PG_BIN=$d
      export PG_BIN
      return 0
    fi
  done
  echo "PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "run as root, or install postgresql yourself, or set DATABASE_URL" >&2
    return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  # Debian's package starts a system cluster; this project does not use it.
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for c in /etc/postgresql/*/main; do
      [ -d "$c" ] && pg_ctlcluster "$(basename "$(dirname "$c")")" main stop >/dev/null 2>&1 || true
    done
  fi
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ]; then PG_BIN=$d; export PG_BIN; return 0; fi
  done
  echo "PostgreSQL install failed" >&2
  return 1
}

# pg_as runs a PostgreSQL binary as the cluster's owner: PostgreSQL refuses to run as
# root, so root hands the cluster to the postgres user (created by the package).
pg_as() {
  if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
      useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_start() {
  local dir=$1 port=${2:-}
  pg_find_bin || return 1
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then pg_as true; chown postgres: "$dir"; fi
  chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    pg_as "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null || return 1
  fi
  local listen="''"
  if [ -n "$port" ]; then listen="127.0.0.1"; fi
  pg_as "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=$listen ${port:+-p $port} -c unix_socket_directories=$dir -c max_connections=300 ${PG_EXTRA_OPTS:-}" \
    start >/dev/null || { tail -n 20 "$dir/server.log" >&2; return 1; }
  PG_DATA=$dir
  PG_SOCKET=$dir
  PG_URL="postgres://postgres@/postgres?host=$dir${port:+&port=$port}"
  export PG_DATA PG_SOCKET PG_URL
}

pg_stop() {
  local dir=$1
  [ -f "$dir/postmaster.pid" ] || return 0
  pg_find_bin || return 1
  pg_as "$PG_BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}
