// Command todo is the backend of a multi-user todo application: a REST API over
// PostgreSQL, configured by environment variables. See README.md.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	_ "time/tzdata" // the zone database in the binary: the static image has no system zoneinfo
)

func main() {
	if os.Getenv("GOGC") == "" {
		// Twice the default heap growth between collections: a request's garbage is small
		// and short-lived, so under load this costs a few MiB of peak memory (about 35
		// instead of 28 MiB at 32 connections) for less collection work per request.
		// GOGC in the environment overrides.
		debug.SetGCPercent(200)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		cgroupMax, _ := os.ReadFile("/sys/fs/cgroup/memory.max")
		debug.SetMemoryLimit(defaultMemoryLimit(string(cgroupMax)))
	}
	if err := run(context.Background(), environment, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "todo:", err)
		os.Exit(1)
	}
}

// environment is os.Getenv, except that an unset METRICS_ADDR reads as its default: run's
// getenv cannot tell an unset variable from an empty one, and an empty METRICS_ADDR
// turns metrics off.
func environment(name string) string {
	v, ok := os.LookupEnv(name)
	if !ok && name == "METRICS_ADDR" {
		return defaultMetricsAddr
	}
	return v
}

// Config is everything the service reads from its environment.
type Config struct {
	DatabaseURL string
	Port        int
	MetricsAddr string // host:port of GET /metrics; empty: no metrics listener
	DevMode     bool
	LogLevel    slog.Level

	JWTSecret     []byte
	JWTAlgorithm  string
	JWTIssuer     string
	JWTAudience   string
	JWTAccessTTL  time.Duration
	JWTRefreshTTL time.Duration
	JWTLeeway     time.Duration

	BetterAuthURL      string
	BetterAuthJWKSURL  string
	BetterAuthIssuer   string
	BetterAuthAudience string
	BetterAuthSecret   []byte
	JWKSRefreshEvery   time.Duration

	CORSAllowedOrigins []string
	TrustedProxies     []netip.Prefix
	// RateLimitIPv6Prefix is the prefix length an IPv6 client address counts as in the
	// rate limits.
	RateLimitIPv6Prefix int
	// ToolCallsPerMinute is each user's budget of MCP tool calls.
	ToolCallsPerMinute int
	// The change feed: how long events are kept, and the caps on open streams per user
	// and per replica.
	EventsRetention  time.Duration
	EventsMaxPerUser int
	EventsMaxStreams int
	// mail is SMTP_URL, MAIL_FROM and APP_URL; account e-mail is off without SMTP_URL.
	mail mailConfig
	// WebhookAllowPrivate lets webhooks reach loopback and private addresses, and http
	// (development and tests only).
	WebhookAllowPrivate bool
	MaxBodyBytes        int64

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	QueryTimeout      time.Duration
	DBMaxConns        int32

	// Rate limits, shared by every replica: events allowed per minute for each client
	// address or email.
	LoginFailuresPerMinute int
	RegistersPerMinute     int
	HashConcurrency        int
	argon                  argonParams // defaultArgon; lowered only by tests
}

// loadConfig reads the configuration; an error names the variable at fault and never
// echoes a secret's value.
func loadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		DatabaseURL:       getenv("DATABASE_URL"),
		JWTIssuer:         orDefault(getenv("JWT_ISSUER"), "todo-api"),
		JWTAudience:       orDefault(getenv("JWT_AUDIENCE"), "todo-api"),
		BetterAuthURL:     strings.TrimRight(getenv("BETTER_AUTH_URL"), "/"),
		BetterAuthJWKSURL: getenv("BETTER_AUTH_JWKS_URL"),
		argon:             defaultArgon,
	}
	var errs []error
	bad := func(name, why string) { errs = append(errs, fmt.Errorf("%s: %s", name, why)) }

	switch env := strings.ToLower(getenv("APP_ENV")); env {
	case "", "production":
	case "development", "dev":
		c.DevMode = true
	default:
		bad("APP_ENV", "must be production or development")
	}
	if c.DatabaseURL != "" {
		if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			bad("DATABASE_URL", "must be a postgres:// URL")
		}
	} else {
		bad("DATABASE_URL", "is required")
	}

	intVar := func(name string, def, lo, hi int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			bad(name, fmt.Sprintf("must be a whole number from %d to %d", lo, hi))
			return def
		}
		return n
	}
	durVar := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			bad(name, "must be a Go duration such as 15s or 10m")
			return def
		}
		return d
	}

	c.Port = intVar("PORT", 8080, 0, 65535)
	// Metrics are for the operator, not the API's clients: never on the public port.
	if c.MetricsAddr = getenv("METRICS_ADDR"); c.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddr)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil || perr != nil || n < 0 || n > 65535:
			bad("METRICS_ADDR", "must be host:port, such as :9464 or 127.0.0.1:9464, or empty to turn metrics off")
		case n != 0 && n == c.Port:
			bad("METRICS_ADDR", "must not use the API's PORT: metrics are not part of the public API")
		}
	}
	c.MaxBodyBytes = int64(intVar("MAX_BODY_BYTES", 1<<20, 1, 1<<30))
	c.DBMaxConns = int32(intVar("DB_MAX_CONNS", 16, 1, 1000))
	c.LoginFailuresPerMinute = intVar("LOGIN_RATE_LIMIT", 10, 1, 1_000_000)
	c.RegistersPerMinute = intVar("REGISTER_RATE_LIMIT", 10, 1, 1_000_000)
	c.RateLimitIPv6Prefix = intVar("RATE_LIMIT_IPV6_PREFIX", 64, 32, 128)
	c.ToolCallsPerMinute = intVar("MCP_RATE_LIMIT", 120, 1, 1_000_000)
	c.EventsMaxPerUser = intVar("EVENTS_MAX_PER_USER", 10, 1, 10_000)
	c.EventsMaxStreams = intVar("EVENTS_MAX_STREAMS", 10_000, 1, 1_000_000)
	c.HashConcurrency = intVar("HASH_CONCURRENCY", defaultHashConcurrency(runtime.GOMAXPROCS(0)), 1, 1024)
	c.JWTAccessTTL = durVar("JWT_ACCESS_TTL", 15*time.Minute)
	c.JWTRefreshTTL = durVar("JWT_REFRESH_TTL", 30*24*time.Hour)
	c.JWTLeeway = durVar("JWT_LEEWAY", 60*time.Second)
	c.JWKSRefreshEvery = durVar("BETTER_AUTH_JWKS_REFRESH", time.Minute)
	c.ReadHeaderTimeout = durVar("READ_HEADER_TIMEOUT", 5*time.Second)
	c.ReadTimeout = durVar("READ_TIMEOUT", 15*time.Second)
	c.WriteTimeout = durVar("WRITE_TIMEOUT", 30*time.Second)
	c.IdleTimeout = durVar("IDLE_TIMEOUT", 120*time.Second)
	c.ShutdownTimeout = durVar("SHUTDOWN_TIMEOUT", 15*time.Second)
	c.QueryTimeout = durVar("QUERY_TIMEOUT", 3*time.Second)
	if v := getenv("SMTP_URL"); v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "smtp" && u.Scheme != "smtps") || u.Hostname() == "" {
			bad("SMTP_URL", "must be smtp://[user:password@]host[:port] or smtps://…")
		} else {
			c.mail.server = u
		}
		from, err := mail.ParseAddress(getenv("MAIL_FROM"))
		if err != nil {
			bad("MAIL_FROM", "must be an address such as Todo <todo@example.com> when SMTP_URL is set")
		} else {
			c.mail.from = from
		}
		app, err := url.Parse(getenv("APP_URL"))
		if err != nil || (app.Scheme != "https" && app.Scheme != "http") || app.Host == "" {
			bad("APP_URL", "must be the frontend's base URL (https://…) when SMTP_URL is set")
		} else {
			c.mail.appURL = strings.TrimRight(app.String(), "/")
		}
	}
	switch v := strings.ToLower(getenv("WEBHOOK_ALLOW_PRIVATE")); v {
	case "", "false", "0":
	case "true", "1":
		c.WebhookAllowPrivate = true
	default:
		bad("WEBHOOK_ALLOW_PRIVATE", "must be true or false")
	}
	c.EventsRetention = durVar("EVENTS_RETENTION", 24*time.Hour)
	if c.EventsRetention < 24*time.Hour {
		bad("EVENTS_RETENTION", "must be at least 24h (the contract keeps events a day)")
	}
	if c.ReadHeaderTimeout > 10*time.Second {
		bad("READ_HEADER_TIMEOUT", "must be at most 10s")
	}
	if c.JWTAccessTTL <= 0 || c.JWTRefreshTTL <= 0 {
		bad("JWT_ACCESS_TTL/JWT_REFRESH_TTL", "must be positive")
	}
	if c.QueryTimeout <= 0 || c.QueryTimeout > 5*time.Second {
		bad("QUERY_TIMEOUT", "must be above 0 and at most 5s, so an outage answers 503 in time")
	}

	switch lv := strings.ToLower(getenv("LOG_LEVEL")); lv {
	case "", "info":
		c.LogLevel = slog.LevelInfo
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		bad("LOG_LEVEL", "must be debug, info, warn or error")
	}

	switch alg := orDefault(getenv("JWT_ALGORITHM"), "HS256"); alg {
	case "HS256", "HS384", "HS512":
		c.JWTAlgorithm = alg
	default:
		bad("JWT_ALGORITHM", "must be HS256, HS384 or HS512")
	}
	c.JWTSecret = []byte(getenv("JWT_SECRET_KEY"))
	if len(c.JWTSecret) < 32 && !c.DevMode {
		bad("JWT_SECRET_KEY", "must be set to at least 32 bytes (or run with APP_ENV=development)")
	}
	if s := getenv("BETTER_AUTH_SECRET"); s != "" {
		if len(s) < 32 {
			bad("BETTER_AUTH_SECRET", "must be at least 32 bytes")
		}
		c.BetterAuthSecret = []byte(s)
	}
	if c.BetterAuthURL != "" {
		if u, err := url.Parse(c.BetterAuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("BETTER_AUTH_URL", "must be an http(s) URL")
		}
		if c.BetterAuthJWKSURL == "" {
			c.BetterAuthJWKSURL = c.BetterAuthURL + "/api/auth/jwks"
		}
	}
	// Left empty when unset: JWKS tokens then default to BETTER_AUTH_URL, and tokens minted
	// with BETTER_AUTH_SECRET are not checked for them (see betterauth.go).
	c.BetterAuthIssuer = getenv("BETTER_AUTH_ISSUER")
	c.BetterAuthAudience = getenv("BETTER_AUTH_AUDIENCE")
	if c.JWKSRefreshEvery < time.Second {
		bad("BETTER_AUTH_JWKS_REFRESH", "must be at least 1s, so unknown key ids cannot flood the JWKS endpoint")
	}
	if c.BetterAuthJWKSURL != "" && c.BetterAuthURL == "" && c.BetterAuthIssuer == "" {
		bad("BETTER_AUTH_JWKS_URL", "needs BETTER_AUTH_URL or BETTER_AUTH_ISSUER, the issuer its tokens are checked against")
	}
	// Without an audience a key set's tokens minted for any other service of the same
	// Better Auth server (or for none) would be accepted.
	if c.BetterAuthJWKSURL != "" && c.BetterAuthURL == "" && c.BetterAuthAudience == "" {
		bad("BETTER_AUTH_JWKS_URL", "needs BETTER_AUTH_URL or BETTER_AUTH_AUDIENCE, the audience its tokens are checked against")
	}
	if c.BetterAuthJWKSURL != "" {
		if u, err := url.Parse(c.BetterAuthJWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("BETTER_AUTH_JWKS_URL", "must be an http(s) URL")
		}
	}

	for _, o := range strings.Split(getenv("CORS_ALLOWED_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.CORSAllowedOrigins = append(c.CORSAllowedOrigins, strings.TrimRight(o, "/"))
		}
	}
	for _, p := range strings.Split(getenv("TRUSTED_PROXIES"), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				bad("TRUSTED_PROXIES", "must be a comma list of addresses or CIDR prefixes")
				continue
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, pfx.Masked())
	}
	return c, errors.Join(errs...)
}

// hashMemoryBudget is what concurrent Argon2id hashes may hold at once by default: each
// takes 19 MiB, so a login burst costs at most this much however many cores the machine
// has (a CPU-count default reached 640 MiB of peak memory on 16 cores).
const hashMemoryBudget = 96 << 20

// defaultHashConcurrency is one hash per core the runtime uses, at least 2, and no more
// than hashMemoryBudget holds.
func defaultHashConcurrency(procs int) int {
	return min(max(2, procs), max(1, hashMemoryBudget/(int(defaultArgon.memory)<<10)))
}

// defaultMemoryLimit is the Go runtime's soft memory limit when GOMEMLIMIT is not set:
// three quarters of the container's memory limit (cgroup v2 memory.max) when there is
// one, and never above 192 MiB, so that the collector returns a burst's hash buffers
// before the heap triples under GOGC=200. A soft limit only makes the collector work
// harder near it; a service that needs more still gets it.
func defaultMemoryLimit(cgroupMax string) int64 {
	limit := int64(192 << 20)
	if n, err := strconv.ParseInt(strings.TrimSpace(cgroupMax), 10, 64); err == nil && n > 0 {
		limit = min(limit, n/4*3)
	}
	return limit
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// run is main with its inputs passed in, so that tests can start the real service. It
// returns when ctx is cancelled or a signal arrives, after in-flight requests drain.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	logOut := startLogBuffer(stdout, logFlushInterval)
	defer logOut.Close()
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if len(cfg.JWTSecret) < 32 {
		// Development mode only (loadConfig refuses otherwise): tokens die with the process.
		cfg.JWTSecret = make([]byte, 32)
		rand.Read(cfg.JWTSecret)
		log.Warn("development mode: JWT_SECRET_KEY missing or short, using an ephemeral secret; tokens will not survive a restart")
	}

	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.applySchemaWithRetry(ctx, log, 30*time.Second); err != nil {
		return err
	}

	auth, err := NewAuthenticator(cfg, st, log)
	if err != nil {
		return err
	}
	logBetterAuthSetup(log, cfg)
	srv := NewServer(log, cfg, st, auth)

	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on PORT %d: %w", cfg.Port, err)
	}
	var mln net.Listener
	if cfg.MetricsAddr != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on METRICS_ADDR %s: %w", cfg.MetricsAddr, err)
		}
	}
	go cleanRateLimits(ctx, st, log)
	// The change feed's listener, the reminder scheduler and the clean-up run beside the
	// server; the first two are waited for, so that they end before the pool closes.
	var background sync.WaitGroup
	background.Go(func() { srv.events.run(ctx) })
	background.Go(func() { srv.reminders.run(ctx) })
	background.Go(func() { srv.webhooks.run(ctx) })
	background.Go(func() { srv.mailer.run(ctx) })
	go cleanEvents(ctx, st, log, cfg.EventsRetention)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			ReadTimeout:       cfg.ReadTimeout,
			WriteTimeout:      cfg.WriteTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		}
	}
	hs := newServer(srv)
	hs.RegisterOnShutdown(srv.events.shutdown)
	serveErr := make(chan error, 2)
	go func() { serveErr <- hs.Serve(ln) }()
	var ms *http.Server
	if mln != nil {
		ms = newServer(srv.metricsHandler())
		go func() { serveErr <- ms.Serve(mln) }()
		log.Info("metrics listening", "addr", mln.Addr().String())
	}
	log.Info("listening", "addr", ln.Addr().String(), "dev_mode", cfg.DevMode,
		"gomaxprocs", runtime.GOMAXPROCS(0), "hash_concurrency", cfg.HashConcurrency,
		"memory_limit_bytes", debug.SetMemoryLimit(-1))
	logOut.Flush() // whatever waits for the service to come up reads it at once

	select {
	case err := <-serveErr:
		hs.Close()
		if ms != nil {
			ms.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		// The contract asks for exit 0 on SIGTERM: a drain cut short by SHUTDOWN_TIMEOUT is
		// an operator's choice, said in the log, not a failure of the process.
		hs.Close()
		log.Warn("shutdown timeout reached; closed the connections still open", "error", err.Error())
	}
	if ms != nil {
		// Last, so that a scrape during the drain still sees the requests finishing.
		if err := ms.Shutdown(shutCtx); err != nil {
			ms.Close()
		}
	}
	background.Wait()
	log.Info("stopped")
	return nil
}

// cleanEvents deletes the change feed's events older than the retention, and used-up
// tickets, every few minutes in bounded batches (Store.CleanEvents), and the mail queue's
// rows a week after they were sent or given up. Every replica runs it; two deleting the
// same rows delete them once.
func cleanEvents(ctx context.Context, st *Store, log *slog.Logger, retention time.Duration) {
	tick := time.NewTicker(5 * time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := st.CleanEvents(ctx, time.Now().Add(-retention-eventsRetentionSlack), 1000, 1000); err != nil && ctx.Err() == nil {
				log.Warn("clean events", "error", err.Error())
			}
			if _, err := st.CleanMail(ctx, time.Now().Add(-7*24*time.Hour)); err != nil && ctx.Err() == nil {
				log.Warn("clean mail", "error", err.Error())
			}
		}
	}
}

// logFlushInterval bounds how late a log line reaches stdout.
const logFlushInterval = 100 * time.Millisecond

// logBuffer gathers log lines into few writes. At the default level every request
// writes a line, and a system call per line cost a tenth to a fifth of a request's CPU;
// buffered, lines reach stdout at most logFlushInterval late, and at exit. The price is
// that much of the log lost if the process is killed outright.
type logBuffer struct {
	mu      sync.Mutex
	buf     *bufio.Writer
	done    chan struct{}
	stopped chan struct{}
}

func startLogBuffer(w io.Writer, every time.Duration) *logBuffer {
	lb := &logBuffer{buf: bufio.NewWriterSize(w, 64<<10), done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(lb.stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				lb.Flush()
			case <-lb.done:
				return
			}
		}
	}()
	return lb
}

// Write takes one whole line, as slog's handlers write them; lines never interleave.
func (lb *logBuffer) Write(p []byte) (int, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.buf.Write(p)
}

func (lb *logBuffer) Flush() error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.buf.Buffered() == 0 {
		return nil
	}
	return lb.buf.Flush()
}

// Close stops the periodic flushing and writes what is left.
func (lb *logBuffer) Close() error {
	close(lb.done)
	<-lb.stopped
	return lb.Flush()
}

// cleanRateLimits deletes, once a minute until ctx ends, the rate-limit buckets that have
// refilled (every limit refills within a minute), so that the table holds only the
// clients being limited now.
func cleanRateLimits(ctx context.Context, st *Store, log *slog.Logger) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := st.CleanRateLimits(ctx, time.Now().Add(-2*time.Minute)); err != nil && ctx.Err() == nil {
				log.Warn("clean rate limits", "error", err.Error())
			}
		}
	}
}
