/**
 * The dashboard's picture of the fleet: a snapshot (ListAgents,
 * GetFleetHealth) kept current by the WatchEvents feed. No DOM here.
 *
 * The feed is replayed from the oldest held event on every (re)connect, so
 * it may repeat changes the snapshot already holds; an agent's `revision`
 * decides which of the two is newer, so a replayed event never rolls an
 * agent back.
 */
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";
import { CircuitState, type Event, type HealthAlert } from "../../gen/federation/v1/event_pb.js";
import type { AgentCircuit } from "../../gen/federation/v1/health_service_pb.js";

/** What the panels keep, at most. */
const MAX_EVENTS = 100;
const MAX_TASKS = 30;
const MAX_ALERTS = 30;

export interface TaskRow {
  readonly id: string;
  capabilities: readonly string[];
  agentId: string;
  /** routed, dispatched, completed or failed: the event type's second half. */
  state: string;
  detail: string;
  score: number | undefined;
  at: Date;
}

export interface AlertRow {
  /** The event's id. */
  readonly key: string;
  /** health.alert, health.remediation_dispatched, ... */
  readonly type: string;
  readonly at: Date;
  readonly alert: HealthAlert;
}

export interface EventRow {
  readonly id: bigint;
  readonly type: string;
  readonly at: Date;
  readonly agentId: string;
  readonly summary: string;
}

export class Fleet {
  readonly agents = new Map<string, Agent>();
  /** Agents whose breaker is not closed (GetFleetHealth's circuits, then the circuit events). */
  readonly circuits = new Map<string, CircuitState>();
  /** Newest first. */
  readonly tasks: TaskRow[] = [];
  readonly alerts: AlertRow[] = [];
  readonly events: EventRow[] = [];
  /** The last event applied: where the feed resumes. */
  lastEventId: bigint | undefined;

  /** Replaces the agents with a fresh listing, keeping any that a newer event already brought in. */
  setAgents(list: readonly Agent[]): void {
    const fresh = new Map(list.map((a) => [a.id, a]));
    for (const [id, held] of this.agents) {
      const listed = fresh.get(id);
      if (listed && listed.revision < held.revision) fresh.set(id, held);
    }
    this.agents.clear();
    for (const [id, a] of fresh) this.agents.set(id, a);
  }

  setCircuits(list: readonly AgentCircuit[]): void {
    this.circuits.clear();
    for (const c of list) if (c.state !== CircuitState.CLOSED) this.circuits.set(c.agentId, c.state);
  }

  /** Alerts firing now (GetFleetHealth), shown until the feed says otherwise. */
  setFiring(list: readonly HealthAlert[]): void {
    for (const alert of list) {
      const key = `firing:${alert.alertId || alert.component + alert.message}`;
      if (!this.alerts.some((r) => r.key === key || (alert.alertId !== "" && r.alert.alertId === alert.alertId))) {
        this.alerts.push({ key, type: "health.alert", at: new Date(), alert });
      }
    }
    this.alerts.splice(MAX_ALERTS);
  }

  nameOf(agentId: string): string {
    return this.agents.get(agentId)?.name ?? agentId;
  }

  /** Applies one event of the feed; a repeat of one already applied is ignored. */
  apply(e: Event): void {
    if (this.lastEventId !== undefined && e.id <= this.lastEventId) return;
    this.lastEventId = e.id;
    const at = e.time ? timestampDate(e.time as Timestamp) : new Date();
    const p = e.payload;
    let summary = "";
    switch (p.case) {
      case "agentChange": {
        const agent = p.value.agent;
        if (agent) {
          const held = this.agents.get(agent.id);
          const gone = e.type === "agent.unregistered" || e.type === "agent.expired";
          if (!held || agent.revision >= held.revision) {
            if (gone) {
              this.agents.delete(agent.id);
              this.circuits.delete(agent.id);
            } else this.agents.set(agent.id, agent);
          }
          summary = [agent.name, p.value.reason].filter((s) => s !== "").join(" · ");
        }
        break;
      }
      case "circuitChange": {
        const state = p.value.state;
        if (state === CircuitState.CLOSED || state === CircuitState.UNSPECIFIED) this.circuits.delete(e.agentId);
        else this.circuits.set(e.agentId, state);
        summary = `${CircuitState[p.value.previousState]} → ${CircuitState[state]}${p.value.reason ? ` · ${p.value.reason}` : ""}`;
        break;
      }
      case "taskRouted": {
        const t = this.task(p.value.routeId, at);
        t.capabilities = p.value.capabilities;
        t.agentId = e.agentId;
        t.score = p.value.score;
        t.state = "routed";
        summary = `${p.value.capabilities.join(", ")} → ${this.nameOf(e.agentId)} (score ${p.value.score.toFixed(3)})`;
        break;
      }
      case "taskProgress": {
        const t = this.task(p.value.taskId, at);
        if (p.value.capabilities.length > 0) t.capabilities = p.value.capabilities;
        if (e.agentId !== "") t.agentId = e.agentId;
        t.state = e.type.slice("task.".length);
        t.detail = p.value.detail;
        summary = `${p.value.taskId} attempt ${p.value.attempt}${p.value.detail ? ` · ${p.value.detail}` : ""}`;
        break;
      }
      case "healthAlert": {
        this.alerts.unshift({ key: e.id.toString(), type: e.type, at, alert: p.value });
        this.alerts.splice(MAX_ALERTS);
        summary = `${p.value.component}: ${p.value.message}`;
        break;
      }
      case undefined:
        break;
    }
    this.events.unshift({ id: e.id, type: e.type, at, agentId: e.agentId, summary });
    this.events.splice(MAX_EVENTS);
  }

  private task(id: string, at: Date): TaskRow {
    let t = this.tasks.find((x) => x.id === id);
    if (!t) {
      t = { id, capabilities: [], agentId: "", state: "", detail: "", score: undefined, at };
      this.tasks.unshift(t);
      this.tasks.splice(MAX_TASKS);
    }
    t.at = at;
    return t;
  }
}
