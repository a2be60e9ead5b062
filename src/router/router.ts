import { randomUUID } from "node:crypto";
import type { Clock } from "../clock.js";
import { errors } from "../errors.js";
import type { EventBus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { AgentStatus, routeCeiling, routeScore, type AgentRecord } from "../registry/agent-record.js";
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
/** Upper bound on agents read per decision (expired leases and exclusions are skipped). */
const MAX_SCORED = 10_000;
/**
 * Tied agents read for the least-recently-routed tie-break: in an idle
 * fleet every capable agent ties, and reading them all would be a scan.
 * The choice is then within TIE of the best score; work still spreads,
 * since routed agents report more load.
 */
const MAX_TIED = 32;

/**
 * Picks the agent for a task among healthy agents that have every requested
 * capability, by `routeScore` (spare capacity, then lease freshness; DEGRADED
 * agents only when nothing healthy is near). The store hands agents over best
 * route ceiling first, so a decision reads only the agents that could still
 * win or make the shown top ten — an index walk, never a scan of the fleet.
 * Reputation and circuit breakers will join the score later.
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
    const { top, near, read } = await this.bestCandidates(input, tenant, now);
    if (top.length === 0) {
      this.counters.count("route_failures");
      throw await this.explainNoCandidate(input.capabilities, tenant);
    }
    this.counters.count("routes");

    let chosen = top[0]!;
    for (const c of near) {
      if ((this.lastRouted.get(c.agent.id) ?? 0) < (this.lastRouted.get(chosen.agent.id) ?? 0)) chosen = c;
    }
    this.remember(chosen.agent.id, now);

    // The decision's id is the task's id: a caller retrying a task passes it again.
    const routeId = input.taskId ?? randomUUID();
    const reason =
      `best of ${read} capable agent(s) read by spare capacity: score ${chosen.score.toFixed(3)} ` +
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
      candidates: [chosen, ...top.filter((c) => c !== chosen)].slice(0, MAX_CANDIDATES_SHOWN),
      reason,
    };
  }

  /**
   * Reads agents best ceiling first and stops when the next one can neither
   * come within TIE of the best score nor enter the top ten. `top` is the
   * exact top ten by score (best first), `near` every agent within TIE of the best.
   */
  private async bestCandidates(input: RouteInput, tenant: string, now: number) {
    const top: Candidate[] = [];
    let near: Candidate[] = [];
    let best = -Infinity;
    let read = 0;
    for await (const agent of this.store.routable(tenant, input.capabilities)) {
      const tenth = top.length < MAX_CANDIDATES_SHOWN ? -Infinity : top[MAX_CANDIDATES_SHOWN - 1]!.score;
      const ceiling = routeCeiling(agent);
      if (ceiling < Math.min(best - TIE, tenth) || read >= MAX_SCORED) break;
      // Enough ties in hand, and nobody later can beat them by more than a tie.
      if (near.length >= MAX_TIED && ceiling - best <= TIE) break;
      read++;
      if (input.excludeAgentIds.has(agent.id) || agent.leaseExpiresAt <= now) continue;
      const c = { agent, score: routeScore(agent, now) };
      let at = top.length;
      while (at > 0 && top[at - 1]!.score < c.score) at--;
      top.splice(at, 0, c);
      if (top.length > MAX_CANDIDATES_SHOWN) top.pop();
      if (c.score > best) {
        best = c.score;
        near = near.filter((n) => best - n.score <= TIE);
      }
      if (best - c.score <= TIE) near.push(c);
    }
    return { top, near, read };
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
