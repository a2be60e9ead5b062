import { randomUUID } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { AlertSeverity, AlertState } from "../../gen/federation/v1/event_pb.js";
import { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import type { Clock } from "../clock.js";
import type { BurnWindows, SloConfig } from "../config.js";
import type { EventBus, EventInput, PublishedEvent, Subscription } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { MemoryFiringAlerts, type FiringAlerts } from "./alert-state.js";
import type { ProbeLeadership } from "./probes-leader.js";
import type { ProbeResult } from "./probes.js";
import { BucketRing, ringShape, type WindowCounts } from "./slo-window.js";

export type SubjectKind = "agent" | "capability";
export type SloName = "agent-availability" | "agent-latency" | "capability-availability" | "capability-latency";
/** Fleet reports sum every agent of a tenant. */
export type ReportName = SloName | "fleet-availability" | "fleet-latency";

/** An SLO alert: handed to listeners when it fires and when it resolves (same id). */
export interface SloAlert {
  readonly alertId: string;
  readonly state: AlertState;
  readonly severity: AlertSeverity;
  readonly slo: SloName;
  readonly tenant: string;
  readonly kind: SubjectKind;
  /** The agent id or the capability name. */
  readonly subject: string;
  /** Over the long window, then the short one. */
  readonly burnRate: number;
  readonly shortBurnRate: number;
  readonly threshold: number;
  readonly longWindowMs: number;
  readonly shortWindowMs: number;
  readonly objective: number;
  /** Epoch ms. */
  readonly firedAt: number;
  readonly message: string;
}

export interface WindowBurn {
  readonly windowMs: number;
  readonly burnRate: number;
  readonly events: number;
}

/** One objective of one subject, over its windows (fleet health). */
export interface SloReport {
  readonly slo: ReportName;
  readonly objective: number;
  /** Good / all over the longest window (1 without events). */
  readonly sli: number;
  readonly events: number;
  readonly errorBudgetRemaining: number;
  readonly burns: readonly WindowBurn[];
  readonly firing: readonly AlertSeverity[];
}

/** A gauge's value per bounded label pair (no subject ids). */
export interface SloGauge {
  readonly slo: SloName;
  readonly severity: "page" | "ticket";
  readonly value: number;
}

/** A subject among an SLO's worst burners at the last evaluation (telemetry). */
export interface SloBurner {
  readonly tenant: string;
  /** The agent id or the capability name. */
  readonly subject: string;
  /** The higher of the pairs' min(long, short) burn rates: what alerting compares with the thresholds. */
  readonly burnRate: number;
  /** Over the fast pair's long and short windows, then the slow pair's. */
  readonly fast: readonly [number, number];
  readonly slow: readonly [number, number];
}

/** Per SLO at the last evaluation: its worst burners (at most SLO_WORST) and the alerts firing by severity. */
export interface SloSummary {
  readonly evaluating: boolean;
  readonly subjects: number;
  readonly windowsMs: { readonly fast: readonly [number, number]; readonly slow: readonly [number, number] };
  readonly slos: readonly {
    readonly slo: SloName;
    readonly worst: readonly SloBurner[];
    readonly firing: { readonly page: number; readonly ticket: number };
  }[];
}

/** Worst burners an SLO summary keeps (telemetry's bound). */
export const SLO_WORST = 5;

/** SLOs as the app sees them. */
export interface Slos {
  start(): void;
  stop(): Promise<void>;
  /** Hears each alert as it fires and as it resolves (on the evaluating replica only). */
  onAlert(listener: (alert: SloAlert) => void): () => void;
  /** A probe's verdict (the probe scheduler's result hook). */
  probed(result: ProbeResult): void;
  agent(tenant: string, agentId: string): SloReport[];
  capability(tenant: string, capability: string): SloReport[];
  fleet(tenant: string): SloReport[];
  firing(tenant: string): SloAlert[];
  /** This replica evaluates and alerts (it holds the probe leadership). */
  readonly evaluating: boolean;
  gauges(): { readonly burnRates: readonly SloGauge[]; readonly firing: readonly SloGauge[] };
  /** Undefined before the first evaluation, and with SLO=off. */
  summary(): SloSummary | undefined;
}

/** SLO=off: nothing is counted, nothing fires. */
export const noSlos: Slos = {
  start: () => undefined,
  stop: async () => undefined,
  onAlert: () => () => undefined,
  probed: () => undefined,
  agent: () => [],
  capability: () => [],
  fleet: () => [],
  firing: () => [],
  evaluating: false,
  gauges: () => ({ burnRates: [], firing: [] }),
  summary: () => undefined,
};

export interface SloDeps {
  readonly bus: EventBus;
  readonly clock: Clock;
  readonly log: Logger;
  /** The probe leader's lease: only its holder evaluates, so replicas never alert twice. */
  readonly leadership: ProbeLeadership;
  /** The probe scheduler campaigns with the lease; without probes the engine does (and gives it up on stop). */
  readonly campaigns: boolean;
  /** The firing alerts as the replicas share them (Redis); absent: this process's memory. */
  readonly firing?: FiringAlerts;
}

interface Subject {
  readonly key: string;
  readonly tenant: string;
  readonly kind: SubjectKind;
  readonly id: string;
  readonly ring: BucketRing;
}

/** What an objective counts as good and bad from a window's counts. */
interface Objective {
  readonly suffix: "availability" | "latency";
  readonly target: number;
  bad(c: WindowCounts): number;
  total(c: WindowCounts): number;
}

interface Pair {
  readonly severity: AlertSeverity;
  readonly label: "page" | "ticket";
  readonly w: BurnWindows;
}

/** Burn rates are ratios of small counts over (1 − objective): exactly at the factor is not above it. */
const EPSILON = 1e-9;
const TASK_EVENTS = new Set(["task.dispatched", "task.completed", "task.failed"]);
/** Outcomes that say nothing of the agent: not sent (refused by the SSRF guard) or cancelled by the caller. */
const NO_EVIDENCE = new Set([AttemptOutcome.UNSPECIFIED, AttemptOutcome.REFUSED]);
const SLO_NAMES: readonly SloName[] = ["agent-availability", "agent-latency", "capability-availability", "capability-latency"];

/**
 * Service level objectives per agent and per capability, with the SRE
 * workbook's multi-window, multi-burn-rate alerts.
 *
 * Evidence: an agent's availability and latency come from its capability
 * probes and from every dispatch attempt to it (task.dispatched); a
 * capability's from the tasks that needed it (task.completed / task.failed,
 * failover included) — what the fleet delivers for it, so one bad agent
 * among good ones burns its own budget, not the capability's. Task events
 * are read from the bus, so with Redis the evaluating replica counts every
 * replica's dispatches. Availability is good events / events; latency is
 * successful events at or under SLO_LATENCY_THRESHOLD / successful events.
 *
 * Burn rate = error rate over a window / (1 − objective). Steps, every
 * SLO_EVALUATION_INTERVAL on the probe leader only:
 * 1. sum each subject's buckets over the four windows;
 * 2. per objective and window pair (fast: PAGE, slow: TICKET), the alert
 *    fires when both windows burn above the pair's factor and the short
 *    window holds SLO_MIN_EVENTS events — once, until it resolves;
 * 3. a firing alert resolves once either window has stayed at the factor
 *    or below for the pair's short window (Prometheus' keep_firing_for:
 *    an alert on the edge does not flap; the short window recovers first,
 *    so resolution is still quick) — judged on evidence: a short window
 *    without events of the objective (no successes to time while every
 *    probe fails) leaves the alert as it is, unless the long window is
 *    empty too (the subject went quiet).
 */
export class SloEngine implements Slos {
  /** By key, least recently fed first (re-inserted on every event). */
  private readonly subjects = new Map<string, Subject>();
  /** Firing alerts by `${slo}|${subject key}|${severity}`. */
  private readonly alerts = new Map<string, SloAlert>();
  /** Firing alerts whose condition has been false since (epoch ms). */
  private readonly clearing = new Map<string, number>();
  private readonly listeners = new Set<(alert: SloAlert) => void>();
  private readonly objectives: readonly Objective[];
  private readonly pairs: readonly Pair[];
  /** The four windows, longest first (reports and sums). */
  private readonly windows: readonly number[];
  private readonly shape: { bucketMs: number; buckets: number };
  /** Per `${slo}|${severity}`: the highest min(long, short) burn rate at the last evaluation. */
  private burnGauges = new Map<string, number>();
  /** Per SLO, its worst burners at the last evaluation, worst first. */
  private worst = new Map<SloName, SloBurner[]>();
  private evaluated = false;
  private timer: NodeJS.Timeout | undefined;
  private subscription: Subscription | undefined;
  private readonly store: FiringAlerts;
  /** Since this replica leads, it holds the alerts its predecessors left firing (epoch ms of adoption; undefined: not yet). */
  private adoptedAt: number | undefined;
  private adopting = false;

  constructor(
    private readonly config: SloConfig,
    private readonly deps: SloDeps,
  ) {
    this.store = deps.firing ?? new MemoryFiringAlerts();
    this.objectives = [
      { suffix: "availability", target: config.availabilityTarget, bad: (c) => c.errors, total: (c) => c.total },
      { suffix: "latency", target: config.latencyTarget, bad: (c) => c.slow, total: (c) => c.total - c.errors },
    ];
    this.pairs = [
      { severity: AlertSeverity.PAGE, label: "page", w: config.fast },
      { severity: AlertSeverity.TICKET, label: "ticket", w: config.slow },
    ];
    this.windows = [...new Set([config.slow.longMs, config.fast.longMs, config.slow.shortMs, config.fast.shortMs])].sort((a, b) => b - a);
    this.shape = ringShape(this.windows);
  }

  get evaluating(): boolean {
    return this.deps.leadership.leading;
  }

  start(): void {
    if (this.deps.campaigns) this.deps.leadership.start(() => undefined);
    this.subscription = this.deps.bus.subscribe(
      { tenant: "", allTenants: true, types: TASK_EVENTS, agentId: "" },
      undefined,
      (event) => this.taskEvent(event),
    );
    this.timer = setInterval(() => this.evaluate(), this.config.evaluationIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.subscription?.close();
    this.store.close();
    if (this.deps.campaigns) await this.deps.leadership.stop();
  }

  onAlert(listener: (alert: SloAlert) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  probed(r: ProbeResult): void {
    // A refused probe (the SSRF rules forbid the address) is no evidence either way.
    if (r.outcome === "refused") return;
    this.record("agent", r.agent.tenant, r.agent.id, r.outcome === "ok", r.latencyMs);
  }

  agent(tenant: string, agentId: string): SloReport[] {
    return this.reports(this.subjects.get(keyOf("agent", tenant, agentId)), "agent");
  }

  capability(tenant: string, capability: string): SloReport[] {
    return this.reports(this.subjects.get(keyOf("capability", tenant, capability)), "capability");
  }

  /** Every agent of the tenant counted together. */
  fleet(tenant: string): SloReport[] {
    const now = this.deps.clock.now();
    const sums = this.windows.map(() => ({ total: 0, errors: 0, slow: 0 }));
    for (const s of this.subjects.values()) {
      if (s.kind !== "agent" || s.tenant !== tenant) continue;
      this.windows.forEach((w, i) => s.ring.addTo(now, w, sums[i]!));
    }
    return this.objectives.map((o) => this.report(`fleet-${o.suffix}`, o, sums, []));
  }

  firing(tenant: string): SloAlert[] {
    return [...this.alerts.values()].filter((a) => a.tenant === tenant);
  }

  gauges(): { burnRates: SloGauge[]; firing: SloGauge[] } {
    const burnRates: SloGauge[] = [];
    const firing: SloGauge[] = [];
    const counts = new Map<string, number>();
    for (const a of this.alerts.values()) {
      const k = `${a.slo}|${a.severity === AlertSeverity.PAGE ? "page" : "ticket"}`;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    for (const slo of SLO_NAMES) {
      for (const { label: severity } of this.pairs) {
        burnRates.push({ slo, severity, value: this.burnGauges.get(`${slo}|${severity}`) ?? 0 });
        firing.push({ slo, severity, value: counts.get(`${slo}|${severity}`) ?? 0 });
      }
    }
    return { burnRates, firing };
  }

  /** One evaluation (on the interval; public for tests that drive a manual clock). */
  evaluate(): void {
    const now = this.deps.clock.now();
    const leading = this.deps.leadership.leading;
    // Another replica evaluates now: this one's alerts are its to resolve.
    if (!leading) {
      this.alerts.clear();
      this.clearing.clear();
      this.adoptedAt = undefined;
    } else if (this.adoptedAt === undefined && !this.adopt(now)) {
      return;
    }
    const gauges = new Map<string, number>();
    const sums = this.windows.map(() => ({ total: 0, errors: 0, slow: 0 }));
    const at = (ms: number) => sums[this.windows.indexOf(ms)]!;
    const worst = new Map<SloName, SloBurner[]>();
    for (const s of this.subjects.values()) {
      this.windows.forEach((w, i) => s.ring.sum(now, w, sums[i]));
      for (const o of this.objectives) {
        const slo = `${s.kind}-${o.suffix}` as SloName;
        const [fast, slow] = this.pairs.map((p) => [burnRate(o, at(p.w.longMs)), burnRate(o, at(p.w.shortMs))] as const);
        const burn = Math.max(Math.min(...fast!), Math.min(...slow!));
        if (burn > 0) keepWorst(worst, slo, { tenant: s.tenant, subject: s.id, burnRate: burn, fast: fast!, slow: slow! });
        for (const p of this.pairs) {
          const long = at(p.w.longMs);
          const short = at(p.w.shortMs);
          const lb = burnRate(o, long);
          const sb = burnRate(o, short);
          const gk = `${slo}|${p.label}`;
          gauges.set(gk, Math.max(gauges.get(gk) ?? 0, Math.min(lb, sb)));
          if (!leading) continue;
          const key = `${slo}|${s.key}|${p.severity}`;
          const firing = this.alerts.get(key);
          const burning = lb > p.w.burnRate + EPSILON && sb > p.w.burnRate + EPSILON;
          if (!firing && burning && o.total(short) >= this.config.minEvents) {
            this.fire(key, s, slo, o, p, lb, sb, long, now);
          } else if (firing && burning) {
            this.clearing.delete(key);
          } else if (firing && (o.total(short) > 0 || o.total(long) === 0)) {
            const since = this.clearing.get(key) ?? now;
            this.clearing.set(key, since);
            if (now - since >= p.w.shortMs) {
              this.resolve(key, firing, lb, sb, `recovered: burning ${fmt(lb)}× over ${fmtMs(p.w.longMs)} and ${fmt(sb)}× over ${fmtMs(p.w.shortMs)}`);
            }
          }
        }
      }
    }
    if (leading) this.orphans(now);
    this.burnGauges = gauges;
    this.worst = worst;
    this.evaluated = true;
  }

  /**
   * A new leader takes over the alerts still firing (another replica fired
   * them, or this one before it lost the lease): same ids, not fired again,
   * resolved under those ids. True once adopted; the shared store is read
   * asynchronously, and nothing is alerted until it answered.
   */
  private adopt(now: number): boolean {
    const take = (stored: ReadonlyMap<string, SloAlert>) => {
      for (const [key, alert] of stored) if (!this.alerts.has(key)) this.alerts.set(key, alert);
      this.adoptedAt = now;
      if (stored.size > 0) this.deps.log.info({ alerts: stored.size }, "SLO alerts still firing adopted from the previous leader");
    };
    const listed = this.store.list();
    if (!(listed instanceof Promise)) {
      take(listed);
      return true;
    }
    if (!this.adopting) {
      this.adopting = true;
      listed
        .then((stored) => {
          if (this.deps.leadership.leading) take(stored);
        })
        .catch((err: unknown) => this.deps.log.warn({ err }, "firing SLO alerts not read; alerting waits"))
        .finally(() => (this.adopting = false));
    }
    return false;
  }

  /**
   * Adopted alerts about a subject this replica has had no evidence of for
   * a whole long window resolve (the agent went away with the old leader's
   * knowledge of it); the firing set in the shared store is kept alive.
   */
  private orphans(now: number): void {
    if (this.alerts.size === 0) return;
    this.store.touch();
    for (const [key, a] of this.alerts) {
      if (this.subjects.has(keyOf(a.kind, a.tenant, a.subject))) continue;
      if (now - (this.adoptedAt ?? now) >= a.longWindowMs) this.resolve(key, a, 0, 0, "resolved: no evidence since this replica took the alert over");
    }
  }

  summary(): SloSummary | undefined {
    if (!this.evaluated) return undefined;
    const firing = new Map<string, number>();
    for (const a of this.alerts.values()) {
      const k = `${a.slo}|${a.severity === AlertSeverity.PAGE ? "page" : "ticket"}`;
      firing.set(k, (firing.get(k) ?? 0) + 1);
    }
    const { fast, slow } = this.config;
    return {
      evaluating: this.evaluating,
      subjects: this.subjects.size,
      windowsMs: { fast: [fast.longMs, fast.shortMs], slow: [slow.longMs, slow.shortMs] },
      slos: SLO_NAMES.map((slo) => ({
        slo,
        worst: this.worst.get(slo) ?? [],
        firing: { page: firing.get(`${slo}|page`) ?? 0, ticket: firing.get(`${slo}|ticket`) ?? 0 },
      })),
    };
  }

  /** Counts one event for a subject; the least recently fed subject is forgotten past SLO_MAX_SUBJECTS. */
  private record(kind: SubjectKind, tenant: string, id: string, ok: boolean, latencyMs: number): void {
    const key = keyOf(kind, tenant, id);
    let s = this.subjects.get(key);
    if (s) this.subjects.delete(key);
    else {
      if (this.subjects.size >= this.config.maxSubjects) this.forgetOldest();
      s = { key, tenant, kind, id, ring: new BucketRing(this.shape.bucketMs, this.shape.buckets) };
    }
    this.subjects.set(key, s);
    s.ring.add(this.deps.clock.now(), ok, latencyMs > this.config.latencyThresholdMs);
  }

  private forgetOldest(): void {
    const oldest = this.subjects.values().next().value;
    if (!oldest) return;
    this.subjects.delete(oldest.key);
    for (const [key, a] of this.alerts) {
      if (key.includes(`|${oldest.key}|`)) this.resolve(key, a, 0, 0, "no longer tracked (SLO_MAX_SUBJECTS)");
    }
  }

  private taskEvent(event: PublishedEvent): void {
    const m = event.message;
    if (m.payload.case !== "taskProgress") return;
    const p = m.payload.value;
    if (NO_EVIDENCE.has(p.outcome)) return;
    const ok = p.outcome === AttemptOutcome.OK;
    const latencyMs = msOf(p.latency);
    if (m.type === "task.dispatched") {
      if (m.agentId) this.record("agent", m.tenant, m.agentId, ok, latencyMs);
      return;
    }
    // task.completed / task.failed: the task as a whole, per capability it needed.
    for (const c of p.capabilities) this.record("capability", m.tenant, c, m.type === "task.completed", latencyMs);
  }

  private reports(s: Subject | undefined, kind: SubjectKind): SloReport[] {
    if (!s) return [];
    const now = this.deps.clock.now();
    const sums = this.windows.map((w) => s.ring.sum(now, w));
    return this.objectives.map((o) => {
      const slo = `${kind}-${o.suffix}` as SloName;
      const firing = this.pairs.filter((p) => this.alerts.has(`${slo}|${s.key}|${p.severity}`)).map((p) => p.severity);
      return this.report(slo, o, sums, firing);
    });
  }

  private report(slo: ReportName, o: Objective, sums: readonly WindowCounts[], firing: AlertSeverity[]): SloReport {
    const longest = sums[0]!;
    const total = o.total(longest);
    const bad = o.bad(longest);
    return {
      slo,
      objective: o.target,
      sli: total === 0 ? 1 : (total - bad) / total,
      events: total,
      errorBudgetRemaining: 1 - burnRate(o, longest),
      burns: this.windows.map((windowMs, i) => ({ windowMs, burnRate: burnRate(o, sums[i]!), events: o.total(sums[i]!) })),
      firing,
    };
  }

  private fire(key: string, s: Subject, slo: SloName, o: Objective, p: Pair, lb: number, sb: number, long: WindowCounts, now: number): void {
    const what =
      o.suffix === "availability"
        ? `${o.bad(long)} of ${o.total(long)} events failed`
        : `${o.bad(long)} of ${o.total(long)} successes took over ${fmtMs(this.config.latencyThresholdMs)}`;
    const alert: SloAlert = {
      alertId: `alert-${randomUUID()}`,
      state: AlertState.FIRING,
      severity: p.severity,
      slo,
      tenant: s.tenant,
      kind: s.kind,
      subject: s.id,
      burnRate: lb,
      shortBurnRate: sb,
      threshold: p.w.burnRate,
      longWindowMs: p.w.longMs,
      shortWindowMs: p.w.shortMs,
      objective: o.target,
      firedAt: now,
      message:
        `${slo} of ${s.kind} ${s.id} burns its error budget at ${fmt(lb)}× over ${fmtMs(p.w.longMs)} and ${fmt(sb)}× over ` +
        `${fmtMs(p.w.shortMs)} (threshold ${p.w.burnRate}×, objective ${o.target}): ${what} over ${fmtMs(p.w.longMs)}`,
    };
    this.alerts.set(key, alert);
    this.persist(this.store.put(key, alert));
    this.emit(alert);
  }

  private persist(write: Promise<void>): void {
    write.catch((err: unknown) => this.deps.log.warn({ err }, "firing SLO alert not saved to the shared store"));
  }

  private resolve(key: string, firing: SloAlert, lb: number, sb: number, why: string): void {
    this.alerts.delete(key);
    this.clearing.delete(key);
    this.persist(this.store.delete(key));
    this.emit({
      ...firing,
      state: AlertState.RESOLVED,
      burnRate: lb,
      shortBurnRate: sb,
      message: `${firing.slo} of ${firing.kind} ${firing.subject} ${why}`,
    });
  }

  private emit(alert: SloAlert): void {
    this.deps.log.info({ alertId: alert.alertId, state: AlertState[alert.state], slo: alert.slo, subject: alert.subject }, alert.message);
    void this.deps.bus.publish(alertEvent("health.alert", alert)).catch((err: unknown) => this.deps.log.error({ err }, "event publish failed"));
    for (const l of this.listeners) {
      try {
        l(alert);
      } catch (err) {
        this.deps.log.error({ err }, "alert listener failed");
      }
    }
  }
}

/** The health.alert (or health.remediation_*) event of an alert. */
export function alertEvent(
  type: "health.alert" | "health.remediation_dispatched" | "health.remediation_escalated",
  a: SloAlert,
  extra: { message?: string; remediationId?: string } = {},
): EventInput {
  return {
    type,
    tenant: a.tenant,
    agentId: a.kind === "agent" ? a.subject : "",
    payload: { case: "healthAlert", value: alertMessage(a, extra) },
  };
}

/** The HealthAlert message of an alert (events, fleet health, the audit trail). */
export function alertMessage(a: SloAlert, extra: { message?: string; remediationId?: string } = {}) {
  return {
    component: "slo",
    message: extra.message ?? a.message,
    alertId: a.alertId,
    state: a.state,
    severity: a.severity,
    slo: a.slo,
    agentId: a.kind === "agent" ? a.subject : "",
    capability: a.kind === "capability" ? a.subject : "",
    burnRate: a.burnRate,
    shortBurnRate: a.shortBurnRate,
    burnRateThreshold: a.threshold,
    longWindow: durationFromMs(a.longWindowMs),
    shortWindow: durationFromMs(a.shortWindowMs),
    objective: a.objective,
    remediationId: extra.remediationId ?? "",
  };
}

const keyOf = (kind: SubjectKind, tenant: string, id: string) => `${kind === "agent" ? "a" : "c"}\u0000${tenant}\u0000${id}`;

function burnRate(o: Objective, c: WindowCounts): number {
  const total = o.total(c);
  return total === 0 ? 0 : o.bad(c) / total / (1 - o.target);
}

function msOf(d: Duration | undefined): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}

const fmt = (n: number) => (Math.round(n * 10) / 10).toString();

/** 3600000 → "1h", 300000 → "5m", 1500 → "1.5s", 400 → "400ms". */
export function fmtMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1_000) return `${Math.round(ms / 100) / 10}s`;
  return `${ms}ms`;
}

/** Keeps an SLO's SLO_WORST highest burners, worst first. */
function keepWorst(worst: Map<SloName, SloBurner[]>, slo: SloName, b: SloBurner): void {
  let list = worst.get(slo);
  if (!list) worst.set(slo, (list = []));
  if (list.length === SLO_WORST) {
    if (b.burnRate <= list[SLO_WORST - 1]!.burnRate) return;
    list.pop();
  }
  let i = list.length;
  while (i > 0 && b.burnRate > list[i - 1]!.burnRate) i--;
  list.splice(i, 0, b);
}
