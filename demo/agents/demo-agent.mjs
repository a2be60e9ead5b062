// What every demo agent shares: an HTTP/JSON agent on 127.0.0.1 that
// registers itself with the federation (FEDERATION_URL, FEDERATION_TOKEN),
// keeps its lease with heartbeats that renew its passport, and unregisters
// when told to stop (SIGTERM, SIGINT) or when the process that started it is
// gone — a demo must never leave agents behind. Plain node: no packages.
//
// It prints one line per thing its parent may want: "READY {json}" once
// registered, and whatever the agent's own `log` says.
import http from "node:http";

/** `--name=x --latency=20-60` → { name: "x", latency: "20-60" }. */
export function flags(argv = process.argv.slice(2)) {
  const out = {};
  for (const a of argv) {
    const m = /^--([\w-]+)(?:=(.*))?$/.exec(a);
    if (m) out[m[1]] = m[2] ?? "true";
  }
  return out;
}

/** "20-60" → a random whole number of ms in that range; "50" → 50. */
export function latencyOf(spec) {
  const [lo, hi = lo] = String(spec ?? "0").split("-").map(Number);
  return Math.round(lo + Math.random() * (hi - lo));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Serves `execute(task)` (the JSON of federation.v1.ExecuteRequest → the
 * `result` object, or throws for an error answer) and `healthy()` at
 * GET /health (what the federation's probes ask), registers and heartbeats.
 */
export async function runAgent({ name, capabilities, tools = [], execute, healthy = () => true, leaseTtlS = 10 }) {
  const base = process.env.FEDERATION_URL ?? "http://127.0.0.1:9405";
  const token = process.env.FEDERATION_TOKEN;
  if (!token) throw new Error("FEDERATION_TOKEN is not set");
  let inflight = 0;

  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/health") {
      const ok = healthy();
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ok\n" : "unwell\n");
      return;
    }
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", async () => {
      inflight++;
      try {
        const result = await execute(JSON.parse(body || "{}"));
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ result }));
      } catch (err) {
        res.writeHead(500, { "content-type": "text/plain" }).end(`${name}: ${err.message}`);
      } finally {
        inflight--;
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;

  const call = async (method, path, bearer, body) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(2_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : {};
  };

  const reg = await call("POST", "/agents/register", token, {
    name,
    version: "1.0.0",
    endpoint: { url: `http://127.0.0.1:${port}/`, transport: "TRANSPORT_HTTP_JSON" },
    capabilities: capabilities.map((c) => ({ name: c })),
    tools,
    labels: { demo: "true" },
    leaseTtl: `${leaseTtlS}s`,
  });
  const id = reg.agent.id;
  let passport = reg.passport;

  const beat = setInterval(async () => {
    try {
      const hb = await call("POST", `/agents/${id}/heartbeat`, passport, { agentId: id, load: Math.min(1, inflight / 4) });
      passport = hb.passport ?? passport;
    } catch (err) {
      console.log(`heartbeat failed: ${err.message}`);
    }
  }, (leaseTtlS * 1000) / 3);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(beat);
    // Best effort and bounded: the federation may already be going away.
    await call("DELETE", `/agents/${id}`, passport).catch(() => {});
    server.closeAllConnections?.();
    server.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // The parent gone (killed outright) means the demo is over: re-parented, we stop too.
  const parent = process.ppid;
  setInterval(() => process.ppid !== parent && stop(), 500).unref();

  console.log(`READY ${JSON.stringify({ name, id, port, pid: process.pid })}`);
  return { id, port };
}
