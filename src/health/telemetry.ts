import type { EventBus } from "../events/event-bus.js";
import type { ProbeRound } from "./probes.js";
import { noSlos, type Slos } from "./slo.js";

export type Counter = "registrations" | "heartbeats" | "unregistrations" | "routes" | "route_failures";

/** Where the domains count what they do. */
export interface Counters {
  count(counter: Counter): void;
}

/**
 * Fleet telemetry: counts per interval, published as one JSON message on
 * the bus's telemetry channel (Redis: `<prefix>:telemetry`, readable with
 * `redis-cli SUBSCRIBE fc:telemetry`), with totals since start for
 * /health/fleet. Each message also carries the last probe round this
 * replica completed (`probes`) and the SLOs at their last evaluation
 * (`slos`), each naming only its few worst agents so a message stays a
 * few kilobytes whatever the fleet's size; either is absent when this
 * replica has nothing to say (PROBES=off or not leading, SLO=off).
 */
export class FleetTelemetry implements Counters {
  private window = newWindow();
  private readonly totals = newWindow();
  private timer: NodeJS.Timeout | undefined;
  private windowStart = Date.now();
  private lastRound: { readonly at: number; readonly round: ProbeRound } | undefined;
  /** The SLO engine whose summary each message carries (set by the app). */
  slos: Slos = noSlos;

  constructor(
    private readonly bus: EventBus,
    private readonly replicaId: string,
    private readonly intervalMs: number,
  ) {}

  count(counter: Counter): void {
    this.window[counter]++;
    this.totals[counter]++;
  }

  start(): void {
    this.timer ??= setInterval(() => this.flush(), this.intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  total(counter: Counter): number {
    return this.totals[counter];
  }

  /** A probe round this replica completed (the probe scheduler's round hook). */
  probeRound(round: ProbeRound): void {
    this.lastRound = { at: Date.now(), round };
  }

  flush(): void {
    const now = Date.now();
    this.bus.publishTelemetry(
      JSON.stringify({
        replica: this.replicaId,
        at: new Date(now).toISOString(),
        window_ms: now - this.windowStart,
        ...this.window,
        probes: this.lastRound && probeSummary(this.lastRound.at, this.lastRound.round),
        slos: sloSummary(this.slos),
      }),
    );
    this.window = newWindow();
    this.windowStart = now;
  }
}

const ms = (x: number) => Math.round(x * 10) / 10;
const rate = (x: number) => Math.round(x * 1000) / 1000;

function probeSummary(at: number, r: ProbeRound) {
  const { ok, ...failed } = r.outcomes;
  return {
    round_at: new Date(at).toISOString(),
    round_ms: Math.round(r.durationMs),
    probed: r.probed,
    ok,
    failed,
    latency_ms: { p50: ms(r.latencyP50Ms), p99: ms(r.latencyP99Ms) },
    worst: r.worst.map((w) => ({
      tenant: w.agent.tenant,
      agent_id: w.agent.id,
      transport: w.transport,
      outcome: w.outcome,
      latency_ms: ms(w.latencyMs),
    })),
  };
}

function sloSummary(slos: Slos) {
  const s = slos.summary();
  if (!s) return undefined;
  return {
    evaluating: s.evaluating,
    subjects: s.subjects,
    windows_ms: s.windowsMs,
    objectives: s.slos.map((o) => ({
      slo: o.slo,
      firing: o.firing,
      worst: o.worst.map((b) => ({
        tenant: b.tenant,
        subject: b.subject,
        burn_rate: rate(b.burnRate),
        fast: b.fast.map(rate),
        slow: b.slow.map(rate),
      })),
    })),
  };
}

function newWindow(): Record<Counter, number> {
  return { registrations: 0, heartbeats: 0, unregistrations: 0, routes: 0, route_failures: 0 };
}

/** For components built without telemetry (unit tests of a domain alone). */
export const noCounters: Counters = { count: () => undefined };
