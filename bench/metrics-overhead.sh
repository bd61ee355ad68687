#!/usr/bin/env bash
# What the metrics cost per request (make bench-metrics): BenchmarkHandlerTaskGet with the
# metrics recording and without, alternated by running the benchmark ROUNDS times (go
# test -count would run each variant's repeats back to back), against a throwaway
# PostgreSQL cluster (or TEST_DATABASE_URL); then BenchmarkMetricsRecord, the recording
# alone. Prints the medians and their ratios; the raw output stays in bench/out/.
#
# Knobs: BENCH_ROUNDS (6), BENCH_TIME (go test -benchtime, 3s).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
. scripts/pg.sh

ROUNDS=${BENCH_ROUNDS:-6}
BENCHTIME=${BENCH_TIME:-3s}
OUT="bench/out/metrics-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  PGDIR=$(mktemp -d /tmp/todo-bench-pg.XXXXXX)
  cleanup() { pg_stop "$PGDIR"; rm -rf "$PGDIR"; }
  trap cleanup EXIT
  PG_EXTRA_OPTS="-c fsync=off" pg_start "$PGDIR" >/dev/null
  export TEST_DATABASE_URL=$PG_URL
fi

go test -c -o "$OUT/todo.test" .
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  "$OUT/todo.test" -test.run '^$' -test.bench '^BenchmarkHandlerTaskGet$' -test.benchtime "$BENCHTIME" | tee -a "$OUT/get.txt" | grep '^Benchmark' >&2
done
"$OUT/todo.test" -test.run '^$' -test.bench '^BenchmarkMetricsRecord$' -test.count "$ROUNDS" >"$OUT/record.txt"

{
  echo "### Metrics overhead, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- service: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- '*.go' 2>/dev/null || echo ' with local changes')"
  echo "- BenchmarkHandlerTaskGet, $ROUNDS rounds of metrics on then off, -benchtime $BENCHTIME; medians over rounds"
  echo
  awk '
    /^BenchmarkHandlerTaskGet\/metrics=/ {
      v = ($0 ~ /metrics=on/) ? "on" : "off"
      for (i = 1; i <= NF; i++) {
        if ($(i) == "ns/op") ns[v, ++nn[v]] = $(i - 1)
        if ($(i) == "cpu-µs/op") cpu[v, ++nc[v]] = $(i - 1)
      }
    }
    function median(a, v, n,   i, j, t, x) {
      for (i = 1; i <= n; i++) x[i] = a[v, i]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
      return (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    END {
      printf "| | metrics on | metrics off | on ÷ off |\n|---|--:|--:|--:|\n"
      on = median(ns, "on", nn["on"]); off = median(ns, "off", nn["off"])
      printf "| wall µs per request (median of %d) | %.1f | %.1f | %.3f |\n", nn["on"], on / 1000, off / 1000, on / off
      on = median(cpu, "on", nc["on"]); off = median(cpu, "off", nc["off"])
      printf "| process CPU µs per request (median of %d) | %.1f | %.1f | %.3f |\n", nc["on"], on, off, on / off
    }' "$OUT/get.txt"
  awk '/^BenchmarkMetricsRecord/ { n++; x[n] = $3 }
    END {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
      printf "\nRecording alone (BenchmarkMetricsRecord, median of %d): %s ns per request, 0 allocations.\n", n, (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }' "$OUT/record.txt"
} | tee "$OUT/report.md"
