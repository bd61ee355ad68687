package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
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

func BenchmarkHandlerTaskGet(b *testing.B) {
	env, token, ids := benchEnv(b)
	i := 0
	for b.Loop() {
		env.do("GET", fmt.Sprintf("/api/v1/tasks/%d", ids[i%len(ids)]), "", token).want(200, "")
		i++
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
