package main

// A headless Chromium for the tests that need a real page.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func docsFindChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium not found: install Debian's chromium package (scripts/test.sh does so when run as root)")
	return ""
}

// docsBrowser is a headless Chromium driven over the DevTools protocol, attached to one
// page.
type docsBrowser struct {
	ws      *docsWebSocket
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan docsCDPMessage
	errs    []string // uncaught script errors
	urls    []string // every request the page made
	done    chan struct{}
}

type docsCDPMessage struct {
	ID     int64           `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// docsStartChromium starts a headless Chromium with a fresh profile and attaches to its
// first page. Everything it started is stopped when the test ends.
func docsStartChromium(t *testing.T, bin string) *docsBrowser {
	t.Helper()
	profile, err := os.MkdirTemp("", "docs-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--disable-crash-reporter", "--no-proxy-server",
		"--mute-audio", "--user-data-dir="+profile, "--remote-debugging-port=0", "about:blank")
	// A process group of its own, so that its helper processes stop with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// A helper that outlives the browser must not hold Wait (and the test) on its pipes.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		os.RemoveAll(profile)
	})

	// With port 0 Chromium picks a free port and writes it to DevToolsActivePort.
	var port string
	docsPoll(t, "Chromium's DevTools port", 60*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("Chromium exited:\n%s", out.String())
		default:
		}
		b, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if lines := strings.Split(string(b), "\n"); err == nil && len(lines) >= 2 && lines[0] != "" {
			port = lines[0]
			return true
		}
		return false
	})
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var wsURL string
	docsPoll(t, "Chromium's page", 30*time.Second, func() bool {
		res, err := client.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var targets []struct{ Type, WebSocketDebuggerURL string }
		json.NewDecoder(res.Body).Decode(&targets)
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				wsURL = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	ws, err := docsDialWebSocket(wsURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", wsURL, err)
	}
	b := &docsBrowser{ws: ws, pending: map[int64]chan docsCDPMessage{}, done: make(chan struct{})}
	go b.read()
	t.Cleanup(func() { ws.conn.Close(); <-b.done })
	return b
}

func (b *docsBrowser) read() {
	defer close(b.done)
	for {
		raw, err := b.ws.readMessage()
		if err != nil {
			return
		}
		var m docsCDPMessage
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		b.mu.Lock()
		switch {
		case m.ID != 0:
			if ch, ok := b.pending[m.ID]; ok {
				ch <- m
				delete(b.pending, m.ID)
			}
		case m.Method == "Runtime.exceptionThrown":
			var p struct {
				ExceptionDetails struct {
					Text      string
					Exception struct{ Description string }
				}
			}
			json.Unmarshal(m.Params, &p)
			b.errs = append(b.errs, p.ExceptionDetails.Text+" "+p.ExceptionDetails.Exception.Description)
		case m.Method == "Network.requestWillBeSent":
			var p struct{ Request struct{ URL string } }
			json.Unmarshal(m.Params, &p)
			b.urls = append(b.urls, p.Request.URL)
		}
		b.mu.Unlock()
	}
}

func (b *docsBrowser) exceptions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.errs)
}

func (b *docsBrowser) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.urls)
}

// call sends one DevTools command and waits for its answer.
func (b *docsBrowser) call(t *testing.T, method string, params any) json.RawMessage {
	t.Helper()
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan docsCDPMessage, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if params == nil {
		msg, _ = json.Marshal(map[string]any{"id": id, "method": method})
	}
	if err := b.ws.writeFrame(1, msg); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			t.Fatalf("%s: %s", method, m.Error.Message)
		}
		return m.Result
	case <-b.done:
		t.Fatalf("%s: the connection to Chromium closed", method)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: no answer from Chromium", method)
	}
	return nil
}

// eval runs a JavaScript expression in the page and decodes its value into out.
func (b *docsBrowser) eval(t *testing.T, expr string, out any) {
	t.Helper()
	raw := b.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	if r.ExceptionDetails != nil {
		t.Fatalf("evaluate %s: %s %s", oaShort(expr), r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		if err := json.Unmarshal(r.Result.Value, out); err != nil {
			t.Fatalf("evaluate %s: %v (%s)", oaShort(expr), err, r.Result.Value)
		}
	}
}

// waitFor polls a JavaScript condition until it holds. The limit is generous: the page
// renders on a busy machine, and only a page that never gets there should fail.
func (b *docsBrowser) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	docsPoll(t, what, 60*time.Second, func() bool {
		var ok bool
		b.eval(t, "!!("+cond+")", &ok)
		return ok
	})
}

// click clicks the element that the expression (a selector, or an expression plus a
// suffix that walks from it) names.
func (b *docsBrowser) click(t *testing.T, selectorOrExpr string, then ...string) {
	t.Helper()
	el := selectorOrExpr
	if !strings.HasPrefix(el, "[") {
		el = "document.querySelector(" + strconv.Quote(selectorOrExpr) + ")"
	}
	el += strings.Join(then, "")
	b.waitFor(t, "an element to click: "+oaShort(el), el)
	b.eval(t, "("+el+").click()", nil)
}

// typeInto focuses an input and types text as keyboard input, so that the page's own
// input handlers see it.
func (b *docsBrowser) typeInto(t *testing.T, selector, text string) {
	t.Helper()
	b.eval(t, "document.querySelector("+strconv.Quote(selector)+").focus()", nil)
	b.call(t, "Input.insertText", map[string]any{"text": text})
	var got string
	b.eval(t, "document.querySelector("+strconv.Quote(selector)+").value", &got)
	if got != text {
		t.Fatalf("typed %q into %s, it holds %q", text, selector, got)
	}
}

func docsPoll(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %v", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// docsWebSocket is the client side of RFC 6455, as much as the DevTools protocol needs:
// text frames, fragmentation, ping and close.
type docsWebSocket struct {
	conn net.Conn
	br   *bufio.Reader
	wmu  sync.Mutex
}

func docsDialWebSocket(rawURL string) (*docsWebSocket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host, key)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	res.Body.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", res.Status)
	}
	return &docsWebSocket{conn: conn, br: br}, nil
}

// writeFrame sends one final frame; a client masks every frame it sends.
func (w *docsWebSocket) writeFrame(opcode byte, payload []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	frame := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xffff:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, c := range payload {
		frame = append(frame, c^mask[i%4])
	}
	_, err := w.conn.Write(frame)
	return err
}

// readMessage returns the next text or binary message, answering pings on the way.
func (w *docsWebSocket) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return nil, err
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 256<<20 {
			return nil, errors.New("websocket frame too large")
		}
		var mask [4]byte
		if h[1]&0x80 != 0 {
			if _, err := io.ReadFull(w.br, mask[:]); err != nil {
				return nil, err
			}
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.br, payload); err != nil {
			return nil, err
		}
		if h[1]&0x80 != 0 {
			for i := range payload {
				payload[i] ^= mask[i%4]
			}
		}
		switch h[0] & 0x0f {
		case 0x8:
			return nil, io.EOF
		case 0x9:
			if err := w.writeFrame(0xA, payload); err != nil {
				return nil, err
			}
			continue
		case 0xA:
			continue
		}
		msg = append(msg, payload...)
		if h[0]&0x80 != 0 {
			return msg, nil
		}
	}
}
