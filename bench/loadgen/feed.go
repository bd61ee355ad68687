package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// cmdFeed measures the change feed (GET /api/v1/events) and prints a Markdown section:
//
//   - idle: -streams streams opened across the users of -tokens and left idle for -idle;
//     the service's resident memory with them open (and before), its CPU and the
//     database's while they idle, and the statements the database ran meanwhile (the
//     command after --, which prints one number: pg_stat_statements' calls);
//   - fan-out: one stream for each user of -fan-tokens while -writers create tasks for
//     those users at -rate writes a second for -d; the latency of each event from the
//     task's created_at (the service's clock just before its statement, so at or before
//     the commit) to the moment the stream delivered it, p50 and p99.
//
// Streams are raw TCP connections reading the response line by line: a thousand
// goroutines with a small buffer each, so that the load generator's memory stays small.
func cmdFeed(args []string) error {
	fs := flag.NewFlagSet("feed", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the service")
	tokensPath := fs.String("tokens", "", "tokens for the idle streams")
	fanTokensPath := fs.String("fan-tokens", "", "tokens for the fan-out: one stream per user")
	streams := fs.Int("streams", 10000, "idle streams")
	idle := fs.Duration("idle", 20*time.Second, "how long the idle streams are watched")
	writers := fs.Int("writers", 8, "writers in the fan-out")
	rate := fs.Float64("rate", 200, "writes a second in the fan-out, all writers together")
	dur := fs.Duration("d", 20*time.Second, "how long the fan-out writes")
	pid := fs.Int("pid", 0, "the service's pid")
	dbPid := fs.Int("db-pid", 0, "the postmaster's pid")
	clk := fs.Int("clk-tck", 100, "clock ticks a second")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stmtCmd := fs.Args()
	users, err := readTokens(*tokensPath)
	if err != nil {
		return err
	}
	fanUsers, err := readTokens(*fanTokensPath)
	if err != nil {
		return err
	}
	addr := strings.TrimPrefix(*base, "http://")
	ticks := func() (svc, db int64) {
		own, reaped := processTicks(*pid)
		return own + reaped, treeTicks(*dbPid)
	}
	stmts := func() int64 {
		if len(stmtCmd) == 0 {
			return -1
		}
		out, err := exec.Command(stmtCmd[0], stmtCmd[1:]...).Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen feed: count statements: %v\n", err)
			return -1
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen feed: count statements: %q: %v\n", out, err)
			return -1
		}
		return n
	}
	cpuMs := func(t int64) float64 { return float64(t) * 1000 / float64(*clk) }

	// ---- idle ----
	_, rssBefore := memoryKiB(*pid)
	conns := make([]*feedConn, 0, *streams)
	openStart := time.Now()
	for i := range *streams {
		u := users[i%len(users)]
		c, err := openFeed(addr, u.token, nil)
		if err != nil {
			return fmt.Errorf("open idle stream %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	opened := time.Since(openStart)
	time.Sleep(2 * time.Second) // let the opening's garbage be collected
	s0, d0 := ticks()
	c0 := stmts()
	time.Sleep(*idle)
	s1, d1 := ticks()
	c1 := stmts()
	_, rssIdle := memoryKiB(*pid)
	for _, c := range conns {
		c.close()
	}
	conns = nil

	// ---- fan-out ----
	time.Sleep(2 * time.Second)
	var (
		mu        sync.Mutex
		latencies []time.Duration
		delivered atomic.Int64
	)
	listening := make([]*feedConn, 0, len(fanUsers))
	for _, u := range fanUsers {
		c, err := openFeed(addr, u.token, func(data []byte, at time.Time) {
			var ev struct {
				CreatedAt time.Time `json:"created_at"`
			}
			if json.Unmarshal(data, &ev) != nil || ev.CreatedAt.IsZero() {
				return
			}
			delivered.Add(1)
			mu.Lock()
			latencies = append(latencies, at.Sub(ev.CreatedAt))
			mu.Unlock()
		})
		if err != nil {
			return fmt.Errorf("open fan-out stream of user %d: %w", u.id, err)
		}
		listening = append(listening, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var written, failed atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) * float64(*writers) / *rate)
	for w := range *writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := newClient(1)
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			tick := time.NewTicker(interval)
			defer tick.Stop()
			var buf bytes.Buffer
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				u := fanUsers[rng.IntN(len(fanUsers))]
				status, err := do(ctx, client, *base, call{method: "POST", path: "/api/v1/tasks", token: u.token,
					body: []byte(`{"title":"fan-out"}`)}, &buf)
				if err == nil && status == 201 {
					written.Add(1)
				} else if ctx.Err() == nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for deadline := time.Now().Add(5 * time.Second); delivered.Load() < written.Load() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range listening {
		c.close()
	}
	mu.Lock()
	slices.Sort(latencies)
	mu.Unlock()

	fmt.Printf("#### Change feed\n\n")
	fmt.Printf("- %d idle streams (%d users) opened in %.1f s; service resident memory %.0f MiB before, %.0f MiB with them open (%.1f KiB a stream)\n",
		*streams, min(len(users), *streams), opened.Seconds(), float64(rssBefore)/1024, float64(rssIdle)/1024,
		float64(rssIdle-rssBefore)/float64(*streams))
	calls := "not measured"
	if c0 >= 0 && c1 >= 0 {
		calls = strconv.FormatInt(c1-c0-1, 10) // the second reading counts the first
	}
	fmt.Printf("- while they idle for %.0f s: service CPU %.0f ms, database CPU %.0f ms, statements run by the database: %s\n",
		idle.Seconds(), cpuMs(s1-s0), cpuMs(d1-d0), calls)
	fmt.Printf("- fan-out: %d users listening, one stream each; %d tasks created for them in %.0f s (%.0f a second, %d failed); %d events delivered\n",
		len(fanUsers), written.Load(), dur.Seconds(), float64(written.Load())/dur.Seconds(), failed.Load(), delivered.Load())
	if len(latencies) > 0 {
		fmt.Printf("- from the task's created_at (before its commit) to delivery: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
			ms(percentile(latencies, 0.50)), ms(percentile(latencies, 0.99)), ms(latencies[len(latencies)-1]))
	}
	fmt.Println()
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// feedConn is one open stream.
type feedConn struct {
	c    net.Conn
	done chan struct{}
}

// openFeed opens GET /api/v1/events and returns once its first message (retry:) has
// arrived; onData, when set, gets each event's data with the time it arrived.
func openFeed(addr, token string, onData func([]byte, time.Time)) (*feedConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("GET /api/v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " + token + "\r\n\r\n")); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 4096)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	status, err := r.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		c.Close()
		return nil, fmt.Errorf("answer %q: %v", strings.TrimSpace(status), err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, err
		}
		if strings.Contains(line, "retry:") {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	fc := &feedConn{c: c, done: make(chan struct{})}
	go func() {
		defer close(fc.done)
		for {
			line, err := r.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				continue // a longer line than any the benchmark's tasks make
			}
			if err != nil {
				return
			}
			// Chunked framing: a data line arrives whole within one chunk.
			if i := bytes.Index(line, []byte("data: ")); i >= 0 && onData != nil {
				onData(bytes.TrimSpace(line[i+6:]), time.Now())
			}
		}
	}()
	return fc, nil
}

func (fc *feedConn) close() {
	fc.c.Close()
	<-fc.done
}
