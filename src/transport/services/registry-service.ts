import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
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
import { toAgentMessage } from "../../registry/agent-message.js";
import type { Registry } from "../../registry/registry.js";
import {
  encodeToken,
  parseAgentId,
  parseHeartbeat,
  parseListAgents,
  parseRegister,
} from "../../validation/requests.js";

export function registryService(registry: Registry, lease: LeaseConfig): ServiceImpl<typeof RegistryService> {
  return {
    async register(req) {
      const agent = await registry.register(parseRegister(req, lease));
      return create(RegisterResponseSchema, {
        agent: toAgentMessage(agent),
        leaseTtl: durationFromMs(agent.leaseTtlMs),
      });
    },
    async heartbeat(req) {
      const agent = await registry.heartbeat(parseHeartbeat(req));
      return create(HeartbeatResponseSchema, {
        agent: toAgentMessage(agent),
        leaseTtl: durationFromMs(agent.leaseTtlMs),
      });
    },
    async unregister(req) {
      await registry.unregister(parseAgentId(req));
      return create(UnregisterResponseSchema);
    },
    async getAgent(req) {
      return create(GetAgentResponseSchema, { agent: toAgentMessage(await registry.get(parseAgentId(req))) });
    },
    async listAgents(req) {
      const page = await registry.list(parseListAgents(req));
      return create(ListAgentsResponseSchema, {
        agents: page.agents.map(toAgentMessage),
        nextPageToken: page.nextAfter === "" ? "" : encodeToken(page.nextAfter),
      });
    },
  };
}
