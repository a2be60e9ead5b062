import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
  HealthCheckResponseSchema,
} from "../../../gen/grpc/health/v1/health_pb.js";
import type { HealthMonitor } from "../../health/health.js";

/**
 * The standard grpc.health.v1.Health service, so stock probes
 * (grpc_health_probe, Kubernetes gRPC probes) work. "" is the whole server;
 * each federation service name answers with the same status.
 */
export function grpcHealthService(monitor: HealthMonitor, serviceNames: readonly string[]): ServiceImpl<typeof Health> {
  const known = new Set(["", ...serviceNames]);
  const current = () => (monitor.service().serving ? Status.SERVING : Status.NOT_SERVING);
  return {
    check(req) {
      if (!known.has(req.service)) {
        throw new ConnectError(`service "${req.service.slice(0, 200)}" is not served here`, Code.NotFound);
      }
      return create(HealthCheckResponseSchema, { status: current() });
    },
    async *watch(req, ctx) {
      if (!known.has(req.service)) {
        yield create(HealthCheckResponseSchema, { status: Status.SERVICE_UNKNOWN });
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
        return;
      }
      let wake: (() => void) | undefined;
      const off = monitor.onChange(() => wake?.());
      const onAbort = () => wake?.();
      ctx.signal.addEventListener("abort", onAbort);
      try {
        let last: Status | undefined;
        while (!ctx.signal.aborted) {
          const now = current();
          if (now !== last) {
            last = now;
            yield create(HealthCheckResponseSchema, { status: now });
          }
          await new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        off();
        ctx.signal.removeEventListener("abort", onAbort);
      }
    },
  };
}
