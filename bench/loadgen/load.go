package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchUser is a seeded user with an access token.
type benchUser struct {
	id    int64
	token string
}

// loadConfig is what one run needs to make its requests.
type loadConfig struct {
	base         string
	password     string
	emailFormat  string
	users        []benchUser // the users of the per-user scenarios
	heavy        benchUser   // the user with many tasks
	cursor       string      // the cursor of the heavy user's deep page
	taskUsers    int64       // see bench/seed.sql for how task ids follow from these
	tasksPerUser int64
}

// worker is one connection's request loop; its state is its own.
type worker struct {
	cfg *loadConfig
	rng *rand.Rand
	n   int64
	id  int
}

// call is one request to make.
type call struct {
	method, path, token string
	body                []byte
}

func (w *worker) user() benchUser { return w.cfg.users[w.rng.IntN(len(w.cfg.users))] }

// task picks a seeded task of a regular user, and that user.
func (w *worker) task() (benchUser, int64) {
	u := w.user()
	n := w.rng.Int64N(w.cfg.tasksPerUser)
	return u, (u.id - 1) + n*w.cfg.taskUsers
}

// scenarios are the request kinds of the benchmark. Bodies are small and realistic; each
// create and PATCH writes a new title.
var scenarios = map[string]func(w *worker) call{
	"get": func(w *worker) call {
		u, id := w.task()
		return call{method: "GET", path: "/api/v1/tasks/" + strconv.FormatInt(id, 10), token: u.token}
	},
	"list": func(w *worker) call {
		return call{method: "GET", path: "/api/v1/tasks?limit=20", token: w.user().token}
	},
	"list-heavy": func(w *worker) call {
		return call{method: "GET", path: "/api/v1/tasks?limit=20", token: w.cfg.heavy.token}
	},
	"list-deep": func(w *worker) call {
		return call{method: "GET", path: "/api/v1/tasks?limit=20&cursor=" + w.cfg.cursor, token: w.cfg.heavy.token}
	},
	"create": func(w *worker) call {
		w.n++
		body := fmt.Sprintf(`{"title":"Bench task %d-%d","priority":"high","tags":["bench","load"]}`, w.id, w.n)
		return call{method: "POST", path: "/api/v1/tasks", token: w.user().token, body: []byte(body)}
	},
	"patch": func(w *worker) call {
		u, id := w.task()
		w.n++
		body := fmt.Sprintf(`{"title":"Patched %d-%d","priority":"low"}`, w.id, w.n)
		return call{method: "PATCH", path: "/api/v1/tasks/" + strconv.FormatInt(id, 10), token: u.token, body: []byte(body)}
	},
	"toggle": func(w *worker) call {
		u, id := w.task()
		return call{method: "PATCH", path: "/api/v1/tasks/" + strconv.FormatInt(id, 10) + "/complete", token: u.token}
	},
	"login": func(w *worker) call {
		u := w.user()
		body, _ := json.Marshal(map[string]string{
			"email": fmt.Sprintf(w.cfg.emailFormat, u.id), "password": w.cfg.password})
		return call{method: "POST", path: "/api/v1/auth/login", body: body}
	},
}

// mixWeights is the "mix" scenario: a blend of the task scenarios, for the memory run.
var mixWeights = []struct {
	name   string
	weight int
}{{"get", 35}, {"list", 30}, {"patch", 15}, {"toggle", 10}, {"create", 10}}

func mix(w *worker) call {
	n := w.rng.IntN(100)
	for _, m := range mixWeights {
		if n < m.weight {
			return scenarios[m.name](w)
		}
		n -= m.weight
	}
	return scenarios["get"](w)
}

func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// do makes one request and reads the whole answer into buf.
func do(ctx context.Context, client *http.Client, base string, c call, buf *bytes.Buffer) (int, error) {
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, base+c.path, body)
	if err != nil {
		return 0, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	buf.Reset()
	_, err = buf.ReadFrom(res.Body)
	return res.StatusCode, err
}

// readTokens reads the "id token" lines that the tokens command writes.
func readTokens(path string) ([]benchUser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var users []benchUser
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		idText, token, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		id, err := strconv.ParseInt(idText, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		users = append(users, benchUser{id: id, token: token})
	}
	return users, sc.Err()
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var (
		cfg                loadConfig
		scenario, tokens   string
		size               string
		round, conns       int
		heavyID, clkTck    int64
		serverPID, dbPPID  int
		warmup, dur        time.Duration
		taskUsers, perUser int64
	)
	fs.StringVar(&cfg.base, "url", "http://127.0.0.1:8080", "base URL of the service")
	fs.StringVar(&scenario, "scenario", "get", "get, list, list-heavy, list-deep, create, patch, toggle, login or mix")
	fs.StringVar(&tokens, "tokens", "", `file of "id token" lines (from the tokens command)`)
	fs.StringVar(&cfg.cursor, "cursor", "", "the heavy user's deep-page cursor (list-deep)")
	fs.StringVar(&cfg.password, "password", "", "the seeded users' password (login)")
	fs.StringVar(&cfg.emailFormat, "email-format", "user%d@bench.example", "the seeded users' email, from their id")
	fs.Int64Var(&heavyID, "heavy-user", 1, "id of the heavy user")
	fs.Int64Var(&taskUsers, "task-users", 0, "seed: users holding tasks")
	fs.Int64Var(&perUser, "tasks-per-user", 0, "seed: tasks per such user")
	fs.IntVar(&conns, "c", 32, "connections (one request in flight on each)")
	fs.DurationVar(&warmup, "warmup", 5*time.Second, "warm-up, not measured")
	fs.DurationVar(&dur, "d", 15*time.Second, "measured duration")
	fs.IntVar(&serverPID, "pid", 0, "the service's process id, for its CPU time and memory")
	fs.IntVar(&dbPPID, "db-pid", 0, "the postmaster's process id, for the database's CPU time")
	fs.Int64Var(&clkTck, "clk-tck", 100, "clock ticks per second (getconf CLK_TCK)")
	fs.StringVar(&size, "size", "", "label of the data set, copied to the record")
	fs.IntVar(&round, "round", 0, "round number, copied to the record")
	if err := fs.Parse(args); err != nil {
		return err
	}
	next := scenarios[scenario]
	if scenario == "mix" {
		next = mix
	}
	if next == nil {
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	all, err := readTokens(tokens)
	if err != nil {
		return err
	}
	for _, u := range all {
		if u.id == heavyID {
			cfg.heavy = u
		} else {
			cfg.users = append(cfg.users, u)
		}
	}
	cfg.taskUsers, cfg.tasksPerUser = taskUsers, perUser
	switch {
	case len(cfg.users) == 0:
		return errors.New("no regular users in the tokens file")
	case (scenario == "list-heavy" || scenario == "list-deep") && cfg.heavy.token == "":
		return errors.New("no token of the heavy user")
	case scenario == "list-deep" && cfg.cursor == "":
		return errors.New("list-deep needs -cursor")
	case scenario == "login" && cfg.password == "":
		return errors.New("login needs -password")
	case taskUsers <= 0 || perUser <= 0:
		return errors.New("-task-users and -tasks-per-user are required")
	}

	rec, err := measure(&cfg, next, conns, warmup, dur, serverPID, dbPPID, float64(clkTck))
	if err != nil {
		return err
	}
	rec.Kind, rec.Size, rec.Round, rec.Scenario = "api", size, round, scenario
	out, _ := json.Marshal(rec)
	fmt.Println(string(out))
	return nil
}

// measure runs conns request loops for warmup+dur and measures the requests that
// complete inside the last dur: their rate and latency, and the CPU time the service,
// the database and this process spent meanwhile.
func measure(cfg *loadConfig, next func(*worker) call, conns int, warmup, dur time.Duration,
	serverPID, dbPPID int, clkTck float64) (record, error) {
	if _, err := newHTTPConn(cfg.base); err != nil {
		return record{}, err
	}
	peakReset := serverPID > 0 && resetPeakRSS(serverPID)

	start := time.Now()
	from, to := start.Add(warmup), start.Add(warmup+dur)

	type snapshot struct{ server, db, self int64 }
	snap := func() snapshot {
		server, _ := processTicks(serverPID)
		self, _ := processTicks(os.Getpid())
		return snapshot{server, treeTicks(dbPPID), self}
	}
	var before, after snapshot
	snapDone := make(chan struct{})
	go func() {
		defer close(snapDone)
		time.Sleep(time.Until(from))
		before = snap()
		time.Sleep(time.Until(to))
		after = snap()
	}()

	var (
		allRequests, errorsSeen atomic.Int64
		mu                      sync.Mutex
		samples                 [][]time.Duration
		firstErrors             []string
		wg                      sync.WaitGroup
	)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(i))), id: i}
			hc, _ := newHTTPConn(cfg.base)
			defer hc.close()
			var buf bytes.Buffer
			mine := make([]time.Duration, 0, 4096)
			for time.Now().Before(to) {
				c := next(w)
				t0 := time.Now()
				status, err := hc.do(c, &buf)
				t1 := time.Now()
				allRequests.Add(1)
				if err != nil || status < 200 || status > 299 {
					errorsSeen.Add(1)
					mu.Lock()
					if len(firstErrors) < 3 {
						msg := fmt.Sprintf("%s %s: %d %s", c.method, c.path, status, truncate(buf.String(), 200))
						if err != nil {
							msg = fmt.Sprintf("%s %s: %v", c.method, c.path, err)
						}
						firstErrors = append(firstErrors, msg)
					}
					mu.Unlock()
					if err != nil {
						time.Sleep(10 * time.Millisecond) // a refused connection must not spin
					}
				}
				if !t1.Before(from) && !t1.After(to) {
					mine = append(mine, t1.Sub(t0))
				}
			}
			mu.Lock()
			samples = append(samples, mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	<-snapDone
	for _, e := range firstErrors {
		fmt.Fprintln(os.Stderr, "error:", e)
	}

	var lats []time.Duration
	for _, s := range samples {
		lats = append(lats, s...)
	}
	slices.Sort(lats)
	n := int64(len(lats))
	rec := record{
		Conns: conns, Seconds: dur.Seconds(), Requests: n, AllRequests: allRequests.Load(),
		RPS: float64(n) / dur.Seconds(), Errors: errorsSeen.Load(),
	}
	if n == 0 {
		return rec, errors.New("no request completed in the measured window")
	}
	var sum time.Duration
	for _, l := range lats {
		sum += l
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rec.AvgMs = ms(sum / time.Duration(n))
	rec.P50Ms = ms(percentile(lats, 0.50))
	rec.P99Ms = ms(percentile(lats, 0.99))
	perReq := func(ticks int64) float64 { return float64(ticks) / clkTck * 1e6 / float64(n) }
	if serverPID > 0 {
		rec.ServerCPUUs = perReq(after.server - before.server)
		rec.PeakRSSKiB, rec.RSSKiB = memoryKiB(serverPID)
		rec.PeakIsReset = peakReset
	}
	if dbPPID > 0 {
		rec.DBCPUUs = perReq(after.db - before.db)
	}
	rec.LoadCPUUs = perReq(after.self - before.self)
	return rec, nil
}

// percentile of sorted latencies, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
