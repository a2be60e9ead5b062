import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { AlertSeverity, AlertState } from "../gen/federation/v1/event_pb.js";
import { AttemptOutcome } from "../gen/federation/v1/task_pb.js";
import { ConfigError, loadConfig } from "../src/config.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { MemoryFiringAlerts, type FiringAlerts } from "../src/health/alert-state.js";
import type { ProbeLeadership } from "../src/health/probes-leader.js";
import type { ProbeOutcome } from "../src/health/probes.js";
import { BucketRing, ringShape } from "../src/health/slo-window.js";
import { SloEngine, type SloAlert } from "../src/health/slo.js";
import type { AgentRecord } from "../src/registry/agent-record.js";
import { ManualClock } from "./support/manual-clock.js";

/**
 * The SLO engine's arithmetic with a manual clock (issue 16, item 2): the
 * bucketed windows, multi-window burn-rate alerts (both windows of a pair
 * must burn), minimum evidence, one alert per (SLO, subject, severity)
 * until it resolves, only the leader alerting, bounded subjects.
 * Windows here: fast 60s/10s at 5×, slow 120s/30s at 2×, objective 0.9
 * (a burn of 5× is half the events bad; probes come one a second).
 */

const ENV = {
  SLO: "on",
  SLO_AVAILABILITY_TARGET: "0.9",
  SLO_LATENCY_TARGET: "0.9",
  SLO_LATENCY_THRESHOLD: "100ms",
  SLO_FAST_LONG_WINDOW: "60s",
  SLO_FAST_SHORT_WINDOW: "10s",
  SLO_FAST_BURN_RATE: "5",
  SLO_SLOW_LONG_WINDOW: "120s",
  SLO_SLOW_SHORT_WINDOW: "30s",
  SLO_SLOW_BURN_RATE: "2",
  SLO_MIN_EVENTS: "5",
};

class Lease implements ProbeLeadership {
  constructor(public leading = true) {}
  start(): void {}
  async stop(): Promise<void> {}
}

function engine(env: Record<string, string> = {}, lease = new Lease(), firing?: FiringAlerts, clock = new ManualClock()) {
  const bus = new MemoryEventBus(clock, 1_000);
  const config = loadConfig({ ...ENV, ...env }).slo;
  const slo = new SloEngine(config, { bus, clock, log: pino({ level: "silent" }), leadership: lease, campaigns: false, firing });
  const alerts: SloAlert[] = [];
  slo.onAlert((a) => alerts.push(a));
  const events: string[] = [];
  bus.subscribe({ tenant: "t1", types: new Set(["health.alert"]), agentId: "" }, undefined, (e) =>
    events.push(`${e.message.payload.case === "healthAlert" ? AlertState[e.message.payload.value.state] : "?"} ${e.message.agentId}`),
  );
  const agent = (id: string) => ({ id, tenant: "t1" }) as AgentRecord;
  /** `n` probes of agent `id`, one a second, each evaluated. */
  const probes = (id: string, n: number, outcome: ProbeOutcome, latencyMs = 10) => {
    for (let i = 0; i < n; i++) {
      slo.probed({ agent: agent(id), transport: "mcp", outcome, latencyMs, detail: "" });
      clock.advance(1_000);
      slo.evaluate();
    }
  };
  return { slo, clock, bus, alerts, events, probes, lease };
}

const fired_ = (alerts: SloAlert[]) => alerts.filter((a) => a.state === AlertState.FIRING);
const fired = (alerts: SloAlert[], slo: string, severity: AlertSeverity) =>
  alerts.filter((a) => a.slo === slo && a.severity === severity && a.state === AlertState.FIRING);

describe("bucketed windows", () => {
  it("sums the buckets of a window and ignores slots left from an earlier lap", () => {
    const { bucketMs, buckets } = ringShape([60_000, 10_000]);
    expect({ bucketMs, buckets }).toEqual({ bucketMs: 2_000, buckets: 31 });
    const ring = new BucketRing(bucketMs, buckets);
    const t0 = 1_000_000_000;
    ring.add(t0, true, false);
    ring.add(t0 + 1, false, false);
    ring.add(t0 + 30_000, true, true);
    expect(ring.sum(t0 + 30_000, 10_000)).toEqual({ total: 1, errors: 0, slow: 1 });
    expect(ring.sum(t0 + 30_000, 60_000)).toEqual({ total: 3, errors: 1, slow: 1 });
    // Laps later every slot index recurs; the old counts must not.
    const later = t0 + 3 * bucketMs * buckets;
    ring.add(later, true, false);
    expect(ring.sum(later, 60_000)).toEqual({ total: 1, errors: 0, slow: 0 });
    // An event older than the ring holds is dropped, not counted into a newer bucket.
    ring.add(t0, false, false);
    expect(ring.sum(later, 60_000)).toEqual({ total: 1, errors: 0, slow: 0 });
  });
});

describe("burn-rate alerts", () => {
  it("fires once per SLO, subject and severity while both windows burn, and resolves with the same id", () => {
    const e = engine();
    e.probes("a1", 60, "ok");
    expect(e.alerts).toHaveLength(0);
    e.probes("a1", 40, "timeout");
    const page = fired(e.alerts, "agent-availability", AlertSeverity.PAGE);
    const ticket = fired(e.alerts, "agent-availability", AlertSeverity.TICKET);
    expect(page).toHaveLength(1);
    expect(ticket).toHaveLength(1);
    expect(page[0]).toMatchObject({ tenant: "t1", kind: "agent", subject: "a1", threshold: 5, longWindowMs: 60_000, shortWindowMs: 10_000, objective: 0.9 });
    expect(page[0]!.burnRate).toBeGreaterThan(5);
    expect(page[0]!.shortBurnRate).toBeCloseTo(10);
    expect(e.slo.firing("t1")).toHaveLength(2);
    expect(e.slo.agent("t1", "a1")[0]!.firing).toEqual([AlertSeverity.PAGE, AlertSeverity.TICKET]);
    // Recovery: the short windows clear first; each alert resolves once, after a short window of calm.
    e.probes("a1", 90, "ok");
    const resolved = e.alerts.filter((a) => a.state === AlertState.RESOLVED);
    expect(resolved.map((a) => a.alertId).sort()).toEqual([page[0]!.alertId, ticket[0]!.alertId].sort());
    expect(e.alerts).toHaveLength(4);
    expect(e.events).toEqual(["FIRING a1", "FIRING a1", "RESOLVED a1", "RESOLVED a1"]);
  });

  it("does not fire while only the long window burns (the short one has recovered)", () => {
    const e = engine();
    e.probes("a1", 20, "ok");
    e.probes("a1", 40, "error");
    expect(fired(e.alerts, "agent-availability", AlertSeverity.PAGE)).toHaveLength(1);
    e.probes("a1", 20, "ok");
    // The hour-like window still burns (40 failures of its 60 events: 6.7×), the short one does not: resolved, not re-fired.
    const [availability] = e.slo.agent("t1", "a1");
    expect(availability!.burns.find((b) => b.windowMs === 60_000)!.burnRate).toBeGreaterThan(5);
    expect(availability!.burns.find((b) => b.windowMs === 10_000)!.burnRate).toBe(0);
    expect(e.alerts.filter((a) => a.state === AlertState.RESOLVED && a.severity === AlertSeverity.PAGE)).toHaveLength(1);
    expect(fired(e.alerts, "agent-availability", AlertSeverity.PAGE)).toHaveLength(1);
  });

  it("needs SLO_MIN_EVENTS in the short window: one failed probe of an idle agent is no page", () => {
    const e = engine();
    e.probes("a1", 1, "error");
    e.clock.advance(20_000);
    e.probes("a1", 1, "error");
    expect(e.alerts).toHaveLength(0);
  });

  it("pages on latency: successes over the threshold burn the latency SLO, failures do not", () => {
    const e = engine();
    e.probes("a1", 30, "ok", 50);
    e.probes("a1", 40, "ok", 500);
    expect(fired(e.alerts, "agent-latency", AlertSeverity.PAGE)).toHaveLength(1);
    expect(fired(e.alerts, "agent-availability", AlertSeverity.PAGE)).toHaveLength(0);
    // Every probe failing leaves no success to time: the latency alert neither fires again nor resolves on no evidence.
    e.probes("a1", 15, "timeout", 400);
    expect(e.alerts.filter((a) => a.slo === "agent-latency")).toHaveLength(e.alerts.filter((a) => a.slo === "agent-latency" && a.state === AlertState.FIRING).length);
  });

  it("counts a capability from the tasks that needed it, and an agent from its attempts", async () => {
    const e = engine();
    const task = (type: "task.dispatched" | "task.completed" | "task.failed", agentId: string, outcome: AttemptOutcome) =>
      e.bus.publish({
        type,
        tenant: "t1",
        agentId,
        payload: { case: "taskProgress", value: { taskId: "x", capabilities: ["code.review"], attempt: 1, outcome, latency: durationFromMs(20) } },
      });
    e.slo.start();
    for (let i = 0; i < 10; i++) {
      // The first agent fails, the second answers: the task (and the capability) succeeded.
      await task("task.dispatched", "bad", AttemptOutcome.ERROR);
      await task("task.dispatched", "good", AttemptOutcome.OK);
      await task("task.completed", "good", AttemptOutcome.OK);
      // Refused attempts and cancelled tasks say nothing of anyone.
      await task("task.dispatched", "good", AttemptOutcome.REFUSED);
      await task("task.failed", "good", AttemptOutcome.UNSPECIFIED);
      e.clock.advance(1_000);
      e.slo.evaluate();
    }
    await e.slo.stop();
    expect(fired(e.alerts, "agent-availability", AlertSeverity.PAGE).map((a) => a.subject)).toEqual(["bad"]);
    expect(e.slo.capability("t1", "code.review")[0]).toMatchObject({ slo: "capability-availability", sli: 1, events: 10 });
    expect(e.slo.agent("t1", "good")[0]).toMatchObject({ sli: 1, events: 10 });
    expect(e.slo.fleet("t1")[0]).toMatchObject({ slo: "fleet-availability", sli: 0.5, events: 20 });
    const g = e.slo.gauges();
    expect(g.firing.find((x) => x.slo === "agent-availability" && x.severity === "page")!.value).toBe(1);
    expect(g.burnRates.find((x) => x.slo === "agent-availability" && x.severity === "page")!.value).toBeCloseTo(10);
  });

  it("alerts only on the probe leader, and forgets its alerts when it stops leading", () => {
    const lease = new Lease(false);
    const e = engine({}, lease);
    e.probes("a1", 20, "error");
    expect(e.alerts).toHaveLength(0);
    lease.leading = true;
    e.probes("a1", 1, "error");
    expect(fired(e.alerts, "agent-availability", AlertSeverity.PAGE)).toHaveLength(1);
    lease.leading = false;
    e.probes("a1", 1, "error");
    expect(e.slo.firing("t1")).toHaveLength(0);
  });

  it("a new leader adopts the alerts still firing: not fired again, resolved under their ids", () => {
    // Two replicas' engines on one shared store of firing alerts (Redis in production).
    const shared = new MemoryFiringAlerts();
    const clock = new ManualClock();
    const a = engine({}, new Lease(true), shared, clock);
    a.probes("a1", 20, "error");
    const fired = fired_(a.alerts);
    expect(fired.map((x) => x.severity).sort()).toEqual([AlertSeverity.PAGE, AlertSeverity.TICKET]);
    // A dies; B, which counted nothing of it, takes the lease over while a1 still fails.
    const b = engine({}, new Lease(true), shared, clock);
    b.probes("a1", 40, "error");
    expect(b.alerts.filter((x) => x.state === AlertState.FIRING)).toEqual([]);
    expect(b.slo.firing("t1").map((x) => x.alertId).sort()).toEqual(fired.map((x) => x.alertId).sort());
    // a1 recovers: each alert resolves once, under the id A fired it with.
    b.probes("a1", 200, "ok");
    const resolved = b.alerts.filter((x) => x.state === AlertState.RESOLVED);
    expect(resolved.map((x) => x.alertId).sort()).toEqual(fired.map((x) => x.alertId).sort());
    expect(b.events.filter((e) => e.startsWith("FIRING"))).toEqual([]);
    expect(shared.list().size).toBe(0);
  });

  it("resolves an adopted alert whose subject shows no evidence for its long window", () => {
    const shared = new MemoryFiringAlerts();
    const clock = new ManualClock();
    const a = engine({}, new Lease(true), shared, clock);
    a.probes("gone", 20, "error");
    expect(fired_(a.alerts)).toHaveLength(2);
    const b = engine({}, new Lease(true), shared, clock);
    b.probes("other", 200, "ok");
    expect(b.alerts.filter((x) => x.state === AlertState.RESOLVED).map((x) => x.alertId).sort()).toEqual(fired_(a.alerts).map((x) => x.alertId).sort());
    expect(b.alerts.every((x) => x.subject === "gone" && x.message.endsWith("no evidence since this replica took the alert over"))).toBe(true);
  });

  it("tracks at most SLO_MAX_SUBJECTS, forgetting the least recently fed", () => {
    const e = engine({ SLO_MAX_SUBJECTS: "3" });
    for (const id of ["a1", "a2", "a3", "a4"]) e.probes(id, 1, "ok");
    expect(e.slo.agent("t1", "a1")).toEqual([]);
    expect(e.slo.agent("t1", "a4")[0]!.events).toBe(1);
  });
});

describe("SLO config", () => {
  it("defaults to the SRE workbook's windows and scales them", () => {
    const d = loadConfig({}).slo;
    expect(d).toMatchObject({
      enabled: false,
      availabilityTarget: 0.99,
      latencyTarget: 0.99,
      latencyThresholdMs: 1_000,
      fast: { longMs: 3_600_000, shortMs: 300_000, burnRate: 14.4 },
      slow: { longMs: 21_600_000, shortMs: 1_800_000, burnRate: 6 },
      evaluationIntervalMs: 30_000,
      remediation: { enabled: true, webhookUrl: undefined, cooldownMs: 900_000, maxPerMinute: 10 },
    });
    const scaled = loadConfig({ SLO_WINDOW_SCALE: "0.001" }).slo;
    expect(scaled.fast).toEqual({ longMs: 3_600, shortMs: 300, burnRate: 14.4 });
    expect(scaled.slow).toEqual({ longMs: 21_600, shortMs: 1_800, burnRate: 6 });
    expect(scaled.evaluationIntervalMs).toBe(30);
  });

  it("refuses bad values, naming the variable", () => {
    expect(() => loadConfig({ SLO_AVAILABILITY_TARGET: "1" })).toThrow(new ConfigError("SLO_AVAILABILITY_TARGET: must be between 0.5 and 0.99999, got 1"));
    expect(() => loadConfig({ SLO_LATENCY_TARGET: "high" })).toThrow(/^SLO_LATENCY_TARGET: must be a number/);
    expect(() => loadConfig({ SLO_FAST_SHORT_WINDOW: "2h" })).toThrow(/^SLO_FAST_SHORT_WINDOW: must be shorter than SLO_FAST_LONG_WINDOW/);
    expect(() => loadConfig({ SLO_SLOW_BURN_RATE: "0.5" })).toThrow(/^SLO_SLOW_BURN_RATE: must be between 1 and/);
    expect(() => loadConfig({ REMEDIATION_WEBHOOK_URL: "ftp://x" })).toThrow(/^REMEDIATION_WEBHOOK_URL: scheme must be one of http: https:/);
    expect(() => loadConfig({ SLO_WINDOW_SCALE: "2" })).toThrow(/^SLO_WINDOW_SCALE: must be between/);
  });
});
