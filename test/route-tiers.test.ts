import fc from "fast-check";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import {
  AgentStatus,
  LOAD_BUCKETS,
  NOT_ROUTABLE_TIER,
  ROUTE_TIERS,
  TIERS,
  loadBucket,
  routeTier,
  type AgentRecord,
} from "../src/registry/agent-record.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { Router } from "../src/router/router.js";
import { capacityScore, FACTOR_BOUNDS, tierBound, tierReach } from "../src/router/scoring.js";
import { RouteStrategy } from "../gen/federation/v1/router_service_pb.js";
import { agent } from "./contracts/agent-store.contract.js";
import { ManualClock } from "./support/manual-clock.js";

const log = pino({ level: "silent" });
const TIE = 0.01;
const MAX_TIED = 32;

describe("route tiers and their bounds", () => {
  it("numbers every (status, load bucket) once, with bounds that never rise from one tier to the next", () => {
    expect(TIERS).toHaveLength(ROUTE_TIERS);
    const seen = new Set(TIERS.map((t) => `${t.status}/${t.bucket}`));
    expect(seen.size).toBe(ROUTE_TIERS);
    for (let t = 1; t < ROUTE_TIERS; t++) expect(tierBound(t), `tier ${t}`).toBeLessThanOrEqual(tierBound(t - 1));
    for (let t = 0; t < ROUTE_TIERS; t++) expect(tierReach(t)).toBe(tierBound(t));
    expect(tierBound(0)).toBe(1);
    // Every factor's bound is stated, and none lets a score exceed capacity.
    expect(Object.values(FACTOR_BOUNDS).every((b) => b <= 1)).toBe(true);
    expect(tierReach(NOT_ROUTABLE_TIER)).toBe(Infinity);
  });

  it("bounds the capacity score of every agent of a tier, whatever its load and lease", () => {
    const statuses = [AgentStatus.HEALTHY, AgentStatus.DEGRADED, AgentStatus.DRAINING, AgentStatus.UNHEALTHY];
    fc.assert(
      fc.property(
        fc.oneof(fc.double({ min: -0.5, max: 1.5, noNaN: true }), fc.integer({ min: 0, max: 100 }).map((k) => k / 100)),
        fc.constantFrom(...statuses),
        fc.integer({ min: -60_000, max: 60_000 }),
        (load, status, leaseLeft) => {
          const a: AgentRecord = { ...agent("p", { status, load }), leaseExpiresAt: 1_000 + leaseLeft };
          const tier = routeTier(a);
          if (status !== AgentStatus.HEALTHY && status !== AgentStatus.DEGRADED) return tier === NOT_ROUTABLE_TIER;
          expect(TIERS[tier]).toEqual({ status, bucket: loadBucket(load) });
          expect(capacityScore(a, 1_000)).toBeLessThanOrEqual(tierBound(tier));
          return true;
        },
      ),
      { numRuns: 2_000 },
    );
    expect(loadBucket(0.0499)).toBe(0);
    expect(loadBucket(0.05)).toBe(1);
    expect(loadBucket(1)).toBe(LOAD_BUCKETS - 1);
  });
});

describe("memory store route index", () => {
  /** The store's routable list for a capability in a scope (private: read for this test only). */
  function list(store: MemoryAgentStore, scope: string, cap: string): Iterable<{ tier: number; id: string }> {
    const scopes = (store as unknown as { scopes: Map<string, { routable: Map<string, Iterable<{ tier: number; id: string }>> }> }).scopes;
    return scopes.get(scope)!.routable.get(cap)!;
  }

  it("leaves the lists alone on a heartbeat whose load stays in its bucket, and moves the entry when the bucket changes", async () => {
    const store = new MemoryAgentStore();
    for (let i = 0; i < 50; i++) await store.put(agent(`a${String(i).padStart(2, "0")}`, { load: (i % 10) / 10, caps: [["code", []], ["review", []]] }), 0);
    const code = list(store, "t1", "code");
    const before = [...code];
    // a13: load 0.3, bucket 6 → 0.34 (same bucket): not one entry replaced or moved, in either list.
    const a = (await store.get("a13"))!;
    const reviewBefore = [...list(store, "t1", "review")];
    expect(await store.update(a, { load: 0.34, lastHeartbeatAt: 2, leaseExpiresAt: 40_000, revision: a.revision + 1 })).toBe(true);
    expect(list(store, "t1", "code")).toBe(code);
    expect([...code].every((e, k) => e === before[k])).toBe(true);
    expect([...list(store, "t1", "review")].every((e, k) => e === reviewBefore[k])).toBe(true);
    expect((await store.get("a13"))!.load).toBe(0.34);
    // → 0.35 (bucket 7): the entry moves, the rest stay the same objects.
    const b = (await store.get("a13"))!;
    expect(await store.update(b, { load: 0.35, revision: b.revision + 1 })).toBe(true);
    const moved = [...code].find((e) => e.id === "a13")!;
    expect(moved.tier).toBe(routeTier({ status: AgentStatus.HEALTHY, load: 0.35 }));
    expect(before.find((e) => e.id === "a13")).not.toBe(moved);
    expect([...code].filter((e) => e.id !== "a13").every((e) => before.includes(e))).toBe(true);
  });
});

interface Spec {
  tenant: "t1" | "t2";
  shared: boolean;
  status: AgentStatus;
  load: number;
  leaseLeft: number;
  caps: ("x" | "y")[];
  zone: "eu" | "us";
  /** Outcomes recorded for it: successes, failures, a latency. */
  outcomes: { ok: number; failed: number; latencyMs: number };
  open: boolean;
}

const specArb: fc.Arbitrary<Spec> = fc.record({
  tenant: fc.constantFrom("t1", "t1", "t2"),
  shared: fc.boolean(),
  status: fc.constantFrom(AgentStatus.HEALTHY, AgentStatus.HEALTHY, AgentStatus.HEALTHY, AgentStatus.DEGRADED, AgentStatus.DRAINING, AgentStatus.UNHEALTHY),
  // Loads at and near bucket edges (a tier's best and worst), repeated (ties, full
  // buckets) around the DEGRADED interleave too; any double makes the rest.
  load: fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(0, 0.01, 0.049, 0.05, 0.06, 0.1, 0.5, 0.6, 0.62, 0.65, 0.99, 1) },
    { weight: 1, arbitrary: fc.double({ min: 0, max: 1, noNaN: true }) },
  ),
  leaseLeft: fc.oneof(fc.constantFrom(30_000, 30_000, 15_000, 1), fc.integer({ min: -1_000, max: 30_000 })),
  caps: fc.constantFrom<("x" | "y")[]>(["x"], ["x"], ["x", "y"], ["y"]),
  zone: fc.constantFrom("eu", "us"),
  outcomes: fc.oneof(
    fc.constant({ ok: 0, failed: 0, latencyMs: 0 }),
    fc.record({ ok: fc.integer({ min: 0, max: 6 }), failed: fc.integer({ min: 0, max: 3 }), latencyMs: fc.integer({ min: 1, max: 400 }) }),
  ),
  open: fc.boolean().map((b) => b && Math.random() < 0.3),
});

describe("router walk is exact", () => {
  it("chooses what scoring every capable agent would (BEST, up to ties), and shows the exact top ten", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(specArb, { minLength: 1, maxLength: 120, size: "max" }),
        fc.constantFrom<("x" | "y")[]>(["x"], ["x", "y"]),
        fc.boolean(),
        fc.integer({ min: 0, max: 3 }),
        async (specs, capabilities, hinted, excludeCount) => {
          const clock = new ManualClock(100_000);
          const now = clock.now();
          const store = new MemoryAgentStore();
          const router = new Router(store, new MemoryEventBus(clock, 0), clock, log, undefined, { breakers: { volumeThreshold: 1 } });
          try {
            const agents: AgentRecord[] = [];
            for (const [i, s] of specs.entries()) {
              const a: AgentRecord = {
                ...agent(`g${String(i).padStart(3, "0")}`, { tenant: s.tenant, shared: s.shared, status: s.status, load: s.load, caps: s.caps.map((c) => [c, []]) }),
                labels: { zone: s.zone },
                leaseExpiresAt: now + s.leaseLeft,
              };
              expect(await store.put(a, 0)).toBe(true);
              agents.push(a);
              for (let k = 0; k < s.outcomes.ok; k++) router.reputation.record(a.id, s.caps, { success: true, latencyMs: s.outcomes.latencyMs }, now);
              for (let k = 0; k < s.outcomes.failed; k++) router.reputation.record(a.id, s.caps, { success: false, latencyMs: s.outcomes.latencyMs }, now);
              if (s.open) router.breakers.record(a.id, a.tenant, false, "test");
            }
            // opossum opens a breaker once the failure's promise settles: wait for each (a few ticks at most).
            for (let tick = 0; agents.some((a, i) => specs[i]!.open && router.breakers.admits(a.id, now) !== "open"); tick++) {
              expect(tick).toBeLessThan(100);
              await new Promise((r) => setImmediate(r));
            }
            const excluded = new Set(agents.slice(0, excludeCount).map((a) => a.id));
            const hint = hinted ? { preferredLabels: [["zone", "eu"] as const], maxLatencyMs: undefined } : undefined;
            const capability = capabilities.length === 1 ? capabilities[0] : undefined;

            // Brute force: score every agent the tenant could be routed to.
            const score = (a: AgentRecord) => {
              const labels = hint ? 0.5 + 0.5 * (a.labels.zone === "eu" ? 1 : 0) : 1;
              return capacityScore(a, now) * router.reputation.factor(a.id, capability, now) * labels * 1;
            };
            const eligible = agents.filter(
              (a) =>
                (a.tenant === "t1" || a.shared) &&
                (a.status === AgentStatus.HEALTHY || a.status === AgentStatus.DEGRADED) &&
                a.leaseExpiresAt > now &&
                capabilities.every((c) => a.capabilities.some((o) => o.name === c)) &&
                !excluded.has(a.id),
            );
            const closed = eligible.filter((a) => router.breakers.admits(a.id, now) !== "open");
            const open = eligible.filter((a) => router.breakers.admits(a.id, now) === "open");
            const input = { capabilities, excludeAgentIds: excluded, task: undefined, strategy: RouteStrategy.BEST, hint };
            if (eligible.length === 0) {
              await expect(router.route(input, "t1")).rejects.toThrow();
              return;
            }
            const d = await router.route(input, "t1");
            const chosen = d.candidates[0]!;
            expect(chosen.score).toBe(score(chosen.agent));
            if (closed.length === 0) {
              // Every capable agent's circuit is open: the best of them.
              expect(open.map((a) => a.id)).toContain(chosen.agent.id);
              expect(chosen.score).toBe(Math.max(...open.map(score)));
              return;
            }
            const brute = closed.map(score).sort((x, y) => y - x);
            expect(closed.map((a) => a.id)).toContain(chosen.agent.id);
            expect(chosen.score).toBeGreaterThanOrEqual(brute[0]! - TIE);
            // Unless so many tie that the walk stopped at MAX_TIED of them, it is exact.
            if (brute.filter((s) => s >= brute[0]! - 2 * TIE).length < MAX_TIED) {
              expect(chosen.score).toBe(brute[0]);
              const shown = d.candidates.filter((c) => router.breakers.admits(c.agent.id, now) !== "open").map((c) => c.score);
              expect(shown).toEqual(brute.slice(0, 10));
            }
          } finally {
            await router.stop();
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
