package main

// Reliability: hostile input. See specs/operations.

import (
	"strconv"
	"strings"
	"testing"
)

// ---- hostile input ----

// TestHostileInput sends what a hostile or broken client might: invalid UTF-8, NUL
// characters, very long query strings, huge numbers in paths and deeply nested JSON.
// Each is a 4xx in the error envelope, never a 500.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("hostile@example.com")
	var task wireTask
	env.do("POST", "/api/v1/tasks", `{"title":"target"}`, token).want(201, "").json(&task)
	sub := strconv.FormatInt(user.ID, 10)
	one := "/api/v1/tasks/" + strconv.FormatInt(task.ID, 10)
	nested := func(depth int, leaf string) string {
		return strings.Repeat(`{"a":`, depth) + leaf + strings.Repeat("}", depth)
	}
	long := strings.Repeat("x", 10_000)

	env.runRequestCases(t, token, []requestCase{
		{"invalid UTF-8 in title", "POST", "/api/v1/tasks", "{\"title\":\"\xc3\x28\"}", nil, 400, "invalid_json"},
		{"invalid UTF-8 in register", "POST", "/api/v1/auth/register", "{\"email\":\"\xff@example.com\",\"password\":\"12345678\"}", nil, 400, "invalid_json"},
		{"invalid UTF-8 in login", "POST", "/api/v1/auth/login", "{\"email\":\"a@example.com\",\"password\":\"\xfe\xff\"}", nil, 400, "invalid_json"},
		{"invalid UTF-8 in login form", "POST", "/api/v1/auth/login", "username=\xff&password=x", header{"Content-Type": "application/x-www-form-urlencoded"}, 400, "invalid_json"},
		{"invalid UTF-8 in patch", "PATCH", one, "{\"description\":\"\xed\xa0\x80\"}", nil, 400, "invalid_json"},
		{"surrogate escape", "POST", "/api/v1/tasks", `{"title":"\ud800"}`, nil, 201, ""},
		{"NUL in title", "POST", "/api/v1/tasks", `{"title":"a\u0000b"}`, nil, 422, "validation_error"},
		{"NUL in description", "POST", "/api/v1/tasks", `{"title":"a","description":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in tags", "POST", "/api/v1/tasks", `{"title":"a","tags":["x\u0000"]}`, nil, 422, "validation_error"},
		{"NUL in priority", "POST", "/api/v1/tasks", `{"title":"a","priority":"high\u0000"}`, nil, 422, "validation_error"},
		{"NUL in due date", "POST", "/api/v1/tasks", `{"title":"a","due_date":"2030-01-01\u0000"}`, nil, 422, "validation_error"},
		{"NUL in put", "PUT", one, `{"title":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in section 6 put", "PUT", "/api/" + sub + "/tasks/" + strconv.FormatInt(task.ID, 10), `{"description":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in name", "PATCH", "/api/v1/auth/me", `{"name":"\u0000"}`, nil, 422, "validation_error"},
		{"NUL in register email", "POST", "/api/v1/auth/register", `{"email":"a\u0000@example.com","password":"12345678"}`, nil, 422, "validation_error"},
		{"NUL in register name", "POST", "/api/v1/auth/register", `{"email":"nul-name@example.com","password":"12345678","name":"a\u0000"}`, nil, 422, "validation_error"},
		{"NUL in login email", "POST", "/api/v1/auth/login", `{"email":"hostile@example.com\u0000","password":"correct horse battery"}`, nil, 401, "invalid_credentials"},
		{"NUL in login password", "POST", "/api/v1/auth/login", `{"email":"hostile@example.com","password":"\u0000"}`, nil, 401, "invalid_credentials"},
		{"NUL in login form", "POST", "/api/v1/auth/login", "username=hostile%40example.com%00&password=x", header{"Content-Type": "application/x-www-form-urlencoded"}, 401, "invalid_credentials"},
		{"NUL in refresh token", "POST", "/api/v1/auth/refresh", `{"refresh_token":"1.\u0000"}`, nil, 401, "invalid_token"},
		{"NUL in password change", "POST", "/api/v1/auth/password", `{"current_password":"\u0000","new_password":"\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000"}`, nil, 422, "validation_error"},
		{"NUL in q", "GET", "/api/v1/tasks?q=%00", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in q", "GET", "/api/v1/tasks?q=%A9", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in search", "GET", "/api/" + sub + "/tasks?search=%FF%FE", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in tag", "GET", "/api/v1/tasks?tag=%C3%28", "", nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in bulk filter", "PATCH", "/api/v1/tasks?q=%FF", `{"completed":true}`, nil, 400, "invalid_query"},
		{"invalid UTF-8 escape in login form", "POST", "/api/v1/auth/login", "username=%FF%40example.com&password=x", header{"Content-Type": "application/x-www-form-urlencoded"}, 401, "invalid_credentials"},
		{"NUL in search", "GET", "/api/" + sub + "/tasks?search=a%00", "", nil, 400, "invalid_query"},
		{"NUL in tag", "GET", "/api/v1/tasks?tag=%00", "", nil, 400, "invalid_query"},
		{"NUL in sort", "GET", "/api/v1/tasks?sort=title%00", "", nil, 400, "invalid_query"},
		{"NUL in cursor", "GET", "/api/v1/tasks?cursor=%00.%00", "", nil, 400, "invalid_query"},
		{"NUL in bulk delete filter", "DELETE", "/api/v1/tasks?completed=true&q=%00", "", nil, 400, "invalid_query"},
		{"long q", "GET", "/api/v1/tasks?q=" + long, "", nil, 400, "invalid_query"},
		{"long tag", "GET", "/api/v1/tasks?tag=" + long, "", nil, 400, "invalid_query"},
		{"long cursor", "GET", "/api/v1/tasks?cursor=" + long, "", nil, 400, "invalid_query"},
		{"long limit", "GET", "/api/v1/tasks?limit=" + strings.Repeat("9", 10_000), "", nil, 400, "invalid_query"},
		{"long offset", "GET", "/api/" + sub + "/tasks?offset=" + strings.Repeat("9", 10_000), "", nil, 400, "invalid_query"},
		{"long due date", "GET", "/api/v1/tasks?due_before=" + long, "", nil, 400, "invalid_query"},
		{"many parameters", "GET", "/api/v1/tasks?" + strings.Repeat("x=1&", 2_500), "", nil, 200, ""},
		{"huge id", "GET", "/api/v1/tasks/99999999999999999999", "", nil, 404, "not_found"},
		{"huge id patch", "PATCH", "/api/v1/tasks/99999999999999999999", `{"title":"x"}`, nil, 404, "not_found"},
		{"huge id complete", "PATCH", "/api/v1/tasks/99999999999999999999/complete", "", nil, 404, "not_found"},
		{"huge id delete", "DELETE", "/api/v1/tasks/99999999999999999999", "", nil, 404, "not_found"},
		{"max id", "GET", "/api/v1/tasks/9223372036854775807", "", nil, 404, "not_found"},
		{"negative id", "GET", "/api/v1/tasks/-1", "", nil, 404, "not_found"},
		{"zero id", "GET", "/api/v1/tasks/0", "", nil, 404, "not_found"},
		{"exponent id", "GET", "/api/v1/tasks/1e3", "", nil, 404, "not_found"},
		{"long id", "GET", "/api/v1/tasks/" + long, "", nil, 404, "not_found"},
		{"huge id section 6", "GET", "/api/" + sub + "/tasks/99999999999999999999", "", nil, 404, "not_found"},
		{"huge user id section 6", "GET", "/api/99999999999999999999/tasks", "", nil, 403, "forbidden"},
		{"nested JSON body", "POST", "/api/v1/tasks", nested(20_000, "1"), nil, 400, "invalid_json"},
		{"nested JSON array", "POST", "/api/v1/tasks", strings.Repeat("[", 50_000) + strings.Repeat("]", 50_000), nil, 400, "invalid_json"},
		{"nested JSON field", "POST", "/api/v1/tasks", `{"title":` + nested(5_000, `"x"`) + `}`, nil, 422, "validation_error"},
		{"nested JSON tags", "POST", "/api/v1/tasks", `{"title":"a","tags":[` + strings.Repeat("[", 5_000) + strings.Repeat("]", 5_000) + `]}`, nil, 422, "validation_error"},
		{"nested JSON register", "POST", "/api/v1/auth/register", nested(20_000, "1"), nil, 400, "invalid_json"},
		{"huge number", "POST", "/api/v1/tasks", `{"title":"a","completed":1e999999}`, nil, 422, "validation_error"},
		{"huge number priority", "PATCH", one, `{"priority":123456789012345678901234567890}`, nil, 422, "validation_error"},
		{"far due date", "POST", "/api/v1/tasks", `{"title":"a","due_date":"9999-12-31T23:59:59-23:59"}`, nil, 422, "validation_error"},
		{"far due filter", "GET", "/api/v1/tasks?due_before=9999-12-31T23:59:59-23:59", "", nil, 400, "invalid_query"},
		{"early due date", "POST", "/api/v1/tasks", `{"title":"a","due_date":"0001-01-01T00:00:00+23:59"}`, nil, 422, "validation_error"},
		{"duplicate keys", "POST", "/api/v1/tasks", `{"title":"a","title":""}`, nil, 422, "validation_error"},
		{"long header token", "GET", "/api/v1/tasks", "", header{"Authorization": "Bearer " + long}, 401, "invalid_token"},
		{"NUL-free garbage token", "GET", "/api/v1/tasks", "", header{"Authorization": "Bearer a.b.c"}, 401, "invalid_token"},
	})
	// A stored task stays listable whatever was sent: nothing hostile was stored in a
	// form the service cannot answer.
	env.do("GET", "/api/v1/tasks?limit=100", "", token).want(200, "")
	env.do("GET", "/api/"+sub+"/tasks", "", token).want(200, "")
}
