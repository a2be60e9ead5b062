import type { CircuitState } from "../../gen/federation/v1/event_pb.js";
import type { Clock } from "../clock.js";
import type { ComponentStatus } from "../events/event-bus.js";
import { AgentStatus } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";

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
}

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

  /** The tenant's own fleet. */
  async fleet(tenant: string): Promise<FleetHealth> {
    const c = await this.store.counts(tenant);
    const n = (s: AgentStatus) => c.byStatus.get(s) ?? 0;
    return {
      total: c.total,
      healthy: n(AgentStatus.HEALTHY),
      degraded: n(AgentStatus.DEGRADED),
      unhealthy: n(AgentStatus.UNHEALTHY),
      draining: n(AgentStatus.DRAINING),
      capabilities: c.capabilities,
      tools: c.tools,
      circuits: this.circuits(tenant),
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
