#!/usr/bin/env bash
# The test command (make test): static checks, a static build, and the whole test suite
# with the race detector, against a throwaway PostgreSQL cluster (or TEST_DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
. scripts/pg.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "not gofmt-ed: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
go vet -tags citus ./...   # the Citus-only tests (run by hand against a cluster: README)
echo "== staticcheck"
command -v staticcheck >/dev/null 2>&1 || GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
staticcheck ./...
staticcheck -tags citus ./...
echo "== static build"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$(mktemp -d)/todo" .

. scripts/prereqs.sh

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  PGDIR=$(mktemp -d /tmp/todo-pg.XXXXXX)
  cleanup() { pg_stop "$PGDIR"; rm -rf "$PGDIR"; }
  trap cleanup EXIT
  PG_EXTRA_OPTS="-c fsync=off -c full_page_writes=off" pg_start "$PGDIR"
  export TEST_DATABASE_URL=$PG_URL
  # The outage tests stop and restart this cluster; they need to know how.
  export TEST_PG_DATA=$PG_DATA TEST_PG_BIN=$PG_BIN
  echo "== PostgreSQL at $PGDIR"
fi

echo "== go test"
go test -race -count=1 -timeout 20m "$@" ./...

# Each fuzz target beyond its seed corpus (go test -fuzz takes one target at a time); a
# finding is written to testdata/fuzz/<target>/ and fails the run. The budgets are counts
# of executions, a few seconds each here, not durations: with a duration, Go 1.26's fuzz
# coordinator can report its own deadline as a failure (golang/go#75804). FUZZTIME
# (e.g. 1m, as `make fuzz` sets) replaces every budget.
echo "== fuzz"
for budget in FuzzJSONBodies:3000x FuzzListQuery:30000x FuzzCursor:30000x FuzzAccessToken:30000x FuzzBetterAuthToken:15000x FuzzTaskJSON:30000x FuzzTaskInput:30000x FuzzRRule:20000x FuzzFeedAndMailInputs:30000x; do
  target=${budget%%:*}
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-${budget#*:}}" .
done
