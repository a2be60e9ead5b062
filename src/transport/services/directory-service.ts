import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  DirectoryService,
  DiscoverResponseSchema,
  GetManifestResponseSchema,
  ListToolsResponseSchema,
  type CatalogToolSchema,
} from "../../../gen/federation/v1/directory_service_pb.js";
import type { Directory } from "../../directory/directory.js";
import { toAgentMessage } from "../../registry/agent-message.js";
import type { CatalogEntry } from "../../registry/agent-store.js";
import { encodeToken, parseDiscover, parseListTools } from "../../validation/requests.js";

export function directoryService(directory: Directory): ServiceImpl<typeof DirectoryService> {
  return {
    async getManifest() {
      const m = await directory.manifest();
      return create(GetManifestResponseSchema, {
        manifest: {
          name: m.name,
          generatedAt: timestampFromMs(m.generatedAt),
          agents: m.agents.map(toAgentMessage),
          tools: m.tools.map(catalogTool),
        },
      });
    },
    async discover(req) {
      const agents = await directory.discover(parseDiscover(req));
      return create(DiscoverResponseSchema, { agents: agents.map(toAgentMessage) });
    },
    async listTools(req) {
      const page = await directory.tools(parseListTools(req));
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
