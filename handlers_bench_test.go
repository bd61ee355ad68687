package main

import (
	"fmt"
	"net/http"
	"testing"
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
