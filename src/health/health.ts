import { CircuitState } from "../../gen/federation/v1/event_pb.js";
import type { Clock } from "../clock.js";
import type { ComponentStatus } from "../events/event-bus.js";
import { AgentStatus, type AgentRecord } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";
import type { ProbeState } from "./probes.js";
import { noRemediation, type Remediation } from "./remediation.js";
import { noSlos, type SloAlert, type SloReport, type Slos } from "./slo.js";

export interface ComponentReport extends ComponentStatus {
  readonly name: string;
}

export interface ServiceHealth {
  readonly serving: boolean;
  readonly components: readonly ComponentReport[];
  readonly uptimeMs: number;
}

export interface FleetHealth {
  readonly total: number;
  readonly healthy: number;
  readonly degraded: number;
  readonly unhealthy: number;
  readonly draining: number;
  readonly capabilities: number;
  readonly tools: number;
  /** Agents whose circuit breaker is not closed (this replica's view). */
  readonly circuits: readonly { readonly agentId: string; readonly state: CircuitState }[];
  /** The first `maxAgents` agents by id, each with its lease, last probe, breaker and SLOs. */
  readonly agents: readonly AgentHealth[];
  readonly agentsTruncated: boolean;
  /** Per capability of the listed agents. */
  readonly capabilityHealth: readonly CapabilityHealth[];
  /** The tenant's agents counted together. */
  readonly slos: readonly SloReport[];
  readonly firing: readonly SloAlert[];
  /** This replica evaluates SLOs (the probe leader). */
  readonly sloEvaluator: boolean;
}

export interface AgentHealth {
  readonly agent: AgentRecord;
  /** Undefined when this replica has not probed it. */
  readonly probe: Readonly<ProbeState> | undefined;
  readonly circuit: CircuitState;
  readonly slos: readonly SloReport[];
}

export interface CapabilityHealth {
  readonly capability: string;
  readonly agents: number;
  readonly healthy: number;
  readonly slos: readonly SloReport[];
}

/** Agents listed per fleet-health answer when the request names no number, and at most. */
export const FLEET_AGENTS_DEFAULT = 100;
export const FLEET_AGENTS_MAX = 1_000;

/** Something whose health the service depends on (a store, the event bus). */
export interface HealthSource {
  readonly name: string;
  health(): ComponentStatus;
}

/**
 * Service health (SERVING only while every component is healthy and the
 * process is not draining) and fleet health (agents by status).
 */
export class HealthMonitor {
  private draining = false;
  private readonly startedAt: number;
  private readonly listeners = new Set<() => void>();
  /** The tenant's agents whose breaker is open or half-open (set by the app from the router). */
  circuits: (tenant: string) => FleetHealth["circuits"] = () => [];
  /** What the probes last saw of an agent (set by the app). */
  probes: (agentId: string) => Readonly<ProbeState> | undefined = () => undefined;
  /** SLOs and the Praetorian Guard's audit trail (set by the app). */
  slos: Slos = noSlos;
  remediation: Remediation = noRemediation;

  constructor(
    private readonly store: AgentStore,
    private readonly sources: readonly HealthSource[],
    private readonly clock: Clock,
  ) {
    this.startedAt = clock.now();
  }

  service(): ServiceHealth {
    const components: ComponentReport[] = this.sources.map((s) => ({ name: s.name, ...s.health() }));
    if (this.draining) components.push({ name: "server", ok: false, message: "shutting down" });
    return {
      serving: components.every((c) => c.ok),
      components,
      uptimeMs: this.clock.now() - this.startedAt,
    };
  }

  /**
   * The tenant's own fleet: counts over every agent; leases, probes,
   * breakers and SLOs per agent for the first `maxAgents` by id, and per
   * capability of those; the fleet's SLOs and the alerts firing.
   */
  async fleet(tenant: string, maxAgents = FLEET_AGENTS_DEFAULT): Promise<FleetHealth> {
    const limit = Math.min(Math.max(1, maxAgents), FLEET_AGENTS_MAX);
    const [c, listed] = await Promise.all([this.store.counts(tenant), this.store.list(tenant, "", limit + 1)]);
    const n = (s: AgentStatus) => c.byStatus.get(s) ?? 0;
    const circuits = this.circuits(tenant);
    const circuitOf = new Map(circuits.map((x) => [x.agentId, x.state]));
    const agents = listed.slice(0, limit).map((agent) => ({
      agent,
      probe: this.probes(agent.id),
      circuit: circuitOf.get(agent.id) ?? CircuitState.CLOSED,
      slos: this.slos.agent(tenant, agent.id),
    }));
    const byCapability = new Map<string, { agents: number; healthy: number }>();
    for (const { agent } of agents) {
      for (const cap of agent.capabilities) {
        const e = byCapability.get(cap.name) ?? { agents: 0, healthy: 0 };
        e.agents++;
        if (agent.status === AgentStatus.HEALTHY) e.healthy++;
        byCapability.set(cap.name, e);
      }
    }
    const capabilityHealth = [...byCapability]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([capability, e]) => ({ capability, ...e, slos: this.slos.capability(tenant, capability) }));
    return {
      total: c.total,
      healthy: n(AgentStatus.HEALTHY),
      degraded: n(AgentStatus.DEGRADED),
      unhealthy: n(AgentStatus.UNHEALTHY),
      draining: n(AgentStatus.DRAINING),
      capabilities: c.capabilities,
      tools: c.tools,
      circuits,
      agents,
      agentsTruncated: listed.length > limit,
      capabilityHealth,
      slos: this.slos.fleet(tenant),
      firing: this.slos.firing(tenant),
      sloEvaluator: this.slos.evaluating,
    };
  }

  /** Agents of every tenant by status (the registry's size, for /metrics). */
  agentsByStatus(): Promise<ReadonlyMap<AgentStatus, number>> {
    return this.store.statusTotals();
  }

  /** Marks the service NOT_SERVING so load balancers stop sending work. */
  startDraining(): void {
    this.draining = true;
    this.changed();
  }

  /** Called on every change of service health (for grpc.health.v1 Watch). */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed(): void {
    for (const l of this.listeners) l();
  }
}
