// A webhook receiver for webhooks_test.go: it verifies every delivery with the official
// Standard Webhooks library (npm "standardwebhooks") and prints one JSON line per request
// on stdout. Its first line is {"port": n}. Lines on stdin set its behaviour:
// {"secret": "whsec_…"} the signing secret; {"fail": n} answer the next n verified
// deliveries with 500; {"delay_ms": n} wait that long before each answer; {"announce": true}
// also print {"received": id} as each request arrives.
import http from "node:http";
import readline from "node:readline";
import sw from "standardwebhooks";

let secret = null;
let failures = 0;
let delay = 0;
let announce = false;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const m = JSON.parse(line);
  if (m.secret !== undefined) secret = m.secret;
  if (m.fail !== undefined) failures = m.fail;
  if (m.delay_ms !== undefined) delay = m.delay_ms;
  if (m.announce !== undefined) announce = m.announce;
});

const server = http.createServer((req, res) => {
  if (announce) console.log(JSON.stringify({ received: req.headers["webhook-id"] }));
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const answer = (status, line) => {
      setTimeout(() => {
        console.log(JSON.stringify(line));
        res.writeHead(status).end();
      }, delay);
    };
    let payload;
    try {
      payload = new sw.Webhook(secret).verify(body, req.headers);
    } catch (e) {
      answer(400, { invalid: String(e), id: req.headers["webhook-id"] });
      return;
    }
    if (failures > 0) {
      failures--;
      answer(500, { failed: true, id: req.headers["webhook-id"] });
      return;
    }
    answer(204, { id: req.headers["webhook-id"], payload });
  });
});
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: server.address().port })));
