import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { RouteResponseSchema, RouterService } from "../../../gen/federation/v1/router_service_pb.js";
import { toAgentMessage } from "../../registry/agent-message.js";
import type { Router } from "../../router/router.js";
import { principalKey } from "../../security/principal.js";
import { parseRoute } from "../../validation/requests.js";

export function routerService(router: Router): ServiceImpl<typeof RouterService> {
  return {
    async route(req, ctx) {
      const d = await router.route(parseRoute(req), ctx.values.get(principalKey).tenant);
      return create(RouteResponseSchema, {
        agent: toAgentMessage(d.agent),
        candidates: d.candidates.map((c) => ({ agentId: c.agent.id, score: c.score })),
        reason: d.reason,
        routeId: d.routeId,
      });
    },
  };
}
