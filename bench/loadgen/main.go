// Command loadgen drives the todo service over HTTP for the benchmark (make bench), and
// prepares and reports what bench/run.sh needs. It uses the standard library only.
//
//	loadgen wait      -url U                                    until /readyz answers 200
//	loadgen register  -url U -email E -password P               one local account
//	loadgen tokens    -url U -password P -ids 1-101 -out F      log users in; "id token" lines
//	loadgen cursor    -url U -tokens F -user 1 -page 1000       the cursor of a deep page
//	loadgen run       -url U -scenario get -c 32 -d 15s ...     one measured load run
//	loadgen pgbench   -scenario get ... -- pgbench args         one pgbench run, measured alike
//	loadgen report    -in results.jsonl                         the Markdown table
//	loadgen feed      -url U -tokens F -fan-tokens F2 ... -- cmd  the change feed's section
//
// run and pgbench print one JSON record per run (see record); report reads them back.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmds := map[string]func([]string) error{
		"wait":     cmdWait,
		"register": cmdRegister,
		"tokens":   cmdTokens,
		"cursor":   cmdCursor,
		"run":      cmdRun,
		"pgbench":  cmdPgbench,
		"report":   cmdReport,
		"feed":     cmdFeed,
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		usage()
	}
	if err := cmd(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadgen wait|register|tokens|cursor|run|pgbench|report|feed [flags]")
	os.Exit(2)
}

// record is one measured run, of the service (kind "api") or of pgbench (kind
// "pgbench"). Per-request figures are over the measured window only; Errors counts the
// whole run, warm-up included.
type record struct {
	Kind        string  `json:"kind"`
	Size        string  `json:"size"`
	Round       int     `json:"round"`
	Scenario    string  `json:"scenario"`
	Conns       int     `json:"conns"`
	Seconds     float64 `json:"seconds"`
	Requests    int64   `json:"requests"`
	AllRequests int64   `json:"all_requests"`
	RPS         float64 `json:"rps"`
	AvgMs       float64 `json:"avg_ms"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Errors      int64   `json:"errors"`
	ServerCPUUs float64 `json:"server_cpu_us,omitempty"`
	DBCPUUs     float64 `json:"db_cpu_us"`
	LoadCPUUs   float64 `json:"client_cpu_us"`
	PeakRSSKiB  int64   `json:"peak_rss_kib,omitempty"`
	PeakIsReset bool    `json:"peak_since_start,omitempty"`
	RSSKiB      int64   `json:"rss_kib,omitempty"`
	StmtCalls   int64   `json:"stmt_calls"`
}
