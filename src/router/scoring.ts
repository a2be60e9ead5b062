/**
 * The route score, owned by the router. Stores keep only what changes
 * rarely — status and a load bucket, as the agent's route tier
 * (registry/agent-record.ts `routeTier`) — and hand routable agents over
 * best tier first; everything that moves per outcome (reputation, breakers)
 * stays here. A decision stops reading once a tier's bound (the best score
 * any of its agents could have) can no longer matter, so it reads tens of
 * agents, not every capable one.
 *
 *   score = capacity × quality × latency × uptime × circuit × labels × locality × context
 *   capacity = (0.8 · (1 − load) + 0.2 · lease freshness) × status   (status: 1 HEALTHY, 0.5 DEGRADED)
 *
 * Each factor after capacity has a stated upper bound (FACTOR_BOUNDS); a
 * new factor must state its own, or the walk would stop too early.
 */
import { AgentStatus, LOAD_BUCKETS, ROUTE_TIERS, TIERS, type AgentRecord } from "../registry/agent-record.js";

/** Weight of spare capacity (1 − load); lease freshness has the rest. */
const LOAD_WEIGHT = 0.8;
const FRESHNESS_WEIGHT = 1 - LOAD_WEIGHT;
/** A DEGRADED agent's share of a HEALTHY one's capacity: it gets work only when nothing healthy is near. */
export const DEGRADED_FACTOR = 0.5;

/**
 * The upper bound of every factor that multiplies capacity:
 * reputation's quality, latency and uptime (router/reputation.ts: each in
 * [0, 1], 1 without evidence); the circuit (0 open — chosen only when
 * nothing else can serve — 1 otherwise); preferred labels (0.5 … 1);
 * locality (0.5 remote, 1 local); the context server's factor
 * (router/context-hints.ts: 0.5 + 0.5·boost, boosts validated to [0, 1],
 * so at most 1; applied after the walk, to the shortlist it read).
 */
export const FACTOR_BOUNDS = {
  quality: 1,
  latency: 1,
  uptime: 1,
  circuit: 1,
  labels: 1,
  locality: 1,
  context: 1,
} as const;

/** The product of the factors' bounds: what capacity's bound is multiplied by. */
const FACTORS_BOUND = Object.values(FACTOR_BOUNDS).reduce((p: number, b: number) => p * b, 1);

export function statusFactor(status: AgentStatus): number {
  return status === AgentStatus.DEGRADED ? DEGRADED_FACTOR : 1;
}

/**
 * How well an agent can take a task now, in [0, 1]: spare capacity
 * (1 − load) weighs most, lease freshness breaks near-ties, and a DEGRADED
 * agent scores half. Rounded to 4 decimals so that equal agents tie exactly.
 */
export function capacityScore(agent: AgentRecord, now: number): number {
  const freshness = Math.min(1, Math.max(0, (agent.leaseExpiresAt - now) / agent.leaseTtlMs));
  const spare = 1 - Math.min(1, Math.max(0, agent.load));
  return round4((LOAD_WEIGHT * spare + FRESHNESS_WEIGHT * freshness) * statusFactor(agent.status));
}

/**
 * The best score this agent could have (its capacity with a perfectly fresh
 * lease × the factors' bounds): the walk skips scoring an agent whose own
 * ceiling cannot matter, while it still reads the rest of its tier.
 */
export function capacityCeiling(agent: AgentRecord): number {
  const spare = 1 - Math.min(1, Math.max(0, agent.load));
  return round4((LOAD_WEIGHT * spare + FRESHNESS_WEIGHT) * statusFactor(agent.status)) * FACTORS_BOUND;
}

/**
 * The best score an agent of the tier could have: capacity at the bucket's
 * lowest load with a perfectly fresh lease, × its status factor × the
 * factors' bounds. Exact to 4 decimals (integer arithmetic), so that it is
 * never below a capacity score (rounded to 4 decimals) of the tier.
 */
export function tierBound(tier: number): number {
  const t = TIERS[tier];
  if (!t) return 0;
  // (0.8 · (1 − b/B) + 0.2) in ten-thousandths.
  const units = Math.round(LOAD_WEIGHT * 10_000) * (LOAD_BUCKETS - t.bucket) / LOAD_BUCKETS + Math.round(FRESHNESS_WEIGHT * 10_000);
  return (Math.ceil(units * statusFactor(t.status)) / 10_000) * FACTORS_BOUND;
}

/**
 * Per tier, the best score of an agent in it or in any later tier: where
 * the walk may stop. The registry numbers tiers so that their bounds never
 * rise (then this is tierBound itself); taking the maximum of the rest keeps
 * the decision exact even if they did.
 */
const REACH: readonly number[] = (() => {
  const out = new Array<number>(ROUTE_TIERS).fill(0);
  let max = 0;
  for (let t = ROUTE_TIERS - 1; t >= 0; t--) out[t] = max = Math.max(max, tierBound(t));
  return out;
})();

/** The best score any agent handed over from this tier on could have; Infinity for a tier outside the routable ones (never a reason to stop). */
export function tierReach(tier: number): number {
  return tier >= 0 && tier < ROUTE_TIERS ? REACH[tier]! : Infinity;
}

function round4(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
