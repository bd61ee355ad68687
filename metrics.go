package main

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Metrics: GET /metrics in the Prometheus text exposition format 0.0.4, on its own
// listener (METRICS_ADDR), written with the standard library so that the binary links no
// monitoring module. Recording is an atomic add on counters found without a lock; the
// work of formatting, reading the pool and the runtime is done by the scrape.

// defaultMetricsAddr is METRICS_ADDR when the variable is unset (an empty one turns
// metrics off): the port Prometheus exporters conventionally take.
const defaultMetricsAddr = ":9464"

// metricsContentType is what Prometheus expects of the text format, version 0.0.4.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// statusClientClosed is nginx's "client closed request": the status the access log and
// the metrics give a request whose client went away before its answer (see writeError).
const statusClientClosed = 499

// routeUnmatched is the route label of a request that no pattern matched: an unknown
// path, a wrong method, a CORS preflight. Raw paths never become label values.
const routeUnmatched = "unmatched"

// durationBuckets are the latency histogram's upper bounds in seconds: a read takes about
// a millisecond, and the query and write timeouts are seconds.
var durationBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// durationBounds are durationBuckets as durations, so that a request is placed without a
// conversion to floating point.
var durationBounds = func() (d [len(durationBuckets)]time.Duration) {
	for i, s := range durationBuckets {
		d[i] = time.Duration(math.Round(s * float64(time.Second)))
	}
	return d
}()

// Status classes of todo_http_requests_total. A request whose client went away has its
// own class: it is neither the client's mistake nor the server's.
const (
	class1xx = iota
	class2xx
	class3xx
	class4xx
	class5xx
	classClientClosed
	numClasses
)

var classNames = [numClasses]string{"1xx", "2xx", "3xx", "4xx", "5xx", "499"}

// methodNames bound the method label: any other method a client invents is "other".
var methodNames = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}

func methodIndex(m string) int {
	switch m {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodPatch:
		return 4
	case http.MethodDelete:
		return 5
	case http.MethodOptions:
		return 6
	}
	return len(methodNames) - 1
}

func statusClass(status int) int {
	switch {
	case status == statusClientClosed:
		return classClientClosed
	case status == 0: // nothing written: net/http answers 200
		return class2xx
	case status < 200:
		return class1xx
	case status < 300:
		return class2xx
	case status < 400:
		return class3xx
	case status < 500:
		return class4xx
	}
	return class5xx
}

// routeStats are one route's request counters and latency histogram. They are made for
// every pattern when the server is built, so a request only looks its route up.
type routeStats struct {
	route    string
	requests [len(methodNames)][numClasses]atomic.Uint64
	// buckets count each request once, in the first bucket it fits; the scrape sums them
	// into Prometheus's cumulative buckets.
	buckets [len(durationBuckets)]atomic.Uint64
	count   atomic.Uint64
	sumNS   atomic.Uint64
}

// Kinds of todo_rate_limited_total: which limit refused the request.
type rateLimit int

const (
	limitLogin    rateLimit = iota // failed logins per address or email; password changes share it
	limitRegister                  // registrations per address
	numRateLimits
)

var rateLimitNames = [numRateLimits]string{"login", "register"}

// metrics is the registry behind GET /metrics. A nil *metrics records nothing, which is
// how the handler benchmarks measure the service without it.
type metrics struct {
	collectors []func(b []byte) []byte // in the order they are written

	routes   map[string]*routeStats // by pattern; "" is routeUnmatched; read-only once built
	order    []*routeStats          // registration order, so scrapes list routes stably
	inFlight atomic.Int64

	dbErrors    []atomic.Uint64 // by errorKind
	rateLimited []atomic.Uint64 // by rateLimit
}

// newMetrics registers every series of s: its routes (s.routed), its store's pool, its
// authenticator's hashing slots, the schema version, the Go runtime and the process.
func newMetrics(s *Server) *metrics {
	m := &metrics{routes: make(map[string]*routeStats, len(s.routed)+1)}
	for _, p := range append([]string{""}, s.routed...) {
		if _, dup := m.routes[p]; dup {
			continue
		}
		rs := &routeStats{route: p}
		if p == "" {
			rs.route = routeUnmatched
		}
		m.routes[p] = rs
		m.order = append(m.order, rs)
	}
	m.collectors = append(m.collectors, m.appendHTTP)
	m.gauge("todo_http_requests_in_flight", "Requests being served.",
		func() float64 { return float64(m.inFlight.Load()) })

	m.dbErrors = m.counterVec("todo_db_errors_total",
		"Errors no handler answered itself, by kind: timeout, unavailable and conflict answered 503, internal 500.",
		"kind", errorKindNames[:]...)
	if s.st != nil {
		m.collectors = append(m.collectors, poolCollector(s.st))
	}
	if a := s.auth; a != nil {
		m.gauge("todo_password_hashes_in_flight", "Argon2id hashes running (bounded by HASH_CONCURRENCY).",
			func() float64 { return float64(len(a.hashSlots)) })
		m.gauge("todo_password_hashes_waiting", "Requests queued for a hashing slot.",
			func() float64 { return float64(a.hashWaiting.Load()) })
	}
	m.rateLimited = m.counterVec("todo_rate_limited_total", "Requests refused with 429 rate_limited, by limit.",
		"limit", rateLimitNames[:]...)
	m.gauge("todo_schema_version", "The database schema version the service works with.",
		func() float64 { return float64(schemaVersion) })
	if s.events != nil {
		m.gauge("todo_event_streams_open", "Change-feed streams open on this replica.",
			func() float64 { return float64(s.events.open.Load()) })
	}
	if rs := s.reminders; rs != nil {
		m.counterFunc("todo_reminders_fired_total", "Reminders this replica fired.", func() float64 { return float64(rs.fired.Load()) })
		m.counterFunc("todo_reminders_late_total", "Reminders this replica fired more than 5 minutes after their time.",
			func() float64 { return float64(rs.late.Load()) })
	}
	if wd := s.webhooks; wd != nil {
		m.collectors = append(m.collectors, func(b []byte) []byte {
			const name = "todo_webhook_deliveries_total"
			b = appendHeader(b, name, "Webhook delivery attempts of this replica, by outcome (gave_up: failed for the last time).", "counter")
			b = appendSample(b, name, "outcome", "delivered", float64(wd.delivered.Load()))
			b = appendSample(b, name, "outcome", "failed", float64(wd.failed.Load()))
			return appendSample(b, name, "outcome", "gave_up", float64(wd.gaveUp.Load()))
		})
		m.counterFunc("todo_webhooks_disabled_total", "Webhooks this replica disabled after three days of failures.",
			func() float64 { return float64(wd.disabled.Load()) })
		if s.st != nil {
			m.collectors = append(m.collectors, deliveryQueueCollector(s.st))
		}
	}
	m.collectors = append(m.collectors, appendRuntime, appendProcess)
	return m
}

// counterFunc registers a counter whose value read gives at each scrape.
func (m *metrics) counterFunc(name, help string, read func() float64) {
	m.collectors = append(m.collectors, func(b []byte) []byte {
		b = appendHeader(b, name, help, "counter")
		return appendSample(b, name, "", "", read())
	})
}

// deliveryQueueCollector reads the webhook delivery queue, shared by every replica, at
// each scrape; a scrape while the database is away leaves the two series out.
func deliveryQueueCollector(st *Store) func([]byte) []byte {
	return func(b []byte) []byte {
		n, oldest, err := st.DeliveryQueue(context.Background(), time.Now())
		if err != nil {
			return b
		}
		b = appendHeader(b, "todo_webhook_queue_depth", "Webhook deliveries queued, due or waiting for a retry (all replicas).", "gauge")
		b = appendSample(b, "todo_webhook_queue_depth", "", "", float64(n))
		b = appendHeader(b, "todo_webhook_queue_oldest_seconds", "Age of the oldest queued webhook delivery (0 when none).", "gauge")
		return appendSample(b, "todo_webhook_queue_oldest_seconds", "", "", oldest.Seconds())
	}
}

// gauge registers a series whose value read gives at each scrape.
func (m *metrics) gauge(name, help string, read func() float64) {
	m.collectors = append(m.collectors, func(b []byte) []byte {
		b = appendHeader(b, name, help, "gauge")
		return appendSample(b, name, "", "", read())
	})
}

// counterVec registers a counter with one label whose values are fixed here, which keeps
// the series bounded; the returned counters are indexed like values. A new counter is
// one call of this (or of gauge) and an Add where the event happens.
func (m *metrics) counterVec(name, help, label string, values ...string) []atomic.Uint64 {
	c := make([]atomic.Uint64, len(values))
	m.collectors = append(m.collectors, func(b []byte) []byte {
		b = appendHeader(b, name, help, "counter")
		for i, v := range values {
			b = appendSample(b, name, label, v, float64(c[i].Load()))
		}
		return b
	})
	return c
}

// requestStarted and requestEnded bracket a request for the in-flight gauge.
func (m *metrics) requestStarted() {
	if m != nil {
		m.inFlight.Add(1)
	}
}

func (m *metrics) requestEnded() {
	if m != nil {
		m.inFlight.Add(-1)
	}
}

// observe counts a finished request under its route pattern (r.Pattern), method and
// status, and its duration in the route's histogram.
func (m *metrics) observe(pattern, method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	rs := m.routes[pattern]
	if rs == nil {
		rs = m.routes[""] // a pattern registered past route(); a test holds this to none
	}
	rs.requests[methodIndex(method)][statusClass(status)].Add(1)
	// count before the bucket: a scrape reads buckets first, so no bucket it sees can
	// exceed the count it reads next.
	rs.count.Add(1)
	rs.sumNS.Add(uint64(max(d, 0)))
	for i, bound := range durationBounds {
		if d <= bound {
			rs.buckets[i].Add(1)
			break
		}
	}
}

func (m *metrics) dbError(kind errorKind) {
	if m != nil {
		m.dbErrors[kind].Add(1)
	}
}

// countRefusals makes the rate limiters count their refusals under their limit.
func (m *metrics) countRefusals(rl *rateLimits) {
	if m != nil {
		rl.loginFailures.refused = &m.rateLimited[limitLogin]
		rl.registers.refused = &m.rateLimited[limitRegister]
	}
}

// ServeHTTP writes the exposition. It is served only on the metrics listener.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := m.appendTo(make([]byte, 0, 32<<10))
	w.Header().Set("Content-Type", metricsContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (m *metrics) appendTo(b []byte) []byte {
	for _, c := range m.collectors {
		b = c(b)
	}
	return b
}

// metricsHandler is the whole metrics listener: GET /metrics and nothing else.
func (s *Server) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics)
	return mux
}

// appendHTTP writes the request counters and the latency histogram. A route's series
// appear once it has served a request: a route never called adds nothing to a scrape.
func (m *metrics) appendHTTP(b []byte) []byte {
	const total, hist = "todo_http_requests_total", "todo_http_request_duration_seconds"
	b = appendHeader(b, total, "Requests served, by route pattern, method and status class (499: the client went away).", "counter")
	for _, rs := range m.order {
		for mi := range rs.requests {
			for ci := range rs.requests[mi] {
				n := rs.requests[mi][ci].Load()
				if n == 0 {
					continue
				}
				b = append(b, total...)
				b = appendLabel(b, '{', "route", rs.route)
				b = appendLabel(b, ',', "method", methodNames[mi])
				b = appendLabel(b, ',', "class", classNames[ci])
				b = append(b, "} "...)
				b = strconv.AppendUint(b, n, 10)
				b = append(b, '\n')
			}
		}
	}
	b = appendHeader(b, hist, "Time from a request's arrival to its last byte handed to the connection, by route pattern.", "histogram")
	for _, rs := range m.order {
		var counts [len(durationBuckets)]uint64
		for i := range rs.buckets {
			counts[i] = rs.buckets[i].Load()
		}
		count, sum := rs.count.Load(), rs.sumNS.Load()
		if count == 0 {
			continue
		}
		var cum uint64
		for i, ub := range durationBuckets {
			cum += counts[i]
			b = appendBucket(b, hist, rs.route, strconv.FormatFloat(ub, 'g', -1, 64), cum)
		}
		b = appendBucket(b, hist, rs.route, "+Inf", count)
		b = append(b, hist+"_sum"...)
		b = appendLabel(b, '{', "route", rs.route)
		b = append(b, "} "...)
		b = appendFloat(b, float64(sum)/1e9)
		b = append(b, '\n')
		b = append(b, hist+"_count"...)
		b = appendLabel(b, '{', "route", rs.route)
		b = append(b, "} "...)
		b = strconv.AppendUint(b, count, 10)
		b = append(b, '\n')
	}
	return b
}

func appendBucket(b []byte, name, route, le string, n uint64) []byte {
	b = append(b, name...)
	b = append(b, "_bucket"...)
	b = appendLabel(b, '{', "route", route)
	b = appendLabel(b, ',', "le", le)
	b = append(b, "} "...)
	b = strconv.AppendUint(b, n, 10)
	return append(b, '\n')
}

// poolCollector writes the pgx pool's gauges and counters, from one snapshot per scrape.
func poolCollector(st *Store) func(b []byte) []byte {
	return func(b []byte) []byte {
		p := st.pool.Stat()
		for _, f := range []struct {
			name, help, typ string
			v               float64
		}{
			{"todo_db_pool_total_connections", "Connections open or being opened.", "gauge", float64(p.TotalConns())},
			{"todo_db_pool_acquired_connections", "Connections lent to requests.", "gauge", float64(p.AcquiredConns())},
			{"todo_db_pool_idle_connections", "Open connections waiting to be lent.", "gauge", float64(p.IdleConns())},
			{"todo_db_pool_constructing_connections", "Connections being opened.", "gauge", float64(p.ConstructingConns())},
			{"todo_db_pool_max_connections", "The pool's size (DB_MAX_CONNS).", "gauge", float64(p.MaxConns())},
			{"todo_db_pool_acquires_total", "Connections lent.", "counter", float64(p.AcquireCount())},
			{"todo_db_pool_acquire_seconds_total", "Time spent acquiring connections, waits included.", "counter", p.AcquireDuration().Seconds()},
			{"todo_db_pool_empty_acquires_total", "Acquires that found no idle connection and waited.", "counter", float64(p.EmptyAcquireCount())},
			{"todo_db_pool_empty_acquire_wait_seconds_total", "Time those acquires waited.", "counter", p.EmptyAcquireWaitTime().Seconds()},
			{"todo_db_pool_canceled_acquires_total", "Acquires given up (query timeout or client gone) before a connection came.", "counter", float64(p.CanceledAcquireCount())},
			{"todo_db_pool_new_connections_total", "Connections opened; a jump follows a database restart.", "counter", float64(p.NewConnsCount())},
		} {
			b = appendHeader(b, f.name, f.help, f.typ)
			b = appendSample(b, f.name, "", "", f.v)
		}
		return b
	}
}

// appendRuntime writes the Go runtime's series under the names Go's Prometheus client
// uses, so that existing dashboards read them. ReadMemStats stops the world for
// microseconds; once per scrape, not per request.
func appendRuntime(b []byte) []byte {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b = appendHeader(b, "go_info", "The Go version the binary was built with.", "gauge")
	b = appendSample(b, "go_info", "version", runtime.Version(), 1)
	for _, f := range []struct {
		name, help string
		v          float64
	}{
		{"go_goroutines", "Goroutines that currently exist.", float64(runtime.NumGoroutine())},
		{"go_memstats_heap_alloc_bytes", "Bytes of allocated heap objects.", float64(ms.HeapAlloc)},
		{"go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans.", float64(ms.HeapInuse)},
		{"go_memstats_heap_sys_bytes", "Bytes of heap memory obtained from the OS.", float64(ms.HeapSys)},
		{"go_memstats_sys_bytes", "Bytes of memory obtained from the OS, all uses.", float64(ms.Sys)},
	} {
		b = appendHeader(b, f.name, f.help, "gauge")
		b = appendSample(b, f.name, "", "", f.v)
	}
	// A summary without quantiles: its _count is the number of collections, its _sum
	// their stop-the-world pause time.
	const gc = "go_gc_duration_seconds"
	b = appendHeader(b, gc, "Garbage collections (count) and their stop-the-world pauses (sum, seconds).", "summary")
	b = appendSample(b, gc+"_sum", "", "", float64(ms.PauseTotalNs)/1e9)
	return appendSample(b, gc+"_count", "", "", float64(ms.NumGC))
}

// processStart stands in for the process's start time; it is taken before main runs.
var processStart = time.Now()

// linuxUserHZ is the unit of the CPU times in /proc/<pid>/stat, 100 on every
// architecture Go supports on Linux.
const linuxUserHZ = 100

// appendProcess writes the process series from Linux's /proc; where that is missing,
// only the start time.
func appendProcess(b []byte) []byte {
	b = appendHeader(b, "process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.", "gauge")
	b = appendSample(b, "process_start_time_seconds", "", "", float64(processStart.UnixNano())/1e9)
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return b
	}
	// The fields after the command name, which is in parentheses and may hold spaces;
	// fields[0] is the state, the third field of proc_pid_stat(5).
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 22 {
		return b
	}
	field := func(n int) float64 { v, _ := strconv.ParseFloat(fields[n-3], 64); return v }
	b = appendHeader(b, "process_cpu_seconds_total", "User and system CPU time spent, in seconds.", "counter")
	b = appendSample(b, "process_cpu_seconds_total", "", "", (field(14)+field(15))/linuxUserHZ)
	b = appendHeader(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge")
	b = appendSample(b, "process_virtual_memory_bytes", "", "", field(23))
	b = appendHeader(b, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge")
	b = appendSample(b, "process_resident_memory_bytes", "", "", field(24)*float64(os.Getpagesize()))
	if d, err := os.Open("/proc/self/fd"); err == nil {
		names, err := d.Readdirnames(-1)
		d.Close()
		if err == nil {
			b = appendHeader(b, "process_open_fds", "Open file descriptors.", "gauge")
			b = appendSample(b, "process_open_fds", "", "", float64(len(names)))
		}
	}
	if limits, err := os.ReadFile("/proc/self/limits"); err == nil {
		for line := range strings.Lines(string(limits)) {
			rest, ok := strings.CutPrefix(line, "Max open files")
			if f := strings.Fields(rest); ok && len(f) > 0 {
				if v, err := strconv.ParseFloat(f[0], 64); err == nil { // the soft limit; "unlimited" is left out
					b = appendHeader(b, "process_max_fds", "The limit of open file descriptors.", "gauge")
					b = appendSample(b, "process_max_fds", "", "", v)
				}
			}
		}
	}
	return b
}

// ---- the text format ----

func appendHeader(b []byte, name, help, typ string) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	for i := 0; i < len(help); i++ { // HELP escapes backslash and line feed
		switch help[i] {
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, help[i])
		}
	}
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

// appendSample writes one line, with one label when label is not empty.
func appendSample(b []byte, name, label, value string, v float64) []byte {
	b = append(b, name...)
	if label != "" {
		b = appendLabel(b, '{', label, value)
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, v)
	return append(b, '\n')
}

// appendLabel writes sep, name="value" with the value escaped as the format asks.
func appendLabel(b []byte, sep byte, name, value string) []byte {
	b = append(b, sep)
	b = append(b, name...)
	b = append(b, `="`...)
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
