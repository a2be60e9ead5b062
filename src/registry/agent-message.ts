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
  type Tool,
} from "../../gen/federation/v1/agent_pb.js";
import type { AgentRecord, ToolRecord } from "./agent-record.js";
import { markImmutable, withBase } from "../message-hints.js";

/**
 * Records are immutable (every change makes a new one), so a record's
 * message is built once and reused by every read that lists it; building
 * it (timestamps, Struct schemas) was the larger part of a Discover, and
 * every message built here is marked immutable (message-hints.ts), so the
 * transport caches its encoding on it too. Bounded, so memory
 * does not grow with the fleet: the agents being read stay cached.
 * Callers must not mutate the returned message.
 */
const cache = new LRUCache<AgentRecord, Agent>({ max: 10_000 });

/** The contract's view of a stored agent, for reads (cached). */
export function toAgentMessage(a: AgentRecord): Agent {
  let message = cache.get(a);
  if (!message) cache.set(a, (message = build(a)));
  return message;
}

/**
 * The same, not cached: for answers to writes and for events, whose record
 * the next heartbeat replaces anyway. The last one built is kept: a write's
 * event and its answer carry the same record, so it is built once.
 */
let last: { readonly of: AgentRecord; readonly message: Agent } | undefined;
export function agentMessageOnce(a: AgentRecord): Agent {
  const known = cache.get(a) ?? (last?.of === a ? last.message : undefined);
  if (known) return known;
  last = { of: a, message: build(a) };
  return last.message;
}

/**
 * What a heartbeat does not change, built once per registration: the
 * agent's static fields as an Agent message of their own (the "base":
 * id, tenant, shared, name, version, endpoint, capabilities, tools, labels,
 * registered_at, lease_ttl). Each revision's message is a copy of that base
 * with the fields a heartbeat changes (status, load, heartbeat and lease
 * times, revision), and names its base (message-base.ts) so the transport writes
 * the base's cached bytes and encodes only those few fields per revision
 * (message-encoding.ts). One entry per agent, bounded like the agent cache;
 * `of` is the record the base was built from, compared field by field.
 */
interface Static {
  /** Moved on to the newest record it matched, so the agent's older records are not kept alive by it. */
  of: AgentRecord;
  readonly base: Agent;
}
const statics = new LRUCache<string, Static>({ max: 10_000 });

function sameStatic(a: AgentRecord, b: AgentRecord): boolean {
  return (
    a.id === b.id &&
    a.tenant === b.tenant &&
    a.shared === b.shared &&
    a.name === b.name &&
    a.version === b.version &&
    a.endpoint === b.endpoint &&
    a.capabilities === b.capabilities &&
    a.tools === b.tools &&
    a.labels === b.labels &&
    a.registeredAt === b.registeredAt &&
    a.leaseTtlMs === b.leaseTtlMs
  );
}

function baseFor(a: AgentRecord): Agent {
  const known = statics.get(a.id);
  if (known && sameStatic(known.of, a)) {
    known.of = a;
    return known.base;
  }
  const base = create(AgentSchema, {
    id: a.id,
    tenant: a.tenant,
    shared: a.shared,
    name: a.name,
    version: a.version,
    // Not marked immutable: its bytes are written once, into the base's
    // own cached encoding (a cache of its own was a second copy, one more
    // buffer per agent); JSON writes it again per revision (two fields).
    endpoint: create(EndpointSchema, { url: a.endpoint.url, transport: a.endpoint.transport }),
    registeredAt: timestampFromMs(a.registeredAt),
    leaseTtl: durationFromMs(a.leaseTtlMs),
  });
  // Held, not copied (create() copies lists): the capabilities' and tools'
  // message arrays are shared by the agents registered alike (below), the
  // labels are the record's frozen object, shared the same way
  // (shared-values.ts).
  base.capabilities = capabilityMessages(a.capabilities);
  base.tools = toolMessages(a.tools);
  base.labels = a.labels as Agent["labels"];
  markImmutable(base);
  statics.set(a.id, { of: a, base });
  return base;
}

/**
 * Agents with equal capabilities or tools share one array of them
 * (registry/shared-values.ts), and so share their messages here, and the
 * transport's cached encodings of those (tool schemas are most of an
 * agent's bytes).
 */
const capabilityCache = new LRUCache<AgentRecord["capabilities"], Capability[]>({ max: 10_000 });
const toolCache = new LRUCache<readonly ToolRecord[], Tool[]>({ max: 10_000 });

const capabilityMessages = (list: AgentRecord["capabilities"]) =>
  messagesOf(capabilityCache, list, (c) => markImmutable(create(CapabilitySchema, { name: c.name, tags: [...c.tags] })));
const toolMessages = (list: readonly ToolRecord[]) =>
  messagesOf(toolCache, list, (t) =>
    markImmutable(create(ToolSchema, { name: t.name, description: t.description, inputSchema: t.inputSchema })),
  );

function messagesOf<R, M extends object>(cache: LRUCache<readonly R[], M[]>, list: readonly R[], make: (r: R) => M): M[] {
  let messages = cache.get(list);
  if (!messages) cache.set(list, (messages = list.map(make)));
  return messages;
}

function build(a: AgentRecord): Agent {
  const base = baseFor(a);
  // Object.assign, then the changed fields: a spread with overrides
  // ({ ...base, status }) is ~8x slower in V8 (1.8 vs 0.2 µs here).
  const message: Agent = Object.assign({}, base);
  message.status = a.status;
  message.lastHeartbeatAt = timestampFromMs(a.lastHeartbeatAt);
  message.leaseExpiresAt = timestampFromMs(a.leaseExpiresAt);
  message.load = a.load;
  message.revision = BigInt(a.revision);
  return markImmutable(withBase(message, base));
}

/**
 * The manifest's view of an agent: its static fields and status, without
 * what heartbeats move (load, heartbeat and lease times, revision), so a
 * manifest version stays the same while only those change. One message per
 * (base, status), kept on the base; marked immutable and built on the base.
 */
const catalogViews = new WeakMap<Agent, Agent[]>();

export function toCatalogAgentMessage(a: AgentRecord): Agent {
  const base = baseFor(a);
  let views = catalogViews.get(base);
  if (!views) catalogViews.set(base, (views = []));
  let message = views[a.status];
  if (!message) {
    message = Object.assign({}, base);
    message.status = a.status;
    views[a.status] = markImmutable(withBase(message, base));
  }
  return message;
}
