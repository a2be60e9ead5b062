import { randomUUID } from "node:crypto";
import type { Clock } from "../clock.js";
import { errors } from "../errors.js";
import type { EventBus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { AgentStatus, ROUTABLE_STATUSES, type AgentRecord } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";
import type { RouteInput } from "../validation/requests.js";
import { noCounters, type Counters } from "../health/telemetry.js";

export interface Candidate {
  readonly agent: AgentRecord;
  readonly score: number;
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
/** Upper bound on agents scored per decision. */
const MAX_SCORED = 10_000;

/**
 * Picks the agent for a task among healthy agents that have every requested
 * capability. The score is deliberately simple for now: spare capacity
 * (1 - load) weighs most, lease freshness breaks near-ties, and a DEGRADED
 * agent only gets work when nothing healthy is near it. Reputation and
 * circuit breakers will join the score later.
 */
export class Router {
  private readonly lastRouted = new Map<string, number>();

  constructor(
    private readonly store: AgentStore,
    private readonly bus: EventBus,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly counters: Counters = noCounters,
  ) {}

  /** Routes among the caller tenant's agents and shared ones. */
  async route(input: RouteInput, tenant: string): Promise<RouteDecision> {
    const now = this.clock.now();
    const capable = await this.store.query({
      tenant,
      capabilities: input.capabilities,
      tags: [],
      statuses: ROUTABLE_STATUSES,
      limit: MAX_SCORED,
    });
    const candidates = capable
      .filter((a) => !input.excludeAgentIds.has(a.id) && a.leaseExpiresAt > now)
      .map((agent) => ({ agent, score: score(agent, now) }))
      .sort((a, b) => b.score - a.score);
    if (candidates.length === 0) {
      this.counters.count("route_failures");
      throw await this.explainNoCandidate(input.capabilities, tenant);
    }
    this.counters.count("routes");

    const best = candidates[0]!.score;
    let chosen = candidates[0]!;
    for (const c of candidates) {
      if (best - c.score > TIE) break;
      if ((this.lastRouted.get(c.agent.id) ?? 0) < (this.lastRouted.get(chosen.agent.id) ?? 0)) chosen = c;
    }
    this.remember(chosen.agent.id, now);

    const routeId = randomUUID();
    const reason =
      `best of ${candidates.length} capable agent(s): score ${chosen.score.toFixed(3)} ` +
      `(load ${chosen.agent.load.toFixed(2)}, ${AgentStatus[chosen.agent.status]})`;
    try {
      await this.bus.publish({
        type: "task.routed",
        tenant,
        agentId: chosen.agent.id,
        payload: {
          case: "taskRouted",
          value: { routeId, capabilities: input.capabilities, score: chosen.score },
        },
      });
    } catch (err) {
      this.log.error({ err }, "event publish failed");
    }
    return {
      routeId,
      agent: chosen.agent,
      candidates: [chosen, ...candidates.filter((c) => c !== chosen)].slice(0, MAX_CANDIDATES_SHOWN),
      reason,
    };
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

function score(agent: AgentRecord, now: number): number {
  const capacity = 1 - Math.min(1, Math.max(0, agent.load));
  const freshness = Math.min(1, Math.max(0, (agent.leaseExpiresAt - now) / agent.leaseTtlMs));
  const s = (0.8 * capacity + 0.2 * freshness) * (agent.status === AgentStatus.DEGRADED ? 0.5 : 1);
  return Math.round(s * 10_000) / 10_000;
}
