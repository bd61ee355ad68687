package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The service as a Model Context Protocol server (contract §11): MCP's Streamable HTTP
// transport on POST /mcp, JSON-RPC 2.0, with tools over the same tasks, the same rules and
// the same bearer tokens as the REST routes. Written by hand rather than with the
// official Go SDK: the subset a tool server needs (initialize, ping, tools/list,
// tools/call, answered as single JSON responses) is a few hundred lines, and the SDK
// would be the binary's first dependency beyond the driver, JWT and crypto (README,
// Dependencies).
//
// Stateless, as the transport allows: no Mcp-Session-Id is issued, since every call
// carries the bearer and names what it acts on, so any replica answers any call and
// nothing is kept between them. The server offers no stream of its own (GET /mcp is 405)
// and answers every request with one application/json response.

// mcpProtocolVersions are the protocol versions spoken, newest first.
var mcpProtocolVersions = []string{"2025-06-18", "2025-03-26"}

type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// JSON-RPC 2.0's error codes.
const (
	rpcParseError     = -32700
	rpcInvalidRequest = -32600
	rpcMethodNotFound = -32601
	rpcInvalidParams  = -32602
)

// mcpResource marks the request as one to the MCP endpoint, so that a 401 names the
// protected-resource metadata (RFC 9728) that tells a client where to get a token.
func (s *Server) mcpResource(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requestInfoFrom(r.Context()).resourceMetadata = publicBase(r) + "/.well-known/oauth-protected-resource"
		next.ServeHTTP(w, r)
	})
}

// publicBase is the service's own origin as the client reached it.
func publicBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// handleProtectedResource serves GET /.well-known/oauth-protected-resource (RFC 9728): the
// resource is the MCP endpoint; its authorization server is Better Auth when configured,
// else this service, which issues its own tokens at /api/v1/auth/login.
func (s *Server) handleProtectedResource(w http.ResponseWriter, r *http.Request) error {
	base := publicBase(r)
	issuer := base
	if s.cfg.BetterAuthURL != "" {
		issuer = s.cfg.BetterAuthURL
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"resource":                 base + "/mcp",
		"authorization_servers":    []string{issuer},
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "Todo tasks",
		"resource_documentation":   base + "/docs",
	})
}

// handleMCP serves POST /mcp: one JSON-RPC message per request. A request gets one JSON
// response; a notification or a response from the client gets 202 and no body.
func (s *Server) handleMCP(w http.ResponseWriter, r *http.Request) error {
	if v := r.Header.Get("MCP-Protocol-Version"); v != "" && !slices.Contains(mcpProtocolVersions, v) {
		return newError(http.StatusBadRequest, "invalid_json",
			"Unsupported MCP-Protocol-Version "+strconv.Quote(v)+"; this server speaks "+strings.Join(mcpProtocolVersions, ", ")+".")
	}
	if err := requireJSON(r); err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var req rpcRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return writeJSON(w, http.StatusBadRequest, rpcResponse{JSONRPC: "2.0", ID: json.RawMessage("null"),
			Error: &rpcError{Code: rpcParseError, Message: "the body is not one JSON-RPC 2.0 message"}})
	}
	if len(req.ID) == 0 || bytes.Equal(req.ID, []byte("null")) {
		// A notification (notifications/initialized among them) or a client's response.
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	if req.JSONRPC != "2.0" || req.Method == "" {
		return writeJSON(w, http.StatusBadRequest, rpcResponse{JSONRPC: "2.0", ID: req.ID,
			Error: &rpcError{Code: rpcInvalidRequest, Message: "not a JSON-RPC 2.0 request"}})
	}
	result, rerr := s.mcpDispatch(r, req)
	if rerr == nil {
		if err, ok := result.(error); ok { // the database or a limit, outside any tool's rules
			return err
		}
	}
	return writeJSON(w, http.StatusOK, rpcResponse{JSONRPC: "2.0", ID: req.ID, Result: result, Error: rerr})
}

func (s *Server) mcpDispatch(r *http.Request, req rpcRequest) (any, *rpcError) {
	switch req.Method {
	case "initialize":
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		json.Unmarshal(req.Params, &p)
		version := mcpProtocolVersions[0]
		if slices.Contains(mcpProtocolVersions, p.ProtocolVersion) {
			version = p.ProtocolVersion
		}
		return map[string]any{
			"protocolVersion": version,
			"capabilities":    map[string]any{"tools": map[string]any{"listChanged": false}},
			"serverInfo":      map[string]any{"name": "todo", "title": "Todo tasks", "version": "1.0.0"},
			"instructions": "Manage the signed-in user's todo tasks. Use list_tasks to find tasks (filters, " +
				"search, a page at a time), add_task to create, update_task to change fields, complete_task to mark " +
				"done or reopen, delete_task to remove, task_stats for counts. Tasks are named by their numeric id.",
		}, nil
	case "ping":
		return map[string]any{}, nil
	case "tools/list":
		return map[string]any{"tools": mcpTools}, nil
	case "tools/call":
		var p struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(req.Params, &p); err != nil || p.Name == "" {
			return nil, &rpcError{Code: rpcInvalidParams, Message: "tools/call needs a name and an arguments object"}
		}
		tool, ok := mcpToolFuncs[p.Name]
		if !ok {
			return nil, &rpcError{Code: rpcInvalidParams, Message: "unknown tool " + strconv.Quote(p.Name)}
		}
		if err := s.limits.toolCalls.take(r.Context(), "user:"+strconv.FormatInt(principalFrom(r.Context()).UserID, 10)); err != nil {
			return err, nil
		}
		return s.callTool(r.Context(), tool, p.Arguments), nil
	}
	return nil, &rpcError{Code: rpcMethodNotFound, Message: "method not found: " + req.Method}
}

// toolResult is a tools/call result: structured content, the same as JSON text for
// clients that read only text, and a one-line summary first.
type toolResult struct {
	Content           []toolText `json:"content"`
	StructuredContent any        `json:"structuredContent,omitempty"`
	IsError           bool       `json:"isError,omitempty"`
}

type toolText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// toolFunc acts as the bearer with the tool's arguments: a summary and the structured
// answer, or an error that callTool turns into an isError result (a rule broken) or
// passes on (the database is down).
type toolFunc func(s *Server, ctx context.Context, args bodyFields) (string, any, error)

// callTool runs a tool: a rule broken (validation, a task not found, a stale cursor) is a
// result with isError and the REST answer's code, detail and errors, which a model can
// read and correct; anything else is the request's error.
func (s *Server) callTool(ctx context.Context, tool toolFunc, raw json.RawMessage) any {
	args := bodyFields{raw: map[string]json.RawMessage{}}
	if len(bytes.TrimSpace(raw)) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if err := json.Unmarshal(raw, &args.raw); err != nil || args.raw == nil {
			return toolError(validationFailed([]fieldError{{Field: "arguments", Message: "must be a JSON object"}}))
		}
	}
	summary, out, err := tool(s, ctx, args)
	var ae *apiError
	switch {
	case errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusUnauthorized:
		return toolError(ae)
	case err != nil:
		return err
	}
	text, _ := json.Marshal(out)
	return toolResult{Content: []toolText{{"text", summary}, {"text", string(text)}}, StructuredContent: out}
}

// toolError is a rule broken, as a result: a sentence, then the REST answer's error_code,
// detail and errors as JSON text. Not as structuredContent, which clients check against
// the tool's output schema, error or not.
func toolError(ae *apiError) toolResult {
	body := map[string]any{"error_code": ae.Code, "detail": ae.Detail}
	msg := ae.Detail
	if len(ae.Fields) > 0 {
		body["errors"] = ae.Fields
		var parts []string
		for _, f := range ae.Fields {
			parts = append(parts, f.Field+" "+f.Message)
		}
		msg += " " + strings.Join(parts, "; ") + "."
	}
	text, _ := json.Marshal(body)
	return toolResult{Content: []toolText{{"text", msg}, {"text", string(text)}}, IsError: true}
}

// ---- the tools ----

// toolTask is how a tool answers a task: the REST answer's JSON, as is.
func toolTask(t Task) json.RawMessage { return appendTask(nil, t, "") }

// argTaskID reads the task's id from id (or task_id, the hackathon agents' name), and
// checks a user_id argument: when given it must name the bearer as a section 6 path does,
// else the task reads as not found.
func argTaskID(ctx context.Context, args *bodyFields) (int64, error) {
	if err := checkUserArg(ctx, args); err != nil {
		return 0, err
	}
	name := "id"
	if _, ok := args.raw["id"]; !ok {
		if _, ok := args.raw["task_id"]; ok {
			name = "task_id"
		}
	}
	raw, ok := args.raw[name]
	delete(args.raw, "id")
	delete(args.raw, "task_id")
	if !ok {
		return 0, validationFailed([]fieldError{{Field: "id", Message: "is required: the task's numeric id"}})
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var s string // agents often quote ids
		if json.Unmarshal(raw, &s) != nil {
			return 0, validationFailed([]fieldError{{Field: name, Message: "must be a positive whole number"}})
		}
		n = json.Number(s)
	}
	id, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || id <= 0 {
		return 0, notFound("task")
	}
	return id, nil
}

// checkUserArg removes a user_id argument, which must name the bearer.
func checkUserArg(ctx context.Context, args *bodyFields) error {
	raw, ok := args.raw["user_id"]
	delete(args.raw, "user_id")
	if !ok || string(raw) == "null" {
		return nil
	}
	var v any
	json.Unmarshal(raw, &v)
	var named string
	switch v := v.(type) {
	case string:
		named = v
	case float64:
		named = strconv.FormatFloat(v, 'f', -1, 64)
	}
	if named != principalFrom(ctx).Subject {
		return notFound("task")
	}
	return nil
}

var mcpToolFuncs = map[string]toolFunc{
	"add_task": func(s *Server, ctx context.Context, args bodyFields) (string, any, error) {
		if err := checkUserArg(ctx, &args); err != nil {
			return "", nil, err
		}
		c := readTaskInput(&args).change(modeCreate, &args.errs)
		if len(args.errs) > 0 {
			return "", nil, validationFailed(args.errs)
		}
		t, err := s.st.CreateTask(ctx, principalFrom(ctx).UserID, c)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("Added task %d: %s.", t.ID, t.Title), toolTask(t), nil
	},
	"list_tasks": func(s *Server, ctx context.Context, args bodyFields) (string, any, error) {
		if err := checkUserArg(ctx, &args); err != nil {
			return "", nil, err
		}
		v := url.Values{}
		for k, raw := range args.raw {
			var x any
			json.Unmarshal(raw, &x)
			switch x := x.(type) {
			case string:
				v.Set(k, x)
			case float64:
				v.Set(k, strconv.FormatFloat(x, 'f', -1, 64))
			case bool:
				v.Set(k, strconv.FormatBool(x))
			case nil:
			default:
				return "", nil, invalidQuery([]fieldError{{Field: k, Message: "must be a string, number or boolean"}})
			}
		}
		q, errs := parseListQuery(v, false)
		if len(errs) > 0 {
			return "", nil, invalidQuery(errs)
		}
		tasks, next, total, err := s.listPage(ctx, principalFrom(ctx).UserID, q, v.Get("cursor"))
		if err != nil {
			return "", nil, err
		}
		items := make([]json.RawMessage, len(tasks))
		for i, t := range tasks {
			items[i] = toolTask(t)
		}
		summary := fmt.Sprintf("%d of %d matching tasks.", len(tasks), total)
		if next != nil {
			summary += " More with cursor."
		}
		return summary, map[string]any{"items": items, "next_cursor": next, "total": total}, nil
	},
	"get_task": func(s *Server, ctx context.Context, args bodyFields) (string, any, error) {
		id, err := argTaskID(ctx, &args)
		if err != nil {
			return "", nil, err
		}
		t, err := s.st.FindTask(ctx, principalFrom(ctx).UserID, id)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("Task %d: %s.", t.ID, t.Title), toolTask(t), nil
	},
	"update_task": func(s *Server, ctx context.Context, args bodyFields) (string, any, error) {
		id, err := argTaskID(ctx, &args)
		if err != nil {
			return "", nil, err
		}
		c := readTaskInput(&args).change(modePatch, &args.errs)
		if len(args.errs) > 0 {
			return "", nil, validationFailed(args.errs)
		}
		t, err := s.st.UpdateTask(ctx, principalFrom(ctx).UserID, id, c, nil)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("Updated task %d.", t.ID), toolTask(t), nil
	},
	"complete_task": func(s *Server, ctx context.Context, args bodyFields) (string, any, error) {
		id, err := argTaskID(ctx, &args)
		if err != nil {
			return "", nil, err
		}
		done := field[bool](&args, "completed", "must be true or false")
		if len(args.errs) > 0 {
			return "", nil, validationFailed(args.errs)
		}
		c := taskChange{SetCompleted: true, Completed: done.Value == nil || *done.Value}
		t, err := s.st.UpdateTask(ctx, principalFrom(ctx).UserID, id, c, nil)
		if err != nil {
			return "", nil, err
		}
		state := "done"
		if !t.Completed {
			state = "open again"
		}
		return fmt.Sprintf("Task %d is %s.", t.ID, state), toolTask(t), nil
	},
	"delete_task": func(s *Server, ctx context.Context, args bodyFields) (string, any, error) {
		id, err := argTaskID(ctx, &args)
		if err != nil {
			return "", nil, err
		}
		if err := s.st.DeleteTask(ctx, principalFrom(ctx).UserID, id, nil); err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("Deleted task %d.", id), map[string]any{"id": id, "deleted": true}, nil
	},
	"task_stats": func(s *Server, ctx context.Context, args bodyFields) (string, any, error) {
		if err := checkUserArg(ctx, &args); err != nil {
			return "", nil, err
		}
		st, err := s.st.TaskStats(ctx, principalFrom(ctx).UserID)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("%d tasks: %d done, %d pending, %d overdue.", st.Total, st.Completed, st.Pending, st.Overdue), st, nil
	},
}
