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

/**
 * How well an agent can take a task now, in [0, 1]: spare capacity
 * (1 − load) weighs most, lease freshness breaks near-ties, and a DEGRADED
 * agent scores half, so it only gets work when nothing healthy is near it.
 * Rounded to 4 decimals so that equal agents tie exactly.
 */
export function routeScore(agent: AgentRecord, now: number): number {
  const freshness = Math.min(1, Math.max(0, (agent.leaseExpiresAt - now) / agent.leaseTtlMs));
  return round4((0.8 * spareCapacity(agent) + 0.2 * freshness) * statusFactor(agent));
}

/**
 * The highest score the agent could have (a perfectly fresh lease). It does
 * not change with time, so stores keep routable agents ordered by it and the
 * router stops reading once no later agent can beat what it has.
 */
export function routeCeiling(agent: AgentRecord): number {
  return round4((0.8 * spareCapacity(agent) + 0.2) * statusFactor(agent));
}

function spareCapacity(agent: AgentRecord): number {
  return 1 - Math.min(1, Math.max(0, agent.load));
}

function statusFactor(agent: AgentRecord): number {
  return agent.status === AgentStatus.DEGRADED ? 0.5 : 1;
}

function round4(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
