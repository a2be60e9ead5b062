import { create } from "@bufbuild/protobuf";
import { LRUCache } from "lru-cache";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AgentSchema, ToolSchema, type Agent, type Tool } from "../../gen/federation/v1/agent_pb.js";
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
export const IMMUTABLE_MESSAGE_TYPES: ReadonlySet<string> = new Set([AgentSchema, ToolSchema].map((s) => s.typeName));

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
 * The tool messages of recent agents. A heartbeat's record keeps the tools
 * array of the record before it, so the messages (and, in the transport,
 * their encodings: tool schemas are most of an agent's bytes) are reused
 * across revisions instead of being encoded again on every heartbeat.
 * Keyed by that array; bounded like the agent cache (about 10 KiB an agent).
 */
const toolMessages = new LRUCache<readonly ToolRecord[], Tool[]>({ max: 10_000 });

function toolsOf(a: AgentRecord): Tool[] {
  let tools = toolMessages.get(a.tools);
  if (!tools) {
    tools = a.tools.map((t) => create(ToolSchema, { name: t.name, description: t.description, inputSchema: t.inputSchema }));
    toolMessages.set(a.tools, tools);
  }
  return tools;
}

function build(a: AgentRecord): Agent {
  return create(AgentSchema, {
    id: a.id,
    tenant: a.tenant,
    shared: a.shared,
    name: a.name,
    version: a.version,
    status: a.status,
    endpoint: { url: a.endpoint.url, transport: a.endpoint.transport },
    capabilities: a.capabilities.map((c) => ({ name: c.name, tags: [...c.tags] })),
    tools: toolsOf(a),
    labels: { ...a.labels },
    registeredAt: timestampFromMs(a.registeredAt),
    lastHeartbeatAt: timestampFromMs(a.lastHeartbeatAt),
    leaseExpiresAt: timestampFromMs(a.leaseExpiresAt),
    leaseTtl: durationFromMs(a.leaseTtlMs),
    load: a.load,
    revision: BigInt(a.revision),
  });
}
