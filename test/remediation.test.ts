import http from "node:http";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { killAgents, startAgent, type AgentProcess } from "./support/dispatch-agents.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { closer, listen } from "./support/servers.js";
import { answerMcp } from "./support/mcp-tools.js";

/**
 * SLO burn-rate alerts and the Praetorian Guard (issue 16, items 2 and 3),
 * end to end on loopback: an MCP agent (the SDK's McpServer) that degrades
 * on cue — slow tools/list, then JSON-RPC errors, then tools/list and
 * tools/call that hang while GET /health still answers 200 — is caught by
 * its MCP probe; its SLOs burn; alerts fire once each; one remediation goes
 * to a Guard agent process (test/support/dispatch-agent.mjs offering
 * capability "remediation") and its answer is in the audit trail; every
 * alert resolves when the agent recovers. Windows of seconds.
 */

const ENV = {
  PROBES: "on",
  DISPATCH_ALLOW_LOOPBACK: "true",
  PROBE_INTERVAL: "400ms",
  PROBE_TIMEOUT: "400ms",
  PROBE_FAILURES_TO_DEGRADE: "3",
  PROBE_SUCCESSES_TO_RECOVER: "2",
  RATE_LIMIT_TENANT: "1000000",
  SLO: "on",
  SLO_AVAILABILITY_TARGET: "0.9",
  SLO_LATENCY_TARGET: "0.9",
  SLO_LATENCY_THRESHOLD: "200ms",
  SLO_FAST_LONG_WINDOW: "5s",
  SLO_FAST_SHORT_WINDOW: "2s",
  SLO_FAST_BURN_RATE: "5",
  SLO_SLOW_LONG_WINDOW: "12s",
  SLO_SLOW_SHORT_WINDOW: "4s",
  SLO_SLOW_BURN_RATE: "3",
  SLO_EVALUATION_INTERVAL: "100ms",
  SLO_MIN_EVENTS: "4",
  REMEDIATION_COOLDOWN: "60s",
  REMEDIATION_TIMEOUT: "5s",
};

const closers: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  killAgents();
  for (const c of closers.splice(0).reverse()) await c();
});



async function readBody(req: http.IncomingMessage): Promise<string> {
  let text = "";
  for await (const c of req) text += c;
  return text;
}

type Mode = "ok" | "slow" | "error" | "hang";

interface DegradingAgent {
  readonly url: string;
  mode: Mode;
  readonly health: { count: number };
}

/**
 * An MCP agent whose tools/list (and tools/call) degrade on cue: "slow"
 * answers after 300 ms, "error" answers a JSON-RPC error, "hang" never
 * answers. GET /health answers 200 whatever the mode.
 */
async function startDegradingAgent(tools: string[]): Promise<DegradingAgent> {
  const agent: DegradingAgent = { url: "", mode: "ok", health: { count: 0 } };
  const server = http.createServer(async (req, res) => {
    if (req.url === "/health") {
      agent.health.count++;
      return void res.end("ok");
    }
    if (req.url !== "/mcp" || req.method !== "POST") return void res.writeHead(404).end();
    const body = JSON.parse(await readBody(req));
    if (body.method === "tools/list" || body.method === "tools/call") {
      if (agent.mode === "hang") return; // never answered; the probe's timeout ends it
      if (agent.mode === "error") {
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify({ jsonrpc: "2.0", id: body.id, error: { code: -32603, message: "failing on cue" } }));
      }
      if (agent.mode === "slow") await new Promise((r) => setTimeout(r, 300));
    }
    await answerMcp(req, res, body, "degrading-agent", tools);
  });
  const port = await listen(server);
  closers.push(closer(server));
  (agent as { url: string }).url = `http://127.0.0.1:${port}/mcp`;
  return agent;
}

async function registerAgent(t: TestApp, body: Record<string, unknown>): Promise<string> {
  const r = await postJson(`${t.url}/agents/register`, registerBody({ leaseTtl: "3600s", ...body }));
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json.agent.id as string;
}

function registerGuard(t: TestApp, guard: AgentProcess): Promise<string> {
  return registerAgent(t, {
    name: guard.name,
    endpoint: { url: `http://127.0.0.1:${guard.port}/remediate`, transport: "TRANSPORT_HTTP_JSON" },
    capabilities: [{ name: "remediation" }],
    tools: [],
  });
}

function registerMcp(t: TestApp, name: string, url: string): Promise<string> {
  return registerAgent(t, {
    name,
    endpoint: { url, transport: "TRANSPORT_MCP_STREAMABLE_HTTP" },
    capabilities: [{ name: "search.web" }],
    tools: [{ name: "search", description: "the search tool", inputSchema: { type: "object" } }],
  });
}

/** Tasks the Guard received (its HTTP health probes are requests too, without a task id). */
const guardTasks = (guard: AgentProcess) => guard.tasks.items.filter((t) => t.taskId);

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const alerts = (ws: WsFeed, state?: string) =>
  ws.events.items.filter((e) => e.type === "health.alert" && (state === undefined || e.healthAlert.state === state));
const keyOf = (e: any) => `${e.healthAlert.slo}|${e.healthAlert.agentId ?? ""}${e.healthAlert.capability ?? ""}|${e.healthAlert.severity}`;

/** Every alert key fired exactly once (no duplicates while it fires). */
function expectOneFiringPerKey(ws: WsFeed): Map<string, any> {
  const byKey = new Map<string, any[]>();
  for (const e of alerts(ws, "ALERT_STATE_FIRING")) byKey.set(keyOf(e), [...(byKey.get(keyOf(e)) ?? []), e]);
  for (const [key, fired] of byKey) expect(fired, `alert ${key} fired more than once: ${JSON.stringify(alerts(ws).map((e) => [e.healthAlert.state, e.healthAlert.slo, e.healthAlert.severity, e.time, e.healthAlert.message]))}`).toHaveLength(1);
  return new Map([...byKey].map(([k, v]) => [k, v[0]]));
}

describe("SLO alerts and the Praetorian Guard", () => {
  let t: TestApp;
  let ws: WsFeed;
  afterEach(async () => {
    ws?.close();
    await t?.close();
  });

  it("catches an agent that degrades on cue, alerts once per SLO, remediates once through the Guard, and resolves on recovery", async () => {
    t = await startApp(ENV);
    const guard = await startAgent("http", "guard");
    const guardId = await registerGuard(t, guard);
    const agent = await startDegradingAgent(["search"]);
    const id = await registerMcp(t, "degrading", agent.url);
    ws = await openWs(t.port, "?types=health.alert,health.remediation_dispatched,health.remediation_escalated");

    // Healthy: probes pass, nothing burns.
    await until("passing probes", () => (t.app.probes.state(id)?.consecutiveSuccesses ?? 0) >= 8);
    expect(alerts(ws), JSON.stringify(alerts(ws))).toHaveLength(0);

    // Latency: tools/list answers, but slower than SLO_LATENCY_THRESHOLD — the latency SLO pages.
    agent.mode = "slow";
    const latencyPage = (e: any) => e.healthAlert.slo === "agent-latency" && e.healthAlert.severity === "ALERT_SEVERITY_PAGE";
    await until("the latency page", () => alerts(ws, "ALERT_STATE_FIRING").some(latencyPage));
    const latency = alerts(ws, "ALERT_STATE_FIRING").find(latencyPage)!;
    expect(latency.agentId).toBe(id);
    expect(latency.healthAlert).toMatchObject({ component: "slo", agentId: id, objective: 0.9 });
    expect(t.app.probes.state(id)?.lastOutcome).toBe("ok");

    // Errors: the availability SLO pages (both fast windows above 5×).
    agent.mode = "error";
    await until("the availability page", () =>
      alerts(ws, "ALERT_STATE_FIRING").some((e) => e.healthAlert.slo === "agent-availability" && e.healthAlert.severity === "ALERT_SEVERITY_PAGE"),
    );
    const page = alerts(ws, "ALERT_STATE_FIRING").find((e) => e.healthAlert.slo === "agent-availability" && e.healthAlert.severity === "ALERT_SEVERITY_PAGE")!;
    expect(page.healthAlert.burnRate).toBeGreaterThan(5);
    expect(page.healthAlert.shortBurnRate).toBeGreaterThan(5);
    expect(page.healthAlert.burnRateThreshold).toBe(5);
    expect(page.healthAlert.longWindow).toBe("5s");
    expect(page.healthAlert.shortWindow).toBe("2s");
    expect(page.healthAlert.alertId).toMatch(/^alert-/);

    // Hangs on tool calls while /health answers 200: the MCP probe times out, the agent turns DEGRADED.
    agent.mode = "hang";
    const healthBefore = agent.health.count;
    expect((await fetch(agent.url.replace("/mcp", "/health"))).status).toBe(200);
    await until("DEGRADED by the probes", async () => (await getJson(`${t.url}/agents/${id}`)).json.agent.status === "AGENT_STATUS_DEGRADED");
    expect(agent.health.count).toBe(healthBefore + 1); // only the test asked /health: the probe spoke MCP
    await sleep(1_500); // still burning: no alert fires again

    // Exactly one remediation for the agent within the cooldown, dispatched to the Guard, which answered.
    expect(ws.events.items.filter((e) => e.type === "health.remediation_dispatched")).toHaveLength(1);
    await until("the Guard's task", () => guardTasks(guard).length >= 1);
    expect(guardTasks(guard)).toHaveLength(1);
    expect(guardTasks(guard)[0]).toMatchObject({ capabilities: ["remediation"], tenant: "default" });
    const trail = await getJson(`${t.url}/health/remediations`);
    expect(trail.status, JSON.stringify(trail.json)).toBe(200);
    const sent = trail.json.remediations.filter((r: any) => r.status !== "REMEDIATION_STATUS_SUPPRESSED");
    expect(sent).toHaveLength(1);
    const [rem] = sent;
    expect(rem).toMatchObject({ status: "REMEDIATION_STATUS_SUCCEEDED", targetKind: "agent", target: guardId, taskId: guardTasks(guard)[0].taskId });
    expect(rem.alert.agentId).toBe(id);
    // The Guard's answer (it echoes the task it got: the alert it was asked to act on).
    expect(rem.result).toMatchObject({ agent: "guard", echo: { kind: "slo-alert", alertId: rem.alert.alertId, subject: id, remediationId: rem.remediationId } });
    // Later alerts about the same agent were held back by the cooldown, and say so.
    for (const r of trail.json.remediations.filter((r: any) => r.status === "REMEDIATION_STATUS_SUPPRESSED")) {
      expect(r.detail).toMatch(/^cooldown: agent /);
      expect(r.alert.agentId).toBe(id);
    }

    // Fleet health shows the lease, the probe, the breaker and the SLOs burning.
    const fleet = await getJson(`${t.url}/health/fleet`);
    expect(fleet.status).toBe(200);
    expect(fleet.json.sloEvaluator).toBe(true);
    const row = fleet.json.agents.find((a: any) => a.agentId === id);
    expect(row).toMatchObject({ name: "degrading", status: "AGENT_STATUS_DEGRADED", circuit: "CIRCUIT_STATE_CLOSED" });
    expect(row.probe).toMatchObject({ transport: "mcp", lastOutcome: "timeout" });
    expect(row.leaseExpiresAt).toBeTruthy();
    const avail = row.slos.find((s: any) => s.slo === "agent-availability");
    expect(avail.firing).toContain("ALERT_SEVERITY_PAGE");
    expect(avail.errorBudgetRemaining).toBeLessThan(0);
    expect(avail.burnRates.map((b: any) => b.window)).toEqual(["12s", "5s", "4s", "2s"]);
    expect(fleet.json.firingAlerts.some((a: any) => a.alertId === page.healthAlert.alertId)).toBe(true);
    expect(fleet.json.capabilityHealth.find((c: any) => c.capability === "remediation")).toMatchObject({ agents: 1, healthyAgents: 1 });
    expect(fleet.json.slos.map((s: any) => s.slo)).toEqual(["fleet-availability", "fleet-latency"]);
    const metrics = await (await fetch(`${t.url}/metrics`, { headers: { authorization: "Bearer test-bootstrap-token" } })).text();
    expect(metrics).toMatch(/^federation_slo_alerts_firing\{slo="agent-availability",severity="page"\} 1$/m);
    expect(metrics).toMatch(/^federation_slo_burn_rate\{slo="agent-availability",severity="page"\} (\d+(\.\d+)?)$/m);
    expect(metrics).not.toContain(id); // no agent ids as labels

    // Recovery: every alert that fired resolves, once, with its own id.
    agent.mode = "ok";
    await until("every alert resolved", () => alerts(ws, "ALERT_STATE_RESOLVED").length >= alerts(ws, "ALERT_STATE_FIRING").length, 10_000);
    await sleep(500);
    const fired = expectOneFiringPerKey(ws);
    expect(fired.has(`agent-availability|${id}|ALERT_SEVERITY_PAGE`)).toBe(true);
    expect(fired.has(`agent-latency|${id}|ALERT_SEVERITY_PAGE`)).toBe(true);
    const resolved = alerts(ws, "ALERT_STATE_RESOLVED");
    expect(resolved.map((e) => e.healthAlert.alertId).sort()).toEqual([...fired.values()].map((e) => e.healthAlert.alertId).sort());
    // Every alert was about the degrading agent: the Guard, whose one task succeeded, burned nothing.
    for (const e of fired.values()) expect(e.healthAlert.agentId).toBe(id);
    expect(t.app.slo.firing("default")).toHaveLength(0);
    expect(guardTasks(guard)).toHaveLength(1);
  }, 45_000);

  it("escalates when the Guard fails, once, without retrying", async () => {
    t = await startApp(ENV);
    // A Guard whose health answers 200 (its probes pass) while every task it gets fails.
    const tasks: any[] = [];
    const failing = http.createServer(async (req, res) => {
      if (req.method !== "POST") return void res.end("ok");
      tasks.push(JSON.parse(await readBody(req)));
      res.writeHead(500, { "content-type": "text/plain" }).end("failing-guard fails on cue");
    });
    const port = await listen(failing);
    closers.push(closer(failing));
    await registerAgent(t, {
      name: "failing-guard",
      endpoint: { url: `http://127.0.0.1:${port}/remediate`, transport: "TRANSPORT_HTTP_JSON" },
      capabilities: [{ name: "remediation" }],
      tools: [],
    });
    const agent = await startDegradingAgent(["search"]);
    agent.mode = "error";
    const id = await registerMcp(t, "broken", agent.url);
    ws = await openWs(t.port, "?types=health.alert,health.remediation_dispatched,health.remediation_escalated");

    await until("the escalation", () => ws.events.items.some((e) => e.type === "health.remediation_escalated"));
    // The alert keeps firing for a while: no retry, no second remediation, no second escalation.
    await sleep(2_000);
    const escalated = ws.events.items.filter((e) => e.type === "health.remediation_escalated");
    expect(escalated, JSON.stringify(ws.events.items)).toHaveLength(1);
    expect(escalated[0].healthAlert).toMatchObject({ component: "slo", agentId: id });
    expect(escalated[0].healthAlert.message).toMatch(/escalated: the Guard failed: .*failing-guard fails on cue/);
    expect(tasks).toHaveLength(1);
    expect(tasks[0]).toMatchObject({ capabilities: ["remediation"], payload: { kind: "slo-alert", subject: id } });
    expectOneFiringPerKey(ws);
    const trail = await getJson(`${t.url}/health/remediations`);
    const sent = trail.json.remediations.filter((r: any) => r.status !== "REMEDIATION_STATUS_SUPPRESSED");
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ status: "REMEDIATION_STATUS_ESCALATED", targetKind: "agent", remediationId: escalated[0].healthAlert.remediationId });
    expect(sent[0].detail).toMatch(/failing-guard fails on cue/);
  }, 30_000);

  it("posts to the webhook when no Guard is registered, and escalates when the SSRF guard refuses it", async () => {
    const received: any[] = [];
    const hook = http.createServer(async (req, res) => {
      received.push({ path: req.url, body: JSON.parse(await readBody(req)) });
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ result: { ticket: "OPS-1" } }));
    });
    const hookPort = await listen(hook);
    closers.push(closer(hook));
    t = await startApp({ ...ENV, REMEDIATION_WEBHOOK_URL: `http://127.0.0.1:${hookPort}/hooks/guard` });
    const agent = await startDegradingAgent(["search"]);
    agent.mode = "error";
    const id = await registerMcp(t, "no-guard", agent.url);
    await until("the webhook's call", () => received.length >= 1);
    await sleep(1_000);
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ path: "/hooks/guard", body: { capabilities: ["remediation"], payload: { kind: "slo-alert", subject: id } } });
    await until("the webhook's answer in the trail", async () =>
      (await getJson(`${t.url}/health/remediations`)).json.remediations.some((r: any) => r.status === "REMEDIATION_STATUS_SUCCEEDED"),
    );
    const [rem] = (await getJson(`${t.url}/health/remediations`)).json.remediations.filter((r: any) => r.status !== "REMEDIATION_STATUS_SUPPRESSED");
    expect(rem).toMatchObject({ targetKind: "webhook", target: `http://127.0.0.1:${hookPort}`, result: { ticket: "OPS-1" } });
    await t.close();

    // A webhook at the cloud metadata address is never called: the remediation escalates.
    t = await startApp({ ...ENV, REMEDIATION_WEBHOOK_URL: "http://169.254.169.254/latest" });
    ws = await openWs(t.port, "?types=health.remediation_escalated");
    await registerMcp(t, "no-guard-2", agent.url);
    const [escalated] = await ws.events.waitFor(1, 10_000);
    expect(escalated.healthAlert.message).toMatch(/the webhook failed: .*169\.254\.169\.254/);
  }, 40_000);
});
