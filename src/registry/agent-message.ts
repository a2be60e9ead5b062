import { LRUCache } from "lru-cache";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import type { Agent, Capability, Tool } from "../../gen/federation/v1/agent_pb.js";
import { AgentStatus, type AgentRecord, type ToolRecord } from "./agent-record.js";
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
 * a record is compared field by field with the base (and what of its
 * record the base does not hold as it was) before the base is reused.
 */
interface Static {
  readonly base: Agent;
  /**
   * What of the record the base was built from the base does not hold as
   * it was (it holds messages made of the lists, and the lease TTL as a
   * Duration); the rest is compared with the base's own fields. Not the
   * record: it kept a whole record (and its times) per agent alive
   * besides the store's.
   */
  readonly capabilities: AgentRecord["capabilities"];
  readonly tools: AgentRecord["tools"];
  readonly leaseTtlMs: number;
}
const statics = new LRUCache<string, Static>({ max: 10_000 });

function sameStatic(s: Static, a: AgentRecord): boolean {
  const base = s.base;
  return (
    base.id === a.id &&
    base.tenant === a.tenant &&
    base.shared === a.shared &&
    base.name === a.name &&
    base.version === a.version &&
    base.endpoint!.url === a.endpoint.url &&
    base.endpoint!.transport === a.endpoint.transport &&
    s.capabilities === a.capabilities &&
    s.tools === a.tools &&
    base.labels === a.labels &&
    Number(base.registeredAt!.seconds) * 1000 + base.registeredAt!.nanos / 1_000_000 === a.registeredAt &&
    s.leaseTtlMs === a.leaseTtlMs
  );
}

function baseFor(a: AgentRecord): Agent {
  const known = statics.get(a.id);
  if (known && sameStatic(known, a)) return known.base;
  // Written out whole, every field of an Agent in one order, as create()
  // leaves them (message fields unset are undefined): all in the object
  // itself. create() then setting the fields one by one put most of them
  // in a property array of their own (~160 bytes per agent), and so did
  // Object.assign for each revision.
  //
  // Held, not copied (create() copies lists): the capabilities' and tools'
  // message arrays are shared by the agents registered alike (below), the
  // labels are the record's frozen object, shared the same way
  // (shared-values.ts).
  const base = new AgentBase(a);
  statics.set(a.id, { base, capabilities: a.capabilities, tools: a.tools, leaseTtlMs: a.leaseTtlMs });
  return base;
}

/**
 * Messages kept per agent (a base, its tools, capabilities) are made by `new`, not
 * written as literals: V8 then gives the object room for the hidden slots
 * markImmutable and the encoders add (in-object slack tracking), where a
 * literal's only room for them was a property array of its own (~40
 * bytes a message). Their prototype is Object.prototype, as a literal's or
 * create()'s: nothing else can tell them apart.
 */
const AgentBase = function AgentBase(this: Record<string, unknown>, a: AgentRecord) {
  this.$typeName = "federation.v1.Agent";
  this.id = a.id;
  this.name = a.name;
  this.version = a.version;
  this.status = AgentStatus.UNSPECIFIED;
  this.capabilities = capabilityMessages(a.capabilities);
  this.tools = toolMessages(a.tools);
  this.labels = a.labels;
  this.load = 0;
  this.revision = 0n;
  this.tenant = a.tenant;
  this.shared = a.shared;
  // Not marked immutable: its bytes are written once, into the base's
  // own cached encoding (a cache of its own was a second copy, one more
  // buffer per agent); JSON writes it again per revision (two fields).
  this.endpoint = { $typeName: "federation.v1.Endpoint", url: a.endpoint.url, transport: a.endpoint.transport };
  this.registeredAt = timestamp(a.registeredAt);
  this.lastHeartbeatAt = undefined;
  this.leaseExpiresAt = undefined;
  this.leaseTtl = leaseTtl(a.leaseTtlMs);
  this.origin = undefined;
  markImmutable(this as unknown as Agent);
} as unknown as new (a: AgentRecord) => Agent;
AgentBase.prototype = Object.prototype;

const ToolMessage = function ToolMessage(this: Record<string, unknown>, t: ToolRecord) {
  this.$typeName = "federation.v1.Tool";
  this.name = t.name;
  this.description = t.description;
  this.inputSchema = t.inputSchema;
  markImmutable(this as unknown as Tool);
} as unknown as new (t: ToolRecord) => Tool;
ToolMessage.prototype = Object.prototype;

const CapabilityMessage = function CapabilityMessage(this: Record<string, unknown>, c: AgentRecord["capabilities"][number]) {
  this.$typeName = "federation.v1.Capability";
  this.name = c.name;
  this.tags = [...c.tags];
  markImmutable(this as unknown as Capability);
} as unknown as new (c: AgentRecord["capabilities"][number]) => Capability;
CapabilityMessage.prototype = Object.prototype;

/** A revision's message: the base's fields, then a record's status and times; in the base's order (one shape). */
function onBase(base: Agent, a: Pick<AgentRecord, "status" | "load" | "revision" | "lastHeartbeatAt" | "leaseExpiresAt">, withTimes: boolean): Agent {
  return {
    $typeName: "federation.v1.Agent",
    id: base.id,
    name: base.name,
    version: base.version,
    status: a.status,
    capabilities: base.capabilities,
    tools: base.tools,
    labels: base.labels,
    load: withTimes ? a.load : 0,
    revision: withTimes ? BigInt(a.revision) : 0n,
    tenant: base.tenant,
    shared: base.shared,
    endpoint: base.endpoint,
    registeredAt: base.registeredAt,
    lastHeartbeatAt: withTimes ? timestamp(a.lastHeartbeatAt) : undefined,
    leaseExpiresAt: withTimes ? timestamp(a.leaseExpiresAt) : undefined,
    leaseTtl: base.leaseTtl,
    origin: undefined,
  };
}

/**
 * Lease TTLs are few (the default, a client's choice within bounds): the
 * bases share one Duration message per TTL (a base is never mutated), not
 * one each (~40 bytes per agent). Bounded: past it, one each again.
 */
const leaseTtls = new Map<number, Duration>();
function leaseTtl(ms: number): Duration {
  let d = leaseTtls.get(ms);
  if (!d) {
    d = duration(ms);
    if (leaseTtls.size < 256) leaseTtls.set(ms, d);
  }
  return d;
}

/**
 * timestampFromMs and durationFromMs of @bufbuild/protobuf, written as
 * literals: create() adds the fields one by one, which put them in a
 * property array of their own (40 bytes per message, four per agent).
 */
export function timestamp(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

export function duration(ms: number): Duration {
  const sign = ms < 0 ? -1 : 1;
  const abs = Math.abs(ms);
  const seconds = Math.floor(abs / 1000);
  const nanos = (abs - seconds * 1000) * 1_000_000;
  return { $typeName: "google.protobuf.Duration", seconds: BigInt(seconds * sign), nanos: nanos === 0 ? 0 : nanos * sign };
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
  messagesOf(capabilityCache, list, (c) => new CapabilityMessage(c));
const toolMessages = (list: readonly ToolRecord[]) =>
  messagesOf(toolCache, list, (t) => new ToolMessage(t));

function messagesOf<R, M extends object>(cache: LRUCache<readonly R[], M[]>, list: readonly R[], make: (r: R) => M): M[] {
  let messages = cache.get(list);
  if (!messages) cache.set(list, (messages = list.map(make)));
  return messages;
}

function build(a: AgentRecord): Agent {
  const base = baseFor(a);
  // A literal of the base's fields and the changed ones (a spread with
  // overrides, { ...base, status }, is ~8x slower in V8).
  return markImmutable(withBase(onBase(base, a, true), base));
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
  if (!message) views[a.status] = message = markImmutable(withBase(onBase(base, a, false), base));
  return message;
}
