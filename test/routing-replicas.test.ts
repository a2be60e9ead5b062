import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { MemoryOutcomeExchange, MemoryOutcomeLog } from "../src/router/outcome-sharing.js";
import { Router } from "../src/router/router.js";
import { agent } from "./contracts/agent-store.contract.js";
import { getJson, postJson, registerBody } from "./support/app.js";
import { killAgents, startAgent, type AgentProcess } from "./support/dispatch-agents.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { ManualClock } from "./support/manual-clock.js";
import { startProcess, type ServiceProcess } from "./support/process.js";
import { startFerret, startRedis, type ManagedServer } from "./support/servers.js";

const log = pino({ level: "silent" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns something truthy; fails with `what` after `ms`. */
async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, ms = 5_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(50);
  }
}

describe("reputation shared in-process (memory exchange and log)", () => {
  it("outcomes recorded on one router reach another through the exchange, and a new router replays the log", async () => {
    const clock = new ManualClock();
    const store = new MemoryAgentStore();
    for (const id of ["slow", "fast"]) await store.put({ ...agent(id), load: 0.1, leaseExpiresAt: clock.now() + 600_000 }, 0);
    const bus = new MemoryEventBus(clock, 1_000);
    const outcomeLog = new MemoryOutcomeLog();
    const ex = new MemoryOutcomeExchange();
    const a = new Router(store, bus, clock, log, undefined, { replicaId: "a", exchange: ex, outcomeLog, shareIntervalMs: 10 });
    const b = new Router(store, bus, clock, log, undefined, { replicaId: "b", exchange: new MemoryOutcomeExchange(ex), outcomeLog, shareIntervalMs: 10 });
    for (let i = 0; i < 20; i++) {
      await a.reportOutcome("t1", { agentId: "slow", capabilities: ["code"], success: true, latencyMs: 900 });
      await a.reportOutcome("t1", { agentId: "fast", capabilities: ["code"], success: true, latencyMs: 10 });
    }
    expect(b.reputation.standing("slow", "code", clock.now()).latency).toBe(1);
    await sleep(50);
    // B agrees with A (the fleet's typical latency differs a little: B sees the samples in another order).
    const onA = a.reputation.standing("slow", "code", clock.now());
    const onB = b.reputation.standing("slow", "code", clock.now());
    expect(onA.latency).toBeLessThan(0.7);
    expect(Math.abs(onB.latency - onA.latency)).toBeLessThan(0.1);
    expect(onB.evidence).toBeCloseTo(20, 5);
    expect(onB.latencyP95Ms).toBe(900);
    expect(b.reputation.standing("fast", "code", clock.now()).latency).toBe(1);
    await a.stop();
    await b.stop();

    const c = new Router(store, bus, clock, log, undefined, { replicaId: "c", outcomeLog });
    await c.sync.loaded;
    expect(c.reputation.standing("slow", "code", clock.now()).evidence).toBeCloseTo(20, 5);
    expect(c.reputation.standing("slow", "code", clock.now()).latency).toBeLessThan(0.7);
    await c.stop();
  });
});

describe("routing tunables from the environment", () => {
  it("reads every variable, and names the one that is invalid", () => {
    expect(loadConfig({}).routing).toEqual({
      reputation: { halfLifeMs: 300_000, priorWeight: 2, uptimeWindowMs: 600_000, latencySlackMs: 20 },
      breakers: { errorThresholdPercentage: 50, volumeThreshold: 5, rollingWindowMs: 10_000, resetTimeoutMs: 30_000 },
      shareIntervalMs: 250,
    });
    const set = loadConfig({
      REPUTATION_HALF_LIFE: "1m",
      REPUTATION_PRIOR_WEIGHT: "4",
      REPUTATION_UPTIME_WINDOW: "5m",
      REPUTATION_LATENCY_SLACK: "5ms",
      REPUTATION_SHARE_INTERVAL: "100ms",
      BREAKER_ERROR_PERCENT: "25",
      BREAKER_MIN_OUTCOMES: "3",
      BREAKER_WINDOW: "5s",
      BREAKER_COOL_DOWN: "2s",
    }).routing;
    expect(set).toEqual({
      reputation: { halfLifeMs: 60_000, priorWeight: 4, uptimeWindowMs: 300_000, latencySlackMs: 5 },
      breakers: { errorThresholdPercentage: 25, volumeThreshold: 3, rollingWindowMs: 5_000, resetTimeoutMs: 2_000 },
      shareIntervalMs: 100,
    });
    for (const [env, message] of [
      [{ REPUTATION_HALF_LIFE: "soon" }, /^REPUTATION_HALF_LIFE: must be a duration/],
      [{ REPUTATION_PRIOR_WEIGHT: "0" }, /^REPUTATION_PRIOR_WEIGHT: must be between 1 and 1000/],
      [{ REPUTATION_UPTIME_WINDOW: "10ms" }, /^REPUTATION_UPTIME_WINDOW: /],
      [{ REPUTATION_SHARE_INTERVAL: "2m" }, /^REPUTATION_SHARE_INTERVAL: /],
      [{ BREAKER_ERROR_PERCENT: "101" }, /^BREAKER_ERROR_PERCENT: must be between 1 and 100/],
      [{ BREAKER_MIN_OUTCOMES: "x" }, /^BREAKER_MIN_OUTCOMES: must be an integer/],
      [{ BREAKER_WINDOW: "1ms" }, /^BREAKER_WINDOW: /],
      [{ BREAKER_COOL_DOWN: "-1s" }, /^BREAKER_COOL_DOWN: /],
    ] as const) {
      expect(() => loadConfig(env as Record<string, string>)).toThrow(message);
    }
  });
});

type Server = ManagedServer & { dispose(): Promise<void> };

describe("two replicas sharing Redis and MongoDB (FerretDB)", () => {
  let ferret: Server;
  let redis: Server;
  let env: Record<string, string>;
  let a: ServiceProcess;
  let b: ServiceProcess;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "fc-routing-replicas-"));
  const feeds: WsFeed[] = [];
  /** Agent process name → its id. */
  const ids = new Map<string, string>();
  const names = new Map<string, string>();
  const agents = new Map<string, AgentProcess>();

  const post = (p: ServiceProcess, route: string, body: unknown) => postJson(`${p.url}${route}`, body);
  const circuits = async (p: ServiceProcess) => ((await getJson(`${p.url}/health/fleet`)).json.circuits ?? []) as { agentId: string; state: string }[];
  const stateOf = async (p: ServiceProcess, name: string) => (await circuits(p)).find((c) => c.agentId === ids.get(name))?.state ?? "CIRCUIT_STATE_CLOSED";

  async function serving(p: ServiceProcess): Promise<void> {
    await eventually(`${p.url} serving`, async () => (await getJson(`${p.url}/health`)).json?.status === "SERVING_STATUS_SERVING", 20_000);
  }

  async function replica(id: string): Promise<ServiceProcess> {
    const p = await startProcess({ ...env, REPLICA_ID: id });
    await serving(p);
    return p;
  }

  async function register(name: string, capability: string, mode = "ok", extra: Record<string, string> = {}): Promise<void> {
    const ag = await startAgent("http", name, { MODE: mode, ...extra });
    agents.set(name, ag);
    const r = await post(
      a,
      "/agents/register",
      registerBody({ name, endpoint: { url: `http://127.0.0.1:${ag.port}/`, transport: "TRANSPORT_HTTP_JSON" }, capabilities: [{ name: capability }], tools: [], leaseTtl: "600s" }),
    );
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    ids.set(name, r.json.agent.id);
    names.set(r.json.agent.id, name);
  }

  beforeAll(async () => {
    [ferret, redis] = await Promise.all([startFerret(), startRedis()]);
    env = {
      DATA_DIR: dataDir,
      MONGODB_URI: ferret.url,
      MONGODB_DB: `routing_replicas_${process.pid}`,
      REDIS_URL: redis.url,
      REDIS_PREFIX: `routing-replicas-${process.pid}`,
      LOG_LEVEL: "info",
      DISPATCH_ALLOW_LOOPBACK: "true",
      DISPATCH_ATTEMPT_TIMEOUT: "2s",
      BREAKER_MIN_OUTCOMES: "2",
      BREAKER_COOL_DOWN: "3s",
      REPUTATION_HALF_LIFE: "10m",
    };
    [a, b] = await Promise.all([replica("replica-a"), replica("replica-b")]);
  }, 60_000);

  afterAll(async () => {
    feeds.forEach((f) => f.close());
    killAgents();
    await Promise.all([a?.dispose(), b?.dispose()]);
    await Promise.all([ferret?.dispose(), redis?.dispose()]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("opens the failing agent's breaker on A from dispatch failures; B shows it, never routes to it, and follows half-open and closed; each change is one event per feed", async () => {
    await register("good", "rr.breaker");
    await register("bad", "rr.breaker", "fail");
    const query = "?types=agent.circuit_opened,agent.circuit_half_open,agent.circuit_closed";
    const [feedA, feedB] = [await openWs(a.port, query), await openWs(b.port, query)];
    feeds.push(feedA, feedB);
    const seen = (f: WsFeed) => f.events.items.filter((e) => e.agentId === ids.get("bad")).map((e) => e.type);

    // Dispatches through A take turns (round robin); the failing agent's failures open its breaker on A.
    await eventually(
      "A opens the failing agent's breaker",
      async () => {
        const r = await post(a, "/route", { capabilities: ["rr.breaker"], dispatch: true, task: { q: 1 }, strategy: "ROUTE_STRATEGY_ROUND_ROBIN" });
        expect(r.status, JSON.stringify(r.json)).toBe(200);
        return (await stateOf(a, "bad")) === "CIRCUIT_STATE_OPEN";
      },
      10_000,
    );
    await eventually("B shows it open", async () => (await stateOf(b, "bad")) === "CIRCUIT_STATE_OPEN", 3_000);
    // Open on B: never chosen while the good agent can serve (round robin would take turns).
    for (let i = 0; i < 20; i++) {
      const r = await post(b, "/route", { capabilities: ["rr.breaker"], strategy: "ROUTE_STRATEGY_ROUND_ROBIN" });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      expect(names.get(r.json.agent.id)).toBe("good");
    }
    expect(await stateOf(b, "bad")).toBe("CIRCUIT_STATE_OPEN"); // still open: no half-open trial could have been taken

    // The cool-down ends on both; A's half-open is the feed's.
    await eventually("A half-open", async () => (await stateOf(a, "bad")) === "CIRCUIT_STATE_HALF_OPEN", 6_000);
    await eventually("B half-open", async () => (await stateOf(b, "bad")) === "CIRCUIT_STATE_HALF_OPEN", 3_000);

    // The agent recovers; A's trial succeeds and closes the breaker; B follows.
    await agents.get("bad")!.setMode("ok");
    const trial = await post(a, "/route", { capabilities: ["rr.breaker"], dispatch: true, task: { q: 2 } });
    expect(trial.status, JSON.stringify(trial.json)).toBe(200);
    expect(names.get(trial.json.agent.id)).toBe("bad");
    expect(trial.json.reason).toContain("trial");
    await eventually("A closed", async () => (await stateOf(a, "bad")) === "CIRCUIT_STATE_CLOSED", 3_000);
    await eventually("B closed", async () => (await stateOf(b, "bad")) === "CIRCUIT_STATE_CLOSED", 3_000);

    const expected = ["agent.circuit_opened", "agent.circuit_half_open", "agent.circuit_closed"];
    await eventually("three events on each feed", async () => seen(feedA).length >= 3 && seen(feedB).length >= 3, 3_000);
    await sleep(500); // a duplicate would arrive meanwhile
    expect(seen(feedA)).toEqual(expected);
    expect(seen(feedB)).toEqual(expected);
    const replicaIds = feedB.events.items.filter((e) => e.agentId === ids.get("bad")).map((e) => e.circuitChange?.replicaId);
    expect(replicaIds).toEqual(["replica-a", "replica-a", "replica-a"]);
  }, 40_000);

  it("reputation learnt on A (ReportOutcome) shifts B's routing away from the slow agent within a second", async () => {
    await register("quick", "rr.rep");
    await register("sluggish", "rr.rep", "slow", { DELAY_MS: "800" });
    const standing = async (p: ServiceProcess, name: string) => {
      const r = await post(p, "/route", { capabilities: ["rr.rep"], strategy: "ROUTE_STRATEGY_BEST" });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return r.json.candidates.find((c: any) => c.agentId === ids.get(name))?.breakdown;
    };
    // Before: B knows nothing of either.
    expect((await standing(b, "sluggish"))?.latency ?? 1).toBe(1);

    const report = (name: string, latency: string) =>
      post(a, "/outcomes", { agentId: ids.get(name), capabilities: ["rr.rep"], success: true, latency });
    for (let i = 0; i < 15; i++) {
      expect((await report("sluggish", "0.800s")).status).toBe(200);
      expect((await report("quick", "0.010s")).status).toBe(200);
    }
    const reported = Date.now();
    const learnt = await eventually(
      "B sees the slow agent's latency",
      async () => {
        const s = await standing(b, "sluggish");
        return s && s.latency < 0.7 && s.evidence > 14.9 ? s : undefined;
      },
      2_000,
    );
    expect(Date.now() - reported).toBeLessThan(1_500);
    expect(learnt.evidence).toBeLessThan(15.1); // each outcome counted once
    // p2c on B now sends (almost) nothing to the slow agent.
    const counts = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const r = await post(b, "/route", { capabilities: ["rr.rep"] });
      const n = names.get(r.json.agent.id)!;
      counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    expect(counts.get("sluggish") ?? 0).toBeLessThanOrEqual(1);
  }, 30_000);

  it("a task dispatched through A is readable with GetTask on B", async () => {
    const r = await post(a, "/route", { capabilities: ["rr.breaker"], dispatch: true, task: { hello: "b" } });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const onB = await getJson(`${b.url}/tasks/${r.json.taskId}`);
    expect(onB.status, JSON.stringify(onB.json)).toBe(200);
    expect(onB.json.task).toMatchObject({ taskId: r.json.taskId, status: "TASK_STATUS_COMPLETED", agentId: r.json.agent.id });
    expect(onB.json.task.attempts.length).toBe(r.json.attempts.length);
    expect(onB.json.task.result).toEqual(r.json.result);
    // An id no replica issued: not found.
    expect((await getJson(`${b.url}/tasks/no-such-task`)).status).toBe(404);
  });

  it("a replica killed and started again has the reputation persisted in MongoDB", async () => {
    await register("flaky", "rr.restart");
    await register("steady", "rr.restart");
    // Learnt on B this time: B's own batches are the ones it must find again.
    for (let i = 0; i < 10; i++) {
      // Poor answers, not failures: a failure would open the breaker and hide the agent's breakdown.
      const r = await post(b, "/outcomes", { agentId: ids.get("flaky"), capabilities: ["rr.restart"], success: true, quality: 0.05, latency: "0.020s" });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
    }
    const quality = async (p: ServiceProcess) => {
      const r = await post(p, "/route", { capabilities: ["rr.restart"], strategy: "ROUTE_STRATEGY_BEST" });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return (r.json.candidates.find((c: any) => c.agentId === ids.get("flaky"))?.breakdown?.quality ?? 1) as number;
    };
    expect(await quality(b)).toBeLessThan(0.3);
    await sleep(1_000); // the batch interval (250 ms) and its write

    b.signal("SIGKILL");
    await b.exited;
    b = await replica("replica-b");
    const loaded = await b.waitForLine((l) => l.msg === "routing evidence loaded", 10_000);
    expect(loaded.summaries).toBeGreaterThan(0);
    expect(await quality(b)).toBeLessThan(0.3);
    expect(await quality(a)).toBeLessThan(0.3); // A learnt it live from B
  }, 40_000);
});
