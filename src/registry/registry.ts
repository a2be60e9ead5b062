import { create } from "@bufbuild/protobuf";
import { AgentChangeSchema, type Event } from "../../gen/federation/v1/event_pb.js";
import type { Clock } from "../clock.js";
import type { LeaseConfig } from "../config.js";
import { errors } from "../errors.js";
import type { EventBus, EventType, LazyPayload } from "../events/event-bus.js";
import { noCounters, type Counters } from "../health/telemetry.js";
import type { Logger } from "../logger.js";
import type { Principal } from "../security/principal.js";
import type { HeartbeatInput, Page, RegisterInput } from "../validation/requests.js";
import { agentMessageOnce } from "./agent-message.js";
import { newAgentId } from "./agent-id.js";
import { AgentStatus, type AgentRecord } from "./agent-record.js";
import type { AgentPatch, AgentStore } from "./agent-store.js";
import { SharedValues } from "./shared-values.js";

/** How many times a write is retried when another writer changed the agent first. */
const MAX_CAS_ATTEMPTS = 5;
/** Agents handled per reaper pass, so one pass never blocks the loop for long. */
const SWEEP_BATCH = 1_000;

/**
 * Registration, leases and lookup. Every change is a compare-and-set on the
 * agent's revision followed by an event, so a replica or the reaper racing
 * the same agent never loses a write nor emits an event twice.
 *
 * Every call names its caller: an agent belongs to the tenant that
 * registered it, and another tenant's agent answers NOT_FOUND, exactly like
 * a missing one. A passport or client certificate may only act for its own
 * agent.
 */
export class Registry {
  /** Capabilities, tools and labels that many agents register alike, held once. */
  private readonly shared = new SharedValues();

  constructor(
    private readonly store: AgentStore,
    private readonly bus: EventBus,
    private readonly clock: Clock,
    private readonly lease: LeaseConfig,
    private readonly log: Logger,
    private readonly counters: Counters = noCounters,
    private readonly newId: () => string = newAgentId,
  ) {}

  async register(input: RegisterInput, caller: Principal): Promise<AgentRecord> {
    if (caller.agentName !== undefined && caller.agentName !== input.name) {
      throw errors.permissionDenied(`name: the client certificate is for agent "${caller.agentName}"`);
    }
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const now = this.clock.now();
      const existing = input.agentId === "" ? undefined : await this.store.get(input.agentId);
      if (existing && existing.tenant !== caller.tenant) throw errors.agentNotFound(input.agentId);
      const record: AgentRecord = {
        id: existing?.id ?? (input.agentId || this.newId()),
        tenant: caller.tenant,
        shared: existing?.shared ?? false,
        name: this.shared.string(input.name),
        version: this.shared.string(input.version),
        status: AgentStatus.HEALTHY,
        endpoint: input.endpoint,
        capabilities: this.shared.capabilities(input.capabilities),
        tools: this.shared.tools(input.tools),
        labels: this.shared.labels(input.labels),
        load: existing?.load ?? 0,
        leaseTtlMs: input.leaseTtlMs,
        registeredAt: existing?.registeredAt ?? now,
        lastHeartbeatAt: now,
        leaseExpiresAt: now + input.leaseTtlMs,
        revision: (existing?.revision ?? 0) + 1,
      };
      if (!(await this.store.put(record, existing?.revision ?? 0))) continue;
      this.counters.count("registrations");
      await this.emit(existing ? "agent.updated" : "agent.registered", record, existing?.status, "registered");
      return record;
    }
    throw errors.conflict(input.agentId);
  }

  async heartbeat(input: HeartbeatInput, caller: Principal): Promise<AgentRecord> {
    return this.heartbeatNow(input, caller);
  }

  /**
   * heartbeat(), without a promise when it can: on a store that holds its
   * agents in memory (peek, and updated() answering at once) a beat that
   * keeps its status is read, checked and written synchronously, and the
   * record the store kept is the one answered (one record per beat).
   * Refusals may be thrown synchronously. Otherwise — another store, a
   * status change (its event is published), a lost compare-and-set — the
   * asynchronous path.
   */
  heartbeatNow(input: HeartbeatInput, caller: Principal): AgentRecord | Promise<AgentRecord> {
    if (!this.store.peek) return this.heartbeatAsync(input, caller);
    const now = this.clock.now();
    const current = this.owned(input.agentId, caller, this.store.peek(input.agentId));
    if (this.isPastGrace(current, now)) throw errors.agentNotFound(input.agentId);
    const written = this.store.updated(current, this.beat(input, current, now));
    if (written instanceof Promise) return written.then((record) => (record ? this.beaten(current, record) : this.heartbeatAsync(input, caller, 1)));
    return written ? this.beaten(current, written) : this.heartbeatAsync(input, caller, 1);
  }

  private async heartbeatAsync(input: HeartbeatInput, caller: Principal, attempt = 0): Promise<AgentRecord> {
    for (; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const now = this.clock.now();
      const current = await this.ownAgent(input.agentId, caller);
      if (this.isPastGrace(current, now)) throw errors.agentNotFound(input.agentId);
      const record = await this.store.updated(current, this.beat(input, current, now));
      if (record) return this.beaten(current, record);
    }
    throw errors.conflict(input.agentId);
  }

  /** A heartbeat's patch of `current`. */
  private beat(input: HeartbeatInput, current: AgentRecord, now: number): AgentPatch {
    return {
      status:
        input.status !== AgentStatus.UNSPECIFIED
          ? input.status
          : current.status === AgentStatus.UNHEALTHY
            ? AgentStatus.HEALTHY
            : current.status,
      load: input.load ?? current.load,
      lastHeartbeatAt: now,
      leaseExpiresAt: now + current.leaseTtlMs,
      revision: current.revision + 1,
    };
  }

  /** A heartbeat written: counted, and its status change published (then the answer waits for it). */
  private beaten(current: AgentRecord, record: AgentRecord): AgentRecord | Promise<AgentRecord> {
    this.counters.count("heartbeats");
    if (record.status === current.status) return record;
    return this.emit("agent.status_changed", record, current.status, "heartbeat").then(() => record);
  }

  async unregister(id: string, caller: Principal): Promise<AgentRecord> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.ownAgent(id, caller);
      if (!(await this.store.delete(id, current.revision))) continue;
      this.counters.count("unregistrations");
      await this.emit("agent.unregistered", current, current.status, "unregistered");
      return current;
    }
    throw errors.conflict(id);
  }

  /** The caller's agent, or a shared one. */
  async get(id: string, caller: Principal): Promise<AgentRecord> {
    const agent = await this.store.get(id);
    const visible = agent && (agent.tenant === caller.tenant || agent.shared);
    if (!visible || this.isPastGrace(agent, this.clock.now())) throw errors.agentNotFound(id);
    return agent;
  }

  async list(page: Page, caller: Principal): Promise<{ agents: AgentRecord[]; nextAfter: string }> {
    const agents = await this.store.list(caller.tenant, page.after, page.size + 1);
    const more = agents.length > page.size;
    if (more) agents.length = page.size;
    return { agents, nextAfter: more ? agents[agents.length - 1]!.id : "" };
  }

  /** Publishes an agent to every tenant, or withdraws it (admin; the caller's tenant only). */
  async share(id: string, shared: boolean, caller: Principal): Promise<AgentRecord> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.store.get(id);
      if (!current || current.tenant !== caller.tenant) throw errors.agentNotFound(id);
      if (current.shared === shared) return current;
      const record = await this.store.updated(current, { shared, revision: current.revision + 1 });
      if (!record) continue;
      await this.emit("agent.updated", record, current.status, shared ? "shared" : "unshared");
      return record;
    }
    throw errors.conflict(id);
  }

  /**
   * One reaper pass: an agent whose lease ended turns UNHEALTHY; one still
   * silent when the grace period ends is removed. Each transition is a
   * compare-and-set, so concurrent reapers emit each event exactly once.
   */
  async sweep(): Promise<void> {
    const now = this.clock.now();
    for (let agent of await this.store.expired(now, SWEEP_BATCH)) {
      // Every expiry is preceded by its status change, even when a late
      // pass finds an agent already past its grace period: watchers always
      // see HEALTHY → UNHEALTHY → expired.
      if (agent.status !== AgentStatus.UNHEALTHY) {
        const record = await this.store.updated(agent, { status: AgentStatus.UNHEALTHY, revision: agent.revision + 1 });
        if (!record) continue;
        await this.emit("agent.status_changed", record, agent.status, "lease expired");
        agent = record;
      }
      if (this.isPastGrace(agent, now) && (await this.store.delete(agent.id, agent.revision))) {
        await this.emit("agent.expired", agent, agent.status, "lease and grace period ended");
      }
    }
  }

  /**
   * The agent a write may touch: the caller's tenant's, and when the caller
   * is a passport or a client certificate, only the agent it names.
   */
  private async ownAgent(id: string, caller: Principal): Promise<AgentRecord> {
    if (caller.passport && caller.passport.agentId !== id) {
      throw errors.permissionDenied("agent_id: the passport was issued to another agent");
    }
    return this.owned(id, caller, await this.store.get(id));
  }

  /** ownAgent()'s checks of the stored record `current` (synchronous). */
  private owned(id: string, caller: Principal, current: AgentRecord | undefined): AgentRecord {
    if (caller.passport && caller.passport.agentId !== id) {
      throw errors.permissionDenied("agent_id: the passport was issued to another agent");
    }
    if (!current || current.tenant !== caller.tenant) throw errors.agentNotFound(id);
    if (caller.passport && caller.passport.epoch !== current.registeredAt) {
      throw errors.unauthenticated("passport was revoked: the agent registered again since");
    }
    if (caller.agentName !== undefined && caller.agentName !== current.name) {
      throw errors.permissionDenied(`agent_id: the client certificate is for agent "${caller.agentName}"`);
    }
    return current;
  }

  private isPastGrace(agent: AgentRecord, now: number): boolean {
    return now >= agent.leaseExpiresAt + this.lease.graceMs;
  }

  private async emit(type: EventType, agent: AgentRecord, previous: AgentStatus | undefined, reason: string) {
    try {
      // Lazy: the memory bus's history holds the record, not its message (event-bus.ts LazyPayload).
      await this.bus.publish({ type, tenant: agent.tenant, agentId: agent.id, lazyPayload: new AgentChangePayload(agent, previous, reason) });
    } catch (err) {
      // The write stands; a lost event is logged, never turned into a failed write.
      this.log.error({ err, type, agentId: agent.id }, "event publish failed");
    }
  }
}

/** An agent event's payload, made from the (immutable) record when the event is read. */
class AgentChangePayload implements LazyPayload {
  constructor(
    private readonly agent: AgentRecord,
    private readonly previous: AgentStatus | undefined,
    private readonly reason: string,
  ) {}

  get shared(): boolean {
    return this.agent.shared;
  }

  get agentStatus(): number {
    return this.agent.status;
  }

  make(): Event["payload"] {
    // Field by field (an init would be walked by reflection).
    const change = create(AgentChangeSchema);
    change.agent = agentMessageOnce(this.agent);
    change.previousStatus = this.previous ?? AgentStatus.UNSPECIFIED;
    change.reason = this.reason;
    return { case: "agentChange", value: change };
  }
}
