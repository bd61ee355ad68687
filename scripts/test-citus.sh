#!/usr/bin/env bash
# make test-citus: the whole suite in the Citus test mode (-tags citus) against a throwaway
# 3-node cluster (scripts/citus.sh), stopped and removed afterwards, also when a test fails
# or the run is interrupted. Citus must be installed in the server's library directory
# (README, "Testing on Citus"); without it this says how to get it and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
. scripts/pg.sh

export CITUS_DIR
CITUS_DIR=$(mktemp -d /tmp/todo-citus.XXXXXX)
rmdir "$CITUS_DIR" # citus.sh makes it; a leftover directory would mean a running cluster
trap 'scripts/citus.sh stop' EXIT
trap 'exit 130' INT TERM
scripts/citus.sh start

. scripts/prereqs.sh

echo "== go test -tags citus"
TEST_CITUS_URL=$(scripts/citus.sh url) go test -tags citus -count=1 -timeout 30m "$@" ./...
