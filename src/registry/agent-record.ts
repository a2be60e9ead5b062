import type { JsonObject } from "@bufbuild/protobuf";
import { AgentStatus, Transport } from "../../gen/federation/v1/agent_pb.js";

export { AgentStatus, Transport };

/**
 * An agent as the registry stores it: plain data, times in epoch
 * milliseconds, so every store (memory, MongoDB) keeps it as it is.
 */
export interface AgentRecord {
  readonly id: string;
  /** Owner; every read and write is scoped to it (see security/). */
  readonly tenant: string;
  /** Published to every tenant for discovery and routing (admin only). */
  readonly shared: boolean;
  readonly name: string;
  readonly version: string;
  readonly status: AgentStatus;
  readonly endpoint: { readonly url: string; readonly transport: Transport };
  readonly capabilities: readonly CapabilityRecord[];
  readonly tools: readonly ToolRecord[];
  readonly labels: Readonly<Record<string, string>>;
  readonly load: number;
  readonly leaseTtlMs: number;
  readonly registeredAt: number;
  readonly lastHeartbeatAt: number;
  readonly leaseExpiresAt: number;
  /** Bumped on every write; stores use it for compare-and-set. */
  readonly revision: number;
}

export interface CapabilityRecord {
  readonly name: string;
  readonly tags: readonly string[];
}

export interface ToolRecord {
  readonly name: string;
  readonly description: string;
  readonly inputSchema: JsonObject | undefined;
}

/** What a write may change of a stored agent, besides its revision. */
export type AgentPatch = Partial<Pick<AgentRecord, "status" | "load" | "lastHeartbeatAt" | "leaseExpiresAt" | "shared">> & {
  readonly revision: number;
};

/**
 * The agent with a patch applied, written out field by field in one order:
 * every record then has the same shape in V8 (a spread `{ ...agent,
 * ...patch }` made another, and cost ~90 ns against ~5), so the code that
 * reads records on the hot paths stays monomorphic.
 */
export function patched(a: AgentRecord, p: AgentPatch): AgentRecord {
  return {
    id: a.id,
    tenant: a.tenant,
    shared: p.shared ?? a.shared,
    name: a.name,
    version: a.version,
    status: p.status ?? a.status,
    endpoint: a.endpoint,
    capabilities: a.capabilities,
    tools: a.tools,
    labels: a.labels,
    load: p.load ?? a.load,
    leaseTtlMs: a.leaseTtlMs,
    registeredAt: a.registeredAt,
    lastHeartbeatAt: p.lastHeartbeatAt ?? a.lastHeartbeatAt,
    leaseExpiresAt: p.leaseExpiresAt ?? a.leaseExpiresAt,
    revision: p.revision,
  };
}

/** Statuses an agent can be routed to, best first. */
export const ROUTABLE_STATUSES: readonly AgentStatus[] = [AgentStatus.HEALTHY, AgentStatus.DEGRADED];

/** Load buckets of a route tier: load in [k/20, (k+1)/20) is bucket k (1 and above: the last). */
export const LOAD_BUCKETS = 20;
/** Route tiers: HEALTHY and DEGRADED, each × LOAD_BUCKETS, numbered best first (0). */
export const ROUTE_TIERS = 2 * LOAD_BUCKETS;
/** The tier stores give an agent that is not routable: after every routable tier. */
export const NOT_ROUTABLE_TIER = ROUTE_TIERS;

/** What a route tier holds. */
export interface TierShape {
  readonly status: AgentStatus.HEALTHY | AgentStatus.DEGRADED;
  /** The load bucket: its agents report a load of at least bucket / LOAD_BUCKETS. */
  readonly bucket: number;
}

export function loadBucket(load: number): number {
  if (!(load > 0)) return 0;
  return Math.min(LOAD_BUCKETS - 1, Math.floor(load * LOAD_BUCKETS));
}

/**
 * Tiers in the order of the best score an agent in them can have (the
 * router's bound, router/scoring.ts, which a test checks never rises from
 * one tier to the next): a DEGRADED agent scores half, so it ranks as a
 * HEALTHY one of bucket 0.625·B + d/2 would (B buckets, d its own) — an idle
 * DEGRADED agent among healthy ones at 62.5% load — a HEALTHY one first on
 * a tie. Keys in half buckets keep it integer.
 */
export const TIERS: readonly TierShape[] = [
  ...Array.from({ length: LOAD_BUCKETS }, (_, b) => ({ status: AgentStatus.HEALTHY as const, bucket: b, key: 2 * b, healthy: 0 })),
  ...Array.from({ length: LOAD_BUCKETS }, (_, d) => ({ status: AgentStatus.DEGRADED as const, bucket: d, key: 1.25 * LOAD_BUCKETS + d, healthy: 1 })),
]
  .sort((x, y) => x.key - y.key || x.healthy - y.healthy)
  .map(({ status, bucket }) => ({ status, bucket }));

/** Tier by (DEGRADED ? LOAD_BUCKETS : 0) + bucket. */
const TIER_OF = new Uint8Array(ROUTE_TIERS);
TIERS.forEach((t, tier) => (TIER_OF[(t.status === AgentStatus.DEGRADED ? LOAD_BUCKETS : 0) + t.bucket] = tier));

/**
 * The agent's route tier: what the stores order routable agents by (best
 * first), from its status and load bucket only, so it changes only when one
 * of them does — a heartbeat that reports a new load within its bucket
 * moves nothing in an index. The router owns the score (router/scoring.ts)
 * and bounds each tier's.
 */
export function routeTier(agent: Pick<AgentRecord, "status" | "load">): number {
  if (agent.status === AgentStatus.HEALTHY) return TIER_OF[loadBucket(agent.load)]!;
  if (agent.status === AgentStatus.DEGRADED) return TIER_OF[LOAD_BUCKETS + loadBucket(agent.load)]!;
  return NOT_ROUTABLE_TIER;
}
