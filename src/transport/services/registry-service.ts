import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  GetAgentResponseSchema,
  HeartbeatResponseSchema,
  type HeartbeatResponse,
  ListAgentsResponseSchema,
  RegisterResponseSchema,
  RegistryService,
  UnregisterResponseSchema,
} from "../../../gen/federation/v1/registry_service_pb.js";
import type { LeaseConfig } from "../../config.js";
import { agentMessageOnce, toAgentMessage } from "../../registry/agent-message.js";
import type { AgentRecord } from "../../registry/agent-record.js";
import { withBase } from "../../message-hints.js";
import type { Registry } from "../../registry/registry.js";
import { principalKey } from "../../security/principal.js";
import type { IssuedToken, TokenIssuer } from "../../security/token-issuer.js";
import { Memo } from "../message-encoding.js";
import {
  encodeToken,
  parseAgentId,
  parseHeartbeat,
  parseListAgents,
  parseRegister,
} from "../../validation/requests.js";

/**
 * What a heartbeat answer repeats while the passport stays the same (lease
 * TTL, passport, its expiry), built once per passport as the answer's base
 * (registry/message-base.ts): the passport is most of the answer's bytes.
 */
const answerBases = new Memo<{ leaseTtlMs: number; base: HeartbeatResponse }>("heartbeat answer base");

function heartbeatAnswer(agent: AgentRecord, passport: IssuedToken): HeartbeatResponse {
  const known = answerBases.get(passport);
  let base = known?.base;
  // A lease TTL changes only by registering again, which issues a new
  // passport here; another replica's registration may not, so it is checked.
  if (known?.leaseTtlMs !== agent.leaseTtlMs) {
    base = create(HeartbeatResponseSchema, {
      leaseTtl: durationFromMs(agent.leaseTtlMs),
      passport: passport.token,
      passportExpiresAt: timestampFromMs(passport.expiresAt),
    });
    if (!known) answerBases.set(passport, { leaseTtlMs: agent.leaseTtlMs, base });
  }
  const answer: HeartbeatResponse = Object.assign({}, base);
  answer.agent = agentMessageOnce(agent);
  return withBase(answer, base!);
}

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
      return heartbeatAnswer(agent, await issuer.renewedPassport(agent));
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
