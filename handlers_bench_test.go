package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The handler benchmarks run one request at a time through the whole handler chain
// against the test database: what the service spends per request, apart from HTTP
// parsing and the network. Run with `make test`'s cluster or TEST_DATABASE_URL:
//
//	go test -run '^$' -bench Handler -benchmem
func benchEnv(b *testing.B) (*testEnv, string, []int64) {
	env := newTestEnv(b)
	token, _ := env.registerUser("bench@example.com")
	ids := make([]int64, 0, 100)
	for i := 0; i < 100; i++ {
		var t wireTask
		env.do("POST", "/api/v1/tasks", fmt.Sprintf(`{"title":"task %d","tags":["home","work"],"due_date":"2026-12-%02d"}`, i, 1+i%28), token).
			want(http.StatusCreated, "").json(&t)
		ids = append(ids, t.ID)
	}
	return env, token, ids
}

// BenchmarkHandlerTaskGet runs with the metrics recording each request and without
// (metrics=off: a nil registry), one after the other on the same data, and reports the
// process's CPU time per request beside the wall time, which the database's round trip
// dominates. -count repeats each variant back to back, so for the metrics' cost repeat
// the whole command instead, which alternates them (bench/metrics-overhead.sh):
//
//	go test -run '^$' -bench 'HandlerTaskGet'
func BenchmarkHandlerTaskGet(b *testing.B) {
	env, token, ids := benchEnv(b)
	recording := env.srv.metrics
	for _, on := range []bool{true, false} {
		b.Run("metrics="+map[bool]string{true: "on", false: "off"}[on], func(b *testing.B) {
			env.srv.metrics = nil
			if on {
				env.srv.metrics = recording
			}
			i := 0
			cpu := processCPU()
			for b.Loop() {
				env.do("GET", fmt.Sprintf("/api/v1/tasks/%d", ids[i%len(ids)]), "", token).want(200, "")
				i++
			}
			b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
	env.srv.metrics = recording
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMetricsRecord is what the metrics add to every request, alone: the in-flight
// gauge, the route's lookup, its counter and its histogram.
func BenchmarkMetricsRecord(b *testing.B) {
	m := newMetrics(&Server{routed: []string{"GET /api/v1/tasks/{id}", "GET /api/v1/tasks"}})
	b.ReportAllocs()
	for b.Loop() {
		m.requestStarted()
		m.observe("GET /api/v1/tasks/{id}", "GET", 200, 1500*time.Microsecond)
		m.requestEnded()
	}
}

func BenchmarkHandlerTaskList(b *testing.B) {
	env, token, _ := benchEnv(b)
	for b.Loop() {
		env.do("GET", "/api/v1/tasks?limit=20", "", token).want(200, "")
	}
}

func BenchmarkHandlerTaskPatch(b *testing.B) {
	env, token, ids := benchEnv(b)
	i := 0
	for b.Loop() {
		env.do("PATCH", fmt.Sprintf("/api/v1/tasks/%d", ids[i%len(ids)]), fmt.Sprintf(`{"title":"renamed %d"}`, i), token).want(200, "")
		i++
	}
}

func BenchmarkHandlerTaskCreate(b *testing.B) {
	env, token, _ := benchEnv(b)
	for b.Loop() {
		env.do("POST", "/api/v1/tasks", `{"title":"new task","priority":"high","tags":["a"]}`, token).want(201, "")
	}
}

// BenchmarkTaskPageJSON encodes a page of 20 tasks by hand (what the service does) and
// with encoding/json (what it did), without the database:
//
//	go test -run '^$' -bench TaskPageJSON -benchmem
func BenchmarkTaskPageJSON(b *testing.B) {
	at := time.Date(2026, 11, 27, 9, 30, 0, 123456789, time.UTC)
	description := "Pick up <the> \"good\" one & pay"
	tasks := make([]Task, 20)
	for i := range tasks {
		tasks[i] = Task{ID: int64(1000 + i), UserID: 42, Title: fmt.Sprintf("Task number %d", i), Description: &description,
			Priority: int16(i % 3), Tags: []string{"home", "errands"}, DueDate: &at, CreatedAt: at, UpdatedAt: at}
	}
	b.Run("append", func(b *testing.B) {
		for b.Loop() {
			body := appendTasks(append(make([]byte, 0, 64+512*len(tasks)), `{"items":`...), tasks, "")
			body = append(body, `,"next_cursor":null,"total":`...)
			_ = strconv.AppendInt(body, int64(len(tasks)), 10)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			page := taskPage{Items: make([]wireTask, len(tasks)), Total: int64(len(tasks))}
			for i, t := range tasks {
				page.Items[i] = referenceTask(t, "")
			}
			if _, err := json.Marshal(page); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMetricsScrape is one GET /metrics after every route has served a request:
// what a scrape costs the service.
func BenchmarkMetricsScrape(b *testing.B) {
	env := newTestEnv(b)
	for _, p := range env.srv.routed {
		method, _, _ := strings.Cut(p, " ")
		env.srv.metrics.observe(p, method, 200, time.Millisecond)
	}
	h := env.srv.metricsHandler()
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b.SetBytes(int64(rec.Body.Len()))
	}
}
