package main

import "encoding/json"

// The MCP tools as tools/list shows them: a description written for a model to choose
// the right tool, an input schema that states the contract's limits (the service checks
// them all the same), and an output schema for structuredContent.

type mcpTool struct {
	Name         string          `json:"name"`
	Title        string          `json:"title"`
	Description  string          `json:"description"`
	InputSchema  json.RawMessage `json:"inputSchema"`
	OutputSchema json.RawMessage `json:"outputSchema"`
	Annotations  map[string]any  `json:"annotations,omitempty"`
}

const (
	schemaTask = `{"type":"object",
		"required":["id","user_id","title","description","completed","priority","tags","due_date","remind_at","created_at","updated_at","completed_at","recurrence","next_task_id"],
		"properties":{
			"id":{"type":"integer"},"user_id":{"type":"integer"},"title":{"type":"string"},
			"description":{"type":["string","null"]},"completed":{"type":"boolean"},
			"priority":{"enum":["low","medium","high"]},"tags":{"type":"array","items":{"type":"string"}},
			"due_date":{"type":["string","null"],"format":"date-time"},
			"remind_at":{"type":["string","null"],"format":"date-time"},
			"created_at":{"type":"string","format":"date-time"},"updated_at":{"type":"string","format":"date-time"},
			"completed_at":{"type":["string","null"],"format":"date-time"},
			"recurrence":{"type":["string","null"]},"next_task_id":{"type":["integer","null"]}}}`
	propID     = `"id":{"type":"integer","minimum":1,"description":"The task's id, as list_tasks or add_task answered it."},"task_id":{"type":"integer","minimum":1,"description":"Another name for id."}`
	propUserID = `"user_id":{"type":["string","integer"],"description":"Optional. The signed-in user's id; the tools always act for the signed-in user, and another id reads as not found."}`
	propFields = `"title":{"type":"string","minLength":1,"maxLength":255,"description":"1–255 characters, trimmed."},
		"description":{"type":["string","null"],"maxLength":10000,"description":"Free text, up to 10,000 characters; null clears it."},
		"completed":{"type":"boolean"},
		"priority":{"enum":["low","medium","high"],"description":"Default medium."},
		"tags":{"type":["array","null"],"items":{"type":"string","minLength":1,"maxLength":50},"description":"Up to 20 distinct tags of 1–50 characters, lower-cased; null clears them."},
		"due_date":{"type":["string","null"],"description":"An RFC 3339 time with offset (2026-12-24T18:00:00+01:00) or a date (2026-12-24, midnight UTC); null clears it."},
		"remind_at":{"type":["string","null"],"description":"When to remind the user: an RFC 3339 time with offset; null removes the reminder."},
		"recurrence":{"type":["string","null"],"maxLength":500,"description":"Makes the task repeat: an RRULE such as FREQ=WEEKLY;BYDAY=MO,WE or FREQ=MONTHLY;BYDAY=-1FR;COUNT=6 (FREQ DAILY/WEEKLY/MONTHLY/YEARLY, INTERVAL, BYDAY, BYMONTHDAY, BYMONTH, COUNT or UNTIL). Needs a due_date; completing the task creates the next one. null stops it."}`
)

func rawSchema(s string) json.RawMessage {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic("mcp tool schema: " + err.Error())
	}
	b, _ := json.Marshal(v)
	return b
}

var mcpTools = []mcpTool{
	{
		Name: "add_task", Title: "Add a task",
		Description:  "Create a task for the signed-in user. Only title is required; the answer is the new task with its id.",
		InputSchema:  rawSchema(`{"type":"object","required":["title"],"properties":{` + propFields + `,` + propUserID + `}}`),
		OutputSchema: rawSchema(schemaTask),
	},
	{
		Name: "list_tasks", Title: "List tasks",
		Description: "List the signed-in user's tasks, newest first unless sort says otherwise, a page at a time " +
			"(limit, default 20, at most 100; pass next_cursor back as cursor, with the same filters, for the next page). " +
			"Filter by status (pending or completed), q (text in title or description), priority, tag, due_before, due_after. " +
			"total counts every matching task.",
		InputSchema: rawSchema(`{"type":"object","properties":{
			"status":{"enum":["all","pending","completed"]},
			"q":{"type":"string","maxLength":500,"description":"Case-insensitive text in the title or description."},
			"priority":{"enum":["low","medium","high"]},
			"tag":{"type":"string","minLength":1,"maxLength":50},
			"due_before":{"type":"string","description":"RFC 3339 time or date: due strictly before it."},
			"due_after":{"type":"string","description":"RFC 3339 time or date: due at or after it."},
			"sort":{"enum":["created_at","-created_at","updated_at","-updated_at","due_date","-due_date","priority","-priority","title","-title"],"description":"A leading - sorts descending. Default -created_at."},
			"limit":{"type":"integer","minimum":1,"maximum":100},
			"cursor":{"type":"string","maxLength":2048},` + propUserID + `}}`),
		OutputSchema: rawSchema(`{"type":"object","required":["items","next_cursor","total"],"properties":{
			"items":{"type":"array","items":` + schemaTask + `},
			"next_cursor":{"type":["string","null"]},"total":{"type":"integer"}}}`),
		Annotations: map[string]any{"readOnlyHint": true},
	},
	{
		Name: "get_task", Title: "Get a task",
		Description:  "One task of the signed-in user by its id.",
		InputSchema:  rawSchema(`{"type":"object","properties":{` + propID + `,` + propUserID + `}}`),
		OutputSchema: rawSchema(schemaTask),
		Annotations:  map[string]any{"readOnlyHint": true},
	},
	{
		Name: "update_task", Title: "Update a task",
		Description:  "Change some fields of a task by its id: only the fields given change.",
		InputSchema:  rawSchema(`{"type":"object","properties":{` + propID + `,` + propFields + `,` + propUserID + `}}`),
		OutputSchema: rawSchema(schemaTask),
	},
	{
		Name: "complete_task", Title: "Complete a task",
		Description: "Mark a task done by its id (completed: false reopens it). Calling it twice leaves the task done.",
		InputSchema: rawSchema(`{"type":"object","properties":{` + propID + `,
			"completed":{"type":"boolean","description":"Default true."},` + propUserID + `}}`),
		OutputSchema: rawSchema(schemaTask),
		Annotations:  map[string]any{"idempotentHint": true},
	},
	{
		Name: "delete_task", Title: "Delete a task",
		Description:  "Delete a task by its id. It cannot be undone.",
		InputSchema:  rawSchema(`{"type":"object","properties":{` + propID + `,` + propUserID + `}}`),
		OutputSchema: rawSchema(`{"type":"object","required":["id","deleted"],"properties":{"id":{"type":"integer"},"deleted":{"const":true}}}`),
		Annotations:  map[string]any{"destructiveHint": true},
	},
	{
		Name: "task_stats", Title: "Task counts",
		Description: "How many tasks the signed-in user has: total, completed, pending, and overdue (open and due before now).",
		InputSchema: rawSchema(`{"type":"object","properties":{` + propUserID + `}}`),
		OutputSchema: rawSchema(`{"type":"object","required":["total","completed","pending","overdue"],"properties":{
			"total":{"type":"integer"},"completed":{"type":"integer"},"pending":{"type":"integer"},"overdue":{"type":"integer"}}}`),
		Annotations: map[string]any{"readOnlyHint": true},
	},
}
