package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Webhooks (contract §10): a user's subscriptions, and the worker that delivers the
// queued events to them as Standard Webhooks messages (webhook-id, webhook-timestamp,
// webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">).

// webhookEventTypes are the event types a subscription can take; "task.*" stands for the
// three task changes.
var webhookEventTypes = []string{eventCreated, eventUpdated, eventDeleted, eventReminder}

// webhookJSON is a subscription as the API shows it; Secret only in the answer to its
// creation.
type webhookJSON struct {
	ID           int64      `json:"id"`
	URL          string     `json:"url"`
	Events       []string   `json:"events"`
	CreatedAt    time.Time  `json:"created_at"`
	Status       string     `json:"status"`
	FailingSince *time.Time `json:"failing_since"`
	DisabledAt   *time.Time `json:"disabled_at"`
	Secret       string     `json:"secret,omitempty"`
}

func (w webhook) wire() webhookJSON {
	status := "active"
	switch {
	case w.DisabledAt != nil:
		status = "disabled"
	case w.FailingSince != nil:
		status = "failing"
	}
	utc := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		u := t.UTC()
		return &u
	}
	return webhookJSON{ID: w.ID, URL: w.URL, Events: w.Events, CreatedAt: w.CreatedAt.UTC(), Status: status,
		FailingSince: utc(w.FailingSince), DisabledAt: utc(w.DisabledAt)}
}

// handleWebhookCreate serves POST /api/v1/webhooks.
func (s *Server) handleWebhookCreate(w http.ResponseWriter, r *http.Request) error {
	b, err := s.decodeObject(w, r)
	if err != nil {
		return err
	}
	rawURL := field[string](&b, "url", "must be a string")
	events := field[[]string](&b, "events", "must be an array of event types")
	errs := &b.errs
	target := ""
	switch {
	case errs.has("url"):
	case rawURL.Value == nil:
		errs.add("url", "is required")
	default:
		if msg := s.checkWebhookURL(*rawURL.Value); msg != "" {
			errs.add("url", msg)
		}
		target = strings.TrimSpace(*rawURL.Value)
	}
	types := webhookEventTypes
	if events.Value != nil && !errs.has("events") {
		types = nil
		for _, e := range *events.Value {
			switch {
			case e == "task.*":
				types = append(types, eventCreated, eventUpdated, eventDeleted)
			case e == eventCreated || e == eventUpdated || e == eventDeleted || e == eventReminder:
				types = append(types, e)
			default:
				errs.add("events", "must name task.created, task.updated, task.deleted, task.reminder or task.*")
			}
		}
		if len(types) == 0 && !errs.has("events") {
			errs.add("events", "must name at least one event type")
		}
	}
	errs.inOrder("url", "events")
	if len(*errs) > 0 {
		return validationFailed(*errs)
	}
	types = dedupe(types)
	key := make([]byte, 24)
	rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	hook, err := s.st.CreateWebhook(r.Context(), principalFrom(r.Context()).UserID, target, types, secret)
	if err != nil {
		return err
	}
	out := hook.wire()
	out.Secret = secret
	w.Header().Set("Location", "/api/v1/webhooks/"+strconv.FormatInt(hook.ID, 10))
	return writeJSON(w, http.StatusCreated, out)
}

func dedupe(xs []string) []string {
	var out []string
	for _, x := range xs {
		if !containsString(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func containsString(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// checkWebhookURL says what is wrong with a subscription's URL, or "". The address it
// names is checked again at every delivery, when it is dialled (webhookDialer).
func (s *Server) checkWebhookURL(raw string) string {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Hostname() == "" || len(raw) > 2048:
		return "must be an absolute https URL of at most 2,048 characters"
	case u.User != nil:
		return "must not carry a user name or password"
	case u.Scheme == "https":
	case u.Scheme == "http" && s.cfg.WebhookAllowPrivate:
	default:
		return "must be an https URL"
	}
	if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !s.cfg.WebhookAllowPrivate && !publicAddr(a) {
		return "must not name a loopback, private, link-local or other non-public address"
	}
	return ""
}

// handleWebhookList serves GET /api/v1/webhooks.
func (s *Server) handleWebhookList(w http.ResponseWriter, r *http.Request) error {
	hooks, err := s.st.ListWebhooks(r.Context(), principalFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	items := make([]webhookJSON, 0, len(hooks))
	for _, h := range hooks {
		items = append(items, h.wire())
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// handleWebhookDelete serves DELETE /api/v1/webhooks/{id}.
func (s *Server) handleWebhookDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return notFound("webhook")
	}
	if err := s.st.DeleteWebhook(r.Context(), principalFrom(r.Context()).UserID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- delivery ----

// publicAddr reports whether a is an address a webhook may reach: not loopback, private
// (RFC 1918, fc00::/7), link-local, carrier-grade NAT (100.64.0.0/10), multicast,
// unspecified, broadcast or "this network" (0.0.0.0/8); an IPv4-mapped IPv6 address is
// judged as the IPv4 address it carries.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	switch {
	case !a.IsValid(), a.IsLoopback(), a.IsPrivate(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(),
		a.IsInterfaceLocalMulticast(), a.IsMulticast(), a.IsUnspecified():
		return false
	case a.Is4():
		b := a.As4()
		return !(b[0] == 0 || b[0] == 100 && b[1]&0xc0 == 64 || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
	}
	return true
}

// errBlockedAddress is a delivery refused at connect time.
var errBlockedAddress = errors.New("the webhook's address is not public")

// webhookClient makes the HTTP client of deliveries: the address is checked when the
// connection is made (the dialer's Control), after DNS, so a name that resolves to an
// inner address — also one that changes between two lookups — is refused; no proxy; no
// redirects followed; 10 seconds a delivery.
func webhookClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		if allowPrivate {
			return nil
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !publicAddr(ap.Addr()) {
			return errBlockedAddress
		}
		return nil
	}}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// webhookDeliverer sends the queued deliveries: every replica runs one. It looks for due
// deliveries every second (one read of the queue's index, usually empty), claims each
// with a single-row lease, sends it, and records the outcome: delivered (the row goes),
// or failed (the next attempt after a back-off: 30 s, doubling up to an hour, with
// jitter), given up after deliveryGiveUp. A webhook failing for disableAfter is disabled.
// Sends run at most deliveryParallel at once, each bounded by the client's 10 s, so a slow
// receiver holds one slot, not the others' deliveries.
type webhookDeliverer struct {
	st     *Store
	log    *slog.Logger
	client *http.Client
	now    func() time.Time // the scheduling clock; tests move it instead of waiting
	slots  chan struct{}
	wg     sync.WaitGroup
	// Outcomes, for the metrics.
	delivered, failed, gaveUp, disabled atomic.Int64
}

const (
	deliveryLease    = 15 * time.Second // a send takes at most 10 s
	deliveryGiveUp   = 73 * time.Hour   // after its webhook's three days of failures disabled it
	disableAfter     = 72 * time.Hour
	deliveryParallel = 16
	deliveryPoll     = time.Second
	maxReceiverBody  = 4 << 10
)

func newWebhookDeliverer(st *Store, log *slog.Logger, allowPrivate bool) *webhookDeliverer {
	return &webhookDeliverer{st: st, log: log, client: webhookClient(allowPrivate), now: time.Now,
		slots: make(chan struct{}, deliveryParallel)}
}

// retryDelay is the wait before attempt n+1 after n failed ones: 30 s doubling to an
// hour, times a random factor in [0.5, 1) so that receivers coming back are not hit by
// every sender at once.
func retryDelay(n int) time.Duration {
	d := 30 * time.Second
	for i := 1; i < n && d < time.Hour; i++ {
		d *= 2
	}
	d = min(d, time.Hour)
	return time.Duration(float64(d) * (0.5 + mrand.Float64()/2))
}

func (wd *webhookDeliverer) run(ctx context.Context) error {
	tick := time.NewTicker(deliveryPoll)
	defer tick.Stop()
	for {
		if err := wd.step(ctx); err != nil && ctx.Err() == nil {
			wd.log.Warn("webhook deliveries", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			wd.wg.Wait()
			return nil
		case <-tick.C:
		}
	}
}

// step claims the due deliveries and starts sending them; it does not wait for the sends.
func (wd *webhookDeliverer) step(ctx context.Context) error {
	now := wd.now()
	due, err := wd.st.DueDeliveries(ctx, now, 100)
	if err != nil {
		return err
	}
	for _, k := range due {
		d, ok, err := wd.st.ClaimDelivery(ctx, k[0], k[1], now, deliveryLease)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		select {
		case wd.slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		wd.wg.Add(1)
		go func() {
			defer func() { <-wd.slots; wd.wg.Done() }()
			wd.deliver(context.WithoutCancel(ctx), d)
		}()
	}
	return nil
}

// deliver sends one delivery and records its outcome.
func (wd *webhookDeliverer) deliver(ctx context.Context, d delivery) {
	err := wd.send(ctx, d)
	now := wd.now()
	if err == nil {
		wd.delivered.Add(1)
		if err := wd.st.DeliverySucceeded(ctx, d); err != nil {
			wd.log.Warn("webhook delivery", "error", err.Error())
		}
		return
	}
	wd.failed.Add(1)
	giveUp := now.Sub(d.CreatedAt) >= deliveryGiveUp
	if giveUp {
		wd.gaveUp.Add(1)
	}
	disabled, rerr := wd.st.DeliveryFailed(ctx, d, now, now.Add(retryDelay(d.Attempts)), giveUp, err.Error(), disableAfter)
	if rerr != nil {
		wd.log.Warn("webhook delivery", "error", rerr.Error())
	}
	if disabled {
		wd.disabled.Add(1)
	}
	wd.log.Info("webhook delivery failed", "user_id", d.UserID, "webhook_id", d.WebhookID, "attempt", d.Attempts,
		"error", err.Error(), "gave_up", giveUp, "webhook_disabled", disabled)
}

// send posts the delivery as a Standard Webhooks message: a non-2xx answer, a network
// error or a timeout is a failure.
func (wd *webhookDeliverer) send(ctx context.Context, d delivery) error {
	data, err := renderData(d.Type, d.Payload)
	if err != nil {
		return err
	}
	body := []byte(`{"type":` + strconv.Quote(d.Type) + `,"timestamp":"` + d.CreatedAt.UTC().Format(time.RFC3339Nano) + `","data":`)
	body = append(append(body, data...), '}')
	// The message id is the same on every attempt, so the receiver can drop repeats.
	id := fmt.Sprintf("msg_%d_%d_%d", d.UserID, d.WebhookID, d.EventID)
	ts := strconv.FormatInt(time.Now().Unix(), 10) // the wall clock: receivers check it
	sig, err := signWebhook(d.Secret, id, ts, body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "todo-webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", sig)
	resp, err := wd.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxReceiverBody))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %d", resp.StatusCode)
	}
	return nil
}

// signWebhook is the Standard Webhooks signature: "v1," and the base64 HMAC-SHA256, keyed
// with the secret's base64 part, of "id.timestamp.body".
func signWebhook(secret, id, ts string, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}
