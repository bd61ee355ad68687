package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiver is testdata/clients/webhooks/receiver.mjs running: a webhook receiver that
// verifies each delivery with the official standardwebhooks package.
type receiver struct {
	url   string
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []map[string]any
	got   chan struct{}
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is required for the webhook receiver: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", filepath.Join("webhooks", "receiver.mjs"))
	cmd.Dir = clientsDir
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	rc := &receiver{stdin: stdin, got: make(chan struct{}, 1000)}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatal("the receiver did not start")
	}
	var first struct{ Port int }
	json.Unmarshal(sc.Bytes(), &first)
	rc.url = fmt.Sprintf("http://127.0.0.1:%d/hook", first.Port)
	go func() {
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				rc.mu.Lock()
				rc.lines = append(rc.lines, m)
				rc.mu.Unlock()
				rc.got <- struct{}{}
			}
		}
	}()
	return rc
}

func (rc *receiver) tell(t *testing.T, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := rc.stdin.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the receiver reads its stdin between requests
}

// wait returns the receiver's lines once it has printed n of them.
func (rc *receiver) wait(t *testing.T, n int) []map[string]any {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		rc.mu.Lock()
		if len(rc.lines) >= n {
			out := append([]map[string]any(nil), rc.lines...)
			rc.mu.Unlock()
			return out
		}
		rc.mu.Unlock()
		select {
		case <-rc.got:
		case <-deadline:
			t.Fatalf("the receiver printed %d lines, want %d", len(rc.lines), n)
		}
	}
}

func webhookEnv(t *testing.T) *testEnv {
	cfg := testConfig(newTestDatabase(t))
	cfg.WebhookAllowPrivate = true
	return newTestEnvWith(t, cfg)
}

// TestWebhookDeliveriesVerifyWithStandardWebhooks: a subscription's secret is shown once;
// task changes and a reminder reach the receiver as Standard Webhooks messages that the
// official library verifies, with the body {"type","timestamp","data"}; a receiver that
// fails three times gets the delivery on the fourth attempt, the attempts spaced by a
// growing back-off (the scheduling clock moved, not waited for), with the same webhook-id.
func TestWebhookDeliveriesVerifyWithStandardWebhooks(t *testing.T) {
	t.Parallel()
	env := webhookEnv(t)
	rc := startReceiver(t)
	token, _ := env.registerUser("hooked@example.com")
	var hook webhookJSON
	env.do("POST", "/api/v1/webhooks", `{"url":"`+rc.url+`"}`, token).want(201, "").json(&hook)
	if !strings.HasPrefix(hook.Secret, "whsec_") || hook.Status != "active" || len(hook.Events) != 4 {
		t.Fatalf("created %+v", hook)
	}
	var list struct{ Items []map[string]any }
	env.do("GET", "/api/v1/webhooks", "", token).want(200, "").json(&list)
	if len(list.Items) != 1 || list.Items[0]["secret"] != nil {
		t.Fatalf("list %+v", list)
	}
	rc.tell(t, map[string]any{"secret": hook.Secret})

	wd := env.srv.webhooks
	ctx := context.Background()
	task := env.createTask(token, `{"title":"hooked","remind_at":"`+time.Now().Add(-time.Second).UTC().Format(time.RFC3339)+`"}`)
	env.do("PATCH", env.taskPath(task.ID), `{"title":"hooked again"}`, token).want(200, "")
	if _, err := env.srv.reminders.step(ctx); err != nil {
		t.Fatal(err)
	}
	env.do("DELETE", env.taskPath(task.ID), "", token).want(204, "")
	if err := wd.step(ctx); err != nil {
		t.Fatal(err)
	}
	wd.wg.Wait()
	lines := rc.wait(t, 4)
	types := map[string]map[string]any{}
	for _, l := range lines {
		if l["invalid"] != nil {
			t.Fatalf("the library refused a delivery: %v", l)
		}
		p := l["payload"].(map[string]any)
		if len(p) != 3 || p["timestamp"] == nil {
			t.Errorf("body %v, want exactly type, timestamp, data", p)
		}
		types[p["type"].(string)] = p["data"].(map[string]any)
	}
	if types[eventCreated]["title"] != "hooked" || types[eventUpdated]["title"] != "hooked again" ||
		types[eventDeleted]["id"] != float64(task.ID) || types[eventReminder]["task"] == nil {
		t.Errorf("deliveries %v", types)
	}

	// Three failures, then success: the attempts wait longer and longer.
	rc.tell(t, map[string]any{"fail": 3})
	env.createTask(token, `{"title":"flaky"}`)
	clock := time.Now()
	var clockMu sync.Mutex
	wd.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	var gaps []time.Duration
	for attempt := 1; attempt <= 4; attempt++ {
		if err := wd.step(ctx); err != nil {
			t.Fatal(err)
		}
		wd.wg.Wait()
		rc.wait(t, 4+attempt)
		var next time.Time
		err := env.st.pool.QueryRow(ctx, `SELECT min(next_attempt_at) FROM webhook_deliveries`).Scan(&next)
		if attempt == 4 {
			if err == nil && !next.IsZero() {
				t.Errorf("the delivery is still queued after it succeeded")
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		clockMu.Lock()
		gaps = append(gaps, next.Sub(clock))
		clock = next
		clockMu.Unlock()
	}
	if len(gaps) != 3 || gaps[0] > 30*time.Second || gaps[1] <= gaps[0]/2 || gaps[2] <= gaps[1]/2 || gaps[2] < 30*time.Second {
		t.Errorf("back-off %v, want the first within 30 s and growing", gaps)
	}
	final := rc.wait(t, 8)
	ids := map[any]int{}
	for _, l := range final[4:] {
		ids[l["id"]]++
	}
	if len(ids) != 1 || final[7]["payload"] == nil {
		t.Errorf("the attempts of one delivery: %v", final[4:])
	}
	scrape := string(env.srv.metrics.appendTo(nil))
	for _, want := range []string{`todo_webhook_deliveries_total{outcome="delivered"} 5`, `todo_webhook_deliveries_total{outcome="failed"} 3`,
		"todo_webhook_queue_depth 0", "todo_reminders_fired_total 1"} {
		if !strings.Contains(scrape, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	var after struct{ Items []webhookJSON }
	env.do("GET", "/api/v1/webhooks", "", token).want(200, "").json(&after)
	if after.Items[0].Status != "active" {
		t.Errorf("status after a success: %s", after.Items[0].Status)
	}
}

// TestWebhookRoutes: validation, the cap of ten, another user's subscription, deletion.
func TestWebhookRoutes(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t) // WEBHOOK_ALLOW_PRIVATE off
	token, _ := env.registerUser("routes-hooks@example.com")
	other, _ := env.registerUser("routes-hooks-2@example.com")
	for _, body := range []string{`{}`, `{"url":5}`, `{"url":"http://example.com/hook"}`, `{"url":"ftp://example.com"}`,
		`{"url":"https://127.0.0.1/hook"}`, `{"url":"https://[::1]/hook"}`, `{"url":"https://10.1.2.3/x"}`,
		`{"url":"https://user:pw@example.com/x"}`, `{"url":"https://example.com/x","events":["task.nope"]}`,
		`{"url":"https://example.com/x","events":[]}`} {
		env.do("POST", "/api/v1/webhooks", body, token).want(422, "validation_error")
	}
	var first webhookJSON
	env.do("POST", "/api/v1/webhooks", `{"url":"https://example.com/a","events":["task.*"]}`, token).want(201, "").json(&first)
	if fmt.Sprint(first.Events) != "[task.created task.updated task.deleted]" {
		t.Errorf("events %v", first.Events)
	}
	for i := 1; i < maxWebhooks; i++ {
		env.do("POST", "/api/v1/webhooks", fmt.Sprintf(`{"url":"https://example.com/%d","events":["task.reminder"]}`, i), token).want(201, "")
	}
	env.do("POST", "/api/v1/webhooks", `{"url":"https://example.com/11"}`, token).want(422, "validation_error")
	env.do("DELETE", fmt.Sprintf("/api/v1/webhooks/%d", first.ID), "", other).want(404, "not_found")
	env.do("DELETE", fmt.Sprintf("/api/v1/webhooks/%d", first.ID), "", token).want(204, "")
	env.do("DELETE", fmt.Sprintf("/api/v1/webhooks/%d", first.ID), "", token).want(404, "not_found")
	env.do("DELETE", "/api/v1/webhooks/abc", "", token).want(404, "not_found")
	env.do("GET", "/api/v1/webhooks", "", "").want(401, "not_authenticated")
}

// TestWebhookAddressGuard: every class of non-public address is refused when the
// connection is made, whatever name led there.
func TestWebhookAddressGuard(t *testing.T) {
	t.Parallel()
	for _, a := range []string{"127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "fc00::1",
		"fd12:3456::1", "169.254.169.254", "fe80::1", "100.64.0.1", "100.127.255.254", "224.0.0.1", "ff02::1",
		"0.0.0.0", "::", "0.1.2.3", "255.255.255.255", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254"} {
		if publicAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s counts as public", a)
		}
	}
	for _, a := range []string{"93.184.216.34", "8.8.8.8", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"} {
		if !publicAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s counts as not public", a)
		}
	}
	// The dialer refuses at connect time: a name that resolves to loopback (localhost)
	// never gets a connection.
	rc := startReceiver(t)
	client := webhookClient(false)
	_, err := client.Post(strings.Replace(rc.url, "127.0.0.1", "localhost", 1), "application/json", strings.NewReader("{}"))
	if err == nil || !strings.Contains(err.Error(), errBlockedAddress.Error()) {
		t.Errorf("a delivery to localhost: %v", err)
	}
}

// TestWebhookDeliveriesSurviveSIGKILL: the real binary is killed (SIGKILL) while
// deliveries are in flight; a new process on the same database delivers every one, and a
// delivery received twice carries the same webhook-id both times.
func TestWebhookDeliveriesSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	rc := startReceiver(t)
	rc.tell(t, map[string]any{"delay_ms": 1500, "announce": true})
	env := map[string]string{"DATABASE_URL": newTestDatabase(t), "WEBHOOK_ALLOW_PRIVATE": "true"}
	p1 := startBinary(t, env)
	client := relClient(t, 10*time.Second)
	token, _ := relRegister(t, client, p1.base, "killed@example.com")
	r := relCall(client, "POST", p1.base+"/api/v1/webhooks", `{"url":"`+rc.url+`","events":["task.created"]}`, token, nil)
	var hook webhookJSON
	if json.Unmarshal(r.body, &hook); r.status != 201 {
		t.Fatalf("create webhook: %d %s", r.status, r.body)
	}
	rc.tell(t, map[string]any{"secret": hook.Secret})
	const n = 10
	for i := range n {
		if r := relCall(client, "POST", p1.base+"/api/v1/tasks", fmt.Sprintf(`{"title":"t%d"}`, i), token, nil); r.status != 201 {
			t.Fatalf("create: %d", r.status)
		}
	}
	rc.wait(t, 1) // a delivery has arrived and waits for its answer: the sends are in flight
	p1.cmd.Process.Kill()
	<-p1.exited
	startBinary(t, env)
	deadline := time.Now().Add(60 * time.Second)
	for {
		seen := map[string]int{}
		for _, l := range rc.wait(t, 0) {
			if l["invalid"] != nil {
				t.Fatalf("the library refused a delivery: %v", l)
			}
			if id, ok := l["id"].(string); ok && l["payload"] != nil {
				seen[id]++
			}
		}
		if len(seen) > n {
			t.Fatalf("%d webhook-ids for %d events", len(seen), n)
		}
		if len(seen) == n {
			repeats := 0
			for _, c := range seen {
				repeats += c - 1
			}
			t.Logf("%d deliveries after SIGKILL, %d of them received twice (the same webhook-id)", n, repeats)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries arrived after the restart: %v", len(seen), n, seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestWebhookSlowReceiverAndDisabling: a receiver that takes seconds to answer does not
// hold back another user's delivery; a receiver that fails for three days (the scheduling
// clock moved from attempt to attempt) is disabled, visibly, and gets nothing more.
func TestWebhookSlowReceiverAndDisabling(t *testing.T) {
	t.Parallel()
	env := webhookEnv(t)
	slow, fast, down := startReceiver(t), startReceiver(t), startReceiver(t)
	slow.tell(t, map[string]any{"delay_ms": 3000})
	down.tell(t, map[string]any{"fail": 1_000_000})
	tokens := map[*receiver]string{}
	for i, rc := range []*receiver{slow, fast, down} {
		token, _ := env.registerUser(fmt.Sprintf("receiver-%d@example.com", i))
		var hook webhookJSON
		env.do("POST", "/api/v1/webhooks", `{"url":"`+rc.url+`"}`, token).want(201, "").json(&hook)
		rc.tell(t, map[string]any{"secret": hook.Secret})
		tokens[rc] = token
	}
	env.createTask(tokens[slow], `{"title":"slow"}`)
	env.createTask(tokens[fast], `{"title":"fast"}`)
	wd := env.srv.webhooks
	ctx := context.Background()
	if err := wd.step(ctx); err != nil {
		t.Fatal(err)
	}
	fast.wait(t, 1)
	slow.mu.Lock()
	if len(slow.lines) != 0 {
		t.Errorf("the slow receiver answered before the fast one got its delivery")
	}
	slow.mu.Unlock()
	wd.wg.Wait()

	env.createTask(tokens[down], `{"title":"never"}`)
	clock := time.Now()
	var clockMu sync.Mutex
	wd.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	var hooks struct{ Items []webhookJSON }
	for attempt := 0; ; attempt++ {
		if attempt == 400 {
			t.Fatal("still not disabled after 400 failed attempts")
		}
		if err := wd.step(ctx); err != nil {
			t.Fatal(err)
		}
		wd.wg.Wait()
		env.do("GET", "/api/v1/webhooks", "", tokens[down]).want(200, "").json(&hooks)
		if hooks.Items[0].Status == "disabled" {
			break
		}
		if attempt > 0 && hooks.Items[0].Status != "failing" {
			t.Fatalf("status %q after %d failures", hooks.Items[0].Status, attempt+1)
		}
		var next time.Time
		if err := env.st.pool.QueryRow(ctx, `SELECT min(next_attempt_at) FROM webhook_deliveries`).Scan(&next); err != nil {
			t.Fatal(err)
		}
		clockMu.Lock()
		clock = next
		clockMu.Unlock()
	}
	h := hooks.Items[0]
	if h.DisabledAt == nil || h.FailingSince == nil || h.DisabledAt.Sub(*h.FailingSince) < 72*time.Hour {
		t.Errorf("disabled %+v", h)
	}
	env.createTask(tokens[down], `{"title":"after"}`)
	var queued int
	env.st.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries`).Scan(&queued)
	if queued != 0 {
		t.Errorf("%d deliveries queued for a disabled webhook", queued)
	}
}
