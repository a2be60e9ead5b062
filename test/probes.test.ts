import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.js";
import { AddressGuard } from "../src/dispatch/address-guard.js";
import { HttpProbeFailed, HttpProber, ProbeTimeout } from "../src/health/http-probe.js";
import type { ProbeRound, ProbeState } from "../src/health/probes.js";
import { getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { closer, listen } from "./support/servers.js";
import { answerMcp } from "./support/mcp-tools.js";

/**
 * Capability probes (issue 16, item 1) against real agent servers on
 * loopback: an MCP server built with the SDK (McpServer over a stateless
 * StreamableHTTPServerTransport) whose /health keeps answering 200 while
 * its tools/list can be made to hang, HTTP agents whose /health can be made
 * slow for a number of answers, and a TCP "black hole" that accepts and
 * never answers (one server stands for many agents).
 */

const FAST = {
  PROBES: "on",
  DISPATCH_ALLOW_LOOPBACK: "true",
  PROBE_INTERVAL: "400ms",
  PROBE_TIMEOUT: "300ms",
  PROBE_FAILURES_TO_DEGRADE: "3",
  PROBE_SUCCESSES_TO_RECOVER: "2",
  RATE_LIMIT_TENANT: "1000000",
};

const closers: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});



function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (text += c));
    req.on("end", () => resolve(text));
    req.on("error", reject);
  });
}

interface McpAgent {
  readonly url: string;
  /** tools/list requests are held unanswered while true (initialize and /health still answer). */
  hangToolsList: boolean;
  readonly counts: { health: number; initialize: number; toolsList: number };
}

/** An MCP agent: the SDK's McpServer, a fresh stateless transport per POST, and GET /health → 200. */
async function startMcpAgent(tools: string[]): Promise<McpAgent> {
  const agent: McpAgent = { url: "", hangToolsList: false, counts: { health: 0, initialize: 0, toolsList: 0 } };
  const server = http.createServer(async (req, res) => {
    if (req.url === "/health") {
      agent.counts.health++;
      res.end("ok");
      return;
    }
    if (req.url !== "/mcp") return void res.writeHead(404).end();
    if (req.method !== "POST") return void res.writeHead(405, { allow: "POST" }).end();
    const body = JSON.parse(await readBody(req));
    if (body.method === "initialize") agent.counts.initialize++;
    if (body.method === "tools/list") {
      agent.counts.toolsList++;
      if (agent.hangToolsList) return; // never answered; the probe's timeout ends it
    }
    await answerMcp(req, res, body, "probe-test-agent", tools);
  });
  const port = await listen(server);
  closers.push(closer(server));
  (agent as { url: string }).url = `http://127.0.0.1:${port}/mcp`;
  return agent;
}

interface HttpAgent {
  readonly url: string;
  /** The next this-many /health requests are never answered. */
  hangNext: number;
  /** Every /health request is never answered while true. */
  hangAll: boolean;
  health: number;
  /** Hung requests whose connection the prober closed. */
  closedHung: number;
}

async function startHttpAgent(): Promise<HttpAgent> {
  const agent: HttpAgent = { url: "", hangNext: 0, hangAll: false, health: 0, closedHung: 0 };
  const server = http.createServer((req, res) => {
    if (req.url !== "/health") return void res.writeHead(404).end();
    agent.health++;
    if (agent.hangAll || agent.hangNext > 0) {
      if (!agent.hangAll) agent.hangNext--;
      res.on("close", () => agent.closedHung++);
      return;
    }
    res.end("ok");
  });
  const port = await listen(server);
  closers.push(closer(server));
  (agent as { url: string }).url = `http://127.0.0.1:${port}/execute`;
  return agent;
}

async function register(t: TestApp, name: string, url: string, transport: string, tools: string[] = []): Promise<string> {
  const r = await postJson(
    `${t.url}/agents/register`,
    registerBody({
      name,
      endpoint: { url, transport },
      capabilities: [{ name: "probe.test" }],
      tools: tools.map((n) => ({ name: n, description: `the ${n} tool`, inputSchema: { type: "object" } })),
      leaseTtl: "3600s",
    }),
  );
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json.agent.id as string;
}

async function statusOf(t: TestApp, id: string): Promise<string> {
  const r = await getJson(`${t.url}/agents/${id}`);
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json.agent?.status ?? r.json.status;
}

/** Every round's copy of one agent's probe state, in order. */
function trace(t: TestApp, id: string): { states: ProbeState[]; stop: () => void } {
  const states: ProbeState[] = [];
  const stop = t.app.probes.onRound(() => {
    const s = t.app.probes.state(id);
    if (s) states.push({ ...s });
  });
  return { states, stop };
}

function nextRounds(t: TestApp, n: number, ms = 10_000): Promise<ProbeRound[]> {
  const rounds: ProbeRound[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (stop(), reject(new Error(`only ${rounds.length} of ${n} probe rounds in ${ms}ms`))), ms);
    const stop = t.app.probes.onRound((r) => {
      rounds.push(r);
      if (rounds.length < n) return;
      clearTimeout(timer);
      stop();
      resolve(rounds);
    });
  });
}

const ofAgent = (ws: WsFeed, id: string, type: string) => ws.events.items.filter((e) => e.agentId === id && e.type === type);

async function until(what: string, pred: () => boolean, ms = 8_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("MCP probe", () => {
  let t: TestApp;
  let ws: WsFeed;
  afterEach(() => ws?.close());
  afterAll(async () => t?.close());

  it("catches an agent whose /health answers 200 while tools/list hangs, and lets it recover after M passes", async () => {
    t = await startApp(FAST);
    const agent = await startMcpAgent(["search", "summarize"]);
    const id = await register(t, "mcp-hangs", agent.url, "TRANSPORT_MCP_STREAMABLE_HTTP", ["search", "summarize"]);
    ws = await openWs(t.port, `?types=agent.status_changed,agent.probe_failed,agent.probe_recovered&agent_id=${id}`);
    const seen = trace(t, id);

    // Healthy: initialize + tools/list pass, the status stays HEALTHY.
    await until("two passing probes", () => (t.app.probes.state(id)?.consecutiveSuccesses ?? 0) >= 2);
    expect(t.app.probes.state(id)).toMatchObject({ transport: "mcp", lastOutcome: "ok", consecutiveFailures: 0 });
    expect(agent.counts.initialize).toBeGreaterThanOrEqual(2);
    expect(await statusOf(t, id)).toBe("AGENT_STATUS_HEALTHY");

    agent.hangToolsList = true;
    const hungAt = seen.states.length;
    await until("agent.status_changed to DEGRADED", () => ofAgent(ws, id, "agent.status_changed").length >= 1);
    const [change] = ofAgent(ws, id, "agent.status_changed");
    expect(change.agentChange.previousStatus).toBe("AGENT_STATUS_HEALTHY");
    expect(change.agentChange.agent.status).toBe("AGENT_STATUS_DEGRADED");
    expect(change.agentChange.reason).toMatch(/^probe failed 3 times in a row \(mcp\): no answer within 300ms/);
    await until("agent.probe_failed", () => ofAgent(ws, id, "agent.probe_failed").length === 1);
    expect(await statusOf(t, id)).toBe("AGENT_STATUS_DEGRADED");
    // Its HTTP health never stopped answering: only the MCP round trip caught it.
    expect((await fetch(agent.url.replace("/mcp", "/health"))).status).toBe(200);
    // Exactly N timed-out probes in a row before the change, none degrading earlier.
    const hung = seen.states.slice(hungAt).filter((s) => s.lastOutcome !== "ok");
    expect(hung.slice(0, 3).map((s) => s.consecutiveFailures)).toEqual([1, 2, 3]);

    agent.hangToolsList = false;
    await until("agent.probe_recovered", () => ofAgent(ws, id, "agent.probe_recovered").length === 1);
    const back = ofAgent(ws, id, "agent.status_changed");
    expect(back).toHaveLength(2);
    expect(back[1].agentChange.agent.status).toBe("AGENT_STATUS_HEALTHY");
    expect(back[1].agentChange.reason).toBe("probe passed 2 times in a row (mcp)");
    expect(t.app.probes.state(id)).toMatchObject({ consecutiveSuccesses: 2, consecutiveFailures: 0, degradedByProbes: false });
    expect(await statusOf(t, id)).toBe("AGENT_STATUS_HEALTHY");
    seen.stop();
  });

  it("fails an agent whose tools/list lacks a registered tool, naming the tool", async () => {
    const agent = await startMcpAgent(["search"]);
    const id = await register(t, "mcp-missing", agent.url, "TRANSPORT_MCP_STREAMABLE_HTTP", ["search", "fetch_page"]);
    ws = await openWs(t.port, `?types=agent.status_changed&agent_id=${id}`);
    await until("agent.status_changed", () => ofAgent(ws, id, "agent.status_changed").length === 1);
    const [change] = ofAgent(ws, id, "agent.status_changed");
    expect(change.agentChange.agent.status).toBe("AGENT_STATUS_DEGRADED");
    expect(change.agentChange.reason).toContain('tools/list lacks registered tool "fetch_page"');
    expect(t.app.probes.state(id)).toMatchObject({ lastOutcome: "missing_tool" });
  });
});

/** A grpc-js server with grpc.health.v1 Check answering `status` (the stock service shape). */
async function startGrpcAgent(): Promise<{ url: string; status: string; checks: number }> {
  const def = protoLoader.loadSync("grpc/health/v1/health.proto", { includeDirs: [path.resolve(import.meta.dirname, "../proto")] });
  const health = (grpc.loadPackageDefinition(def) as any).grpc.health.v1.Health;
  const agent = { url: "", status: "SERVING", checks: 0 };
  const server = new grpc.Server();
  server.addService(health.service, {
    Check: (_call: unknown, cb: (err: null, res: { status: string }) => void) => {
      agent.checks++;
      cb(null, { status: agent.status });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  closers.push(() => void server.forceShutdown());
  agent.url = `grpc://127.0.0.1:${port}`;
  return agent;
}

describe("gRPC probe", () => {
  it("degrades an agent whose grpc.health.v1 Check says NOT_SERVING, and recovers it", async () => {
    const t = await startApp(FAST);
    closers.push(() => t.close());
    const agent = await startGrpcAgent();
    const id = await register(t, "grpc-agent", agent.url, "TRANSPORT_GRPC");
    const ws = await openWs(t.port, `?types=agent.status_changed&agent_id=${id}`);
    closers.push(() => ws.close());
    await until("two passing probes", () => (t.app.probes.state(id)?.consecutiveSuccesses ?? 0) >= 2);
    expect(t.app.probes.state(id)).toMatchObject({ transport: "grpc", lastOutcome: "ok" });
    agent.status = "NOT_SERVING";
    await until("agent.status_changed", () => ofAgent(ws, id, "agent.status_changed").length === 1);
    expect(ofAgent(ws, id, "agent.status_changed")[0].agentChange.reason).toBe(
      "probe failed 3 times in a row (grpc): grpc.health.v1 Check answered NOT_SERVING",
    );
    agent.status = "SERVING";
    await until("recovered", () => ofAgent(ws, id, "agent.status_changed").length === 2);
    expect(ofAgent(ws, id, "agent.status_changed")[1].agentChange.agent.status).toBe("AGENT_STATUS_HEALTHY");
    expect(await statusOf(t, id)).toBe("AGENT_STATUS_HEALTHY");
  });
});

describe("hysteresis", () => {
  let t: TestApp;
  let ws: WsFeed;
  afterAll(async () => {
    ws?.close();
    await t?.close();
  });

  it("leaves the status alone after one timeout (and N−1 in a row), and degrades after N in a row", async () => {
    t = await startApp(FAST);
    const agent = await startHttpAgent();
    const id = await register(t, "http-slow", agent.url, "TRANSPORT_HTTP_JSON");
    ws = await openWs(t.port, `?types=agent.status_changed,agent.probe_failed&agent_id=${id}`);
    const seen = trace(t, id);
    await until("a passing probe", () => t.app.probes.state(id)?.lastOutcome === "ok");

    /** The rounds since `mark` show `n` timeouts and then a pass. */
    const timeoutsThenPass = (mark: number, n: number) => () => {
      const since = seen.states.slice(mark);
      const first = since.findIndex((s) => s.lastOutcome === "timeout");
      return first >= 0 && since.slice(first + n).some((s) => s.lastOutcome === "ok");
    };
    // One timeout, then passes.
    agent.hangNext = 1;
    await until("one timeout then a pass", timeoutsThenPass(seen.states.length, 1));
    // Two in a row (N − 1), then passes.
    agent.hangNext = 2;
    await until("two timeouts then a pass", timeoutsThenPass(seen.states.length, 2));
    await nextRounds(t, 2);
    const outcomes = seen.states.map((s) => s.lastOutcome);
    expect(outcomes.filter((o) => o === "timeout")).toHaveLength(3);
    expect(Math.max(...seen.states.map((s) => s.consecutiveFailures))).toBe(2);
    expect(ofAgent(ws, id, "agent.status_changed")).toHaveLength(0);
    expect(ofAgent(ws, id, "agent.probe_failed")).toHaveLength(0);
    expect(await statusOf(t, id)).toBe("AGENT_STATUS_HEALTHY");

    // N in a row.
    agent.hangAll = true;
    const from = seen.states.length;
    await until("agent.status_changed", () => ofAgent(ws, id, "agent.status_changed").length === 1);
    const [change] = ofAgent(ws, id, "agent.status_changed");
    expect(change.agentChange.agent.status).toBe("AGENT_STATUS_DEGRADED");
    expect(change.agentChange.reason).toBe("probe failed 3 times in a row (http_json): no answer within 300ms");
    expect(seen.states.slice(from, from + 3).map((s) => [s.lastOutcome, s.consecutiveFailures])).toEqual([
      ["timeout", 1],
      ["timeout", 2],
      ["timeout", 3],
    ]);
    // More failures change nothing more: one change, one probe_failed.
    await nextRounds(t, 2);
    expect(ofAgent(ws, id, "agent.status_changed")).toHaveLength(1);
    expect(ofAgent(ws, id, "agent.probe_failed")).toHaveLength(1);
    seen.stop();
  });

  it("does not probe a loopback agent when DISPATCH_ALLOW_LOOPBACK is off, and judges nothing", async () => {
    const guarded = await startApp({ ...FAST, DISPATCH_ALLOW_LOOPBACK: "false" });
    closers.push(() => guarded.close());
    const agent = await startHttpAgent();
    const id = await register(guarded, "http-loopback", agent.url, "TRANSPORT_HTTP_JSON");
    await nextRounds(guarded, 4);
    expect(agent.health).toBe(0);
    expect(guarded.app.probes.state(id)).toMatchObject({ lastOutcome: "refused", consecutiveFailures: 0 });
    expect(guarded.app.probes.state(id)!.lastDetail).toMatch(/loopback address .*DISPATCH_ALLOW_LOOPBACK=true/);
    expect(await statusOf(guarded, id)).toBe("AGENT_STATUS_HEALTHY");
    const metrics = await (await fetch(`${guarded.url}/metrics`, { headers: { authorization: "Bearer test-bootstrap-token" } })).text();
    expect(metrics).toMatch(/federation_probes_total\{transport="http_json",outcome="refused"\} [1-9]/);
    expect(metrics).not.toContain(id);
  });
});

describe("shutdown", () => {
  it("stops at once while a probe hangs, aborting it", async () => {
    const app = await startApp({ ...FAST, PROBE_INTERVAL: "10s", PROBE_TIMEOUT: "8s" });
    const agent = await startHttpAgent();
    agent.hangAll = true;
    await register(app, "http-hangs", agent.url, "TRANSPORT_HTTP_JSON");
    await until("a probe in flight", () => agent.health >= 1, 3_000);
    const report = await app.app.stop();
    expect(report.timedOut).not.toContain("probes");
    expect(report.durationMs).toBeLessThan(3_000);
    // The hung probe's connection was closed by the prober, not left to its 8 s timeout.
    await until("the hung probe's connection closed", () => agent.closedHung >= 1, 1_000);
  });
});

describe("configuration", () => {
  it("is off by default, with the documented defaults", () => {
    expect(loadConfig({}).probes).toEqual({
      enabled: false,
      intervalMs: 30_000,
      timeoutMs: 5_000,
      concurrency: 256,
      failuresToDegrade: 3,
      successesToRecover: 2,
      httpPath: "/health",
      leaderTtlMs: 5_000,
    });
  });

  it("names the variable in every error", () => {
    const bad: [Record<string, string>, RegExp][] = [
      [{ PROBES: "yes" }, /^PROBES: must be one of on, off/],
      [{ PROBE_INTERVAL: "10s", PROBE_TIMEOUT: "11s" }, /^PROBE_TIMEOUT: must not exceed PROBE_INTERVAL/],
      [{ PROBE_CONCURRENCY: "0" }, /^PROBE_CONCURRENCY: must be between 1/],
      [{ PROBE_FAILURES_TO_DEGRADE: "x" }, /^PROBE_FAILURES_TO_DEGRADE: must be an integer/],
      [{ PROBE_HTTP_PATH: "health" }, /^PROBE_HTTP_PATH: must be a path/],
      [{ PROBE_LEADER_TTL: "10ms" }, /^PROBE_LEADER_TTL: must be between 300ms/],
    ];
    for (const [env, message] of bad) {
      expect(() => loadConfig(env), JSON.stringify(env)).toThrow(ConfigError);
      expect(() => loadConfig(env), JSON.stringify(env)).toThrow(message);
    }
  });
});

describe("a fleet of 2,000", () => {
  it("probes every agent within one interval under the concurrency bound, a tenth of them black holes", async () => {
    // 200 black holes × 2 s over 100 slots: a bounded round lasts at least 4 s; an unbounded one ~2 s; a sequence 400 s.
    const concurrency = 100;
    const intervalMs = 8_000;
    const t = await startApp({
      ...FAST,
      PROBE_INTERVAL: `${intervalMs}ms`,
      PROBE_TIMEOUT: "2s",
      PROBE_CONCURRENCY: String(concurrency),
    });
    closers.push(() => t.close());
    const healthy = http.createServer((_req, res) => res.end("ok"));
    const healthyPort = await listen(healthy);
    closers.push(closer(healthy));
    const hole = net.createServer({ allowHalfOpen: true }, (s) => s.on("error", () => undefined)); // accepts, never answers
    const holePort = await listen(hole);
    closers.push(closer(hole));

    const urls = Array.from({ length: 2_000 }, (_, i) =>
      i % 10 === 0 ? `http://127.0.0.1:${holePort}/a${i}` : `http://127.0.0.1:${healthyPort}/a${i}`,
    );
    for (let i = 0; i < urls.length; i += 100) {
      await Promise.all(urls.slice(i, i + 100).map((url, j) => register(t, `fleet-${i + j}`, url, "TRANSPORT_HTTP_JSON")));
    }
    // The first round that saw the whole fleet.
    const round = await new Promise<ProbeRound>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no round saw 2,000 agents within 25s")), 25_000);
      const stop = t.app.probes.onRound((r) => {
        if (r.probed < 2_000) return;
        clearTimeout(timer);
        stop();
        resolve(r);
      });
    });
    expect(round.probed).toBe(2_000);
    expect(round.outcomes).toMatchObject({ ok: 1_800, timeout: 200, error: 0 });
    // At most `concurrency` probes at once: the black holes alone hold the slots for 4 s.
    expect(round.durationMs).toBeGreaterThanOrEqual(3_950);
    // Concurrently, not in sequence: the whole fleet within one interval.
    expect(round.durationMs).toBeLessThan(intervalMs);
  }, 50_000);
});

describe("HTTP probe on raw keep-alive sockets", () => {
  const guard = new AddressGuard({ loopback: true, private: false });
  const prober = (timeoutMs = 1_000) => {
    const p = new HttpProber({ timeoutMs, freeSocketMs: 10_000, maxFreePerTarget: 8, userAgent: "federation-core-probe (test)" });
    closers.push(() => p.close());
    return p;
  };
  /** A node HTTP server counting connections and requests; `answer` writes each answer. */
  async function server(answer: (req: http.IncomingMessage, res: http.ServerResponse) => void, opts: http.ServerOptions = {}) {
    const counts = { connections: 0, requests: 0, userAgents: new Set<string>() };
    const srv = http.createServer(opts, (req, res) => {
      counts.requests++;
      counts.userAgents.add(String(req.headers["user-agent"]));
      answer(req, res);
    });
    srv.on("connection", () => counts.connections++);
    const port = await listen(srv);
    closers.push(closer(srv));
    return { counts, target: await guard.pin(`http://127.0.0.1:${port}/execute`, 80) };
  }

  it("reuses one socket across answers with a length, chunked, empty and non-2xx", async () => {
    let n = 0;
    /** Resolves when the chunked answer's last chunk was written (the verdict comes with the first). */
    let chunkedDone: Promise<void> = Promise.resolve();
    const { counts, target } = await server((req, res) => {
      expect(req.url).toBe("/health");
      const i = n++ % 4;
      if (i === 0) return void res.writeHead(200, { "content-length": "2" }).end("ok");
      if (i === 1) {
        res.writeHead(200); // no length: chunked, its end in a later read
        res.write("o");
        chunkedDone = new Promise((resolve) => setTimeout(() => res.end("k".repeat(5_000), () => resolve()), 5));
        return;
      }
      if (i === 2) return void res.writeHead(204).end();
      res.writeHead(503, { "content-type": "text/plain" }).end("busy");
    });
    const p = prober();
    for (let round = 0; round < 3; round++) {
      await p.probe(target, "/health");
      await p.probe(target, "/health");
      // The chunked body read to its end puts the socket back (the next probe would otherwise open another).
      await chunkedDone;
      await new Promise((r) => setTimeout(r, 20));
      await p.probe(target, "/health");
      const err = await p.probe(target, "/health").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HttpProbeFailed);
      expect((err as Error).message).toBe("GET /health answered HTTP 503");
    }
    expect(counts.requests).toBe(12);
    expect(counts.connections).toBe(1);
    expect([...counts.userAgents]).toEqual(["federation-core-probe (test)"]);
  });

  it("opens a socket per probe when the agent closes after each answer, and passes a cut body", async () => {
    const { counts, target } = await server((_req, res) => {
      res.writeHead(200, { connection: "close" }).end("x".repeat(200_000));
    });
    const p = prober();
    for (let i = 0; i < 5; i++) await p.probe(target, "/health");
    expect(counts.connections).toBe(5);
  });

  it("tries a fresh socket once when a kept-alive one is closed as it is reused", async () => {
    // Raw server: the first request on each connection is answered, the second closes it unanswered
    // (the race of an agent ending an idle socket just as the next probe goes out).
    let connections = 0;
    const raw = net.createServer((socket) => {
      connections++;
      let requests = 0;
      socket.on("data", (d) => {
        if (!d.toString("latin1").includes("\r\n\r\n")) return;
        if (++requests === 1) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        else socket.destroy();
      });
      socket.on("error", () => undefined);
    });
    const port = await listen(raw);
    closers.push(closer(raw));
    const target = await guard.pin(`http://127.0.0.1:${port}/`, 80);
    const p = prober();
    for (let i = 0; i < 4; i++) await p.probe(target, "/health");
    expect(connections).toBe(4);
    // A fresh socket closed unanswered is the agent's failure: no retry.
    const silent = net.createServer((socket) => socket.on("data", () => socket.destroy()));
    const silentPort = await listen(silent);
    closers.push(closer(silent));
    const err = (await p.probe(await guard.pin(`http://127.0.0.1:${silentPort}/`, 80), "/health").catch((e: unknown) => e)) as NodeJS.ErrnoException;
    expect(err.code).toBe("ECONNRESET");
  });

  it("times out a black hole at its deadline, with one timer for all probes", async () => {
    const hole = net.createServer((s) => s.on("error", () => undefined));
    const port = await listen(hole);
    closers.push(closer(hole));
    const target = await guard.pin(`http://127.0.0.1:${port}/`, 80);
    const p = prober(300);
    const t0 = performance.now();
    const errors = await Promise.all(Array.from({ length: 50 }, () => p.probe(target, "/health").catch((e: unknown) => e)));
    const elapsed = performance.now() - t0;
    for (const e of errors) expect(e).toBeInstanceOf(ProbeTimeout);
    expect((errors[0] as Error).message).toBe("no answer within 300ms");
    expect(elapsed).toBeGreaterThanOrEqual(295);
    expect(elapsed).toBeLessThan(1_500);
  });

  it("ends a probe when its signal aborts, closing its socket", async () => {
    let closed = 0;
    const hung = net.createServer((s) => {
      s.resume(); // reads (and drops) the request, so it sees the prober's close
      s.on("close", () => closed++);
      s.on("error", () => undefined);
    });
    const port = await listen(hung);
    closers.push(closer(hung));
    const p = prober(5_000);
    const controller = new AbortController();
    const pending = p.probe(await guard.pin(`http://127.0.0.1:${port}/`, 80), "/health", controller.signal).catch((e: unknown) => e);
    setTimeout(() => controller.abort(new Error("round aborted")), 50);
    expect(((await pending) as Error).message).toBe("round aborted");
    await until("the socket closed", () => closed === 1, 2_000);
  });
});
