import { pino } from "pino";
import { beforeEach, describe, expect, it } from "vitest";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { CircuitState } from "../gen/federation/v1/event_pb.js";
import { AgentStatus, type AgentRecord } from "../src/registry/agent-record.js";
import { capacityScore } from "../src/router/scoring.js";
import type { AgentStore } from "../src/registry/agent-store.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { Router } from "../src/router/router.js";
import { agent } from "./contracts/agent-store.contract.js";
import { ManualClock } from "./support/manual-clock.js";

const log = pino({ level: "silent" });
const route = (capabilities: string[], exclude: string[] = []) => ({
  capabilities,
  excludeAgentIds: new Set(exclude),
  task: undefined,
});

/** Counts the agents the router reads from the store's routable index. */
function counting(store: AgentStore): { store: AgentStore; reads: () => number } {
  let reads = 0;
  const wrapped = Object.create(store) as AgentStore;
  wrapped.routable = function* (tenant, capabilities) {
    for (const a of store.routable(tenant, capabilities) as Iterable<AgentRecord>) {
      reads++;
      yield a;
    }
  };
  return { store: wrapped, reads: () => reads };
}

describe("router index walk", () => {
  let clock: ManualClock;
  let store: MemoryAgentStore;

  beforeEach(() => {
    clock = new ManualClock(1_000);
  });

  async function fleet(n: number, load: (i: number) => number, extra: Partial<AgentRecord> = {}): Promise<AgentRecord[]> {
    store = new MemoryAgentStore();
    const out: AgentRecord[] = [];
    for (let i = 0; i < n; i++) {
      const caps: [string, string[]][] = i % 3 === 0 ? [["code", []], ["review", []]] : [["code", []]];
      const a: AgentRecord = {
        ...agent(`a${String(i).padStart(5, "0")}`, { caps }),
        load: load(i),
        leaseExpiresAt: clock.now() + 30_000 - (i % 7) * 1_000,
        ...extra,
      };
      await store.put(a, 0);
      out.push(a);
    }
    return out;
  }

  it("reads a handful of a large fleet and still returns the exact best and top ten", async () => {
    const all = await fleet(3_000, (i) => ((i * 37) % 1000) / 1000);
    const { store: s, reads } = counting(store);
    const router = new Router(s, new MemoryEventBus(clock, 10), clock, log);
    const d = await router.route(route(["code", "review"]), "t1");

    const brute = all
      .filter((a) => a.capabilities.some((c) => c.name === "review"))
      .map((a) => capacityScore(a, clock.now()))
      .sort((x, y) => y - x);
    expect(d.candidates[0]!.score).toBe(brute[0]);
    expect(d.candidates.map((c) => c.score)).toEqual(brute.slice(0, 10));
    expect(reads()).toBeLessThan(100);
  });

  it("lets a fresh lease beat a higher ceiling whose lease is nearly over", async () => {
    store = new MemoryAgentStore();
    const stale = { ...agent("stale"), load: 0, leaseExpiresAt: clock.now() + 1 };
    const fresh = { ...agent("fresh"), load: 0.05, leaseExpiresAt: clock.now() + 30_000 };
    await store.put(stale, 0);
    await store.put(fresh, 0);
    const router = new Router(store, new MemoryEventBus(clock, 10), clock, log);
    const d = await router.route(route(["code"]), "t1");
    expect(d.agent.id).toBe("fresh");
    expect(d.candidates.map((c) => c.agent.id)).toEqual(["fresh", "stale"]);
  });

  it("skips expired leases and excluded agents and keeps reading past them", async () => {
    store = new MemoryAgentStore();
    await store.put({ ...agent("expired"), load: 0, leaseExpiresAt: clock.now() - 1 }, 0);
    await store.put({ ...agent("excluded"), load: 0 }, 0);
    await store.put({ ...agent("busy"), load: 0.9 }, 0);
    const router = new Router(store, new MemoryEventBus(clock, 10), clock, log);
    const d = await router.route(route(["code"], ["excluded"]), "t1");
    expect(d.agent.id).toBe("busy");
    expect(d.candidates.map((c) => c.agent.id)).toEqual(["busy"]);
  });

  it("bounds the reads in an idle fleet where every agent ties, and still spreads the work", async () => {
    await fleet(2_000, () => 0, { leaseExpiresAt: clock.now() + 30_000 });
    const { store: s, reads } = counting(store);
    const router = new Router(s, new MemoryEventBus(clock, 10), clock, log);
    const picks = new Set<string>();
    for (let i = 0; i < 20; i++) {
      clock.advance(1);
      const d = await router.route(route(["code"]), "t1");
      picks.add(d.agent.id);
    }
    expect(picks.size).toBe(20);
    expect(reads() / 20).toBeLessThanOrEqual(40);
  });

  it("follows heartbeats: an agent that reports load drops behind", async () => {
    store = new MemoryAgentStore();
    await store.put({ ...agent("x"), load: 0 }, 0);
    await store.put({ ...agent("y"), load: 0.3 }, 0);
    const router = new Router(store, new MemoryEventBus(clock, 10), clock, log);
    expect((await router.route(route(["code"]), "t1")).agent.id).toBe("x");
    const x = (await store.get("x"))!;
    await store.update(x, { load: 0.8, revision: x.revision + 1 });
    expect((await router.route(route(["code"]), "t1")).agent.id).toBe("y");
    expect(AgentStatus[(await store.get("x"))!.status]).toBe("HEALTHY");
  });
});

describe("router ranking of given agents (rankAgents)", () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it("puts the half-open trial first, better reputation before more capacity, open circuits last, and leaves out who cannot serve", async () => {
    const clock = new ManualClock(1_000);
    const bus = new MemoryEventBus(clock, 10);
    const routed: string[] = [];
    bus.subscribe({ tenant: "t1", types: new Set(["task.routed"]), agentId: "" }, undefined, (e) => routed.push(e.message.agentId));
    const store = new MemoryAgentStore();
    const router = new Router(store, bus, clock, log, undefined, { breakers: { resetTimeoutMs: 200 } });
    const lease = clock.now() + 30_000;
    const mk = (id: string, load: number, extra: Partial<AgentRecord> = {}): AgentRecord => ({ ...agent(id), load, leaseExpiresAt: lease, ...extra });
    const fail = (id: string, n: number) => {
      for (let i = 0; i < n; i++) router.breakers.record(id, "t1", false, "test");
    };
    const half = mk("half", 0.5);
    const open = mk("open", 0);
    const good = mk("good", 0.2);
    const poor = mk("poor", 0.1);
    const agents = [
      open,
      poor,
      mk("other-tenant", 0, { tenant: "t2" }),
      mk("expired", 0, { leaseExpiresAt: clock.now() }),
      mk("draining", 0, { status: AgentStatus.DRAINING }),
      good,
      half,
    ];
    for (const a of agents) await store.put(a, 0);

    fail("half", 6);
    await sleep(300); // opossum's own cool-down timer: open, then half-open
    fail("open", 6);
    await sleep(10);
    expect(router.breakers.state("half")).toBe(CircuitState.HALF_OPEN);
    expect(router.breakers.state("open")).toBe(CircuitState.OPEN);
    // Two failures: too few to open the breaker, enough to cost reputation.
    await router.reportOutcome("t1", { agentId: "poor", capabilities: ["code"], success: false, latencyMs: 5 });
    await router.reportOutcome("t1", { agentId: "poor", capabilities: ["code"], success: false, latencyMs: 5 });

    const ranked = router.rankAgents("t1", agents, { capabilities: ["code"] });
    expect(ranked.map((c) => c.agent.id)).toEqual(["half", "good", "poor", "open"]);
    const [h, g, p, o] = ranked;
    expect(h!.trial).toBe(true);
    expect(h!.breakdown?.circuitState).toBe(CircuitState.HALF_OPEN);
    expect(g!.score).toBeGreaterThan(p!.score);
    expect(p!.capacity).toBeGreaterThan(g!.capacity);
    expect(p!.breakdown!.quality).toBeLessThan(g!.breakdown!.quality);
    expect(o!.breakdown).toMatchObject({ circuit: 0, circuitState: CircuitState.OPEN });
    expect(ranked.every((c) => c.score === c.capacity * c.breakdown!.quality * c.breakdown!.latency * c.breakdown!.uptime)).toBe(true);
    // Nothing else to take the work: an open circuit is better than none.
    expect(router.rankAgents("t1", [open, mk("expired-2", 0, { leaseExpiresAt: 0 })]).map((c) => c.agent.id)).toEqual(["open"]);

    // Ranking changes nothing; committing hands out the trial and publishes task.routed.
    expect(router.rankAgents("t1", agents)[0]!.agent.id).toBe("half");
    await router.commit("t1", "task-1", ranked, []);
    expect(routed).toEqual(["half"]);
    // Its trial out, the half-open agent counts as open until the outcome (or the cool-down): last, among the open.
    const after = router.rankAgents("t1", agents);
    expect(after.map((c) => c.agent.id).slice(0, 2)).toEqual(["good", "poor"]);
    expect(after.find((c) => c.agent.id === "half")!.trial).toBe(false);
    await router.stop();
  });

  it("ranks nothing when no given agent can serve", () => {
    const clock = new ManualClock(1_000);
    const router = new Router(new MemoryAgentStore(), new MemoryEventBus(clock, 10), clock, log);
    expect(router.rankAgents("t1", [{ ...agent("gone"), leaseExpiresAt: clock.now() - 1 }])).toEqual([]);
    return router.stop();
  });
});
