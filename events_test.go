package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// feedEntry is one recorded event as a test compares it: its type and its task's id.
type feedEntry struct {
	Type string
	Task int64
}

func (f feedEntry) String() string { return f.Type + " " + strconv.FormatInt(f.Task, 10) }

// recordedEvents reads the user's outbox and checks that the ids run 1, 2, 3… without a
// gap; each event's task id comes from its payload.
func recordedEvents(t *testing.T, st *Store, userID int64) ([]feedEntry, []storedEvent) {
	t.Helper()
	evs, err := st.ReadEvents(context.Background(), userID, 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	var got []feedEntry
	for i, e := range evs {
		if e.ID != int64(i+1) {
			t.Fatalf("event %d has id %d: ids must run 1, 2, 3… in commit order", i+1, e.ID)
		}
		var p struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal(e.Payload, &p); err != nil || p.ID == 0 {
			t.Fatalf("event %d: payload %s", e.ID, e.Payload)
		}
		got = append(got, feedEntry{e.Type, p.ID})
	}
	return got, evs
}

// TestEveryWriteRecordsItsEvents drives every kind of task write, through the /api/v1 and
// the section 6 routes, and the writes that fail: the outbox holds exactly one event per
// task changed, in order, and nothing for a write that changed nothing or failed.
func TestEveryWriteRecordsItsEvents(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("recorder@example.com")
	uid := strconv.FormatInt(user.ID, 10)
	var want []feedEntry
	expect := func(typ string, ids ...int64) {
		for _, id := range ids {
			want = append(want, feedEntry{typ, id})
		}
	}

	a := env.createTask(token, `{"title":"a"}`)
	expect(eventCreated, a.ID)
	b := env.createTask(token, `{"title":"b","due_date":"2030-01-07T09:00:00Z","recurrence":"FREQ=WEEKLY"}`)
	expect(eventCreated, b.ID)
	env.do("PATCH", env.taskPath(a.ID), `{"title":"a2"}`, token).want(200, "")
	expect(eventUpdated, a.ID)
	env.do("PATCH", env.taskPath(a.ID), `{"title":"a2"}`, token).want(200, "") // no change, no event
	env.do("PATCH", env.taskPath(a.ID)+"/complete", "", token).want(200, "")
	expect(eventUpdated, a.ID)
	var done wireTask
	env.do("PATCH", env.taskPath(b.ID), `{"completed":true}`, token).want(200, "").json(&done)
	if done.NextTaskID == nil {
		t.Fatal("completing a recurring task made no successor")
	}
	expect(eventCreated, *done.NextTaskID)
	expect(eventUpdated, b.ID)
	var c wireTask
	env.do("POST", "/api/"+uid+"/tasks", `{"title":"c"}`, token).want(201, "").json(&c)
	expect(eventCreated, c.ID)
	env.do("PUT", "/api/"+uid+"/tasks/"+strconv.FormatInt(c.ID, 10), `{"title":"c2"}`, token).want(200, "")
	expect(eventUpdated, c.ID)
	env.do("PATCH", "/api/"+uid+"/tasks/"+strconv.FormatInt(c.ID, 10)+"/complete", "", token).want(200, "")
	expect(eventUpdated, c.ID)
	env.do("PUT", env.taskPath(a.ID), `{"title":"a3","completed":false}`, token).want(200, "")
	expect(eventUpdated, a.ID)

	// An MCP tool is a thin adapter over the same store calls: the same events.
	var rpc struct {
		Result struct {
			StructuredContent wireTask `json:"structuredContent"`
		} `json:"result"`
	}
	env.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_task","arguments":{"title":"via mcp"}}}`,
		token, header{"Accept": "application/json, text/event-stream"}).want(200, "").json(&rpc)
	if rpc.Result.StructuredContent.ID == 0 {
		t.Fatal("add_task answered no task")
	}
	expect(eventCreated, rpc.Result.StructuredContent.ID)
	env.do("POST", "/mcp", fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_task","arguments":{"id":%d}}}`,
		rpc.Result.StructuredContent.ID), token, header{"Accept": "application/json, text/event-stream"}).want(200, "")
	expect(eventDeleted, rpc.Result.StructuredContent.ID)

	// Writes that fail or change nothing record nothing.
	env.do("PATCH", env.taskPath(a.ID), `{"title":""}`, token).want(422, "validation_error")
	env.do("PATCH", env.taskPath(a.ID), `{"title":"x"}`, token, header{"If-Match": `"999"`}).want(412, "precondition_failed")
	env.do("DELETE", env.taskPath(a.ID), "", token, header{"If-Match": `"999"`}).want(412, "precondition_failed")
	env.do("PATCH", env.taskPath(999999), `{"title":"x"}`, token).want(404, "not_found")
	env.do("PATCH", env.taskPath(b.ID), `{"due_date":null}`, token).want(422, "validation_error")
	other, _ := env.registerUser("recorder-other@example.com")
	env.do("DELETE", env.taskPath(a.ID), "", other).want(404, "not_found")

	env.do("DELETE", "/api/"+uid+"/tasks/"+strconv.FormatInt(c.ID, 10), "", token).want(204, "")
	expect(eventDeleted, c.ID)

	// Bulk: one event per task changed. Open now: a and the successor.
	// The recurring successor gets its own successor, created first.
	before := len(want)
	env.do("PATCH", "/api/v1/tasks", `{"completed":true}`, token).want(200, "")
	evs, _ := recordedEvents(t, env.st, user.ID)
	if len(evs) <= before {
		t.Fatalf("the bulk completion recorded nothing")
	}
	expect(eventCreated, evs[before].Task)
	expect(eventUpdated, a.ID, *done.NextTaskID)
	env.do("PATCH", "/api/v1/tasks?completed=true", `{"completed":false}`, token).want(200, "")
	expect(eventUpdated, a.ID, b.ID, *done.NextTaskID)
	env.do("PATCH", "/api/v1/tasks?completed=true", `{"completed":true}`, token).want(200, "") // matches none
	env.do("PATCH", env.taskPath(a.ID), `{"completed":true}`, token).want(200, "")
	expect(eventUpdated, a.ID)
	env.do("DELETE", "/api/v1/tasks?completed=true", "", token).want(200, "")
	expect(eventDeleted, a.ID)

	got, _ := recordedEvents(t, env.st, user.ID)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recorded\n%v\nwant\n%v", got, want)
	}
	if others, _ := recordedEvents(t, env.st, user.ID+1); len(others) != 0 {
		t.Errorf("the other user has events: %v", others)
	}
}

// TestConcurrentWritersGetContiguousIDs: 8 writers of one user, 50 writes each; every
// write that succeeded is in the outbox exactly once, numbered without a gap.
func TestConcurrentWritersGetContiguousIDs(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("racer@example.com")
	seed := env.createTask(token, `{"title":"shared"}`)
	var mu sync.Mutex
	succeeded := 1
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				var r response
				switch i % 3 {
				case 0:
					r = env.do("POST", "/api/v1/tasks", fmt.Sprintf(`{"title":"w%d-%d"}`, w, i), token)
				case 1:
					r = env.do("PATCH", env.taskPath(seed.ID), fmt.Sprintf(`{"title":"w%d-%d"}`, w, i), token)
				default:
					r = env.do("PATCH", env.taskPath(seed.ID)+"/complete", "", token)
				}
				if r.Code != http.StatusOK && r.Code != http.StatusCreated {
					t.Errorf("write: %d %s", r.Code, r.Body.String())
					continue
				}
				mu.Lock()
				succeeded++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	got, _ := recordedEvents(t, env.st, user.ID)
	if len(got) != succeeded {
		t.Errorf("%d events for %d writes", len(got), succeeded)
	}
}

// ---- streams ----

// feedServer is one replica for the stream tests: a test environment served over real
// HTTP, with its listener running.
type feedServer struct {
	env *testEnv
	url string
}

func startFeedServer(t *testing.T, env *testEnv) *feedServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var background sync.WaitGroup
	background.Go(func() { env.srv.events.run(ctx) })
	background.Go(func() { env.srv.reminders.run(ctx) })
	select {
	case <-env.srv.events.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the event listener did not start")
	}
	hs := httptest.NewServer(env.srv)
	t.Cleanup(func() {
		env.srv.events.shutdown()
		hs.Close()
		cancel()
		background.Wait()
	})
	return &feedServer{env: env, url: hs.URL}
}

// sseMessage is one message a stream sent, or a comment.
type sseMsg struct {
	ID, Event, Data, Retry string
	Comment                string
}

type sseClient struct {
	resp   *http.Response
	msgs   chan sseMsg
	cancel context.CancelFunc
	ended  chan struct{} // closed when the server ends the stream
}

// openStream opens GET /api/v1/events with query and headers (a bearer token when token is
// set); the answer is returned as is when it is not 200.
func openStream(t *testing.T, base, token, query string, headers header) (*sseClient, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/events"+query, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil, resp
	}
	c := &sseClient{resp: resp, msgs: make(chan sseMsg, 100_000), cancel: cancel, ended: make(chan struct{})}
	t.Cleanup(c.close)
	go func() {
		defer close(c.ended)
		rd := bufio.NewReader(resp.Body)
		var m sseMsg
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if m != (sseMsg{}) {
					c.msgs <- m
				}
				m = sseMsg{}
			case strings.HasPrefix(line, ":"):
				m.Comment = strings.TrimSpace(line[1:])
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "id":
					m.ID = v
				case "event":
					m.Event = v
				case "data":
					m.Data = v
				case "retry":
					m.Retry = v
				}
			}
		}
	}()
	return c, resp
}

func (c *sseClient) close() {
	c.cancel()
	c.resp.Body.Close()
}

// next returns the next event (comments and the retry message skipped).
func (c *sseClient) next(t *testing.T) sseMsg {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-c.msgs:
			if m.Event != "" {
				return m
			}
		case <-timeout:
			t.Fatal("no event within 10 s")
		}
	}
}

// quiet fails if an event arrives within d.
func (c *sseClient) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m := <-c.msgs:
			if m.Event != "" {
				t.Fatalf("unexpected event %+v", m)
			}
		case <-timeout:
			return
		}
	}
}

// waitEnded fails unless the server ends the stream within d.
func (c *sseClient) waitEnded(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case <-c.ended:
	case <-time.After(d):
		t.Fatalf("the stream did not end within %v after %s", d, why)
	}
}

func (e *testEnv) ticket(token string) string {
	e.t.Helper()
	var tk struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	e.do("POST", "/api/v1/events/ticket", "", token).want(200, "").json(&tk)
	if tk.ExpiresIn != 60 || tk.Ticket == "" {
		e.t.Fatalf("ticket answer %+v", tk)
	}
	return tk.Ticket
}

// TestEventStreamAcrossReplicas: writes on replica A, a stream on replica B (two servers,
// one database). Every event arrives in order, with the task as GET answers it.
func TestEventStreamAcrossReplicas(t *testing.T) {
	t.Parallel()
	envA := newTestEnv(t)
	envB := newTestEnvWith(t, envA.cfg)
	startFeedServer(t, envA)
	b := startFeedServer(t, envB)
	token, user := envA.registerUser("streamer@example.com")
	uid := strconv.FormatInt(user.ID, 10)
	early := envA.createTask(token, `{"title":"before the stream"}`)

	c, resp := openStream(t, b.url, token, "", nil)
	if c == nil {
		t.Fatalf("open: %d", resp.StatusCode)
	}
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := c.resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	select {
	case first := <-c.msgs:
		if first.Retry == "" {
			t.Errorf("the first message carries no retry: %+v", first)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no first message")
	}

	check := func(typ, data string) sseMsg {
		t.Helper()
		m := c.next(t)
		if m.Event != typ || (data != "" && m.Data != data) {
			t.Fatalf("got %s %s, want %s %s", m.Event, m.Data, typ, data)
		}
		return m
	}
	created := envA.do("POST", "/api/v1/tasks", `{"title":"one","tags":["x"],"due_date":"2030-01-01T10:00:00Z"}`, token).want(201, "")
	var one wireTask
	created.json(&one)
	m := check(eventCreated, strings.TrimSpace(created.Body.String()))
	if m.ID != "2" { // the task created before the stream was event 1, and is not sent
		t.Errorf("first streamed id %s, want 2", m.ID)
	}
	upd := envA.do("PATCH", envA.taskPath(one.ID), `{"title":"one & <two>","priority":"high"}`, token).want(200, "")
	check(eventUpdated, strings.TrimSpace(upd.Body.String()))
	done := envA.do("PATCH", envA.taskPath(one.ID)+"/complete", "", token).want(200, "")
	check(eventUpdated, strings.TrimSpace(done.Body.String()))
	var hack wireTask
	envA.do("POST", "/api/"+uid+"/tasks", `{"title":"hackathon"}`, token).want(201, "").json(&hack)
	check(eventCreated, "")
	envA.do("PATCH", "/api/v1/tasks", `{"completed":true}`, token).want(200, "")
	check(eventUpdated, "") // early
	check(eventUpdated, "") // hackathon
	envA.do("DELETE", "/api/v1/tasks?completed=true", "", token).want(200, "")
	for _, id := range []int64{early.ID, one.ID, hack.ID} {
		check(eventDeleted, fmt.Sprintf(`{"id":%d}`, id))
	}
	c.quiet(t, 300*time.Millisecond)
}

// TestEventStreamResumesOnEitherReplica: while 8 writers write, a reader disconnects after
// a random number of events and resumes with Last-Event-ID (header or query) on the other
// replica; what it received is every event exactly once, in order.
func TestEventStreamResumesOnEitherReplica(t *testing.T) {
	t.Parallel()
	envA := newTestEnv(t)
	envB := newTestEnvWith(t, envA.cfg)
	servers := []*feedServer{startFeedServer(t, envA), startFeedServer(t, envB)}
	token, user := envA.registerUser("resumer@example.com")

	c, _ := openStream(t, servers[0].url, token, "", nil)
	c.quiet(t, 50*time.Millisecond) // opened: it starts with the next write
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				env := []*testEnv{envA, envB}[i%2]
				env.do("POST", "/api/v1/tasks", fmt.Sprintf(`{"title":"w%d-%d"}`, w, i), token).want(201, "")
			}
		})
	}
	var got []int64
	for round := 0; len(got) < 400; round++ {
		take := 1 + (round*37)%60
		for range take {
			m := c.next(t)
			id, _ := strconv.ParseInt(m.ID, 10, 64)
			got = append(got, id)
			if len(got) == 400 {
				break
			}
		}
		c.close()
		last := strconv.FormatInt(got[len(got)-1], 10)
		srv := servers[round%2].url
		if round%3 == 0 {
			c, _ = openStream(t, srv, token, "?last_event_id="+last, nil)
		} else {
			c, _ = openStream(t, srv, token, "", header{"Last-Event-ID": last})
		}
		if c == nil {
			t.Fatal("resume refused")
		}
	}
	wg.Wait()
	c.quiet(t, 200*time.Millisecond)
	for i, id := range got {
		if id != int64(i+1) {
			t.Fatalf("event %d of the union has id %d: lost or repeated", i+1, id)
		}
	}
	if all, _ := recordedEvents(t, envA.st, user.ID); len(all) != 400 {
		t.Errorf("%d events recorded for 400 writes", len(all))
	}
}

// TestEventStreamAuthentication: tickets (single use, of their user, expiring), never an
// access token in the URL, a user's stream holds only their own events, and resume ids
// that cannot be honoured.
func TestEventStreamAuthentication(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	srv := startFeedServer(t, env)
	alice, _ := env.registerUser("alice-feed@example.com")
	bob, bobUser := env.registerUser("bob-feed@example.com")

	refused := func(query, token string, headers header, status int, code string) {
		t.Helper()
		c, resp := openStream(t, srv.url, token, query, headers)
		if c != nil {
			t.Fatalf("%s: opened", query)
		}
		var e errorBody
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != status || e.ErrorCode != code {
			t.Errorf("%s: %d %s, want %d %s", query, resp.StatusCode, e.ErrorCode, status, code)
		}
	}
	refused("", "", nil, 401, "not_authenticated")
	refused("?access_token="+alice, "", nil, 401, "not_authenticated")
	refused("?ticket=1.nonsense", "", nil, 401, "invalid_token")
	refused("?ticket=garbage", "", nil, 401, "invalid_token")
	refused("", "not-a-jwt", nil, 401, "invalid_token")
	refused("?last_event_id=abc", alice, nil, 400, "invalid_query")
	refused("", alice, header{"Last-Event-ID": "-1"}, 400, "invalid_query")

	tk := env.ticket(alice)
	c, resp := openStream(t, srv.url, "", "?ticket="+url.QueryEscape(tk), nil)
	if c == nil {
		t.Fatalf("ticket refused: %d", resp.StatusCode)
	}
	refused("?ticket="+url.QueryEscape(tk), "", nil, 401, "invalid_token") // used
	// Another user's ticket id with alice's secret part is unknown too.
	_, secret, _ := strings.Cut(tk, ".")
	refused("?ticket="+strconv.FormatInt(bobUser.ID, 10)+"."+secret, "", nil, 401, "invalid_token")
	expired := env.ticket(alice)
	if _, err := env.st.pool.Exec(context.Background(), `UPDATE event_tickets SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	refused("?ticket="+url.QueryEscape(expired), "", nil, 401, "invalid_token")

	bc, _ := openStream(t, srv.url, bob, "", nil)
	bobTask := env.createTask(bob, `{"title":"bob's"}`)
	aliceTask := env.createTask(alice, `{"title":"alice's"}`)
	if m := c.next(t); m.Data == "" || !strings.Contains(m.Data, `"id":`+strconv.FormatInt(aliceTask.ID, 10)) {
		t.Errorf("alice got %+v", m)
	}
	if m := bc.next(t); !strings.Contains(m.Data, `"id":`+strconv.FormatInt(bobTask.ID, 10)) {
		t.Errorf("bob got %+v", m)
	}
	c.quiet(t, 200*time.Millisecond)
	bc.quiet(t, 10*time.Millisecond)

	// Resume from an id never issued: reset, then the stream goes on.
	rc, _ := openStream(t, srv.url, alice, "?last_event_id=99", nil)
	if m := rc.next(t); m.Event != "reset" || m.ID != "1" || !strings.Contains(m.Data, "reason") {
		t.Errorf("resume beyond the last id: %+v", m)
	}
	env.createTask(alice, `{"title":"after the reset"}`)
	if m := rc.next(t); m.ID != "2" || m.Event != eventCreated {
		t.Errorf("after the reset: %+v", m)
	}
	// Resume from an id whose successors the retention removed: reset.
	if _, err := env.st.CleanEvents(context.Background(), time.Now().Add(time.Hour), 100, 1); err != nil {
		t.Fatal(err)
	}
	env.createTask(alice, `{"title":"kept"}`)
	// The reset moves the client to the latest id: the list it reloads holds event 3's task.
	oc, _ := openStream(t, srv.url, alice, "?last_event_id=0", nil)
	if m := oc.next(t); m.Event != "reset" || m.ID != "3" || m.Data != `{"reason":"expired"}` {
		t.Errorf("resume from before the retention: %+v", m)
	}
	env.createTask(alice, `{"title":"next"}`)
	if m := oc.next(t); m.Event != eventCreated || m.ID != "4" {
		t.Errorf("after that reset: %+v", m)
	}
}

// TestEventStreamEnds: at the opening token's expiry, when the account is deleted on
// another replica, and beyond the caps a stream is refused; a closed stream frees its
// slot at once.
func TestEventStreamEnds(t *testing.T) {
	t.Parallel()
	cfg := testConfig(newTestDatabase(t))
	cfg.EventsMaxPerUser = 2
	cfg.EventsMaxStreams = 3
	envA := newTestEnvWith(t, cfg)
	envB := newTestEnvWith(t, cfg)
	a, b := startFeedServer(t, envA), startFeedServer(t, envB)
	token, _ := envA.registerUser("ender@example.com")
	other, _ := envA.registerUser("ender-2@example.com")

	s1, _ := openStream(t, b.url, token, "", nil)
	s2, _ := openStream(t, b.url, token, "", nil)
	if _, resp := openStream(t, b.url, token, "", nil); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third stream of a user: %d", resp.StatusCode)
	}
	s3, _ := openStream(t, b.url, other, "", nil)
	if _, resp := openStream(t, b.url, other, "", nil); resp.StatusCode != 503 {
		t.Errorf("stream beyond the replica's cap: %d", resp.StatusCode)
	}
	s3.close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _ := openStream(t, b.url, other, "", nil)
		if c != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed stream did not free its slot")
		}
		time.Sleep(10 * time.Millisecond)
	}

	envA.do("DELETE", "/api/v1/auth/me", `{"password":"correct horse battery"}`, token).want(204, "")
	s1.waitEnded(t, 2*time.Second, "the account was deleted on the other replica")
	s2.waitEnded(t, 2*time.Second, "the account was deleted on the other replica")

	short := envA.cfg
	short.JWTAccessTTL, short.JWTLeeway = 2*time.Second, 0
	envC := newTestEnvWith(t, short)
	c := startFeedServer(t, envC)
	brief, _ := envC.registerUser("brief@example.com")
	bs, _ := openStream(t, c.url, brief, "", nil)
	if bs == nil {
		t.Fatal("open")
	}
	bs.waitEnded(t, 4*time.Second, "its token expired")
	_ = a
}

// TestShutdownEndsOpenStreams: the real binary with 1,000 open streams exits promptly on
// SIGTERM, well before its SHUTDOWN_TIMEOUT, and every stream sees its end.
func TestShutdownEndsOpenStreams(t *testing.T) {
	t.Parallel()
	p := startBinary(t, map[string]string{"EVENTS_MAX_PER_USER": "1000", "SHUTDOWN_TIMEOUT": "60s"})
	resp, err := http.Post(p.base+"/api/v1/auth/register", "application/json",
		strings.NewReader(`{"email":"many-streams@example.com","password":"correct horse battery"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tr tokenResponse
	json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	addr := strings.TrimPrefix(p.base, "http://")
	const n = 1000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	request := "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tr.AccessToken + "\r\n\r\n"
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte(request)); err != nil {
			t.Fatal(err)
		}
	}
	// Each stream is open once its first message (retry:) arrived.
	readers := make([]*bufio.Reader, n)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		readers[i] = bufio.NewReader(c)
		for {
			line, err := readers[i].ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if strings.HasPrefix(line, "retry:") {
				break
			}
		}
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the service did not exit within 30 s of SIGTERM with 1,000 open streams")
	}
	took := time.Since(start)
	if p.err != nil {
		t.Errorf("exit: %v", p.err)
	}
	// Far below SHUTDOWN_TIMEOUT (60 s): the streams did not hold the drain.
	if took > 10*time.Second {
		t.Errorf("exit took %v with 1,000 open streams", took)
	}
	t.Logf("exited %v after SIGTERM with %d open streams", took.Round(time.Millisecond), n)
	for i, r := range readers {
		conns[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatalf("stream %d was not ended: %v", i, err)
		}
	}
}

// TestEventStreamThroughADatabaseOutage restarts PostgreSQL while a writer writes on one
// replica and a stream listens on the other: once the database is back, the stream (or,
// if it was ended, the stream it resumes with Last-Event-ID) has every event committed
// before, during and after the outage, once each, in order.
func TestEventStreamThroughADatabaseOutage(t *testing.T) {
	t.Parallel()
	cluster := newRelCluster(t)
	cfg := testConfig(cluster.url())
	cfg.QueryTimeout = 2 * time.Second
	envA := newTestEnvWith(t, cfg)
	if err := envA.st.applySchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	envB := newTestEnvWith(t, cfg)
	startFeedServer(t, envA)
	b := startFeedServer(t, envB)
	token, user := envA.registerUser("outage-feed@example.com")
	c, _ := openStream(t, b.url, token, "", nil)
	c.quiet(t, 50*time.Millisecond)

	var ok atomic.Int32
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := envA.do("POST", "/api/v1/tasks", fmt.Sprintf(`{"title":"w%d"}`, i), token)
			if r.Code == http.StatusCreated {
				ok.Add(1)
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	waitFor := func(n int32) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ok.Load() < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("only %d writes succeeded", ok.Load())
			}
		}
	}
	waitFor(20)
	cluster.stop(t)
	time.Sleep(time.Second)
	cluster.start(t)
	before := ok.Load()
	waitFor(before + 20)
	close(stop)
	<-writerDone

	var all []storedEvent
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		evs, err := envA.st.ReadEvents(context.Background(), user.ID, 0, 100_000)
		if err == nil {
			all = evs
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	if len(all) < int(ok.Load()) {
		t.Fatalf("%d events recorded for %d writes answered 201", len(all), ok.Load())
	}
	var got int64
	resumes := 0
	for got < int64(len(all)) {
		select {
		case m := <-c.msgs:
			if m.Event == "" {
				continue
			}
			id, _ := strconv.ParseInt(m.ID, 10, 64)
			if id != got+1 {
				t.Fatalf("after id %d the stream sent %d (%s)", got, id, m.Event)
			}
			got = id
		case <-c.ended:
			if len(c.msgs) > 0 {
				continue
			}
			resumes++
			c.close()
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				c, _ = openStream(t, b.url, token, "", header{"Last-Event-ID": strconv.FormatInt(got, 10)})
				if c != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("could not resume after the outage")
				}
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the stream stopped at id %d of %d", got, len(all))
		}
	}
	c.quiet(t, 200*time.Millisecond)
	t.Logf("%d events, %d writes answered 201, %d resumes", len(all), ok.Load(), resumes)
}

// TestBrowserEventSource: a page served from another origin, in headless Chromium, asks for
// a ticket with fetch and opens an EventSource with it (CORS both ways); a task created
// through the API shows up on the page, with its id.
func TestBrowserEventSource(t *testing.T) {
	t.Parallel()
	page := httptest.NewUnstartedServer(nil)
	page.Start()
	defer page.Close()
	cfg := testConfig(newTestDatabase(t))
	cfg.CORSAllowedOrigins = []string{page.URL}
	env := newTestEnvWith(t, cfg)
	api := startFeedServer(t, env)
	token, _ := env.registerUser("browser-feed@example.com")
	page.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>feed</title><script>
window.events = []; window.opened = 0;
(async () => {
  const r = await fetch(%q + "/api/v1/events/ticket", {method: "POST", headers: {Authorization: "Bearer " + %q}});
  const {ticket} = await r.json();
  const es = new EventSource(%q + "/api/v1/events?ticket=" + encodeURIComponent(ticket));
  es.onopen = () => window.opened++;
  for (const type of ["task.created", "task.updated", "task.deleted"]) {
    es.addEventListener(type, e => window.events.push({type, id: e.lastEventId, data: JSON.parse(e.data)}));
  }
})();
</script>`, api.url, token, api.url)
	})
	b := startBrowser(t)
	b.navigate(t, page.URL)
	b.waitFor(t, "the stream to open", `window.opened === 1`)
	created := env.createTask(token, `{"title":"seen in the browser"}`)
	b.waitFor(t, "the event", `window.events.length === 1`)
	var got []struct {
		Type string
		ID   string
		Data wireTask
	}
	b.eval(t, `window.events`, &got)
	if got[0].Type != eventCreated || got[0].ID != "1" || got[0].Data.ID != created.ID || got[0].Data.Title != "seen in the browser" {
		t.Errorf("the page saw %+v", got)
	}
}

// TestEventStreamPingsAndDropsSlowClients: an idle stream gets a ": ping" comment every
// ping interval (15 s in service; shortened here), and a client that stops reading is cut
// off once its bounded buffer is full, freeing its slot, rather than holding memory.
func TestEventStreamPingsAndDropsSlowClients(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.srv.events.ping = 100 * time.Millisecond
	srv := startFeedServer(t, env)
	token, _ := env.registerUser("slow-reader@example.com")
	c, _ := openStream(t, srv.url, token, "", nil)
	deadline := time.After(10 * time.Second)
	for pinged := false; !pinged; {
		select {
		case m := <-c.msgs:
			pinged = m.Comment == "ping"
		case <-deadline:
			t.Fatal("no ping")
		}
	}
	c.close()

	// A raw connection that never reads after the first message.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetReadBuffer(4096) // let the server's writes block sooner
	}
	fmt.Fprintf(conn, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", token)
	for deadline := time.Now().Add(5 * time.Second); env.srv.events.open.Load() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stream did not open")
		}
	}
	big := strings.Repeat("x", 9000)
	for i := range 600 {
		env.do("POST", "/api/v1/tasks", fmt.Sprintf(`{"title":"t%d","description":%q}`, i, big), token).want(201, "")
	}
	for deadline := time.Now().Add(30 * time.Second); env.srv.events.open.Load() != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a client that does not read still holds its stream")
		}
	}
}
