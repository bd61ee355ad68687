package main

// A headless Chromium for the tests that need a real page: Debian's chromium, driven with
// chromedp over the DevTools protocol. Every browser test starts its own with
// startBrowser and drives it through the methods below.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browserLimit bounds each step. It is generous: the page renders on a busy machine,
// and only a page that never gets there should fail.
const browserLimit = 60 * time.Second

// browser is one tab of a headless Chromium started for one test. It records the page's
// uncaught script errors and the address of every request the page makes.
type browser struct {
	ctx context.Context // the tab's; each step runs under its own deadline derived from it
	out *syncBuffer     // Chromium's own output and chromedp's errors, for failure messages

	mu   sync.Mutex
	errs []string
	urls []string
}

// startBrowser starts Chromium with a blank tab for the test and stops it, with every
// process it started, when the test ends. Without Chromium the test fails:
// scripts/test.sh installs Debian's chromium package when it is missing.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	b := &browser{out: &syncBuffer{}}
	// The page talks to the service on loopback; Chromium itself is kept from calling
	// out: no QUIC, no background, component-update or sync traffic.
	// With no user-data-dir of ours, chromedp gives Chromium a fresh temporary profile and
	// removes it, and any helper process still using it, once Chromium has exited.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(findChromium(t)),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// A desktop's window: headless Chromium's default (780×437 inside) leaves the
		// lower part of a dialog out of reach of a mouse.
		chromedp.WindowSize(1280, 1024),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-crash-reporter", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("mute-audio", true),
		chromedp.CombinedOutput(b.out),
	}
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root.
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx,
		chromedp.WithListener(b.record),
		chromedp.WithErrorf(func(format string, args ...any) { fmt.Fprintf(b.out, "chromedp: "+format+"\n", args...) }))
	// Closing the tab, then the allocator, waits until Chromium has exited.
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	b.ctx = ctx

	// The first action starts Chromium and ties its life to the context it is given, so
	// it gets the tab's own context, and the start is bounded here instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start Chromium: %v\n%s", err, b.output())
		}
	case <-time.After(browserLimit):
		t.Fatalf("Chromium did not start within %v:\n%s", browserLimit, b.output())
	}
	return b
}

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium not found: install Debian's chromium package (scripts/test.sh does so when run as root)")
	return ""
}

// output is the end of Chromium's own output, for a failure's message.
func (b *browser) output() string {
	lines := strings.Split(strings.TrimSpace(b.out.String()), "\n")
	if len(lines) > 20 {
		lines = append([]string{"(Chromium's output, last 20 lines)"}, lines[len(lines)-20:]...)
	}
	return strings.Join(lines, "\n")
}

// record sees every event of the tab, in order, on chromedp's reading goroutine.
func (b *browser) record(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		if d := ev.ExceptionDetails; d != nil {
			text := d.Text
			if d.Exception != nil {
				text += " " + d.Exception.Description
			}
			b.errs = append(b.errs, text)
		}
	case *network.EventRequestWillBeSent:
		if ev.Request != nil {
			b.urls = append(b.urls, ev.Request.URL)
		}
	}
}

// exceptions are the page's uncaught script errors so far.
func (b *browser) exceptions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.errs)
}

// requests are the addresses of every request the page has made so far.
func (b *browser) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.urls)
}

// browserRun runs one action within browserLimit and fails the test if it fails.
func browserRun[T any](t *testing.T, b *browser, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.output())
	}
	return v
}

// onNewDocument has a script run in every document the tab loads from now on, before
// the page's own scripts.
func (b *browser) onNewDocument(t *testing.T, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserLimit)
	defer cancel()
	params := page.AddScriptToEvaluateOnNewDocumentParams{Source: script}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, params); err != nil {
		t.Fatalf("add a script for new documents: %v", err)
	}
}

// navigate loads a page and waits for its load event.
func (b *browser) navigate(t *testing.T, url string) {
	t.Helper()
	browserRun(t, b, "navigate to "+url, chromedp.Navigate(url))
}

// eval runs a JavaScript expression in the page, awaiting a promise, and decodes its
// value into out (unless out is nil or the value undefined).
func (b *browser) eval(t *testing.T, expr string, out any) {
	t.Helper()
	raw := browserRun(t, b, "evaluate "+oaShort(expr), chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("evaluate %s: %v (%s)", oaShort(expr), err, raw)
		}
	}
}

// waitFor polls a JavaScript condition in the page until it holds.
func (b *browser) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	browserRun(t, b, "wait for "+what, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(browserLimit)))
}

// click waits until the element that the expression (a selector, or an expression plus
// a suffix that walks from it) names is visible, then clicks its centre with the mouse.
func (b *browser) click(t *testing.T, selectorOrExpr string, then ...string) {
	t.Helper()
	el := selectorOrExpr
	if !strings.HasPrefix(el, "[") {
		el = "document.querySelector(" + strconv.Quote(selectorOrExpr) + ")"
	}
	el += strings.Join(then, "")
	browserRun(t, b, "click "+oaShort(el), chromedp.Click(chromedp.JSPath(el)))
}

// typeInto types text into an input as key presses, so that the page's own input
// handlers see it, and checks that the input holds it.
func (b *browser) typeInto(t *testing.T, selector, text string) {
	t.Helper()
	browserRun(t, b, "type into "+selector, chromedp.SendKeys(chromedp.CSS(selector), text))
	if got := browserRun(t, b, "read "+selector, chromedp.Value(chromedp.CSS(selector))); got != text {
		t.Fatalf("typed %q into %s, it holds %q", text, selector, got)
	}
}
