import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  GetAgentResponseSchema,
  HeartbeatResponseSchema,
  ListAgentsResponseSchema,
  RegisterResponseSchema,
  RegistryService,
  UnregisterResponseSchema,
} from "../../../gen/federation/v1/registry_service_pb.js";
import type { LeaseConfig } from "../../config.js";
import { agentMessageOnce, toAgentMessage } from "../../registry/agent-message.js";
import type { Registry } from "../../registry/registry.js";
import { principalKey } from "../../security/principal.js";
import type { TokenIssuer } from "../../security/token-issuer.js";
import {
  encodeToken,
  parseAgentId,
  parseHeartbeat,
  parseListAgents,
  parseRegister,
} from "../../validation/requests.js";

export function registryService(
  registry: Registry,
  issuer: TokenIssuer,
  lease: LeaseConfig,
): ServiceImpl<typeof RegistryService> {
  return {
    async register(req, ctx) {
      const agent = await registry.register(parseRegister(req, lease), ctx.values.get(principalKey));
      const passport = await issuer.passport(agent);
      return create(RegisterResponseSchema, {
        agent: agentMessageOnce(agent),
        leaseTtl: durationFromMs(agent.leaseTtlMs),
        passport: passport.token,
        passportExpiresAt: timestampFromMs(passport.expiresAt),
      });
    },
    async heartbeat(req, ctx) {
      const agent = await registry.heartbeat(parseHeartbeat(req), ctx.values.get(principalKey));
      const passport = await issuer.renewedPassport(agent);
      return create(HeartbeatResponseSchema, {
        agent: agentMessageOnce(agent),
        leaseTtl: durationFromMs(agent.leaseTtlMs),
        passport: passport.token,
        passportExpiresAt: timestampFromMs(passport.expiresAt),
      });
    },
    async unregister(req, ctx) {
      await registry.unregister(parseAgentId(req), ctx.values.get(principalKey));
      return create(UnregisterResponseSchema);
    },
    async getAgent(req, ctx) {
      const agent = await registry.get(parseAgentId(req), ctx.values.get(principalKey));
      return create(GetAgentResponseSchema, { agent: toAgentMessage(agent) });
    },
    async listAgents(req, ctx) {
      const page = await registry.list(parseListAgents(req), ctx.values.get(principalKey));
      return create(ListAgentsResponseSchema, {
        agents: page.agents.map(toAgentMessage),
        nextPageToken: page.nextAfter === "" ? "" : encodeToken(page.nextAfter),
      });
    },
  };
}
