import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CheckResponseSchema,
  GetFleetHealthResponseSchema,
  HealthService,
  ServingStatus,
  WatchEventsResponseSchema,
} from "../../../gen/federation/v1/health_service_pb.js";
import type { HealthMonitor } from "../../health/health.js";
import { principalKey } from "../../security/principal.js";
import { parseWatch } from "../../validation/requests.js";
import { eventsOf, type FanOut } from "../fan-out.js";

export function healthService(
  monitor: HealthMonitor,
  /** The one event feed (fan-out.ts), shared with the lean path's WatchEvents. */
  feed: FanOut,
  version: string,
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
    async getFleetHealth(_req, ctx) {
      const f = await monitor.fleet(ctx.values.get(principalKey).tenant);
      return create(GetFleetHealthResponseSchema, {
        totalAgents: f.total,
        healthyAgents: f.healthy,
        degradedAgents: f.degraded,
        unhealthyAgents: f.unhealthy,
        drainingAgents: f.draining,
        capabilities: f.capabilities,
        tools: f.tools,
        circuits: f.circuits.map((c) => ({ agentId: c.agentId, state: c.state })),
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
