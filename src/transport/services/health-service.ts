import { create, equals } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CheckResponseSchema,
  GetFleetHealthResponseSchema,
  HealthService,
  ListRemediationsResponseSchema,
  ServingStatus,
  WatchEventsResponseSchema,
  WatchFleetHealthResponseSchema,
  type GetFleetHealthResponse,
} from "../../../gen/federation/v1/health_service_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SloStatusSchema } from "../../../gen/federation/v1/health_service_pb.js";
import { FLEET_AGENTS_DEFAULT, type FleetHealth, type HealthMonitor } from "../../health/health.js";
import { alertMessage, type SloReport } from "../../health/slo.js";
import { principalKey } from "../../security/principal.js";
import { parseWatch } from "../../validation/requests.js";
import { eventsOf, type FanOut } from "../fan-out.js";

/** Audit-trail entries answered when the request names no limit. */
const REMEDIATIONS_DEFAULT = 100;

export function healthService(
  monitor: HealthMonitor,
  /** The one event feed (fan-out.ts), shared with the lean path's WatchEvents. */
  feed: FanOut,
  version: string,
  /** WatchFleetHealth sends a changed snapshot at most this often (FLEET_WATCH_INTERVAL). */
  fleetWatchIntervalMs = 5_000,
): ServiceImpl<typeof HealthService> {
  const status = (ok: boolean) => (ok ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  return {
    check() {
      const h = monitor.service();
      return create(CheckResponseSchema, {
        status: status(h.serving),
        components: h.components.map((c) => ({ name: c.name, status: status(c.ok), message: c.message })),
        version,
        uptime: durationFromMs(h.uptimeMs),
      });
    },
    async getFleetHealth(req, ctx) {
      return fleetMessage(await monitor.fleet(ctx.values.get(principalKey).tenant, req.maxAgents || FLEET_AGENTS_DEFAULT));
    },
    /**
     * The snapshot at once; then, once an interval has passed since the
     * last one sent, the first snapshot that differs from it (looked at
     * every FLEET_WATCH_POLL_MS at most), so a quiet fleet sends nothing
     * and a busy one at most one snapshot per interval.
     */
    async *watchFleetHealth(req, ctx) {
      const tenant = ctx.values.get(principalKey).tenant;
      const snapshot = async () => fleetMessage(await monitor.fleet(tenant, req.maxAgents || FLEET_AGENTS_DEFAULT));
      const pollMs = Math.min(fleetWatchIntervalMs, FLEET_WATCH_POLL_MS);
      let sent: GetFleetHealthResponse = await snapshot();
      yield create(WatchFleetHealthResponseSchema, { fleet: sent });
      for (;;) {
        await sleep(fleetWatchIntervalMs, ctx.signal);
        for (;;) {
          const next = await snapshot();
          if (!equals(GetFleetHealthResponseSchema, next, sent)) {
            sent = next;
            break;
          }
          await sleep(pollMs, ctx.signal);
        }
        yield create(WatchFleetHealthResponseSchema, { fleet: sent });
      }
    },
    async listRemediations(req, ctx) {
      const trail = await monitor.remediation.list(ctx.values.get(principalKey).tenant, req.limit || REMEDIATIONS_DEFAULT);
      return create(ListRemediationsResponseSchema, {
        remediations: trail.map((r) => ({
          remediationId: r.remediationId,
          alert: alertMessage(r.alert),
          status: r.status,
          targetKind: r.targetKind,
          target: r.target,
          taskId: r.taskId,
          createdAt: timestampFromMs(r.createdAt),
          finishedAt: r.finishedAt === undefined ? undefined : timestampFromMs(r.finishedAt),
          detail: r.detail,
          result: r.result,
        })),
      });
    },
    async *watchEvents(req, ctx) {
      const { filter, afterId } = parseWatch(req, ctx.values.get(principalKey).tenant);
      for await (const event of eventsOf(feed, filter, afterId, ctx.signal)) {
        yield create(WatchEventsResponseSchema, { event: event.message });
      }
    },
  };
}

/** How often a fleet watcher looks for a change once its interval has passed. */
const FLEET_WATCH_POLL_MS = 1_000;

/** Resolves after `ms`, or rejects with the signal's reason when the call ends first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    timer.unref();
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function fleetMessage(f: FleetHealth): GetFleetHealthResponse {
  return create(GetFleetHealthResponseSchema, {
    totalAgents: f.total,
    healthyAgents: f.healthy,
    degradedAgents: f.degraded,
    unhealthyAgents: f.unhealthy,
    drainingAgents: f.draining,
    capabilities: f.capabilities,
    tools: f.tools,
    circuits: f.circuits.map((c) => ({ agentId: c.agentId, state: c.state })),
    agents: f.agents.map((a) => ({
      agentId: a.agent.id,
      name: a.agent.name,
      status: a.agent.status,
      leaseExpiresAt: timestampFromMs(a.agent.leaseExpiresAt),
      probe: a.probe && {
        transport: a.probe.transport,
        lastOutcome: a.probe.lastOutcome,
        lastLatency: durationFromMs(Math.round(a.probe.lastLatencyMs)),
        lastAt: timestampFromMs(a.probe.lastAt),
        consecutiveFailures: a.probe.consecutiveFailures,
        consecutiveSuccesses: a.probe.consecutiveSuccesses,
        lastDetail: a.probe.lastDetail,
      },
      circuit: a.circuit,
      slos: a.slos.map(sloStatus),
    })),
    agentsTruncated: f.agentsTruncated,
    capabilityHealth: f.capabilityHealth.map((c) => ({
      capability: c.capability,
      agents: c.agents,
      healthyAgents: c.healthy,
      slos: c.slos.map(sloStatus),
    })),
    slos: f.slos.map(sloStatus),
    firingAlerts: f.firing.map((a) => alertMessage(a)),
    sloEvaluator: f.sloEvaluator,
  });
}

function sloStatus(r: SloReport): MessageInitShape<typeof SloStatusSchema> {
  return {
    slo: r.slo,
    objective: r.objective,
    sli: r.sli,
    events: BigInt(r.events),
    errorBudgetRemaining: r.errorBudgetRemaining,
    burnRates: r.burns.map((b) => ({ window: durationFromMs(b.windowMs), burnRate: b.burnRate, events: BigInt(b.events) })),
    firing: [...r.firing],
  };
}
