#!/usr/bin/env bash
# The run command (make run): with DATABASE_URL, starts the server against it; without,
# starts a project-local cluster in .pgdata/ (kept between runs, stopped by
# `make db-stop`) and runs the server in development mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
if [ -z "${DATABASE_URL:-}" ]; then
  . scripts/pg.sh
  pg_start "$PWD/.pgdata"
  export DATABASE_URL=$PG_URL
  export APP_ENV=${APP_ENV:-development}
  echo "PostgreSQL running in .pgdata (stop it with: make db-stop)" >&2
fi
go build -o bin/todo .
exec ./bin/todo
