package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// scenarioOrder is the order of the report's rows, and the text that names each.
var scenarioOrder = []struct{ name, title string }{
	{"get", "get one task"},
	{"list", "list page 1 (limit 20)"},
	{"list-heavy", "list page 1, heavy user"},
	{"list-deep", "list deep page, heavy user (cursor)"},
	{"create", "create a task"},
	{"patch", "PATCH a task"},
	{"toggle", "toggle completion"},
	{"mix", "mix (memory run)"},
	{"login", "login (Argon2id)"},
}

// ratioTargets are the scenarios whose API throughput must reach 60% of the ceiling.
var ratioTargets = []string{"get", "list", "create", "patch"}

const (
	minRatio       = 0.60
	maxSlowdown    = 1.2
	maxHeavyCost   = 3.0 // page 1 of the heavy user, ÷ page 1 of a 100-task user
	maxRSS32MiB    = 64
	maxRSS256MiB   = 128
	memoryRunConns = 256
)

type key struct {
	kind, size, scenario string
	conns                int
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "", "the JSON records of a bench run")
	labels := map[string]string{}
	var sizes []string
	fs.Func("size", `a data set, in report order: label=description (repeatable)`, func(s string) error {
		l, d, _ := strings.Cut(s, "=")
		labels[l] = d
		sizes = append(sizes, l)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	recs, err := readRecords(*in)
	if err != nil {
		return err
	}
	writeReport(os.Stdout, recs, sizes, labels)
	return nil
}

func readRecords(path string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var recs []record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summary is the median over rounds of one kind of run.
type summary struct {
	rounds                             int
	rps, p50, p99, server, db, client  float64
	stmts                              float64
	errors, peakRSS                    int64
	ratio                              float64 // API req/s ÷ ceiling tps, median of same-round ratios
	ratios                             []float64
	hasCeiling                         bool
	ceilTPS, ceilP50, ceilDB, ceilStmt float64
}

func summarize(recs []record) map[key]*summary {
	groups := map[key][]record{}
	for _, r := range recs {
		k := key{r.Kind, r.Size, r.Scenario, r.Conns}
		groups[k] = append(groups[k], r)
	}
	col := func(rs []record, f func(record) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	out := map[key]*summary{}
	for k, rs := range groups {
		if k.kind != "api" {
			continue
		}
		s := &summary{rounds: len(rs)}
		s.rps = col(rs, func(r record) float64 { return r.RPS })
		s.p50 = col(rs, func(r record) float64 { return r.P50Ms })
		s.p99 = col(rs, func(r record) float64 { return r.P99Ms })
		s.server = col(rs, func(r record) float64 { return r.ServerCPUUs })
		s.db = col(rs, func(r record) float64 { return r.DBCPUUs })
		s.client = col(rs, func(r record) float64 { return r.LoadCPUUs })
		s.stmts = col(rs, func(r record) float64 { return float64(r.StmtCalls) / float64(max(1, r.AllRequests)) })
		for _, r := range rs {
			s.errors += r.Errors
			s.peakRSS = max(s.peakRSS, r.PeakRSSKiB)
		}
		ceil := groups[key{"pgbench", k.size, k.scenario, k.conns}]
		if len(ceil) > 0 {
			s.hasCeiling = true
			s.ceilTPS = col(ceil, func(r record) float64 { return r.RPS })
			s.ceilP50 = col(ceil, func(r record) float64 { return r.P50Ms })
			s.ceilDB = col(ceil, func(r record) float64 { return r.DBCPUUs })
			s.ceilStmt = col(ceil, func(r record) float64 { return float64(r.StmtCalls) / float64(max(1, r.AllRequests)) })
			for _, r := range rs {
				for _, c := range ceil {
					if c.Round == r.Round && c.RPS > 0 {
						s.ratios = append(s.ratios, r.RPS/c.RPS)
					}
				}
			}
			s.ratio = median(s.ratios)
		}
		out[k] = s
	}
	return out
}

func writeReport(w io.Writer, recs []record, sizes []string, labels map[string]string) {
	sums := summarize(recs)
	if len(sizes) == 0 {
		seen := map[string]bool{}
		for _, r := range recs {
			if !seen[r.Size] {
				seen[r.Size] = true
				sizes = append(sizes, r.Size)
			}
		}
	}
	var totalErrors int64
	for _, r := range recs {
		totalErrors += r.Errors
	}
	for _, size := range sizes {
		title := size
		if d := labels[size]; d != "" {
			title += ": " + d
		}
		fmt.Fprintf(w, "\n#### %s\n\n", title)
		fmt.Fprintln(w, "| scenario | conns | rounds | API req/s | p50 ms | p99 ms | errors | server CPU µs/req | DB CPU µs/req | client CPU µs/req | SQL stmts/req | ceiling tps | ceiling p50 ms | ceiling DB CPU µs/tx | ratio API ÷ ceiling | peak RSS MiB |")
		fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
		for _, sc := range scenarioOrder {
			for _, conns := range []int{32, memoryRunConns} {
				s := sums[key{"api", size, sc.name, conns}]
				if s == nil {
					continue
				}
				ceil := [4]string{"–", "–", "–", "–"}
				stmts := fmt.Sprintf("%.2f", s.stmts)
				if s.hasCeiling {
					ceil = [4]string{fmt.Sprintf("%.0f", s.ceilTPS), fmt.Sprintf("%.2f", s.ceilP50),
						fmt.Sprintf("%.0f", s.ceilDB), fmt.Sprintf("**%.2f**", s.ratio)}
					stmts += fmt.Sprintf(" · %.2f", s.ceilStmt)
				}
				fmt.Fprintf(w, "| %s | %d | %d | %.0f | %.2f | %.2f | %d | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s | %.1f |\n",
					sc.title, conns, s.rounds, s.rps, s.p50, s.p99, s.errors, s.server, s.db, s.client, stmts,
					ceil[0], ceil[1], ceil[2], ceil[3], float64(s.peakRSS)/1024)
			}
		}
	}
	writeTargets(w, sums, sizes, totalErrors)
}

// writeTargets checks the targets against the medians.
func writeTargets(w io.Writer, sums map[key]*summary, sizes []string, totalErrors int64) {
	fmt.Fprintf(w, "\n#### Targets\n\n")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	get := func(size, sc string, conns int) *summary { return sums[key{"api", size, sc, conns}] }
	for _, size := range sizes {
		for _, sc := range ratioTargets {
			if s := get(size, sc, 32); s != nil && s.hasCeiling {
				fmt.Fprintf(w, "- %s, %s: API ÷ ceiling %.2f (rounds: %s), target ≥ %.2f: %s\n",
					size, sc, s.ratio, formatList(s.ratios), minRatio, verdict(s.ratio >= minRatio))
			}
		}
		deep, heavy, page1 := get(size, "list-deep", 32), get(size, "list-heavy", 32), get(size, "list", 32)
		if deep != nil && heavy != nil {
			r := deep.p50 / heavy.p50
			fmt.Fprintf(w, "- %s, deep page vs page 1 of the heavy user: p50 %.2f ms vs %.2f ms = %.2f×, database CPU %.0f vs %.0f µs/req, target ≤ %.1f×: %s",
				size, deep.p50, heavy.p50, r, deep.db, heavy.db, maxSlowdown, verdict(r <= maxSlowdown))
			if deep.hasCeiling && heavy.hasCeiling && deep.ceilP50 > 0 && heavy.ceilP50 > 0 {
				fmt.Fprintf(w, " (the same SQL under pgbench: %.2f×)", deep.ceilP50/heavy.ceilP50)
			}
			fmt.Fprintln(w)
		}
		if heavy != nil && page1 != nil {
			// CPU, not latency: on shared cores latency follows the machine's load; the cost
			// of a request is what the service and the database spend on it.
			hc, pc := heavy.server+heavy.db, page1.server+page1.db
			fmt.Fprintf(w, "- %s, page 1 of the heavy user vs page 1 of a 100-task user: service + database CPU %.0f vs %.0f µs/req = %.2f× (p50 %.2f vs %.2f ms), target ≤ %.0f×: %s\n",
				size, hc, pc, hc/pc, heavy.p50, page1.p50, maxHeavyCost, verdict(hc <= maxHeavyCost*pc))
		}
	}
	if len(sizes) >= 2 {
		big, small := sizes[0], sizes[len(sizes)-1]
		for _, sc := range []string{"get", "list"} {
			b, s := get(big, sc, 32), get(small, sc, 32)
			if b == nil || s == nil {
				continue
			}
			r := b.p50 / s.p50
			fmt.Fprintf(w, "- %s, %s vs %s: p50 %.2f ms vs %.2f ms = %.2f×, server CPU %.0f vs %.0f µs/req, target ≤ %.1f×: %s\n",
				sc, big, small, b.p50, s.p50, r, b.server, s.server, maxSlowdown, verdict(r <= maxSlowdown))
		}
	}
	var peak32, peak256 int64
	for k, s := range sums {
		switch {
		case k.scenario == "login":
		case k.conns == 32:
			peak32 = max(peak32, s.peakRSS)
		case k.conns == memoryRunConns:
			peak256 = max(peak256, s.peakRSS)
		}
	}
	fmt.Fprintf(w, "- peak RSS under 32 connections (logins excluded): %.1f MiB, target ≤ %d MiB: %s\n",
		float64(peak32)/1024, maxRSS32MiB, verdict(peak32 > 0 && peak32 <= maxRSS32MiB*1024))
	if peak256 > 0 {
		fmt.Fprintf(w, "- peak RSS under %d connections (logins excluded): %.1f MiB, target ≤ %d MiB: %s\n",
			memoryRunConns, float64(peak256)/1024, maxRSS256MiB, verdict(peak256 <= maxRSS256MiB*1024))
	}
	fmt.Fprintf(w, "- non-2xx responses and failed transactions, all runs: %d, target 0: %s\n", totalErrors, verdict(totalErrors == 0))
}

func formatList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
}
