// A chat assistant's conversation with the service's MCP endpoint, through the official
// TypeScript SDK client (Streamable HTTP transport), run by mcp_test.go:
//   node mcp/conversation.mjs <MCP URL> <bearer token> <another user's task id>
// It checks what a model would rely on and prints, last, a JSON summary that the Go test
// checks against the REST API.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import Ajv from "ajv";

const [url, token, otherTaskID] = process.argv.slice(2);
const check = (ok, what) => {
  if (!ok) throw new Error("mcp conversation: " + what);
};

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "todo-conversation", version: "1.0.0" });
await client.connect(transport);
check(client.getServerVersion()?.name === "todo", "server info");

// Every tool is listed, and each of its schemas is a schema.
const { tools } = await client.listTools();
const names = tools.map((t) => t.name).sort().join(",");
check(names === "add_task,complete_task,delete_task,get_task,list_tasks,task_stats,update_task", "tools: " + names);
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
for (const t of tools) {
  check(typeof t.description === "string" && t.description.length > 20, t.name + " has no description");
  ajv.compile(t.inputSchema);
  ajv.compile(t.outputSchema);
}

// The SDK checks each structuredContent against the tool's output schema.
const call = (name, args) => client.callTool({ name, arguments: args });
const added = [];
for (const title of ["Buy milk", "Call the plumber", "Book flights"]) {
  const r = await call("add_task", { title, priority: "high", tags: ["Home"] });
  check(!r.isError && r.structuredContent.title === title && r.structuredContent.tags[0] === "home", "add_task " + title);
  check(r.content[0].type === "text" && r.content[0].text.includes(String(r.structuredContent.id)), "summary text");
  added.push(r.structuredContent.id);
}
const listed = await call("list_tasks", { status: "pending", sort: "title", limit: 2 });
check(listed.structuredContent.total === 3 && listed.structuredContent.items.length === 2 &&
  listed.structuredContent.next_cursor, "list_tasks page 1");
const rest = await call("list_tasks", { status: "pending", sort: "title", limit: 2, cursor: listed.structuredContent.next_cursor });
check(rest.structuredContent.items.length === 1 && rest.structuredContent.next_cursor === null, "list_tasks page 2");

// The hackathon agents' names: task_id, and user_id naming the bearer.
const me = (await call("get_task", { id: added[0] })).structuredContent.user_id;
const done = await call("complete_task", { user_id: String(me), task_id: added[0] });
check(!done.isError && done.structuredContent.completed === true, "complete_task");
const again = await call("complete_task", { id: added[0] });
check(again.structuredContent.completed === true, "complete_task twice leaves it done");
const updated = await call("update_task", { id: added[1], title: "Call the plumber at 9", due_date: "2030-01-02" });
check(updated.structuredContent.title === "Call the plumber at 9" &&
  updated.structuredContent.due_date === "2030-01-02T00:00:00Z", "update_task");
const deleted = await call("delete_task", { id: added[2] });
check(deleted.structuredContent.deleted === true, "delete_task");
const stats = await call("task_stats", {});
check(stats.structuredContent.total === 2 && stats.structuredContent.completed === 1, "task_stats " + JSON.stringify(stats.structuredContent));

// Rules broken are tool results with isError, and the REST error as JSON text.
const failure = (r) => (r.isError && r.content.length === 2 ? JSON.parse(r.content[1].text) : {});
const bad = await call("add_task", { title: "  ", priority: "urgent" });
const fields = (failure(bad).errors ?? []).map((e) => e.field).join(",");
check(failure(bad).error_code === "validation_error" && fields === "title,priority",
  "invalid add_task: " + JSON.stringify(bad));
for (const [name, args] of [["get_task", { id: Number(otherTaskID) }], ["delete_task", { id: Number(otherTaskID) }],
  ["complete_task", { id: added[0], user_id: "someone-else" }], ["get_task", { id: 999999999 }]]) {
  const r = await call(name, args);
  check(failure(r).error_code === "not_found", name + " " + JSON.stringify(args) + ": " + JSON.stringify(r));
}
const noID = await call("get_task", {});
check(failure(noID).errors?.[0]?.field === "id", "get_task without an id");
const badCursor = await call("list_tasks", { cursor: "forged" });
check(failure(badCursor).error_code === "invalid_query", "a forged cursor");

await client.close();
console.log(JSON.stringify({ added, completed: added[0], updated: added[1], deleted: added[2] }));
