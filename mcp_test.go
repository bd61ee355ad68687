package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mcpCall sends one JSON-RPC message to /mcp and answers the response.
func (e *testEnv) mcpCall(token, body string, headers ...header) response {
	e.t.Helper()
	return e.do("POST", "/mcp", body, token, append([]header{{"Accept": "application/json, text/event-stream"}}, headers...)...)
}

// TestMCPConversationWithTheOfficialSDK: the official TypeScript SDK client connects with a
// bearer token, lists the tools and compiles their schemas, and drives a conversation
// (three adds, a list through its cursor, complete, update, delete, stats, broken rules and
// another user's task); what it did is then read back through the REST API.
func TestMCPConversationWithTheOfficialSDK(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is required for the MCP client test: %v", err)
	}
	env := newTestEnv(t)
	srv := httptest.NewServer(env.srv)
	t.Cleanup(srv.Close)
	token, _ := env.registerUser("assistant@example.com")
	otherToken, _ := env.registerUser("someone-else@example.com")
	other := env.createTask(otherToken, `{"title":"not yours"}`)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join("mcp", "conversation.mjs"), srv.URL+"/mcp", token,
		strconv.FormatInt(other.ID, 10))
	cmd.Dir = clientsDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the SDK conversation failed: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var did struct {
		Added                       []int64
		Completed, Updated, Deleted int64
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &did); err != nil || len(did.Added) != 3 {
		t.Fatalf("summary %q: %v", lines[len(lines)-1], err)
	}

	var done, updated wireTask
	env.do("GET", env.taskPath(did.Completed), "", token).want(200, "").json(&done)
	env.do("GET", env.taskPath(did.Updated), "", token).want(200, "").json(&updated)
	env.do("GET", env.taskPath(did.Deleted), "", token).want(404, "not_found")
	if !done.Completed || updated.Title != "Call the plumber at 9" || updated.DueDate == nil || !updated.DueDate.Equal(time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("after the conversation: completed %+v, updated %+v", done, updated)
	}
	if page := env.list(token, ""); page.Total != 2 {
		t.Errorf("%d tasks after the conversation, want 2", page.Total)
	}
	// The other user's task is untouched.
	env.do("GET", env.taskPath(other.ID), "", otherToken).want(200, "")
}

// TestMCPAuthentication: no token, or a bad one, is a 401 that names the protected-resource
// metadata (RFC 9728), which names the authorization server: this service, or Better
// Auth when configured; a Better Auth user's token works like a local one.
func TestMCPAuthentication(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	const metadata = `resource_metadata="http://example.com/.well-known/oauth-protected-resource"`
	r := env.mcpCall("", initialize).want(401, "not_authenticated")
	if got := r.Header().Get("WWW-Authenticate"); got != `Bearer `+metadata {
		t.Errorf("WWW-Authenticate %q", got)
	}
	r = env.mcpCall("not.a.token", initialize).want(401, "invalid_token")
	if got := r.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, `Bearer error="invalid_token"`) || !strings.HasSuffix(got, metadata) {
		t.Errorf("WWW-Authenticate %q", got)
	}
	// The REST routes' 401s do not name it.
	if got := env.do("GET", "/api/v1/tasks", "", "").Header().Get("WWW-Authenticate"); got != "Bearer" {
		t.Errorf("REST WWW-Authenticate %q", got)
	}
	var doc struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
	}
	env.do("GET", "/.well-known/oauth-protected-resource", "", "").want(200, "").json(&doc)
	if doc.Resource != "http://example.com/mcp" || len(doc.AuthorizationServers) != 1 || doc.AuthorizationServers[0] != "http://example.com" {
		t.Errorf("metadata %+v", doc)
	}

	key := newBAKey(t, "EdDSA")
	jwks := newJWKSServer(t, key)
	ba := newJWKSEnv(t, jwks)
	ba.do("GET", "/.well-known/oauth-protected-resource/mcp", "", "").want(200, "").json(&doc)
	if doc.AuthorizationServers[0] != baTestIssuer {
		t.Errorf("with Better Auth the authorization server is %v, want %s", doc.AuthorizationServers, baTestIssuer)
	}
	baToken := key.sign(t, baGoodClaims("mcp-user"))
	res := ba.mcpCall(baToken, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add_task","arguments":{"title":"from a chat"}}}`).want(200, "")
	var rpc struct {
		Result toolResult `json:"result"`
	}
	res.json(&rpc)
	if rpc.Result.IsError {
		t.Fatalf("a Better Auth user's add_task: %s", res.Body)
	}
	if page := ba.list(baToken, ""); page.Total != 1 || page.Items[0].Title != "from a chat" {
		t.Errorf("the Better Auth user's tasks: %+v", page)
	}
}

// TestMCPProtocol: the JSON-RPC side of the transport, request by request.
func TestMCPProtocol(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) { c.ToolCallsPerMinute = 3 })
	token, _ := env.registerUser("protocol@example.com")
	rpc := func(r response) (out struct {
		ID     json.RawMessage `json:"id"`
		Result map[string]any  `json:"result"`
		Error  *rpcError       `json:"error"`
	}) {
		r.json(&out)
		return out
	}

	ini := rpc(env.mcpCall(token, `{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2025-03-26"}}`).want(200, ""))
	if string(ini.ID) != `"a"` || ini.Result["protocolVersion"] != "2025-03-26" {
		t.Errorf("initialize: %+v", ini)
	}
	ini = rpc(env.mcpCall(token, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}`).want(200, ""))
	if ini.Result["protocolVersion"] != mcpProtocolVersions[0] {
		t.Errorf("an unknown version is answered with ours: %+v", ini)
	}
	if r := env.mcpCall(token, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); r.Code != http.StatusAccepted || r.Body.Len() != 0 {
		t.Errorf("notification: %d %q", r.Code, r.Body)
	}
	if p := rpc(env.mcpCall(token, `{"jsonrpc":"2.0","id":2,"method":"ping"}`).want(200, "")); p.Error != nil || p.Result == nil {
		t.Errorf("ping: %+v", p)
	}
	if m := rpc(env.mcpCall(token, `{"jsonrpc":"2.0","id":3,"method":"resources/list"}`).want(200, "")); m.Error == nil || m.Error.Code != rpcMethodNotFound {
		t.Errorf("unknown method: %+v", m)
	}
	if m := rpc(env.mcpCall(token, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"drop_tables"}}`).want(200, "")); m.Error == nil || m.Error.Code != rpcInvalidParams {
		t.Errorf("unknown tool: %+v", m)
	}
	if m := rpc(env.mcpCall(token, `{"jsonrpc":"2.0","id":5,`)); m.Error == nil || m.Error.Code != rpcParseError {
		t.Errorf("parse error: %+v", m)
	}
	if m := rpc(env.mcpCall(token, `[{"jsonrpc":"2.0","id":6,"method":"ping"}]`)); m.Error == nil || m.Error.Code != rpcParseError {
		t.Errorf("a batch (not in this protocol version): %+v", m)
	}
	env.mcpCall(token, `{"jsonrpc":"2.0","id":7,"method":"ping"}`, header{"MCP-Protocol-Version": "1999-01-01"}).want(400, "invalid_json")
	env.mcpCall(token, `{"jsonrpc":"2.0","id":8,"method":"ping"}`, header{"Content-Type": "text/plain"}).want(415, "unsupported_media_type")
	env.do("GET", "/mcp", "", token).want(405, "method_not_allowed")
	env.do("DELETE", "/mcp", "", token).want(405, "method_not_allowed")

	// Tool calls are rate-limited per user (3 a minute here); the rest of the protocol is not.
	call := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"task_stats","arguments":{}}}`
	for range 3 {
		if r := rpc(env.mcpCall(token, call).want(200, "")); r.Result["isError"] == true {
			t.Fatalf("task_stats: %+v", r)
		}
	}
	env.mcpCall(token, call).want(429, "rate_limited")
	env.mcpCall(token, `{"jsonrpc":"2.0","id":10,"method":"ping"}`).want(200, "")
}

// TestMCPInspectorListsTools: the MCP Inspector's CLI (@modelcontextprotocol/inspector-cli,
// pinned with the other Node tools) connects over Streamable HTTP with a bearer token and
// lists the seven tools; without the token it is refused.
func TestMCPInspectorListsTools(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	srv := httptest.NewServer(env.srv)
	t.Cleanup(srv.Close)
	token, _ := env.registerUser("inspector@example.com")
	inspect := func(headers ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		args := []string{"index.js", srv.URL + "/mcp", "--transport", "http", "--method", "tools/list"}
		for _, h := range headers {
			args = append(args, "--header", h)
		}
		cmd := exec.CommandContext(ctx, "node", args...)
		// From its own directory: the CLI looks for its package.json relative to the
		// working directory (fs.existsSync) and loads it relative to itself (import).
		cmd.Dir = filepath.Join(clientsDir, "node_modules", "@modelcontextprotocol", "inspector-cli", "build")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		return out, err
	}
	out, err := inspect("Authorization: Bearer " + token)
	if err != nil {
		t.Fatalf("inspector: %v\n%s", err, out)
	}
	var listed struct {
		Tools []struct{ Name string }
	}
	if err := json.Unmarshal(out, &listed); err != nil {
		t.Fatalf("inspector output %q: %v", out, err)
	}
	var names []string
	for _, tool := range listed.Tools {
		names = append(names, tool.Name)
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[add_task complete_task delete_task get_task list_tasks task_stats update_task]" {
		t.Errorf("the Inspector lists %v", names)
	}
	if out, err := inspect(); err == nil {
		t.Errorf("the Inspector listed tools without a token: %s", out)
	}
}
