// A small agent process for the dispatch tests: `node dispatch-agent.mjs <http|grpc> <name>`.
// It listens on 127.0.0.1 (a random port, printed as "LISTENING <port>"), prints
// "TASK <json>" for every task it receives, and behaves as MODE says; a line
// "mode <m>" on stdin changes it. Modes: ok, slow (answers after DELAY_MS),
// fail (an error answer), die (exits mid-task, without answering), redirect
// (HTTP 302 to REDIRECT_TO), big (an answer of BIG_BYTES).
import http from "node:http";
import path from "node:path";
import readline from "node:readline";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const [kind, name] = process.argv.slice(2);
let mode = process.env.MODE ?? "ok";
const delayMs = Number(process.env.DELAY_MS ?? 2000);
const root = path.resolve(import.meta.dirname, "../..");

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const m = /^mode (\w+)$/.exec(line.trim());
  if (m) {
    mode = m[1];
    console.log(`MODE ${mode}`);
  }
});

const seen = (task) => console.log(`TASK ${JSON.stringify(task)}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (kind === "http") {
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", async () => {
      const task = JSON.parse(body || "{}");
      seen({
        taskId: task.taskId,
        ticket: task.ticket,
        tenant: task.tenant,
        capabilities: task.capabilities,
        host: req.headers.host,
        idempotencyKey: req.headers["idempotency-key"],
        traceparent: req.headers.traceparent,
        path: req.url,
      });
      if (mode === "die") process.exit(3);
      if (mode === "fail") {
        res.writeHead(500, { "content-type": "text/plain" }).end(`${name} fails on cue`);
        return;
      }
      if (mode === "redirect") {
        res.writeHead(302, { location: process.env.REDIRECT_TO }).end();
        return;
      }
      if (mode === "slow") await sleep(delayMs);
      const result = mode === "big" ? { blob: "x".repeat(Number(process.env.BIG_BYTES ?? 2_000_000)) } : { agent: name, taskId: task.taskId, echo: task.payload ?? null };
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ result }));
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(`LISTENING ${server.address().port}`));
} else {
  const def = protoLoader.loadSync("federation/v1/agent_service.proto", {
    includeDirs: [path.join(root, "proto")],
    keepCase: false,
    longs: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def);
  const server = new grpc.Server();
  server.addService(pkg.federation.v1.AgentService.service, {
    async Execute(call, callback) {
      const req = call.request;
      seen({ taskId: req.taskId, ticket: req.ticket, tenant: req.tenant, capabilities: req.capabilities, idempotencyKey: call.metadata.get("idempotency-key")[0], traceparent: call.metadata.get("traceparent")[0] });
      if (mode === "die") process.exit(3);
      if (mode === "fail") return callback({ code: grpc.status.INTERNAL, details: `${name} fails on cue` });
      if (mode === "slow") await sleep(delayMs);
      callback(null, {
        result: {
          fields: {
            agent: { stringValue: name },
            taskId: { stringValue: req.taskId },
            echo: req.payload ? { structValue: req.payload } : { nullValue: "NULL_VALUE" },
          },
        },
      });
    },
  });
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    console.log(`LISTENING ${port}`);
  });
}
