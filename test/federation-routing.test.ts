import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson } from "./support/app.js";
import { killAgents, startAgent, type AgentProcess } from "./support/dispatch-agents.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { listPeers, mintToken, registerAgent } from "./support/federation-peers.js";
import { startProcess, type ServiceProcess } from "./support/process.js";

/**
 * Cross-federation routing (issue 17, item 3) between three Federation Core
 * processes on loopback — A peers with B and C, B peers with A — and real
 * agent processes (test/support/dispatch-agent.mjs): alpha on A, charlie on
 * C. A task for a capability only C has is routed from A, dispatched
 * through C to charlie, and its outcome comes back on A. C is then killed
 * (SIGKILL) and started again on its port with its data directory (its
 * keys, so A's token still holds).
 */
const TIMEOUT_MS = 500;
const COOL_DOWN_MS = 1_000;
let a: ServiceProcess, b: ServiceProcess, c: ServiceProcess;
let alpha: AgentProcess, charlie: AgentProcess;
let feed: WsFeed;
let cDataDir: string;
const ids: Record<string, string> = {};
// Every federated read must reach the peers here (breakers, freshness): no remote cache.
const env = {
  FEDERATION_CACHE_TTL: "0",
  FEDERATION_TIMEOUT: `${TIMEOUT_MS}ms`,
  BREAKER_MIN_OUTCOMES: "3",
  BREAKER_COOL_DOWN: `${COOL_DOWN_MS}ms`,
  // Short, so the earlier tests' successes with C have mostly left the window when it is killed.
  BREAKER_WINDOW: "2s",
  DISPATCH_ALLOW_LOOPBACK: "true",
};

const route = (body: Record<string, unknown>) => postJson(`${a.url}/route`, { task: { question: "6*7" }, ...body });
const peer = async (svc: ServiceProcess, id: string) => (await listPeers(svc.url)).find((p) => p.peerId === id);
const eventsOf = (taskId: string) => feed.events.items.filter((e) => (e.taskRouted?.routeId ?? e.taskProgress?.taskId) === taskId);
async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 5_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  cDataDir = mkdtempSync(path.join(os.tmpdir(), "fc-fed-c-"));
  a = await startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-a" });
  b = await startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-b" });
  c = await startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-c", DATA_DIR: cDataDir });
  alpha = await startAgent("http", "alpha");
  charlie = await startAgent("http", "charlie");
  ids.alpha = await registerAgent(a.url, "alpha", "shared.cap", "alpha_tool", undefined, `http://127.0.0.1:${alpha.port}/execute`);
  ids.bravo = await registerAgent(b.url, "bravo", "shared.cap", "bravo_tool");
  ids.charlie = await registerAgent(c.url, "charlie", "charlie.only", "charlie_tool", undefined, `http://127.0.0.1:${charlie.port}/execute`);
  // Tokens the peers minted for A: reads and Route (a forwarded Route needs the route scope).
  for (const [id, svc] of [["b", b], ["c", c]] as const) {
    const token = await mintToken(svc.url, "default", ["agents:read", "route"]);
    const added = await postJson(`${a.url}/federation/peers`, { peerId: id, url: svc.url, token, tenants: ["*"] });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
  }
  const back = await postJson(`${b.url}/federation/peers`, { peerId: "a", url: a.url, token: await mintToken(a.url, "default", ["agents:read", "route"]), tenants: ["*"] });
  expect(back.status, JSON.stringify(back.json)).toBe(200);
  feed = await openWs(a.port, "?types=task.routed,task.dispatched,task.completed,task.failed");
}, 60_000);

afterAll(async () => {
  feed?.close();
  killAgents();
  await Promise.all([a, b, c].map((p) => p?.dispose()));
  rmSync(cDataDir, { recursive: true, force: true });
});

describe("cross-federation routing", () => {
  it("routes a capability only C has from A, dispatches it through C to C's agent, and brings the outcome back to A", async () => {
    const bAskedA = (await peer(b, "a")).requests;
    const res = await route({ capabilities: ["charlie.only"], dispatch: true, scope: "FEDERATION_SCOPE_FEDERATED" });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    const key = `c/${ids.charlie}`;
    const taskId = res.json.taskId as string;
    // The remote agent, with its origin; its candidate key cannot be a local id.
    expect(res.json.agent).toMatchObject({ id: ids.charlie, name: "charlie", origin: { peerId: "c", remoteId: ids.charlie, peerUrl: c.url } });
    expect(res.json.candidates[0]).toMatchObject({ agentId: key, breakdown: { locality: 0.5 } });
    expect(res.json.result).toEqual({ agent: "charlie", taskId, echo: { question: "6*7" } });
    expect(res.json.attempts).toHaveLength(1);
    expect(res.json.attempts[0]).toMatchObject({ agentId: key, outcome: "ATTEMPT_OUTCOME_OK" });
    expect(res.json.attempts[0].detail).toBe(`via peer "c" (fed-c): remote task ${taskId}, agent ${ids.charlie}, 1 attempt(s) there`);

    // Charlie got it from C (C's ticket, C's tenant), never from A directly; C knows the task by our id.
    const got = await charlie.tasks.waitFor(1);
    expect(got[0]).toMatchObject({ taskId, tenant: "default" });
    const onC = await getJson(`${c.url}/tasks/${taskId}`);
    expect(onC.json.task).toMatchObject({ status: "TASK_STATUS_COMPLETED", agentId: ids.charlie });

    // A's feed shows the hop: the peer in the agent key, the remote task in the detail.
    const events = await until("the task's events on A", async () => (eventsOf(taskId).length >= 3 ? eventsOf(taskId) : undefined));
    expect(events.map((e) => [e.type, e.agentId])).toEqual([
      ["task.routed", key],
      ["task.dispatched", key],
      ["task.completed", key],
    ]);
    expect(events[2].taskProgress.detail).toContain(`via peer "c" (fed-c): remote task ${taskId}`);

    // The outcome fed the remote agent's standing on A (and the peer's: it answered).
    const again = await route({ capabilities: ["charlie.only"], scope: "FEDERATION_SCOPE_FEDERATED" });
    expect(again.status, JSON.stringify(again.json)).toBe(200);
    expect(again.json.candidates[0].breakdown.evidence).toBeGreaterThan(0);
    expect(await peer(a, "c")).toMatchObject({ breaker: "CIRCUIT_STATE_CLOSED", failures: "0" });
    // B was asked for candidates too, and did not ask A back.
    expect((await peer(b, "a")).requests).toBe(bAskedA);
  });

  it("LOCAL (the default) never looks remote; AUTO goes remote only when no local agent can serve", async () => {
    const local = await route({ capabilities: ["charlie.only"] });
    expect(local.status).toBe(400);
    expect(local.json.message).toContain('no registered agent offers capability "charlie.only"');

    const asked = async () => Number((await peer(a, "b")).requests) + Number((await peer(a, "c")).requests);
    const before = await asked();
    const here = await route({ capabilities: ["shared.cap"], scope: "FEDERATION_SCOPE_AUTO" });
    expect(here.status, JSON.stringify(here.json)).toBe(200);
    expect(here.json.agent.id).toBe(ids.alpha);
    expect(await asked()).toBe(before);

    const there = await route({ capabilities: ["charlie.only"], dispatch: true, scope: "FEDERATION_SCOPE_AUTO" });
    expect(there.status, JSON.stringify(there.json)).toBe(200);
    expect(there.json.result.agent).toBe("charlie");
  });

  it("FEDERATED ranks remote candidates below comparable local ones by locality", async () => {
    const res = await route({ capabilities: ["shared.cap"], dispatch: true, scope: "FEDERATION_SCOPE_FEDERATED", strategy: "ROUTE_STRATEGY_BEST" });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect(res.json.candidates.map((x: any) => [x.agentId, x.breakdown.locality])).toEqual([
      [ids.alpha, 1],
      [`b/${ids.bravo}`, 0.5],
    ]);
    expect(res.json.result.agent).toBe("alpha");
  });

  it("dispatches asynchronously across a peer: the outcome arrives on A's feed and in A's GetTask", async () => {
    const res = await route({ capabilities: ["charlie.only"], dispatchAsync: true, scope: "FEDERATION_SCOPE_FEDERATED" });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    const taskId = res.json.taskId as string;
    const done = await until("task.completed", async () => eventsOf(taskId).find((e) => e.type === "task.completed"));
    expect(done.taskProgress.result).toEqual({ agent: "charlie", taskId, echo: { question: "6*7" } });
    const task = await getJson(`${a.url}/tasks/${taskId}`);
    expect(task.json.task).toMatchObject({ status: "TASK_STATUS_COMPLETED", agentId: `c/${ids.charlie}` });
  });

  it("a task that fails at C counts against C's agent on A, not against the peer C", async () => {
    await charlie.setMode("fail");
    try {
      const res = await route({ capabilities: ["charlie.only"], dispatch: true, scope: "FEDERATION_SCOPE_FEDERATED" });
      expect(res.status).toBe(503);
      expect(res.json.message).toContain(`via peer "c"`);
      expect(res.json.message).toContain("charlie fails on cue");
      const next = await route({ capabilities: ["charlie.only"], scope: "FEDERATION_SCOPE_FEDERATED" });
      expect(next.json.candidates[0].breakdown.quality).toBeLessThan(1);
      expect(await peer(a, "c")).toMatchObject({ breaker: "CIRCUIT_STATE_CLOSED", failures: "0" });
    } finally {
      await charlie.setMode("ok");
    }
  });

  it("C killed: its breaker on A opens within a few failures and A answers locally within its deadline; C back: it closes and C's agent serves again", async () => {
    const port = c.port;
    await c.dispose();
    const timings: number[] = [];
    // Successes with C a moment ago may still be in the breaker's window (BREAKER_WINDOW): bounded by
    // time as well as count, so the failures outweigh them once the window rolls.
    const giveUp = Date.now() + 3 * 2_000;
    while ((timings.length < 12 || Date.now() < giveUp) && timings.length < 60 && (await peer(a, "c")).breaker === "CIRCUIT_STATE_CLOSED") {
      const started = Date.now();
      const res = await route({ capabilities: ["shared.cap"], dispatch: true, scope: "FEDERATION_SCOPE_FEDERATED" });
      timings.push(Date.now() - started);
      expect(res.status, JSON.stringify(res.json)).toBe(200);
      expect(res.json.result.agent).toBe("alpha");
    }
    const isolated = await peer(a, "c");
    expect(isolated.breaker).toBe("CIRCUIT_STATE_OPEN");
    expect(Number(isolated.failures)).toBeGreaterThanOrEqual(3);
    for (const t of timings) expect(t).toBeLessThan(TIMEOUT_MS + 250);
    // Isolated: not asked at all; C's capability is simply not offered.
    const gone = await route({ capabilities: ["charlie.only"], dispatch: true, scope: "FEDERATION_SCOPE_FEDERATED" });
    expect(gone.status).toBe(400);

    c = await startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-c", DATA_DIR: cDataDir, PORT: String(port) });
    ids.charlie = await registerAgent(c.url, "charlie", "charlie.only", "charlie_tool", undefined, `http://127.0.0.1:${charlie.port}/execute`);
    // After the cool-down the half-open trial succeeds and C's agent serves A's tasks again.
    const back = await until(
      "C's agent serving A again",
      async () => {
        const res = await route({ capabilities: ["charlie.only"], dispatch: true, scope: "FEDERATION_SCOPE_FEDERATED" });
        return res.status === 200 ? res : undefined;
      },
      COOL_DOWN_MS + 5_000,
    );
    expect(back.json.result.agent).toBe("charlie");
    expect((await peer(a, "c")).breaker).toBe("CIRCUIT_STATE_CLOSED");
  });
  it("the home federation checks a forwarded Route's ticket against the asking peer's JWKS: a genuine one passes, a forged one is logged against the peer, not refused", async () => {
    await registerAgent(b.url, "bravo2", "bravo.only", "bravo2_tool");
    // A forwards the task to B (B peers with A: it knows A's JWKS) with A's ticket.
    const forwarded = await route({ capabilities: ["bravo.only"], dispatch: true, scope: "FEDERATION_SCOPE_AUTO" });
    // Forwarded to B (bravo2 has no agent process: the task fails there, which does not matter here).
    expect(forwarded.json.message, JSON.stringify(forwarded.json)).toMatch(/via peer "b"/);
    const taskId = /^task ([0-9a-f-]{36})/.exec(forwarded.json.message)![1];
    expect((await getJson(`${b.url}/tasks/${taskId}`)).status).toBe(200);
    expect((await peer(b, "a")).lastError).toBe("");

    // A ticket C issued, presented to B as if A had forwarded the task: not A's signature.
    const fromC = await postJson(`${c.url}/route`, { capabilities: ["charlie.only"] });
    expect(fromC.status, JSON.stringify(fromC.json)).toBe(200);
    const asIfA = {
      authorization: `Bearer ${await mintToken(b.url, "default", ["route"])}`,
      "x-federation-hops": "1",
      "x-federation-visited": "fed-a",
      "x-federation-ticket": fromC.json.ticket as string,
    };
    const forged = await postJson(`${b.url}/route`, { capabilities: ["bravo.only"], dispatch: true, taskId: fromC.json.taskId }, { headers: asIfA });
    // Not refused for it (the token admits a Route): dispatched as any, to an agent that has no endpoint to answer.
    expect(forged.status, JSON.stringify(forged.json)).not.toBe(401);
    expect(forged.status).not.toBe(403);
    const flagged = await until("B to name the bad ticket on its peer A", async () => {
      const p = await peer(b, "a");
      return p.lastError.includes("ticket") ? p : undefined;
    });
    expect(flagged.lastError).toMatch(/forwarded Route's ticket did not verify against its JWKS/);
    expect(flagged.lastError).not.toContain(fromC.json.ticket);
    const metrics = await fetch(`${b.url}/metrics`, { headers: { authorization: "Bearer test-bootstrap-token" } }).then((r) => r.text());
    expect(metrics).toMatch(/federation_peer_problems_total\{problem="bad_signature"\} 1/);
  });
});
