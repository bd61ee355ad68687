package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cmdWait waits until the service answers /readyz with 200.
func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the service")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := newClient(1)
	var buf bytes.Buffer
	for {
		status, err := do(ctx, client, *base, call{method: "GET", path: "/readyz"}, &buf)
		if err == nil && status == 200 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/readyz not ready after %s (last: %d %v)", *base, *timeout, status, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cmdRegister creates one local account; an email already taken is fine.
func cmdRegister(args []string) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the service")
	email := fs.String("email", "", "email")
	password := fs.String("password", "", "password")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"email": *email, "password": *password})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var buf bytes.Buffer
	status, err := do(ctx, newClient(1), *base, call{method: "POST", path: "/api/v1/auth/register", body: body}, &buf)
	if err != nil {
		return err
	}
	if status != 201 && status != 409 {
		return fmt.Errorf("register: %d %s", status, truncate(buf.String(), 300))
	}
	return nil
}

// parseRange reads "a-b" (or a single id) into the ids a..b.
func parseRange(s string) ([]int64, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		hi = lo
	}
	a, err1 := strconv.ParseInt(lo, 10, 64)
	b, err2 := strconv.ParseInt(hi, 10, 64)
	if err1 != nil || err2 != nil || a < 1 || b < a {
		return nil, fmt.Errorf("bad id range %q", s)
	}
	ids := make([]int64, 0, b-a+1)
	for id := a; id <= b; id++ {
		ids = append(ids, id)
	}
	return ids, nil
}

// cmdTokens logs seeded users in through the API and writes "id access_token" lines.
func cmdTokens(args []string) error {
	fs := flag.NewFlagSet("tokens", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the service")
	password := fs.String("password", "", "the seeded users' password")
	emailFormat := fs.String("email-format", "user%d@bench.example", "the seeded users' email, from their id")
	idList := fs.String("ids", "1-101", "user ids, as a range a-b; more ranges comma-separated")
	parallel := fs.Int("parallel", 4, "logins at once")
	out := fs.String("out", "", "output file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ids []int64
	for _, r := range strings.Split(*idList, ",") {
		more, err := parseRange(strings.TrimSpace(r))
		if err != nil {
			return err
		}
		ids = append(ids, more...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := newClient(*parallel)
	tokens := make([]string, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			body, _ := json.Marshal(map[string]string{"email": fmt.Sprintf(*emailFormat, id), "password": *password})
			var buf bytes.Buffer
			status, err := retrying(ctx, client, *base, call{method: "POST", path: "/api/v1/auth/login", body: body}, &buf)
			if err == nil && status != 200 {
				err = fmt.Errorf("%d %s", status, truncate(buf.String(), 300))
			}
			if err != nil {
				errs[i] = fmt.Errorf("login of user %d: %w", id, err)
				return
			}
			var res struct {
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(buf.Bytes(), &res); err != nil || res.AccessToken == "" {
				errs[i] = fmt.Errorf("login of user %d: no access token", id)
				return
			}
			tokens[i] = res.AccessToken
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var b strings.Builder
	for i, id := range ids {
		fmt.Fprintf(&b, "%d %s\n", id, tokens[i])
	}
	return os.WriteFile(*out, []byte(b.String()), 0o600)
}

// cmdCursor walks a user's list, newest first, page by page, and prints the cursor that
// fetches the given page, with the position it encodes (the last task of the page
// before), as shell assignments for bench/run.sh.
func cmdCursor(args []string) error {
	fs := flag.NewFlagSet("cursor", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the service")
	tokensFile := fs.String("tokens", "", `file of "id token" lines`)
	userID := fs.Int64("user", 1, "whose list")
	page := fs.Int("page", 1000, "the page to reach")
	limit := fs.Int("limit", 20, "page size")
	if err := fs.Parse(args); err != nil {
		return err
	}
	users, err := readTokens(*tokensFile)
	if err != nil {
		return err
	}
	var token string
	for _, u := range users {
		if u.id == *userID {
			token = u.token
		}
	}
	if token == "" {
		return fmt.Errorf("no token of user %d", *userID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := newClient(1)
	var (
		buf    bytes.Buffer
		cursor string
		last   struct {
			ID        int64  `json:"id"`
			CreatedAt string `json:"created_at"`
		}
	)
	for p := 1; p < *page; p++ {
		path := "/api/v1/tasks?limit=" + strconv.Itoa(*limit)
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		status, err := retrying(ctx, client, *base, call{method: "GET", path: path, token: token}, &buf)
		if err != nil {
			return fmt.Errorf("page %d: %w", p, err)
		}
		if status != 200 {
			return fmt.Errorf("page %d: %d %s", p, status, truncate(buf.String(), 300))
		}
		var res struct {
			Items []json.RawMessage `json:"items"`
			Next  *string           `json:"next_cursor"`
		}
		if err := json.Unmarshal(buf.Bytes(), &res); err != nil {
			return fmt.Errorf("page %d: %w", p, err)
		}
		if res.Next == nil || len(res.Items) != *limit {
			return fmt.Errorf("page %d is the last: the user has fewer than %d pages", p, *page)
		}
		if err := json.Unmarshal(res.Items[len(res.Items)-1], &last); err != nil {
			return fmt.Errorf("page %d: %w", p, err)
		}
		cursor = *res.Next
	}
	if cursor == "" {
		return errors.New("-page must be at least 2")
	}
	fmt.Printf("CURSOR=%s\nCURSOR_TIME=%s\nCURSOR_ID=%d\n", url.QueryEscape(cursor), last.CreatedAt, last.ID)
	return nil
}

// retrying makes a request of the preparation (a read, or a login, which only adds a
// refresh token), trying again a few times after a 503 or a transport error: a busy
// shared machine can make one of them time out, and the preparation is not measured.
func retrying(ctx context.Context, client *http.Client, base string, c call, buf *bytes.Buffer) (int, error) {
	for attempt := 1; ; attempt++ {
		status, err := do(ctx, client, base, c, buf)
		if (err == nil && status != http.StatusServiceUnavailable) || attempt == 5 {
			return status, err
		}
		select {
		case <-ctx.Done():
			return status, err
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
}
