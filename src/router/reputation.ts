/**
 * The reputation engine: what the router learns from outcomes (dispatch
 * attempts through the OutcomeSink, and ReportOutcome) and from lease and
 * status history. Every factor is in [0, 1] and is exactly 1 for an agent
 * with no evidence, so a score (capacity × factors) never exceeds the
 * route tier's bound the walk stops on (scoring.ts), and a new agent
 * competes on capacity.
 *
 * Evidence decays toward the prior with a half-life: each stored weight is
 * multiplied by 2^(−Δt / halfLife) when next touched, so an old failure is
 * forgiven and an agent that stopped getting work drifts back to be tried.
 * Each replica keeps its own copy; ReputationSync shares outcome summaries
 * between replicas (absorb) and replays persisted ones at start.
 */
import type { OutcomeSummary } from "./outcome-sharing.js";

export interface ReputationOptions {
  /** Half-life of outcome evidence (default 5 min). */
  readonly halfLifeMs: number;
  /** Weight of the prior, in outcomes (default 2). */
  readonly priorWeight: number;
  /** Sliding window for uptime (default 10 min). */
  readonly uptimeWindowMs: number;
  /** Added to both latencies in the latency factor, so fast agents do not fight over microseconds (default 20 ms). */
  readonly latencySlackMs: number;
}

export const defaultReputation: ReputationOptions = {
  halfLifeMs: 5 * 60_000,
  priorWeight: 2,
  uptimeWindowMs: 10 * 60_000,
  latencySlackMs: 20,
};

export interface Outcome {
  readonly success: boolean;
  /** 0..1; defaults to 1 on success and 0 on failure. */
  readonly quality?: number;
  /** Undefined when the outcome says nothing about latency (refused before sending). */
  readonly latencyMs?: number;
}

export interface Factors {
  readonly quality: number;
  readonly latency: number;
  readonly uptime: number;
}

export interface Standing extends Factors {
  readonly latencyEwmaMs: number;
  readonly latencyP95Ms: number;
  readonly latencyP99Ms: number;
  /** Decayed count of outcomes behind the estimates. */
  readonly evidence: number;
}

/** Samples kept per key for the p95/p99 estimate. */
const SAMPLES = 64;
/** EWMA weight of a new latency sample. */
const ALPHA = 0.2;
/** Stats entries (agents, agent × capability) kept; the agents written first go first. */
const MAX_KEYS = 100_000;
/** Status transitions kept per agent for uptime. */
const MAX_TRANSITIONS = 32;

class Stats {
  weight = 0;
  qualitySum = 0;
  latencyWeight = 0;
  ewma = 0;
  p95 = 0;
  p99 = 0;
  /** The last SAMPLES latencies, oldest first, and the same sorted (kept so, not sorted per outcome). */
  readonly samples: number[] = [];
  private readonly sorted: number[] = [];
  constructor(public at: number) {}

  decay(now: number, halfLifeMs: number): void {
    if (now <= this.at) return;
    const f = Math.pow(2, -(now - this.at) / halfLifeMs);
    this.weight *= f;
    this.qualitySum *= f;
    this.latencyWeight *= f;
    this.at = now;
  }

  add(o: Outcome): void {
    this.weight += 1;
    this.qualitySum += o.quality ?? (o.success ? 1 : 0);
    if (o.latencyMs === undefined) return;
    this.sample(o.latencyMs);
    this.latencyWeight += 1;
    this.percentiles();
  }

  /**
   * A summary of outcomes as of `at`. Older than this entry's time (a
   * persisted batch replayed after newer evidence), it counts decayed.
   */
  merge(s: OutcomeSummary, at: number, halfLifeMs: number): void {
    const f = at < this.at ? Math.pow(2, -(this.at - at) / halfLifeMs) : 1;
    this.weight += f * s.count;
    this.qualitySum += f * s.quality;
    if (s.latencies.length === 0) return;
    for (const ms of s.latencies) this.sample(ms);
    this.latencyWeight += f * s.timed;
    this.percentiles();
  }

  private sample(ms: number): void {
    this.ewma = this.samples.length === 0 ? ms : this.ewma + ALPHA * (ms - this.ewma);
    if (this.samples.length >= SAMPLES) {
      const at = lowerBound(this.sorted, this.samples.shift()!);
      // (A value lowerBound cannot place, NaN, drops the largest: the arrays stay the same length.)
      this.sorted.splice(at < this.sorted.length ? at : this.sorted.length - 1, 1);
    }
    this.samples.push(ms);
    this.sorted.splice(lowerBound(this.sorted, ms), 0, ms);
  }

  private percentiles(): void {
    const sorted = this.sorted;
    this.p95 = sorted[Math.min(sorted.length - 1, Math.ceil(0.95 * sorted.length) - 1)]!;
    this.p99 = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!;
  }
}

/** The first index of `sorted` whose value is not below `x`. */
function lowerBound(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Routable (true) or not (false) since `at`. */
interface Transition {
  readonly at: number;
  readonly up: boolean;
}

/** An agent's evidence: its own, and per capability (the tasks' capabilities on it). */
class AgentStats {
  own: Stats | undefined = undefined;
  byCapability: Map<string, Stats> | undefined = undefined;
  /** Stats entries held (own and per capability), for the store's bound. */
  count = 0;
}

export class Reputation {
  private readonly opts: ReputationOptions;
  /**
   * Per agent, then per capability: a decision looks an agent up by its id
   * and the capability by name, with no key string built per lookup.
   */
  private readonly stats = new Map<string, AgentStats>();
  /** Stats entries held in all; past MAX_KEYS the agent written first goes. */
  private statsCount = 0;
  private readonly history = new Map<string, Transition[]>();
  /** The fleet's typical latency: an EWMA over every outcome's latency (the latency prior). */
  private fleetLatency = 0;
  private fleetSeen = false;
  /** factors()' answer, kept here so scoring a candidate allocates nothing. */
  private quality = 1;
  private latency = 1;
  private uptimeShare = 1;

  constructor(opts: Partial<ReputationOptions> = {}) {
    this.opts = { ...defaultReputation, ...opts };
  }

  /** Records an outcome for the agent and for each of the task's capabilities on it. */
  record(agentId: string, capabilities: readonly string[], o: Outcome, now: number): void {
    this.touch(agentId, undefined, now).add(o);
    for (const c of capabilities) this.touch(agentId, c, now).add(o);
    if (o.latencyMs !== undefined) {
      this.fleetLatency = this.fleetSeen ? this.fleetLatency + 0.05 * (o.latencyMs - this.fleetLatency) : o.latencyMs;
      this.fleetSeen = true;
    }
  }

  /**
   * Outcomes recorded elsewhere (another replica, or persisted), summed up
   * per agent as of `at`. The fleet's typical latency moves as if the
   * batch's latencies came interleaved (by their mean): fed one summary
   * after another, the EWMA would end near the last agent's latency.
   */
  absorb(summaries: readonly OutcomeSummary[], at: number): void {
    let sum = 0;
    let n = 0;
    for (const s of summaries) {
      this.touch(s.agentId, undefined, at).merge(s, at, this.opts.halfLifeMs);
      for (const c of s.capabilities) this.touch(s.agentId, c, at).merge(s, at, this.opts.halfLifeMs);
      for (const ms of s.latencies) sum += ms;
      n += s.latencies.length;
    }
    if (n === 0) return;
    const mean = sum / n;
    this.fleetLatency = this.fleetSeen ? this.fleetLatency + (1 - Math.pow(0.95, n)) * (mean - this.fleetLatency) : mean;
    this.fleetSeen = true;
  }

  /** An agent became routable (HEALTHY, DEGRADED) or not (UNHEALTHY, DRAINING, expired, gone). */
  status(agentId: string, up: boolean, now: number): void {
    let h = this.history.get(agentId);
    if (!h) {
      if (up) return; // no history: fully up
      if (this.history.size >= MAX_KEYS) this.history.delete(this.history.keys().next().value!);
      // Up until now, as far as the window can tell.
      h = [{ at: now - this.opts.uptimeWindowMs, up: true }];
      this.history.set(agentId, h);
    }
    if (h.at(-1)!.up === up) return;
    h.push({ at: now, up });
    if (h.length > MAX_TRANSITIONS) h.splice(0, h.length - MAX_TRANSITIONS);
  }

  /** Forgets an agent's status history (unregistered). */
  forget(agentId: string): void {
    this.history.delete(agentId);
  }

  /**
   * The product quality × latency × uptime, in [0, 1]; exactly 1 without
   * evidence. The stats used: agent × capability where it has evidence
   * (the first requested capability), else the agent's.
   */
  factor(agentId: string, capability: string | undefined, now: number): number {
    const s = this.pick(agentId, capability);
    const h = this.history.size === 0 ? undefined : this.history.get(agentId);
    if (!s && !h) return 1;
    this.factors(s, h, now);
    return this.quality * this.latency * this.uptimeShare;
  }

  /** The latency EWMA behind the estimates (agent × capability where it has evidence); undefined without latency evidence. */
  latencyEstimate(agentId: string, capability: string | undefined): number | undefined {
    const s = this.pick(agentId, capability);
    return s?.latencyWeight ? s.ewma : undefined;
  }

  standing(agentId: string, capability: string | undefined, now: number): Standing {
    const s = this.pick(agentId, capability);
    this.factors(s, this.history.size === 0 ? undefined : this.history.get(agentId), now);
    const timed = s !== undefined && s.latencyWeight > 0;
    return {
      quality: this.quality,
      latency: this.latency,
      uptime: this.uptimeShare,
      latencyEwmaMs: timed ? s.ewma : 0,
      latencyP95Ms: timed ? s.p95 : 0,
      latencyP99Ms: timed ? s.p99 : 0,
      evidence: s?.weight ?? 0,
    };
  }

  private pick(agentId: string, capability: string | undefined): Stats | undefined {
    if (this.stats.size === 0) return undefined;
    const a = this.stats.get(agentId);
    if (!a) return undefined;
    if (capability !== undefined && a.byCapability) {
      const c = a.byCapability.get(capability);
      if (c && c.weight >= 1) return c;
    }
    return a.own;
  }

  /** Sets quality, latency and uptimeShare. */
  private factors(s: Stats | undefined, h: Transition[] | undefined, now: number): void {
    let quality = 1;
    let latency = 1;
    if (s) {
      s.decay(now, this.opts.halfLifeMs);
      const k = this.opts.priorWeight;
      quality = (s.qualitySum + k) / (s.weight + k);
      if (s.latencyWeight > 0 && this.fleetSeen) {
        const observed = 0.7 * s.ewma + 0.3 * s.p95;
        const typical = this.fleetLatency;
        const estimate = (s.latencyWeight * observed + k * typical) / (s.latencyWeight + k);
        const slack = this.opts.latencySlackMs;
        latency = Math.min(1, (typical + slack) / (estimate + slack));
      }
    }
    this.quality = quality;
    this.latency = latency;
    this.uptimeShare = h ? this.uptime(h, now) : 1;
  }

  private uptime(h: Transition[], now: number): number {
    const start = now - this.opts.uptimeWindowMs;
    let down = 0;
    for (let i = 0; i < h.length; i++) {
      if (h[i]!.up) continue;
      const from = Math.max(h[i]!.at, start);
      const to = i + 1 < h.length ? h[i + 1]!.at : now;
      if (to > from) down += to - from;
    }
    return Math.max(0, 1 - down / this.opts.uptimeWindowMs);
  }

  /** The agent's stats (capability undefined) or the agent × capability's, made when missing, decayed to now. */
  private touch(agentId: string, capability: string | undefined, now: number): Stats {
    let a = this.stats.get(agentId);
    if (!a) {
      a = new AgentStats();
      this.stats.set(agentId, a);
    }
    let s = capability === undefined ? a.own : a.byCapability?.get(capability);
    if (!s) {
      s = new Stats(now);
      if (capability === undefined) a.own = s;
      else (a.byCapability ??= new Map()).set(capability, s);
      a.count++;
      this.statsCount++;
      // Bounded: the agents written first go (never the one being written).
      while (this.statsCount > MAX_KEYS) {
        const [oldest, old] = this.stats.entries().next().value!;
        if (old === a) break;
        this.stats.delete(oldest);
        this.statsCount -= old.count;
      }
    }
    s.decay(now, this.opts.halfLifeMs);
    return s;
  }
}
