package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// cmdPgbench runs pgbench (the arguments after --, which must include -T) and prints its
// record: transactions per second, latency from pgbench's per-transaction log, failures,
// and the CPU time the database and pgbench spent per transaction.
func cmdPgbench(args []string) error {
	fs := flag.NewFlagSet("pgbench", flag.ContinueOnError)
	scenario := fs.String("scenario", "", "scenario name, copied to the record")
	size := fs.String("size", "", "label of the data set, copied to the record")
	round := fs.Int("round", 0, "round number, copied to the record")
	conns := fs.Int("c", 32, "client count, copied to the record (pass -c to pgbench too)")
	dbPPID := fs.Int("db-pid", 0, "the postmaster's process id, for the database's CPU time")
	clkTck := fs.Int64("clk-tck", 100, "clock ticks per second (getconf CLK_TCK)")
	warmup := fs.Duration("warmup", 0, "an unmeasured run of the same script first")
	logDir := fs.String("logdir", "", "where pgbench writes its per-transaction log (default: a temporary directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pgArgs := fs.Args()
	if len(pgArgs) == 0 {
		return errors.New("usage: loadgen pgbench [flags] -- pgbench [pgbench args]")
	}
	dir := *logDir
	if dir == "" {
		d, err := os.MkdirTemp("", "pgbench-log")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	// The warm-up's transactions count in AllRequests, as the service's warm-up requests
	// do, so that statements per transaction come out right.
	txRe := regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	var warmTxs int64
	if *warmup > 0 {
		warm := append(slices.Clone(pgArgs[1:]), "-T", strconv.Itoa(int(max(1, warmup.Seconds()))))
		out, err := exec.CommandContext(ctx, pgArgs[0], warm...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("warm-up: %w\n%s", err, out)
		}
		if m := txRe.FindSubmatch(out); m != nil {
			warmTxs, _ = strconv.ParseInt(string(m[1]), 10, 64)
		}
	}

	prefix := filepath.Join(dir, "tx")
	cmd := exec.CommandContext(ctx, pgArgs[0], append(slices.Clone(pgArgs[1:]), "-l", "--log-prefix="+prefix)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_, clientBefore := processTicks(os.Getpid())
	dbBefore := treeTicks(*dbPPID)
	err := cmd.Run()
	dbAfter := treeTicks(*dbPPID)
	_, clientAfter := processTicks(os.Getpid())
	if err != nil {
		return fmt.Errorf("%w\n%s%s", err, stdout.String(), stderr.String())
	}

	rec := record{Kind: "pgbench", Size: *size, Round: *round, Scenario: *scenario, Conns: *conns}
	text := stdout.String()
	find := func(re string) (float64, bool) {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(m[1], 64)
		return v, err == nil
	}
	tps, ok1 := find(`(?m)^tps = ([0-9.]+)`)
	txs, ok2 := find(`(?m)^number of transactions actually processed: ([0-9]+)`)
	secs, ok3 := find(`(?m)^duration: ([0-9]+) s`)
	if !ok1 || !ok2 || !ok3 || txs == 0 {
		return fmt.Errorf("cannot read pgbench's report:\n%s%s", text, stderr.String())
	}
	failed, _ := find(`(?m)^number of failed transactions: ([0-9]+)`)
	rec.RPS, rec.Requests, rec.AllRequests, rec.Seconds = tps, int64(txs), int64(txs)+warmTxs, secs
	rec.AvgMs, _ = find(`(?m)^latency average = ([0-9.]+) ms`)
	rec.Errors = int64(failed)
	perTx := func(ticks int64) float64 { return float64(ticks) / float64(*clkTck) * 1e6 / txs }
	if *dbPPID > 0 {
		rec.DBCPUUs = perTx(dbAfter - dbBefore)
	}
	rec.LoadCPUUs = perTx(clientAfter - clientBefore)

	lats, err := readPgbenchLog(prefix)
	if err != nil {
		return err
	}
	if len(lats) > 0 {
		slices.Sort(lats)
		rec.P50Ms = float64(percentile(lats, 0.50).Microseconds()) / 1000
		rec.P99Ms = float64(percentile(lats, 0.99).Microseconds()) / 1000
	}
	out, _ := json.Marshal(rec)
	fmt.Println(string(out))
	return nil
}

// readPgbenchLog reads the latency (third field, microseconds) of every transaction in
// pgbench's per-transaction logs, one file per thread, and removes them.
func readPgbenchLog(prefix string) ([]time.Duration, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return nil, err
	}
	var lats []time.Duration
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			if us, err := strconv.ParseInt(fields[2], 10, 64); err == nil {
				lats = append(lats, time.Duration(us)*time.Microsecond)
			}
		}
		f.Close()
		os.Remove(name)
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return lats, nil
}
