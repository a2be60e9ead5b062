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

/** Statuses an agent can be routed to, best first. */
export const ROUTABLE_STATUSES: readonly AgentStatus[] = [AgentStatus.HEALTHY, AgentStatus.DEGRADED];
