import { isIP } from "node:net";
import type { ProbeConfig } from "../config.js";
import { DispatchRefused, type AddressGuard, type PinnedTarget } from "../dispatch/address-guard.js";
import type { EventBus, EventType } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { agentMessageOnce } from "../registry/agent-message.js";
import { AgentStatus, patched, Transport, type AgentRecord } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";
import type { ProbeLeadership } from "./probes-leader.js";
import { HttpProbeFailed, HttpProber, ProbeTimeout } from "./http-probe.js";
import { ProbeFailed, TRANSPORT_PROBES, transportLabel, type ProbeOutcome } from "./probes-transports.js";

export type { ProbeOutcome } from "./probes-transports.js";

/** What probing knows of one agent (this replica's, while it leads). */
export interface ProbeState {
  readonly transport: string;
  consecutiveFailures: number;
  consecutiveSuccesses: number;
  lastOutcome: ProbeOutcome;
  lastLatencyMs: number;
  /** Epoch ms. */
  lastAt: number;
  /** Why the last probe failed ("" when it passed). */
  lastDetail: string;
  /** The probes turned this agent DEGRADED: only then do they turn it HEALTHY again. */
  degradedByProbes: boolean;
}

/** One pass over the fleet. */
export interface ProbeRound {
  readonly durationMs: number;
  /** Probes that ended with a verdict (refused ones included). */
  readonly probed: number;
  readonly outcomes: Readonly<Record<ProbeOutcome, number>>;
  /** Probe latency percentiles over the round's verdicts (0 when none). */
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  /** The round's worst probes, at most ROUND_WORST: failures first, then the slowest. */
  readonly worst: readonly ProbeResult[];
}

/** One probe's verdict about one agent (the SLOs' evidence). */
export interface ProbeResult {
  readonly agent: AgentRecord;
  readonly transport: string;
  readonly outcome: ProbeOutcome;
  readonly latencyMs: number;
  readonly detail: string;
}

/** Where each probe's outcome and latency go (Prometheus; a no-op without metrics). */
export interface ProbeObserver {
  observe(transport: string, outcome: ProbeOutcome, seconds: number): void;
}

export const noProbeObserver: ProbeObserver = { observe: () => undefined };

/** The health manager's probing, as the app sees it. */
export interface Probes {
  start(): void;
  /** Stops probing and aborts probes in flight; never waits on an agent. */
  stop(): Promise<void>;
  /** Hears every round this replica completes. */
  onRound(listener: (round: ProbeRound) => void): () => void;
  /** Hears every probe's verdict (after its hysteresis is applied). */
  onResult(listener: (result: ProbeResult) => void): () => void;
  state(agentId: string): Readonly<ProbeState> | undefined;
}

/** PROBES=off: nothing probes. */
export const noProbes: Probes = {
  start: () => undefined,
  stop: async () => undefined,
  onRound: () => () => undefined,
  onResult: () => () => undefined,
  state: () => undefined,
};

export interface ProbeDeps {
  readonly store: AgentStore;
  readonly bus: EventBus;
  /** Dispatch's SSRF guard: probes connect only where dispatch may. */
  readonly guard: AddressGuard;
  readonly leadership: ProbeLeadership;
  readonly observer: ProbeObserver;
  readonly log: Logger;
  /** Named in each probe's User-Agent, so an agent can tell which replica asks. */
  readonly replicaId: string;
}

/** A round starts up to this share of the interval early or late, so replicas and restarts do not probe in lockstep. */
const JITTER = 0.1;
/** Agents read from the store per page. */
const PAGE = 1_000;
/** How many times a status write is retried when another writer changed the agent first. */
const MAX_CAS_ATTEMPTS = 5;
const DEFAULT_PORT: Readonly<Record<string, number>> = { "http:": 80, "https:": 443, "grpc:": 80, "grpcs:": 443 };
const PROBED_STATUSES: ReadonlySet<AgentStatus> = new Set([AgentStatus.HEALTHY, AgentStatus.DEGRADED]);
/** Worst probes a round keeps (telemetry's bound). */
export const ROUND_WORST = 10;

/**
 * Capability probes: every interval (jittered), each HEALTHY or DEGRADED
 * agent is asked over its own transport whether it does what it
 * registered — HTTP GET of the health path, grpc.health.v1 Check, MCP
 * initialize + tools/list — at most `concurrency` at once, each within
 * `timeout`. A status changes only on consecutive evidence: N failures in a
 * row turn a HEALTHY agent DEGRADED, M passes in a row turn it back, so
 * one slow answer flaps nothing. Only the replica holding the leadership
 * probes.
 */
export class ProbeScheduler implements Probes {
  private readonly states = new Map<string, ProbeState>();
  private readonly listeners = new Set<(round: ProbeRound) => void>();
  private readonly resultListeners = new Set<(result: ProbeResult) => void>();
  private timer: NodeJS.Timeout | undefined;
  /** Aborts the round in flight (leadership lost, or stopping). */
  private round: AbortController | undefined;
  /**
   * Probes in flight, aborted with their round. (Not a listener each on
   * the round's signal: an EventTarget scans its listeners on every add,
   * which at a few hundred probes in flight costs more than the probe.)
   */
  private readonly inFlight = new Set<AbortController>();
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly userAgent: string;
  /** Agents a previous leader degraded (read when this replica starts leading). */
  private inherited = new Set<string>();
  /** HTTP probes' sockets, kept alive across rounds (a socket outlives an interval and its jitter), and their deadlines. */
  private readonly http: HttpProber;
  /**
   * Checked targets of endpoints whose host is an IP literal, by URL: the
   * guard's verdict on a literal cannot change (no DNS; the rules are
   * configuration), and checking it was a sixth of a probe's CPU. Those of
   * the last round and of this one; names are resolved and checked anew
   * every probe.
   */
  private pinned = new Map<string, PinnedTarget>();
  private pinning = new Map<string, PinnedTarget>();

  constructor(
    private readonly config: ProbeConfig,
    private readonly deps: ProbeDeps,
  ) {
    this.userAgent = `federation-core-probe (${deps.replicaId})`;
    this.http = new HttpProber({
      timeoutMs: config.timeoutMs,
      freeSocketMs: Math.round(2 * config.intervalMs),
      maxFreePerTarget: config.concurrency,
      userAgent: this.userAgent,
    });
  }

  start(): void {
    this.deps.leadership.start((leading) => {
      clearTimeout(this.timer);
      if (leading) this.schedule(Math.random() * JITTER * this.config.intervalMs);
      else {
        this.round?.abort();
        this.http.close();
        // Another replica probes now: what this one counted goes stale.
        this.states.clear();
      }
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.round?.abort();
    await Promise.all([this.deps.leadership.stop(), this.running]);
    this.http.close();
  }

  onRound(listener: (round: ProbeRound) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onResult(listener: (result: ProbeResult) => void): () => void {
    this.resultListeners.add(listener);
    return () => this.resultListeners.delete(listener);
  }

  state(agentId: string): Readonly<ProbeState> | undefined {
    return this.states.get(agentId);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      const startedAt = performance.now();
      this.running = this.runRound().finally(() => {
        this.running = undefined;
        if (!this.deps.leadership.leading) return;
        // The next round starts an interval (± jitter) after this one started; rounds never overlap.
        const jittered = this.config.intervalMs * (1 + JITTER * (2 * Math.random() - 1));
        this.schedule(Math.max(0, startedAt + jittered - performance.now()));
      });
    }, delayMs);
    this.timer.unref();
  }

  private async runRound(): Promise<void> {
    if (this.states.size === 0 && this.deps.leadership.degraded) {
      this.inherited = new Set(await this.deps.leadership.degraded.list().catch(() => []));
      if (this.stopped || !this.deps.leadership.leading) return;
    }
    const controller = new AbortController();
    this.round = controller;
    controller.signal.addEventListener("abort", () => {
      for (const c of this.inFlight) c.abort(controller.signal.reason);
      this.http.abortAll(controller.signal.reason as Error);
    });
    const started = performance.now();
    const outcomes: Record<ProbeOutcome, number> = { ok: 0, timeout: 0, error: 0, missing_tool: 0, refused: 0 };
    let agents: AgentRecord[];
    try {
      agents = await this.fleet();
    } catch (err) {
      this.deps.log.warn({ err }, "probe round skipped: the agent store did not answer");
      return;
    }
    let next = 0;
    const latencies = new Float64Array(agents.length);
    let judged = 0;
    const worst: ProbeResult[] = [];
    const worker = async () => {
      while (next < agents.length && !controller.signal.aborted) {
        const result = await this.probe(agents[next++]!, controller.signal);
        if (!result) continue;
        outcomes[result.outcome]++;
        latencies[judged++] = result.latencyMs;
        keepWorst(worst, result);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.config.concurrency, agents.length) }, worker));
    if (this.round === controller) this.round = undefined;
    if (controller.signal.aborted) return;
    this.pinned = this.pinning;
    this.pinning = new Map();
    const seen = new Set(agents.map((a) => a.id));
    for (const [id, s] of this.states) {
      if (seen.has(id)) continue;
      this.states.delete(id);
      if (s.degradedByProbes) void this.deps.leadership.degraded?.set(id, false);
    }
    for (const id of this.inherited) if (!seen.has(id)) void this.deps.leadership.degraded?.set(id, false);
    this.inherited.clear();
    const sorted = latencies.subarray(0, judged).sort();
    const round: ProbeRound = {
      durationMs: performance.now() - started,
      probed: Object.values(outcomes).reduce((a, b) => a + b, 0),
      outcomes,
      latencyP50Ms: percentile(sorted, 0.5),
      latencyP99Ms: percentile(sorted, 0.99),
      worst,
    };
    this.deps.log.debug({ ...round, worst: worst.length }, "probe round");
    for (const l of this.listeners) l(round);
  }

  /**
   * Agents to probe: every tenant's, HEALTHY or DEGRADED, on a transport
   * with a probe. A store that lists all tenants (MongoDB: `all`) is paged;
   * the memory store has no such listing, and every record it holds has a
   * lease that ends before +∞, so `expired` with an unbounded time lists
   * them all in one pass over its map.
   */
  private async fleet(): Promise<AgentRecord[]> {
    const { store } = this.deps;
    const out: AgentRecord[] = [];
    const keep = (a: AgentRecord) => PROBED_STATUSES.has(a.status) && TRANSPORT_PROBES.has(a.endpoint.transport);
    if (store.all) {
      for (let after = ""; ; ) {
        const page = await store.all(after, PAGE);
        for (const a of page) if (keep(a)) out.push(a);
        if (page.length < PAGE) return out;
        after = page[page.length - 1]!.id;
      }
    }
    for (const a of await store.expired(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)) if (keep(a)) out.push(a);
    return out;
  }

  /** One probe, judged; undefined when the round was aborted under it (no verdict). */
  private async probe(agent: AgentRecord, roundSignal: AbortSignal): Promise<ProbeResult | undefined> {
    if (roundSignal.aborted) return undefined;
    const t0 = performance.now();
    let verdict: [ProbeOutcome, string] = ["ok", ""];
    const cached = this.pinned.get(agent.endpoint.url);
    if (cached) this.pinning.set(agent.endpoint.url, cached);
    const transport = agent.endpoint.transport;
    if (cached && (transport === Transport.HTTP_JSON || transport === Transport.CONNECT)) {
      // The common case, without a controller, timer or race of its own: the prober keeps the deadline.
      try {
        await this.http.probe(cached, this.config.httpPath);
      } catch (err) {
        if (roundSignal.aborted) return undefined;
        verdict = classify(err, undefined);
      }
    } else {
      const v = await this.probeWithSignal(agent, cached, roundSignal);
      if (!v) return undefined;
      verdict = v;
    }
    const [outcome, detail] = verdict;
    const latencyMs = performance.now() - t0;
    const label = transportLabel(transport);
    this.deps.observer.observe(label, outcome, latencyMs / 1000);
    await this.judge(agent, label, outcome, latencyMs, detail);
    const result: ProbeResult = { agent, transport: label, outcome, latencyMs, detail };
    for (const l of this.resultListeners) {
      try {
        l(result);
      } catch (err) {
        this.deps.log.error({ err }, "probe result listener failed");
      }
    }
    return result;
  }

  /** Any transport, a name to resolve: the probe's own signal ends it at its timeout, whatever its client does. */
  private async probeWithSignal(agent: AgentRecord, cached: PinnedTarget | undefined, roundSignal: AbortSignal): Promise<[ProbeOutcome, string] | undefined> {
    const probe = TRANSPORT_PROBES.get(agent.endpoint.transport)!;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new ProbeTimeout(`no answer within ${this.config.timeoutMs}ms`)), this.config.timeoutMs);
    timer.unref();
    this.inFlight.add(controller);
    const signal = controller.signal;
    const aborted = new Promise<never>((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }));
    aborted.catch(() => undefined);
    try {
      const target = cached ?? (await Promise.race([this.pin(agent.endpoint.url), aborted]));
      await Promise.race([
        probe({ agent, target, signal, timeoutMs: this.config.timeoutMs, httpPath: this.config.httpPath, userAgent: this.userAgent, http: this.http }),
        aborted,
      ]);
      return ["ok", ""];
    } catch (err) {
      if (roundSignal.aborted) return undefined;
      return classify(err, signal);
    } finally {
      clearTimeout(timer);
      this.inFlight.delete(controller);
    }
  }

  private async pin(url: string): Promise<PinnedTarget> {
    const protocol = url.slice(0, url.indexOf(":") + 1);
    const target = await this.deps.guard.pin(url, DEFAULT_PORT[protocol] ?? 80);
    if (isIP(target.hostname) !== 0) this.pinning.set(url, target);
    return target;
  }

  /**
   * Hysteresis. A refused probe (the SSRF rules forbid the address) is no
   * evidence either way: dispatch cannot reach the agent, and neither may
   * a probe; the counters stay as they are.
   */
  private async judge(agent: AgentRecord, transport: string, outcome: ProbeOutcome, latencyMs: number, detail: string): Promise<void> {
    let s = this.states.get(agent.id);
    if (!s) {
      s = {
        transport,
        consecutiveFailures: 0,
        consecutiveSuccesses: 0,
        lastOutcome: outcome,
        lastLatencyMs: 0,
        lastAt: 0,
        lastDetail: "",
        // Still DEGRADED since a previous leader's probes made it so.
        degradedByProbes: this.inherited.has(agent.id) && agent.status === AgentStatus.DEGRADED,
      };
      this.states.set(agent.id, s);
    }
    s.lastOutcome = outcome;
    s.lastLatencyMs = Math.round(latencyMs * 10) / 10;
    s.lastAt = Date.now();
    s.lastDetail = detail;
    if (outcome === "refused") return;
    const { failuresToDegrade: n, successesToRecover: m } = this.config;
    if (outcome === "ok") {
      s.consecutiveSuccesses++;
      s.consecutiveFailures = 0;
      if (s.degradedByProbes && s.consecutiveSuccesses >= m) {
        s.degradedByProbes = false;
        const reason = `probe passed ${m} time${m > 1 ? "s" : ""} in a row (${transport})`;
        const record = await this.setStatus(agent.id, AgentStatus.DEGRADED, AgentStatus.HEALTHY, reason);
        // Forgotten after the status is back: a successor that still finds it checks the status first.
        await this.deps.leadership.degraded?.set(agent.id, false);
        await this.publish("agent.probe_recovered", record ?? agent, agent.status, reason);
      }
      return;
    }
    s.consecutiveFailures++;
    s.consecutiveSuccesses = 0;
    // At N, and again at every failure after it while the agent is HEALTHY (a heartbeat may have said so meanwhile).
    if (s.consecutiveFailures < n || (s.consecutiveFailures > n && agent.status !== AgentStatus.HEALTHY)) return;
    const k = s.consecutiveFailures;
    const reason = `probe failed ${k} time${k > 1 ? "s" : ""} in a row (${transport}): ${detail}`;
    // Said before it is done: a leader killed between the two leaves its successor the agent to recover.
    if (!s.degradedByProbes) await this.deps.leadership.degraded?.set(agent.id, true);
    const record = await this.setStatus(agent.id, AgentStatus.HEALTHY, AgentStatus.DEGRADED, reason);
    if (record) s.degradedByProbes = true;
    else if (!s.degradedByProbes) await this.deps.leadership.degraded?.set(agent.id, false);
    if (s.consecutiveFailures === n || record) await this.publish("agent.probe_failed", record ?? agent, agent.status, reason);
  }

  /**
   * The registry's status change, done the way its sweep does one: a
   * compare-and-set on the revision, then agent.status_changed with the
   * previous status and the reason. Only from `from`: an agent that is
   * DRAINING, or that another writer changed, is left alone.
   */
  private async setStatus(id: string, from: AgentStatus, to: AgentStatus, reason: string): Promise<AgentRecord | undefined> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.deps.store.get(id);
      if (!current || current.status !== from) return undefined;
      const patch = { status: to, revision: current.revision + 1 };
      if (!(await this.deps.store.update(current, patch))) continue;
      const record = patched(current, patch);
      await this.publish("agent.status_changed", record, from, reason);
      return record;
    }
    return undefined;
  }

  private async publish(type: EventType, agent: AgentRecord, previous: AgentStatus, reason: string): Promise<void> {
    try {
      await this.deps.bus.publish({
        type,
        tenant: agent.tenant,
        agentId: agent.id,
        payload: { case: "agentChange", value: { agent: agentMessageOnce(agent), previousStatus: previous, reason } },
      });
    } catch (err) {
      this.deps.log.error({ err, type, agentId: agent.id }, "event publish failed");
    }
  }
}

/** A failed probe's outcome and why. */
function classify(err: unknown, signal: AbortSignal | undefined): [ProbeOutcome, string] {
  if (signal?.reason instanceof ProbeTimeout) return ["timeout", signal.reason.message];
  if (err instanceof ProbeTimeout) return ["timeout", err.message];
  if (err instanceof DispatchRefused) return ["refused", err.message];
  if (err instanceof ProbeFailed) return [err.outcome, err.message];
  if (err instanceof HttpProbeFailed) return ["error", err.message];
  const e = err as NodeJS.ErrnoException;
  return ["error", `${e?.code ?? ""} ${e?.message ?? String(err)}`.trim().slice(0, 300)];
}

/** Nearest-rank percentile of sorted values (0 when empty). */
function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** A failed probe is worse than any passing one; among equals, the slower is worse. */
function worse(a: ProbeResult, b: ProbeResult): boolean {
  const fa = a.outcome !== "ok";
  const fb = b.outcome !== "ok";
  return fa !== fb ? fa : a.latencyMs > b.latencyMs;
}

/** Keeps the ROUND_WORST worst results, worst first (an insertion into a short sorted list). */
function keepWorst(worst: ProbeResult[], r: ProbeResult): void {
  if (worst.length === ROUND_WORST && !worse(r, worst[ROUND_WORST - 1]!)) return;
  let i = worst.length - (worst.length === ROUND_WORST ? 1 : 0);
  if (worst.length === ROUND_WORST) worst.pop();
  while (i > 0 && worse(r, worst[i - 1]!)) i--;
  worst.splice(i, 0, r);
}
