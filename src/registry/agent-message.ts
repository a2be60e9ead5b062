import { create } from "@bufbuild/protobuf";
import { LRUCache } from "lru-cache";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  AgentSchema,
  CapabilitySchema,
  EndpointSchema,
  ToolSchema,
  type Agent,
  type Capability,
  type Endpoint,
  type Tool,
} from "../../gen/federation/v1/agent_pb.js";
import type { AgentRecord, ToolRecord } from "./agent-record.js";

/**
 * Records are immutable (every change makes a new one), so a record's
 * message is built once and reused by every read that lists it; building
 * it (timestamps, Struct schemas) was the larger part of a Discover, and
 * the transport caches its encoding per message too. Bounded, so memory
 * does not grow with the fleet: the agents being read stay cached.
 * Callers must not mutate the returned message.
 */
const cache = new LRUCache<AgentRecord, Agent>({ max: 10_000 });

/**
 * The message types this module builds and never mutates: transports may
 * cache their encodings per object (transport/message-encoding.ts).
 */
export const IMMUTABLE_MESSAGE_TYPES: ReadonlySet<string> = new Set(
  [AgentSchema, EndpointSchema, CapabilitySchema, ToolSchema].map((s) => s.typeName),
);

/** The contract's view of a stored agent, for reads (cached). */
export function toAgentMessage(a: AgentRecord): Agent {
  let message = cache.get(a);
  if (!message) cache.set(a, (message = build(a)));
  return message;
}

/**
 * The same, not cached: for answers to writes and for events, whose record
 * the next heartbeat replaces anyway.
 */
export function agentMessageOnce(a: AgentRecord): Agent {
  return cache.get(a) ?? build(a);
}

/**
 * The sub-messages of recent agents that a heartbeat does not change. A
 * heartbeat's record keeps the endpoint, capabilities and tools objects of
 * the record before it, so their messages (and, in the transport, their
 * encodings: tool schemas are most of an agent's bytes) are reused across
 * revisions instead of being built and encoded again on every heartbeat.
 * One entry per agent, keyed by its tools array; bounded like the agent cache.
 */
interface Parts {
  readonly endpointOf: AgentRecord["endpoint"];
  readonly capabilitiesOf: AgentRecord["capabilities"];
  readonly endpoint: Endpoint;
  readonly capabilities: Capability[];
  readonly tools: Tool[];
}
const partsCache = new LRUCache<readonly ToolRecord[], Parts>({ max: 10_000 });

function partsOf(a: AgentRecord): Parts {
  const known = partsCache.get(a.tools);
  if (known && known.endpointOf === a.endpoint && known.capabilitiesOf === a.capabilities) return known;
  const parts: Parts = {
    endpointOf: a.endpoint,
    capabilitiesOf: a.capabilities,
    endpoint: create(EndpointSchema, { url: a.endpoint.url, transport: a.endpoint.transport }),
    capabilities: a.capabilities.map((c) => create(CapabilitySchema, { name: c.name, tags: [...c.tags] })),
    tools:
      known?.tools ??
      a.tools.map((t) => create(ToolSchema, { name: t.name, description: t.description, inputSchema: t.inputSchema })),
  };
  partsCache.set(a.tools, parts);
  return parts;
}

function build(a: AgentRecord): Agent {
  const parts = partsOf(a);
  return create(AgentSchema, {
    id: a.id,
    tenant: a.tenant,
    shared: a.shared,
    name: a.name,
    version: a.version,
    status: a.status,
    endpoint: parts.endpoint,
    capabilities: parts.capabilities,
    tools: parts.tools,
    labels: { ...a.labels },
    registeredAt: timestampFromMs(a.registeredAt),
    lastHeartbeatAt: timestampFromMs(a.lastHeartbeatAt),
    leaseExpiresAt: timestampFromMs(a.leaseExpiresAt),
    leaseTtl: durationFromMs(a.leaseTtlMs),
    load: a.load,
    revision: BigInt(a.revision),
  });
}
