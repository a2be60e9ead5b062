import { create, toJson, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  DirectoryService,
  DiscoverResponseSchema,
  type DiscoverResponse,
  GetJwksResponseSchema,
  GetManifestResponseSchema,
  ListToolsResponseSchema,
  ManifestSchema,
  type CatalogToolSchema,
} from "../../../gen/federation/v1/directory_service_pb.js";
import type { Directory } from "../../directory/directory.js";
import type { AgentRecord } from "../../registry/agent-record.js";
import { toAgentMessage } from "../../registry/agent-message.js";
import type { CatalogEntry } from "../../registry/agent-store.js";
import type { KeyStore } from "../../security/key-store.js";
import type { ManifestSigner } from "../../security/manifest-signer.js";
import { principalKey } from "../../security/principal.js";
import { encodeToken, parseDiscover, parseListTools } from "../../validation/requests.js";
import { markImmutable } from "../../message-hints.js";
import { Memo } from "../message-encoding.js";

export function directoryService(
  directory: Directory,
  signer: ManifestSigner,
  keys: KeyStore,
): ServiceImpl<typeof DirectoryService> {
  // A repeated discovery gets the same answer array from the store while
  // nothing in it changed (AgentStore.query): one response per answer,
  // encoded once by the transports.
  const answers = new Memo<DiscoverResponse>("discover response");
  return {
    async getManifest(_req, ctx) {
      const caller = ctx.values.get(principalKey);
      const m = await directory.manifest(caller.via === "anonymous" ? undefined : caller.tenant);
      const manifest = create(ManifestSchema, {
        name: m.name,
        generatedAt: timestampFromMs(m.generatedAt),
        agents: m.agents.map(toAgentMessage),
        tools: m.tools.map(catalogTool),
      });
      const sig = await signer.sign(toJson(ManifestSchema, manifest, { alwaysEmitImplicit: true }));
      return create(GetManifestResponseSchema, {
        manifest,
        signature: sig.signature,
        signatureAlgorithm: sig.algorithm,
        keyId: sig.keyId,
      });
    },
    getJwks() {
      return create(GetJwksResponseSchema, { keys: keys.jwks().keys as unknown as JsonObject[] });
    },
    async discover(req, ctx) {
      const agents: readonly AgentRecord[] = await directory.discover(parseDiscover(req, ctx.values.get(principalKey).tenant));
      return (
        answers.get(agents) ??
        answers.set(agents, markImmutable(create(DiscoverResponseSchema, { agents: agents.map(toAgentMessage) })))
      );
    },
    async listTools(req, ctx) {
      const page = await directory.tools(parseListTools(req, ctx.values.get(principalKey).tenant));
      return create(ListToolsResponseSchema, {
        tools: page.tools.map(catalogTool),
        nextPageToken: page.next ? encodeToken([page.next.agentId, page.next.tool.name]) : "",
      });
    },
  };
}

function catalogTool(e: CatalogEntry): MessageInitShape<typeof CatalogToolSchema> {
  return {
    agentId: e.agentId,
    agentName: e.agentName,
    name: e.tool.name,
    description: e.tool.description,
    inputSchema: e.tool.inputSchema,
  };
}
