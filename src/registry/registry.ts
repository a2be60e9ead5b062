import { randomUUID } from "node:crypto";
import type { Clock } from "../clock.js";
import type { LeaseConfig } from "../config.js";
import { errors } from "../errors.js";
import type { EventBus, EventType } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import type { HeartbeatInput, Page, RegisterInput } from "../validation/requests.js";
import { AgentStatus, type AgentRecord } from "./agent-record.js";
import type { AgentStore } from "./agent-store.js";
import { toAgentMessage } from "./agent-message.js";
import { noCounters, type Counters } from "../health/telemetry.js";

/** How many times a write is retried when another writer changed the agent first. */
const MAX_CAS_ATTEMPTS = 5;
/** Agents handled per reaper pass, so one pass never blocks the loop for long. */
const SWEEP_BATCH = 1_000;

/**
 * Registration, leases and lookup. Every change is a compare-and-set on the
 * agent's revision followed by an event, so a replica or the reaper racing
 * the same agent never loses a write nor emits an event twice.
 */
export class Registry {
  constructor(
    private readonly store: AgentStore,
    private readonly bus: EventBus,
    private readonly clock: Clock,
    private readonly lease: LeaseConfig,
    private readonly log: Logger,
    private readonly counters: Counters = noCounters,
    private readonly newId: () => string = randomUUID,
  ) {}

  async register(input: RegisterInput): Promise<AgentRecord> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const now = this.clock.now();
      const existing = input.agentId === "" ? undefined : await this.store.get(input.agentId);
      const record: AgentRecord = {
        id: existing?.id ?? (input.agentId || this.newId()),
        name: input.name,
        version: input.version,
        status: AgentStatus.HEALTHY,
        endpoint: input.endpoint,
        capabilities: input.capabilities,
        tools: input.tools,
        labels: input.labels,
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

  async heartbeat(input: HeartbeatInput): Promise<AgentRecord> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const now = this.clock.now();
      const current = await this.store.get(input.agentId);
      if (!current || this.isPastGrace(current, now)) throw errors.agentNotFound(input.agentId);
      const status =
        input.status !== AgentStatus.UNSPECIFIED
          ? input.status
          : current.status === AgentStatus.UNHEALTHY
            ? AgentStatus.HEALTHY
            : current.status;
      const record: AgentRecord = {
        ...current,
        status,
        load: input.load ?? current.load,
        lastHeartbeatAt: now,
        leaseExpiresAt: now + current.leaseTtlMs,
        revision: current.revision + 1,
      };
      if (!(await this.store.put(record, current.revision))) continue;
      this.counters.count("heartbeats");
      if (status !== current.status) {
        await this.emit("agent.status_changed", record, current.status, "heartbeat");
      }
      return record;
    }
    throw errors.conflict(input.agentId);
  }

  async unregister(id: string): Promise<AgentRecord> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.store.get(id);
      if (!current) throw errors.agentNotFound(id);
      if (!(await this.store.delete(id, current.revision))) continue;
      this.counters.count("unregistrations");
      await this.emit("agent.unregistered", current, current.status, "unregistered");
      return current;
    }
    throw errors.conflict(id);
  }

  async get(id: string): Promise<AgentRecord> {
    const agent = await this.store.get(id);
    if (!agent || this.isPastGrace(agent, this.clock.now())) throw errors.agentNotFound(id);
    return agent;
  }

  async list(page: Page): Promise<{ agents: AgentRecord[]; nextAfter: string }> {
    const agents = await this.store.list(page.after, page.size + 1);
    const more = agents.length > page.size;
    if (more) agents.length = page.size;
    return { agents, nextAfter: more ? agents[agents.length - 1]!.id : "" };
  }

  /**
   * One reaper pass: an agent whose lease ended turns UNHEALTHY; one still
   * silent when the grace period ends is removed. Each transition is a
   * compare-and-set, so concurrent reapers emit each event exactly once.
   */
  async sweep(): Promise<void> {
    const now = this.clock.now();
    for (const agent of await this.store.expired(now, SWEEP_BATCH)) {
      if (this.isPastGrace(agent, now)) {
        if (await this.store.delete(agent.id, agent.revision)) {
          await this.emit("agent.expired", agent, agent.status, "lease and grace period ended");
        }
      } else if (agent.status !== AgentStatus.UNHEALTHY) {
        const record: AgentRecord = { ...agent, status: AgentStatus.UNHEALTHY, revision: agent.revision + 1 };
        if (await this.store.put(record, agent.revision)) {
          await this.emit("agent.status_changed", record, agent.status, "lease expired");
        }
      }
    }
  }

  private isPastGrace(agent: AgentRecord, now: number): boolean {
    return now >= agent.leaseExpiresAt + this.lease.graceMs;
  }

  private async emit(type: EventType, agent: AgentRecord, previous: AgentStatus | undefined, reason: string) {
    try {
      await this.bus.publish({
        type,
        agentId: agent.id,
        payload: {
          case: "agentChange",
          value: { agent: toAgentMessage(agent), previousStatus: previous ?? AgentStatus.UNSPECIFIED, reason },
        },
      });
    } catch (err) {
      // The write stands; a lost event is logged, never turned into a failed write.
      this.log.error({ err, type, agentId: agent.id }, "event publish failed");
    }
  }
}
