import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";
import { OriginSchema, type Origin } from "../../gen/federation/v1/origin_pb.js";
import { Transport, type AgentRecord } from "../registry/agent-record.js";

/**
 * A remote agent as the router sees it: an AgentRecord (so it is scored,
 * broken and remembered like a local one) whose id is the key
 * "<peer id>/<its id there>" — a "/" is in no local id (idPattern), so its
 * reputation and breaker never mix with a local agent's — and which
 * carries its origin. The router's locality factor (×0.5) comes from that
 * origin; dispatch sends its tasks through its home federation, never to
 * its endpoint (which is not kept: the record names the peer's URL).
 */
export interface RemoteAgentRecord extends AgentRecord {
  readonly origin: Origin;
}

export function isRemoteAgent(agent: AgentRecord): agent is RemoteAgentRecord {
  return (agent as Partial<RemoteAgentRecord>).origin != null;
}

/** The router's key of a peer's agent. */
export function remoteAgentKey(peerId: string, remoteId: string): string {
  return `${peerId}/${remoteId}`;
}

/** The Agent message of each remote record, with its origin, for Route's answer. */
const messages = new WeakMap<AgentRecord, Agent>();

/**
 * The record of an agent a peer answered with (already stamped with its
 * origin by the Federation, and not to be mutated: it may be the remote
 * cache's), offered to `tenant`'s Route. Times are the
 * peer's (loopback or NTP-synced hosts; a skewed clock only shifts the
 * lease-freshness fifth of the capacity score).
 */
export function remoteAgentRecord(agent: Agent, tenant: string, now: number): RemoteAgentRecord {
  const origin = agent.origin ?? create(OriginSchema, { remoteId: agent.id });
  const leaseTtlMs = agent.leaseTtl ? Number(agent.leaseTtl.seconds) * 1000 + Math.floor(agent.leaseTtl.nanos / 1e6) : 0;
  const record: RemoteAgentRecord = {
    id: remoteAgentKey(origin.peerId, origin.remoteId || agent.id),
    tenant,
    shared: false,
    name: agent.name,
    version: agent.version,
    status: agent.status,
    endpoint: { url: origin.peerUrl, transport: Transport.UNSPECIFIED },
    capabilities: agent.capabilities.map((c) => ({ name: c.name, tags: c.tags })),
    tools: [],
    labels: agent.labels,
    load: agent.load,
    leaseTtlMs: Math.max(1, leaseTtlMs),
    registeredAt: agent.registeredAt ? timestampMs(agent.registeredAt) : now,
    lastHeartbeatAt: agent.lastHeartbeatAt ? timestampMs(agent.lastHeartbeatAt) : now,
    leaseExpiresAt: agent.leaseExpiresAt ? timestampMs(agent.leaseExpiresAt) : now,
    revision: Number(agent.revision),
    origin,
  };
  messages.set(record, agent);
  return record;
}

/** The Agent message of a remote record (with its origin), or undefined for a local one. */
export function remoteAgentMessage(agent: AgentRecord): Agent | undefined {
  return messages.get(agent);
}
