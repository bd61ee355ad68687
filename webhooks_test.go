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
