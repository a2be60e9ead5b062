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
import type { AgentRecord } from "./agent-record.js";

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
 * The sub-messages a heartbeat does not change. A heartbeat's record keeps
 * the endpoint, capabilities and tools objects of the record before it, so
 * their messages (and, in the transport, their encodings: tool schemas are
 * the costly part) are reused across revisions. Keyed by those objects and
 * bounded like the agent cache.
 */
const parts = new LRUCache<object, Endpoint | Capability[] | Tool[]>({ max: 30_000 });

function part<T extends Endpoint | Capability[] | Tool[]>(key: object, make: () => T): T {
  let value = parts.get(key) as T | undefined;
  if (!value) parts.set(key, (value = make()));
  return value;
}

function build(a: AgentRecord): Agent {
  return create(AgentSchema, {
    id: a.id,
    tenant: a.tenant,
    shared: a.shared,
    name: a.name,
    version: a.version,
    status: a.status,
    endpoint: part(a.endpoint, () => create(EndpointSchema, { url: a.endpoint.url, transport: a.endpoint.transport })),
    capabilities: part(a.capabilities, () => a.capabilities.map((c) => create(CapabilitySchema, { name: c.name, tags: [...c.tags] }))),
    tools: part(a.tools, () =>
      a.tools.map((t) => create(ToolSchema, { name: t.name, description: t.description, inputSchema: t.inputSchema })),
    ),
    labels: { ...a.labels },
    registeredAt: timestampFromMs(a.registeredAt),
    lastHeartbeatAt: timestampFromMs(a.lastHeartbeatAt),
    leaseExpiresAt: timestampFromMs(a.leaseExpiresAt),
    leaseTtl: durationFromMs(a.leaseTtlMs),
    load: a.load,
    revision: BigInt(a.revision),
  });
}
