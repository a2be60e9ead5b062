import { create, type JsonObject } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { AgentCard } from "@a2a-js/sdk";
import {
  GetAgentCardResponseSchema,
  GetAgentResponseSchema,
  HeartbeatResponseSchema,
  type HeartbeatResponse,
  HeartbeatStreamResponseSchema,
  ListAgentsResponseSchema,
  RegisterFromCardResponseSchema,
  RegisterResponseSchema,
  RegistryService,
  UnregisterResponseSchema,
} from "../../../gen/federation/v1/registry_service_pb.js";
import { agentCard } from "../../a2a/agent-card.js";
import type { CardFetcher } from "../../a2a/card-fetch.js";
import { registerRequestFromCard } from "../../a2a/card-import.js";
import type { Clock } from "../../clock.js";
import type { LeaseConfig } from "../../config.js";
import { agentMessageOnce, toAgentMessage } from "../../registry/agent-message.js";
import type { AgentRecord } from "../../registry/agent-record.js";
import { withBase } from "../../message-hints.js";
import type { Registry } from "../../registry/registry.js";
import { principalKey, type Principal } from "../../security/principal.js";
import type { IssuedToken, TokenIssuer } from "../../security/token-issuer.js";
import { Memo } from "../message-encoding.js";
import {
  encodeToken,
  parseAgentId,
  parseHeartbeat,
  parseListAgents,
  parseRegister,
  parseRegisterFromCard,
  type RegisterInput,
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

/** A2A agent cards: the federation name exported cards mention, and how cards are fetched. */
export interface CardSupport {
  readonly federationName: string;
  readonly fetcher: CardFetcher;
}

/**
 * What HeartbeatStream needs beyond a unary Heartbeat: each streamed
 * heartbeat is counted as a call (the guard's quotas, the opening
 * credential's expiry), and a clock to tell the time by.
 */
export interface StreamSupport {
  readonly clock: Clock;
  /**
   * Throws (UNAUTHENTICATED, RESOURCE_EXHAUSTED), or answers a promise that
   * rejects so, when this heartbeat may not be taken; nothing when it was
   * counted at once.
   */
  heartbeat(principal: Principal, agentId: string, now: number): Promise<void> | undefined | void;
}

/** Agents one HeartbeatStream remembers what it last told (a stream naming more forgets the oldest: it is told again). */
const STREAM_AGENTS = 10_000;

export function registryService(
  registry: Registry,
  issuer: TokenIssuer,
  lease: LeaseConfig,
  cards: CardSupport,
  streams: StreamSupport,
): ServiceImpl<typeof RegistryService> {
  /**
   * Register's path, shared by RegisterFromCard: the registration, then its
   * passport — unless the caller deferred it (the first heartbeat's answer
   * carries it: renewedPassport signs one for an agent it has none for).
   */
  const registered = async (input: RegisterInput, ctx: HandlerContext, deferPassport = false) => {
    const agent = await registry.register(input, ctx.values.get(principalKey));
    const answer = { agent: agentMessageOnce(agent), leaseTtl: durationFromMs(agent.leaseTtlMs) };
    if (deferPassport) return answer;
    const passport = await issuer.passport(agent);
    return { ...answer, passport: passport.token, passportExpiresAt: timestampFromMs(passport.expiresAt) };
  };
  return {
    async register(req, ctx) {
      return create(RegisterResponseSchema, await registered(parseRegister(req, lease), ctx, req.deferPassport));
    },
    async registerFromCard(req, ctx) {
      const cardUrl = parseRegisterFromCard(req);
      const card = await cards.fetcher.fetch(cardUrl);
      const overrides = { agentId: req.agentId, name: req.name, version: req.version, labels: req.labels, leaseTtl: req.leaseTtl };
      const input = parseRegister(registerRequestFromCard(card, overrides, cardUrl), lease);
      return create(RegisterFromCardResponseSchema, await registered(input, ctx));
    },
    async getAgentCard(req, ctx) {
      const agent = await registry.get(parseAgentId(req), ctx.values.get(principalKey));
      return create(GetAgentCardResponseSchema, { card: AgentCard.toJSON(agentCard(agent, cards.federationName)) as JsonObject });
    },
    async heartbeat(req, ctx) {
      // Awaited only when it is a promise (the memory store's beat is synchronous).
      const beat = registry.heartbeatNow(parseHeartbeat(req), ctx.values.get(principalKey));
      const agent = beat instanceof Promise ? await beat : beat;
      return heartbeatAnswer(agent, await issuer.renewedPassport(agent));
    },
    /**
     * Heartbeats over one stream: each request is a Heartbeat (same
     * validation, ownership and quotas); each answer carries the lease's end
     * and, only when they changed since this stream last said them, the
     * status, the passport and the lease TTL. An error ends the stream.
     */
    async *heartbeatStream(requests, ctx) {
      const principal = ctx.values.get(principalKey);
      const told = new Map<string, { status: number; passport: string; leaseTtlMs: number }>();
      for await (const req of requests) {
        const input = parseHeartbeat(req);
        // Each step awaited only when it is a promise (in memory, none is).
        const admitted = streams.heartbeat(principal, input.agentId, streams.clock.now());
        if (admitted) await admitted;
        const beat = registry.heartbeatNow(input, principal);
        const agent = beat instanceof Promise ? await beat : beat;
        const passport = await issuer.renewedPassport(agent);
        // Field by field (an init object is walked by reflection), and what
        // the stream last told kept in one object per agent, updated in place.
        const answer = create(HeartbeatStreamResponseSchema);
        answer.agentId = agent.id;
        answer.leaseExpiresAt = timestampFromMs(agent.leaseExpiresAt);
        let last = told.get(agent.id);
        if (!last) {
          if (told.size >= STREAM_AGENTS) told.delete(told.keys().next().value!);
          told.set(agent.id, (last = { status: -1, passport: "", leaseTtlMs: -1 }));
        }
        if (last.status !== agent.status) answer.status = last.status = agent.status;
        if (last.passport !== passport.token) {
          answer.passport = last.passport = passport.token;
          answer.passportExpiresAt = timestampFromMs(passport.expiresAt);
        }
        if (last.leaseTtlMs !== agent.leaseTtlMs) {
          last.leaseTtlMs = agent.leaseTtlMs;
          answer.leaseTtl = durationFromMs(agent.leaseTtlMs);
        }
        yield answer;
      }
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
