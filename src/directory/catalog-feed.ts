import { isDeepStrictEqual } from "node:util";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";
import type { EventBus, PublishedEvent, Subscription } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import type { AgentRecord, AgentStatus, CapabilityRecord, ToolRecord, Transport } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";
import { ToolCatalog } from "./tool-catalog.js";

const AGENT_EVENTS = new Set(["agent.registered", "agent.updated", "agent.status_changed", "agent.unregistered", "agent.expired"]);
const REMOVALS = new Set(["agent.unregistered", "agent.expired"]);
const LOAD_PAGE = 1_000;

/**
 * Keeps a replica's ToolCatalog current for a shared store (MongoDB +
 * Redis): the catalog is built from the store at start and then follows
 * the event stream (every agent.* event carries the whole agent), so every
 * replica answers the same within the event delay; the store remains the
 * truth. Events that arrive while the store is being read are held and
 * applied after it; each agent's state is applied only when it is newer
 * (registration time, then revision) than what the catalog has, so an
 * event and the load can come in either order.
 */
export class CatalogFeed {
  readonly catalog = new ToolCatalog();
  private subscription: Subscription | undefined;
  private held: PublishedEvent[] | undefined = [];
  private stopped = false;
  private loaded = false;

  constructor(
    private readonly store: AgentStore,
    private readonly bus: EventBus,
    private readonly log: Logger,
  ) {}

  /** True once the store has been read (until then the catalog is incomplete). */
  get ready(): boolean {
    return this.loaded;
  }

  /** Subscribes, then loads from the store (retrying while it is unreachable). */
  async start(): Promise<void> {
    this.subscription ??= this.bus.subscribe({ tenant: "", allTenants: true, types: AGENT_EVENTS, agentId: "" }, undefined, (e) => {
      if (this.held) this.held.push(e);
      else this.applyEvent(e);
    });
    for (let attempt = 0; !this.stopped && !this.loaded; attempt++) {
      try {
        await this.store.start?.();
        for (let after = ""; ; ) {
          const page = await this.store.all!(after, LOAD_PAGE);
          for (const a of page) this.applyState(a, false);
          if (page.length < LOAD_PAGE) break;
          after = page.at(-1)!.id;
        }
        const held = this.held ?? [];
        this.held = undefined;
        for (const e of held) this.applyEvent(e);
        this.loaded = true;
        this.log.info("tool catalog loaded from the store");
      } catch (err) {
        // Shutting down: the store was let go on purpose. Otherwise the store
        // reports its own state; the first failure is said once here.
        if (this.stopped) return;
        const level = attempt === 0 ? "warn" : "debug";
        this.log[level]({ err: err instanceof Error ? err.message : String(err) }, "tool catalog load failed; retrying");
        await new Promise((r) => setTimeout(r, Math.min(5_000, 250 * 2 ** attempt)).unref());
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.subscription?.close();
  }

  /** Applies one agent.* event (exported for tests). */
  applyEvent(e: PublishedEvent): void {
    const m = e.message;
    if (m.payload.case !== "agentChange" || !m.payload.value.agent) return;
    this.applyState(fromAgentMessage(m.payload.value.agent), REMOVALS.has(m.type));
  }

  private applyState(a: AgentRecord, removed: boolean): void {
    const known = this.catalog.agent(a.id);
    if (removed) {
      if (known && !newer(known, a)) this.catalog.apply(known, undefined);
      return;
    }
    if (known && !newer(a, known)) return;
    this.catalog.apply(known, known ? withKnownParts(known, a) : a);
  }
}

/**
 * `a`, with each of its capabilities, tools and labels that equals the
 * known state's replaced by the known state's own. An event carries the
 * whole agent, decoded into new objects: a status change would otherwise
 * look to the catalog like new tools and capabilities — every tool taken
 * out, hashed and indexed again — where the same parts (sameShape) only
 * move its healthy counts.
 */
function withKnownParts(known: AgentRecord, a: AgentRecord): AgentRecord {
  const capabilities = sameCapabilities(known.capabilities, a.capabilities) ? known.capabilities : a.capabilities;
  const tools = sameTools(known.tools, a.tools) ? known.tools : a.tools;
  const labels = isDeepStrictEqual(known.labels, a.labels) ? known.labels : a.labels;
  if (capabilities === a.capabilities && tools === a.tools && labels === a.labels) return a;
  return { ...a, capabilities, tools, labels };
}

function sameCapabilities(x: readonly CapabilityRecord[], y: readonly CapabilityRecord[]): boolean {
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) {
    const a = x[i]!;
    const b = y[i]!;
    if (a.name !== b.name || a.tags.length !== b.tags.length) return false;
    for (let k = 0; k < a.tags.length; k++) if (a.tags[k] !== b.tags[k]) return false;
  }
  return true;
}

/** Same tools in the same order; schemas equal as JSON values (key order aside, as the catalog's content hash). */
function sameTools(x: readonly ToolRecord[], y: readonly ToolRecord[]): boolean {
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) {
    const a = x[i]!;
    const b = y[i]!;
    if (a.name !== b.name || a.description !== b.description || !isDeepStrictEqual(a.inputSchema, b.inputSchema)) return false;
  }
  return true;
}

/** Whether `a` is a later state of the agent than `b`. */
function newer(a: AgentRecord, b: AgentRecord): boolean {
  return a.registeredAt !== b.registeredAt ? a.registeredAt > b.registeredAt : a.revision > b.revision;
}

/** What the catalog reads of an agent, from an event's Agent message. */
export function fromAgentMessage(m: Agent): AgentRecord {
  return {
    id: m.id,
    tenant: m.tenant,
    shared: m.shared,
    name: m.name,
    version: m.version,
    status: m.status as AgentStatus,
    endpoint: { url: m.endpoint?.url ?? "", transport: (m.endpoint?.transport ?? 0) as Transport },
    capabilities: m.capabilities.map((c) => ({ name: c.name, tags: c.tags })),
    tools: m.tools.map((t) => ({ name: t.name, description: t.description, inputSchema: t.inputSchema })),
    labels: m.labels,
    load: m.load,
    leaseTtlMs: 0,
    registeredAt: m.registeredAt ? timestampMs(m.registeredAt) : 0,
    lastHeartbeatAt: 0,
    leaseExpiresAt: 0,
    revision: Number(m.revision),
  };
}
