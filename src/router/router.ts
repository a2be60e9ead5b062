import { randomUUID } from "node:crypto";
import type { Clock } from "../clock.js";
import { errors } from "../errors.js";
import type { EventBus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { AgentStatus, routeTier, type AgentRecord } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";
import type { RouteHintInput, RouteInput } from "../validation/requests.js";
import { noCounters, type Counters } from "../health/telemetry.js";
import { CircuitState } from "../../gen/federation/v1/event_pb.js";
import { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import { RouteStrategy } from "../../gen/federation/v1/router_service_pb.js";
import type { AttemptReport, OutcomeSink } from "../dispatch/outcomes.js";
import type { Subscription } from "../events/event-bus.js";
import { Breakers, type BreakerOptions } from "./breakers.js";
import { Reputation, defaultReputation, type Outcome, type ReputationOptions, type Standing } from "./reputation.js";
import type { OutcomeExchange, OutcomeLog } from "./outcome-sharing.js";
import { ReputationSync } from "./reputation-sync.js";
import { noContext, UNMENTIONED, type ContextSource } from "./context-hints.js";
import { capacityCeiling, capacityScore, tierReach } from "./scoring.js";

export interface Candidate {
  readonly agent: AgentRecord;
  /** capacity × reputation × labels × locality × context; at most its route tier's bound (scoring.ts). */
  readonly score: number;
  /** capacityScore: spare capacity and lease freshness, × status. */
  readonly capacity: number;
  /** The breaker is half-open and this candidate may take its trial. */
  readonly trial: boolean;
  /** Preferred labels: 0.5 + 0.5 × the share carried (1 without a hint). */
  readonly labels: number;
  /** 1 local, REMOTE_FACTOR for an agent with an origin (another federation's). */
  readonly locality: number;
  /** The context server's factor (1 without hints). */
  readonly context: number;
  /** Its latency estimate exceeds the hint's max latency: chosen only when nothing else can serve. */
  readonly slow: boolean;
  /** Filled for the candidates shown. */
  breakdown?: Breakdown;
}

export interface Breakdown extends Standing {
  readonly capacity: number;
  readonly circuit: number;
  readonly circuitState: CircuitState;
  readonly labels: number;
  readonly locality: number;
  readonly context: number;
  readonly overMaxLatency: boolean;
}

export interface RoutingOptions {
  readonly replicaId?: string;
  readonly reputation?: Partial<ReputationOptions>;
  readonly breakers?: Partial<BreakerOptions>;
  /** For p2c's random choice (tests make it repeatable). */
  readonly random?: () => number;
  /** Shares outcome batches with the other replicas (Redis); none: this replica learns alone. */
  readonly exchange?: OutcomeExchange;
  /** Keeps outcome batches across restarts (MongoDB); none: a restart starts from the prior. */
  readonly outcomeLog?: OutcomeLog;
  /** How long outcomes are summed before they are shared and persisted (default 250 ms). */
  readonly shareIntervalMs?: number;
  /** Ranking hints asked before each decision (CONTEXT_SERVER_URL); none: noContext. */
  readonly context?: ContextSource;
}

export interface ReportedOutcome extends Outcome {
  readonly agentId: string;
  readonly capabilities: readonly string[];
}

export interface RankOptions {
  /** How the first candidate is chosen (default p2c); a pending half-open trial goes first regardless. */
  readonly strategy?: RouteStrategy;
  /** What the agents are ranked for: one capability selects its own reputation evidence; also round robin's key. */
  readonly capabilities?: readonly string[];
  /** Preferred labels and max latency, as in Route. */
  readonly hint?: RouteHintInput;
  readonly now?: number;
}

export interface RouteDecision {
  readonly routeId: string;
  readonly agent: AgentRecord;
  readonly candidates: readonly Candidate[];
  readonly reason: string;
}

/** Candidates returned to the caller beside the chosen one. */
const MAX_CANDIDATES_SHOWN = 10;
/** Scores this close count as a tie, broken by who was routed to least recently. */
const TIE = 0.01;
/** Upper bound on agents read per decision (expired leases and exclusions are skipped). */
const MAX_SCORED = 10_000;
/**
 * Tied agents read for the least-recently-routed tie-break: in an idle
 * fleet every capable agent ties, and reading them all would be a scan.
 * The choice is then within TIE of the best score; work still spreads,
 * since routed agents report more load.
 */
const MAX_TIED = 32;
/** p2c, round_robin and least_loaded choose among candidates scoring at least this share of the best. */
const POOL_FLOOR = 0.5;
/**
 * Agents read at most when the request prefers labels: a factor down to 0.5
 * lowers the best score, so the walk (exact, stopping on the tier bound)
 * may read down to half the best bound — bounded here instead of MAX_SCORED.
 */
const MAX_SCORED_HINTED = 1_000;
/** Locality: an agent of another federation (it has an origin) scores at most this share of a local one. */
export const REMOTE_FACTOR = 0.5;
/** Preferred labels: an agent carrying none scores this share of one carrying all. */
const LABELS_FLOOR = 0.5;

const NO_AGENTS: readonly AgentRecord[] = [];

/** Remote agents for a Route: given, or fetched only when no local agent can serve (scope AUTO). */
export type RemoteAgents = readonly AgentRecord[] | (() => Promise<readonly AgentRecord[]>);

/** Remote agents carry their origin (part 7, federation); local records have none. */
function isRemote(agent: AgentRecord): boolean {
  return (agent as AgentRecord & { readonly origin?: unknown }).origin != null;
}

/**
 * Picks the agent for a task among healthy agents that have every requested
 * capability, by the score of scoring.ts: capacity (spare capacity, then
 * lease freshness; DEGRADED agents only when nothing healthy is near) ×
 * reputation (quality, latency, uptime) × circuit × hint factors, each
 * factor with a stated upper bound. The store hands agents over best route
 * tier first (status and load bucket, all it indexes), so a decision reads
 * only the agents whose tier's bound could still win or make the shown top
 * ten — an index walk, never a scan of the fleet.
 */
export class Router {
  private readonly lastRouted = new Map<string, number>();
  private readonly roundRobin = new Map<string, string>();
  readonly reputation: Reputation;
  readonly breakers: Breakers;
  /** Outcomes to and from the other replicas and the log. */
  readonly sync: ReputationSync;
  private readonly subscription: Subscription;
  private readonly random: () => number;
  private readonly replicaId: string;
  private readonly context: ContextSource;

  /** Dispatch attempts feed reputation and breakers through this sink. */
  readonly outcomes: OutcomeSink = {
    attemptFinished: (r: AttemptReport) => this.attemptFinished(r),
  };

  constructor(
    private readonly store: AgentStore,
    private readonly bus: EventBus,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly counters: Counters = noCounters,
    opts: RoutingOptions = {},
  ) {
    this.replicaId = opts.replicaId ?? "local";
    this.random = opts.random ?? Math.random;
    this.context = opts.context ?? noContext;
    this.reputation = new Reputation(opts.reputation);
    this.breakers = new Breakers(bus, this.replicaId, log, opts.breakers);
    this.sync = new ReputationSync(this.reputation, opts.exchange, opts.outcomeLog, clock, log, {
      replicaId: this.replicaId,
      intervalMs: opts.shareIntervalMs,
      halfLifeMs: opts.reputation?.halfLifeMs ?? defaultReputation.halfLifeMs,
    });
    // Uptime from status history; other replicas' breaker evidence.
    this.subscription = bus.subscribe(
      {
        tenant: "",
        allTenants: true,
        agentId: "",
        types: new Set([
          "agent.registered",
          "agent.status_changed",
          "agent.expired",
          "agent.unregistered",
          "agent.circuit_opened",
          "agent.circuit_closed",
        ]),
      },
      undefined,
      // Agent events are read without their message (PublishedEvent.agentStatus):
      // every registration passes here, and nothing else may need one.
      (event) => {
        const now = this.clock.now();
        const type = event.type;
        if (type.startsWith("agent.circuit_")) {
          const p = event.message.payload;
          if (p.case !== "circuitChange") return;
          const c = p.value;
          if (c.replicaId !== "" && c.replicaId !== this.replicaId) this.breakers.applyRemote(event.agentId, event.tenant, c.state);
        } else if (type === "agent.unregistered") {
          this.reputation.forget(event.agentId);
        } else if (type === "agent.expired") {
          this.reputation.status(event.agentId, false, now);
        } else {
          const st = event.agentStatus;
          if (st !== undefined) this.reputation.status(event.agentId, st === AgentStatus.HEALTHY || st === AgentStatus.DEGRADED, now);
        }
      },
    );
  }

  /** Stops following events and breakers; resolves once the last outcomes were handed to the exchange and the log (bounded). */
  stop(): Promise<void> {
    this.subscription.close();
    this.breakers.stop();
    this.context.close();
    return this.sync.close();
  }

  /** ReportOutcome: a caller's own call to an agent of its tenant (or a shared one). */
  async reportOutcome(tenant: string, o: ReportedOutcome): Promise<Breakdown> {
    const agent = await this.store.get(o.agentId);
    if (!agent || (agent.tenant !== tenant && !agent.shared)) throw errors.agentNotFound(o.agentId);
    const now = this.clock.now();
    this.sync.record(agent.id, o.capabilities, o, now);
    this.breakers.record(agent.id, agent.tenant, o.success, o.success ? "ok" : "reported failure");
    const locality = isRemote(agent) ? REMOTE_FACTOR : 1;
    return this.breakdown({ agent, score: 0, capacity: capacityScore(agent, now), trial: false, labels: 1, locality, context: 1, slow: false }, o.capabilities[0], now);
  }

  private attemptFinished(r: AttemptReport): void {
    // Cancelled by the caller: says nothing about the agent.
    if (r.outcome === AttemptOutcome.UNSPECIFIED) return;
    const success = r.outcome === AttemptOutcome.OK;
    const sent = r.outcome !== AttemptOutcome.REFUSED && r.outcome !== AttemptOutcome.UNREACHABLE;
    this.sync.record(r.agentId, r.capabilities, { success, latencyMs: sent ? r.latencyMs : undefined }, this.clock.now());
    this.breakers.record(r.agentId, r.agentTenant ?? r.tenant, success, AttemptOutcome[r.outcome]);
  }

  private breakdown(c: Candidate, capability: string | undefined, now: number): Breakdown {
    const state = this.breakers.state(c.agent.id);
    const s = this.reputation.standing(c.agent.id, capability, now);
    // Written out field by field: a spread into this many fields left V8's fast path (~0.5 µs each, 10 per Route).
    return {
      quality: s.quality,
      latency: s.latency,
      uptime: s.uptime,
      latencyEwmaMs: s.latencyEwmaMs,
      latencyP95Ms: s.latencyP95Ms,
      latencyP99Ms: s.latencyP99Ms,
      evidence: s.evidence,
      capacity: c.capacity,
      circuit: state === CircuitState.OPEN ? 0 : 1,
      circuitState: state,
      labels: c.labels,
      locality: c.locality,
      context: c.context,
      overMaxLatency: c.slow,
    };
  }

  /**
   * Routes among the caller tenant's agents and shared ones, and the remote
   * agents given (scope FEDERATED or AUTO: records with an origin, keyed
   * "<peer id>/<id there>"), which are scored alike with locality ×0.5.
   * `remote` as a function (scope AUTO) is asked only when no local agent
   * can serve, after the one read of the local ones.
   */
  async route(input: RouteInput, tenant: string, remote: RemoteAgents = NO_AGENTS): Promise<RouteDecision> {
    const now = this.clock.now();
    let { top, near, read, slow, fallback, skippedSlow } = await this.bestCandidates(input, tenant, now, remote);
    if (top.length === 0 && !slow && !fallback) {
      this.counters.count("route_failures");
      throw await this.explainNoCandidate(input.capabilities, tenant);
    }
    this.counters.count("routes");
    let boostedByContext = false;
    let contextNote = "";
    if (this.context.enabled) {
      // The context server re-ranks the shortlist (the top ten read and the ties).
      const shortlist = [...new Set([...top, ...near, ...(slow ? [slow] : []), ...(fallback ? [fallback] : [])])];
      const pending = this.context.hints(tenant, input.capabilities, shortlist.map((c) => c.agent.id));
      const answer = pending instanceof Promise ? await pending : pending;
      if (answer.factors) {
        const f = answer.factors;
        const boosted = (c: Candidate): Candidate => {
          const context = f.get(c.agent.id) ?? UNMENTIONED;
          return { ...c, score: c.score * context, context };
        };
        const mine = [...new Set([...top, ...near])].map(boosted).sort((a, b) => b.score - a.score);
        top = mine.slice(0, MAX_CANDIDATES_SHOWN);
        near = mine.filter((c) => mine[0]!.score - c.score <= TIE);
        if (slow) slow = boosted(slow);
        if (fallback) fallback = boosted(fallback);
        boostedByContext = true;
      } else if (answer.unavailable) {
        contextNote = `; ${answer.unavailable}: ranked without it`;
      }
    }
    const { ranked, how } = this.rank(top, near, [slow ? [slow] : [], fallback ? [fallback] : []], input.strategy, input.capabilities);
    const chosen = ranked[0]!;
    let note = "";
    if (top.length === 0 && !chosen.slow) note = "; every capable agent's circuit is open";
    else if (chosen.slow) note = "; every other candidate is over the hint's max latency or open";
    if (skippedSlow > 0 && !chosen.slow) note += `; ${skippedSlow} over the hint's max latency skipped`;

    // The decision's id is the task's id: a caller retrying a task passes it again.
    const routeId = input.taskId ?? randomUUID();
    const shown = ranked.slice(0, MAX_CANDIDATES_SHOWN);
    for (const c of shown) c.breakdown = this.breakdown(c, input.capabilities[0], now);
    const b = chosen.breakdown!;
    const hinted =
      (input.hint?.preferredLabels.length ? ` × labels ${chosen.labels.toFixed(3)}` : "") +
      (chosen.locality !== 1 ? ` × locality ${chosen.locality.toFixed(3)}` : "") +
      (boostedByContext ? ` × context ${chosen.context.toFixed(3)}` : "");
    const reason =
      `${how} of ${read} capable agent(s) read: score ${chosen.score.toFixed(3)} = capacity ${b.capacity.toFixed(3)} ` +
      `(load ${chosen.agent.load.toFixed(2)}, ${AgentStatus[chosen.agent.status]}) × quality ${b.quality.toFixed(3)} ` +
      `× latency ${b.latency.toFixed(3)} × uptime ${b.uptime.toFixed(3)}${hinted}${note}${contextNote}`;
    this.committed(tenant, routeId, shown, input.capabilities, now);
    return {
      routeId,
      agent: chosen.agent,
      candidates: shown,
      reason,
    };
  }

  /**
   * Ranks the given agents the way Route ranks the ones it reads: those
   * that cannot take work now (another tenant's unshared agent, not
   * routable, lease over) are left out; the half-open trial comes first,
   * else the strategy's choice, then the rest best first, open circuits
   * last. Every candidate carries its breakdown. Changes nothing: a caller
   * that sends the task to the first one calls `commit`.
   */
  rankAgents(tenant: string, agents: Iterable<AgentRecord>, opts: RankOptions = {}): Candidate[] {
    const now = opts.now ?? this.clock.now();
    const capabilities = opts.capabilities ?? [];
    const capability = capabilities.length === 1 ? capabilities[0] : undefined;
    const top: Candidate[] = [];
    const slow: Candidate[] = [];
    const open: Candidate[] = [];
    for (const agent of agents) {
      const s = this.candidate(tenant, agent, capability, now, opts.hint);
      if (s) (s.open ? open : s.candidate.slow ? slow : top).push(s.candidate);
    }
    if (top.length === 0 && slow.length === 0 && open.length === 0) return [];
    // Stable: equal scores keep the given order, as Route keeps its read order.
    top.sort((a, b) => b.score - a.score);
    slow.sort((a, b) => b.score - a.score);
    open.sort((a, b) => b.score - a.score);
    const best = top[0]?.score ?? 0;
    const { ranked } = this.rank(top, top.filter((c) => best - c.score <= TIE), [slow, open], opts.strategy, capabilities);
    for (const c of ranked) c.breakdown = this.breakdown(c, capabilities[0], now);
    return ranked;
  }

  /**
   * The first of `ranked` takes the task: it gets the half-open trial if
   * pending, becomes the most recently routed (the tie-break), and
   * task.routed is published.
   */
  async commit(tenant: string, routeId: string, ranked: readonly Candidate[], capabilities: readonly string[]): Promise<void> {
    this.committed(tenant, routeId, ranked, capabilities, this.clock.now());
  }

  /** commit without a promise to wait for: a bus accepts an event synchronously (publish never waits on a backend). */
  private committed(tenant: string, routeId: string, ranked: readonly Candidate[], capabilities: readonly string[], now: number): void {
    const chosen = ranked[0];
    if (!chosen) return;
    if (chosen.trial) this.breakers.takeTrial(chosen.agent.id, now);
    this.remember(chosen.agent.id, now);
    this.bus
      .publish({
        type: "task.routed",
        tenant,
        agentId: chosen.agent.id,
        payload: {
          case: "taskRouted",
          // The request's list (never changed after parsing), not a copy per event.
          value: { routeId, capabilities: capabilities as string[], score: chosen.score },
        },
      })
      .catch((err: unknown) => this.log.error({ err }, "event publish failed"));
  }

  /** The agent scored, or undefined when it cannot take work now. */
  private candidate(
    tenant: string,
    agent: AgentRecord,
    capability: string | undefined,
    now: number,
    hint: RouteHintInput | undefined,
  ): { candidate: Candidate; open: boolean } | undefined {
    if (agent.tenant !== tenant && !agent.shared) return undefined;
    if ((agent.status !== AgentStatus.HEALTHY && agent.status !== AgentStatus.DEGRADED) || agent.leaseExpiresAt <= now) return undefined;
    const capacity = capacityScore(agent, now);
    const admission = this.breakers.admits(agent.id, now);
    const locality = isRemote(agent) ? REMOTE_FACTOR : 1;
    let labels = 1;
    let slow = false;
    if (hint) {
      const preferred = hint.preferredLabels;
      if (preferred.length > 0) {
        let carried = 0;
        for (const [k, v] of preferred) if (agent.labels[k] === v) carried++;
        labels = LABELS_FLOOR + (1 - LABELS_FLOOR) * (carried / preferred.length);
      }
      if (hint.maxLatencyMs !== undefined) slow = (this.reputation.latencyEstimate(agent.id, capability) ?? 0) > hint.maxLatencyMs;
    }
    // Each factor is within its bound (scoring.ts FACTOR_BOUNDS): the score stays under the tier bound the walk stops on.
    const score = capacity * this.reputation.factor(agent.id, capability, now) * labels * locality;
    return { candidate: { agent, score, capacity, trial: admission === "trial", labels, locality, context: 1, slow }, open: admission === "open" };
  }

  /**
   * The final order. `top` is best first, `near` the candidates within TIE
   * of the best (some may be beyond `top`), `open` those whose circuit is
   * open, best first: chosen only when nothing else is.
   */
  private rank(
    top: Candidate[],
    near: Candidate[],
    later: Candidate[][],
    strategy: RouteStrategy | undefined,
    capabilities: readonly string[],
  ): { ranked: Candidate[]; how: string } {
    let i = 0;
    if (top.length === 0) {
      // Nothing preferable: the first tier that has anyone (over the max
      // latency, then open circuits) — better one of them than none.
      while (later[i]!.length === 0) i++;
      top = later[i++]!;
      near = top.filter((c) => top[0]!.score - c.score <= TIE);
    }
    let trial: Candidate | undefined;
    for (const c of top) if (c.trial && !trial) trial = c;
    if (!trial) for (const c of near) if (c.trial && !trial) trial = c;
    const [chosen, how] = trial ? [trial, "half-open circuit trial"] : this.choose(strategy ?? RouteStrategy.UNSPECIFIED, top, near, capabilities);
    // The chosen one, the rest of its tier, then the tiers after it (no spreads or flat on the hot path).
    const ranked: Candidate[] = [chosen];
    for (const c of top) if (c !== chosen) ranked.push(c);
    for (; i < later.length; i++) for (const c of later[i]!) ranked.push(c);
    return { ranked, how };
  }

  /**
   * Reads agents best route tier first and stops at the first one whose
   * tier's bound (the best score anyone from that tier on could have) can
   * neither come within TIE of the best score nor enter the top ten. `top`
   * is the exact top ten by score (best first), `near` every agent within
   * TIE of the best.
   */
  private async bestCandidates(input: RouteInput, tenant: string, now: number, remoteAgents: RemoteAgents) {
    const top: Candidate[] = [];
    let near: Candidate[] = [];
    let best = -Infinity;
    let read = 0;
    let fallback: Candidate | undefined;
    let slow: Candidate | undefined;
    let skippedSlow = 0;
    const capability = input.capabilities.length === 1 ? input.capabilities[0] : undefined;
    const hint = input.hint;
    const maxRead = hint?.preferredLabels.length ? MAX_SCORED_HINTED : MAX_SCORED;
    const excluded = input.excludeAgentIds.size > 0 ? input.excludeAgentIds : undefined;
    /** Reads one agent; false: stop, nobody later can matter. */
    const offer = (agent: AgentRecord): boolean => {
      const tenth = top.length < MAX_CANDIDATES_SHOWN ? -Infinity : top[MAX_CANDIDATES_SHOWN - 1]!.score;
      // A hair above the bound: float noise can never stop the walk early.
      const reach = tierReach(routeTier(agent)) + 1e-9;
      if (reach < Math.min(best - TIE, tenth) || read >= maxRead) return false;
      // Enough ties in hand, and nobody later can beat them by more than a tie.
      if (near.length >= MAX_TIED && reach - best <= TIE) return false;
      read++;
      if (excluded?.has(agent.id)) return true;
      // Later agents of its tier may still matter, this one cannot: not scored (no lookups, nothing allocated).
      if (capacityCeiling(agent) < Math.min(best - TIE, tenth)) return true;
      const s = this.candidate(tenant, agent, capability, now, hint);
      if (!s) return true;
      const c = s.candidate;
      if (s.open) {
        if (!fallback || c.score > fallback.score) fallback = c;
        return true;
      }
      if (c.slow) {
        skippedSlow++;
        if (!slow || c.score > slow.score) slow = c;
        return true;
      }
      let at = top.length;
      while (at > 0 && top[at - 1]!.score < c.score) at--;
      top.splice(at, 0, c);
      if (top.length > MAX_CANDIDATES_SHOWN) top.pop();
      if (c.score > best) {
        best = c.score;
        // In place: a new best drops the ties it no longer has.
        let kept = 0;
        for (const n of near) if (best - n.score <= TIE) near[kept++] = n;
        near.length = kept;
      }
      if (best - c.score <= TIE) near.push(c);
      return true;
    };
    const agents = this.store.routable(tenant, input.capabilities);
    // The memory store's walk is synchronous: read it without a promise per agent (for await made one each).
    if (Symbol.iterator in agents) {
      for (const agent of agents) if (!offer(agent)) break;
    } else {
      for await (const agent of agents) if (!offer(agent)) break;
    }
    // Remote agents (scope FEDERATED / AUTO; a handful, in no order): each offered; one that cannot matter is skipped, not a stop.
    // AUTO's are fetched only when nothing local could serve (what would otherwise fail the Route).
    const remote =
      typeof remoteAgents !== "function" ? remoteAgents : top.length === 0 && !slow && !fallback ? await remoteAgents() : NO_AGENTS;
    for (const agent of remote) offer(agent);
    return { top, near, read, slow, fallback, skippedSlow };
  }

  /** Applies the request's strategy to the candidates read (none open, no trial pending). */
  private choose(strategy: RouteStrategy, top: Candidate[], near: Candidate[], capabilities: readonly string[]): [Candidate, string] {
    const lru = (a: Candidate, b: Candidate) => ((this.lastRouted.get(b.agent.id) ?? 0) < (this.lastRouted.get(a.agent.id) ?? 0) ? b : a);
    if (strategy === RouteStrategy.BEST) {
      let chosen = top[0]!;
      for (const c of near) chosen = lru(chosen, c);
      return [chosen, "best"];
    }
    const floor = POOL_FLOOR * top[0]!.score;
    // top ∪ near (near may repeat some of top), at least the floor.
    const pool: Candidate[] = [];
    for (const c of top) if (c.score >= floor) pool.push(c);
    for (const c of near) if (c.score >= floor && !top.includes(c)) pool.push(c);
    if (strategy === RouteStrategy.ROUND_ROBIN) {
      const key = capabilities.join("\u0000");
      const last = this.roundRobin.get(key) ?? "";
      pool.sort((a, b) => (a.agent.id < b.agent.id ? -1 : 1));
      const chosen = pool.find((c) => c.agent.id > last) ?? pool[0]!;
      this.roundRobin.delete(key);
      this.roundRobin.set(key, chosen.agent.id);
      if (this.roundRobin.size > 10_000) this.roundRobin.delete(this.roundRobin.keys().next().value!);
      return [chosen, "round robin"];
    }
    if (strategy === RouteStrategy.LEAST_LOADED) {
      let chosen = pool[0]!;
      for (const c of pool) if (c.agent.load < chosen.agent.load || (c.agent.load === chosen.agent.load && c.score > chosen.score)) chosen = c;
      return [chosen, "least loaded"];
    }
    // p2c: the least recently routed of the pool and a random other; the
    // higher score wins, a tie (within TIE) going to the least recently routed.
    let at = 0;
    let oldest = this.lastRouted.get(pool[0]!.agent.id) ?? 0;
    for (let k = 1; k < pool.length; k++) {
      const last = this.lastRouted.get(pool[k]!.agent.id) ?? 0;
      if (last < oldest) {
        oldest = last;
        at = k;
      }
    }
    const first = pool[at]!;
    if (pool.length === 1) return [first, "p2c"];
    // A random one of the others (the pool without `first`, in order).
    let other = Math.min(pool.length - 2, Math.floor(this.random() * (pool.length - 1)));
    if (other >= at) other++;
    const second = pool[other]!;
    return [second.score - first.score > TIE ? second : first, "p2c"];
  }

  /** FAILED_PRECONDITION names a capability nobody offers; UNAVAILABLE says none can take work now. */
  private async explainNoCandidate(capabilities: readonly string[], tenant: string): Promise<Error> {
    for (const c of capabilities) {
      const any = await this.store.query({ tenant, capabilities: [c], tags: [], statuses: [], limit: 1 });
      if (any.length === 0) return errors.noAgentOffers(c);
    }
    const registered = await this.store.query({ tenant, capabilities, tags: [], statuses: [], limit: MAX_SCORED });
    if (registered.length === 0) return errors.noAgentOffers(capabilities.join(" + "));
    return errors.noHealthyAgent(capabilities, registered.length);
  }

  private remember(id: string, now: number): void {
    this.lastRouted.delete(id);
    this.lastRouted.set(id, now);
    // Insertion order is recency order: drop the oldest beyond a bound.
    if (this.lastRouted.size > 100_000) {
      this.lastRouted.delete(this.lastRouted.keys().next().value!);
    }
  }
}
