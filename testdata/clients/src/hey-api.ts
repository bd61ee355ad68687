// The same calls through the SDK @hey-api/openapi-ts generates (default options),
// compiled with tsc --strict and run by clients_test.go: node out/src/hey-api.js <base URL>.
import { client } from "../gen/hey-api/client.gen";
import { createTask, getTask, getTaskStats, listTasks, listUserTasks, login, register, updateTask, createUserTask } from "../gen/hey-api";

function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Error("hey-api client: " + what);
}

async function main(base: string): Promise<void> {
  client.setConfig({ baseUrl: base });
  const email = `ts-hey-${Date.now()}@example.com`;
  const password = "correct horse battery";
  const reg = await register({ body: { email, password } });
  check(reg.response?.status === 201 && reg.data?.user.email === email, "register");
  const signedIn = await login({ body: { email, password } });
  check(signedIn.data !== undefined, "login");
  const userID = signedIn.data.user.id;
  client.setConfig({ baseUrl: base, headers: { Authorization: `Bearer ${signedIn.data.access_token}` } });

  const minimal = await createTask({ body: { title: "Buy milk" } });
  check(minimal.data !== undefined && minimal.data.priority === "medium" && minimal.data.completed === false, "create with a title");
  const full = await createTask({
    body: { title: "Call Ada", description: "about the engine", completed: true, priority: "high",
      tags: ["Work", "work", "calls"], due_date: "2030-01-02" },
  });
  check(full.data?.tags.join(",") === "work,calls", "create with every field");
  for (const title of ["apples", "bread", "cheese"]) {
    await createTask({ body: { title } });
  }

  const titles: string[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 10; i++) {
    const page = await listTasks({ query: { status: "pending", sort: "title", limit: 2, cursor } });
    check(page.data !== undefined && page.data.total === 4, "list page");
    titles.push(...page.data.items.map((t) => t.title));
    if (page.data.next_cursor === null) break;
    cursor = page.data.next_cursor;
  }
  check(titles.join(",") === "Buy milk,apples,bread,cheese", "pages: " + titles.join(","));

  const id = minimal.data.id;
  const got = await getTask({ path: { id } });
  const etag = got.response?.headers.get("ETag");
  check(got.data?.title === "Buy milk" && etag !== null && etag !== undefined, "get");
  const again = await getTask({ path: { id }, headers: { "If-None-Match": etag } });
  check(again.response?.status === 304, "If-None-Match");

  const patched = await updateTask({ path: { id }, body: { completed: true, priority: "low" } });
  check(patched.data?.completed === true && patched.data.priority === "low", "PATCH");
  const stats = await getTaskStats();
  check(stats.data?.total === 5 && stats.data.completed === 2, "stats");

  const path = { user_id: String(userID) };
  const web = await createUserTask({ path, body: { title: "from the web app" } });
  check(web.response?.status === 201 && web.data?.user_id === String(userID), "section 6 create");
  const webList = await listUserTasks({ path, query: { status: "completed" } });
  check(webList.data !== undefined && webList.data.length === 2 && webList.response?.headers.get("X-Total-Count") === "2",
    "section 6 list");

  const bad = await createTask({ body: { title: "   ", priority: "urgent" as "high" } });
  check(bad.response?.status === 422 && bad.error !== undefined, "invalid create");
  const fields = (bad.error.errors ?? []).map((e) => `${e.field}: ${e.message}`);
  check(bad.error.error_code === "validation_error" && fields.length === 2 && fields[0].startsWith("title"),
    "422 errors: " + fields.join("; "));
  console.log("ok");
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
