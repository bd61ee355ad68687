package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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

func benchRequest(b *testing.B, env *testEnv, method, path, body, token string, want int) {
	b.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	env.srv.ServeHTTP(rec, req)
	if rec.Code != want {
		b.Fatalf("%s %s = %d %s", method, path, rec.Code, rec.Body.String())
	}
}

func BenchmarkHandlerTaskGet(b *testing.B) {
	env, token, ids := benchEnv(b)
	i := 0
	for b.Loop() {
		benchRequest(b, env, "GET", fmt.Sprintf("/api/v1/tasks/%d", ids[i%len(ids)]), "", token, 200)
		i++
	}
}

func BenchmarkHandlerTaskList(b *testing.B) {
	env, token, _ := benchEnv(b)
	for b.Loop() {
		benchRequest(b, env, "GET", "/api/v1/tasks?limit=20", "", token, 200)
	}
}

func BenchmarkHandlerTaskPatch(b *testing.B) {
	env, token, ids := benchEnv(b)
	i := 0
	for b.Loop() {
		benchRequest(b, env, "PATCH", fmt.Sprintf("/api/v1/tasks/%d", ids[i%len(ids)]), fmt.Sprintf(`{"title":"renamed %d"}`, i), token, 200)
		i++
	}
}

func BenchmarkHandlerTaskCreate(b *testing.B) {
	env, token, _ := benchEnv(b)
	for b.Loop() {
		benchRequest(b, env, "POST", "/api/v1/tasks", `{"title":"new task","priority":"high","tags":["a"]}`, token, 201)
	}
}
