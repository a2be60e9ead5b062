import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  DirectoryService,
  DiscoverResponseSchema,
  type DiscoverRequest,
  type DiscoverResponse,
  GetJwksResponseSchema,
  ListToolsResponseSchema,
  ListToolProvidersResponseSchema,
  SearchToolsResponseSchema,
  type CatalogToolSchema,
} from "../../../gen/federation/v1/directory_service_pb.js";
import type { Agent } from "../../../gen/federation/v1/agent_pb.js";
import type { Directory } from "../../directory/directory.js";
import type { CallBudget } from "../../federation/federation.js";
import type { AgentRecord } from "../../registry/agent-record.js";
import { toAgentMessage } from "../../registry/agent-message.js";
import { etagMatches } from "../etag.js";
import { ManifestCatalog } from "./manifest-catalog.js";
import type { AgentQuery, CatalogEntry } from "../../registry/agent-store.js";
import type { KeyStore } from "../../security/key-store.js";
import type { ManifestSigner } from "../../security/manifest-signer.js";
import { principalKey } from "../../security/principal.js";
import {
  encodeToken,
  parseDiscover,
  parseGetManifest,
  parseListToolProviders,
  parseListTools,
  parseScope,
  parseSearchTools,
} from "../../validation/requests.js";
import { markImmutable } from "../../message-hints.js";
import { FederationScope } from "../../../gen/federation/v1/origin_pb.js";
import { INSTANCE_HEADER, hopsOf } from "../../federation/hop-headers.js";
import { Memo } from "../message-encoding.js";

export function directoryService(
  directory: Directory,
  signer: ManifestSigner,
  keys: KeyStore,
  catalog?: ManifestCatalog,
): ServiceImpl<typeof DirectoryService> {
  // A repeated discovery gets the same answer array from the store while
  // nothing in it changed (AgentStore.query): one response per answer,
  // encoded once by the transports.
  const answers = new Memo<DiscoverResponse>("discover response");
  const manifests = catalog ?? new ManifestCatalog(directory, signer);
  // The last federated answer built on each local one (local + remote, immutable): a repeated
  // federated Discover with nothing changed here or in the remote cache costs what a local one does.
  const federated = new WeakMap<DiscoverResponse, { readonly remote: readonly Agent[]; readonly answer: DiscoverResponse }>();
  /** The peers' part of a Discover with scope FEDERATED or AUTO, after the local answer. */
  async function federatedDiscover(
    req: DiscoverRequest,
    ctx: HandlerContext,
    q: AgentQuery,
    agents: readonly AgentRecord[],
    local: DiscoverResponse,
  ): Promise<DiscoverResponse> {
    const hop = hopsOf(ctx);
    const want = directory.federation.remoteWanted(req.scope, agents.length, q.limit, hop);
    if (want === 0) return local;
    const remote = await directory.federation.discover(q.tenant, { ...q, limit: want, scope: req.scope }, hop, budgetOf(ctx));
    if (remote.length === 0) return local;
    // Served from the remote cache, the remote agents are the same immutable messages as last time: so is the answer.
    const known = federated.get(local);
    if (known && sameItems(known.remote, remote)) return known.answer;
    const answer = markImmutable(create(DiscoverResponseSchema, { agents: [...local.agents, ...remote] }));
    federated.set(local, { remote, answer });
    return answer;
  }

  return {
    async getManifest(req, ctx) {
      const read = parseGetManifest(req);
      const caller = ctx.values.get(principalKey);
      const view = await manifests.view(caller.via === "anonymous" ? undefined : caller.tenant);
      // The version's etag in the response metadata (REST answers a matching
      // If-None-Match with 304 from it); the request field for RPC clients.
      ctx.responseHeader.set("etag", view.etag);
      // A peer checking our signature learns which instance id is ours (x-federation-visited).
      if (directory.federation.instanceId !== "") ctx.responseHeader.set(INSTANCE_HEADER, directory.federation.instanceId);
      if (etagMatches(read.ifNoneMatch, view.etag)) return view.notModified;
      return read.paged ? manifests.page(view, read) : manifests.full(view);
    },
    getJwks() {
      return create(GetJwksResponseSchema, { keys: keys.jwks().keys as unknown as JsonObject[] });
    },
    // Not async: a local answer is the store's promise and one `then` (the hottest call).
    discover(req, ctx) {
      const q = queryOf(req, ctx.values.get(principalKey).tenant);
      return directory.discover(q).then((agents) => {
        const local =
          answers.get(agents) ??
          answers.set(agents, markImmutable(create(DiscoverResponseSchema, { agents: agents.map(toAgentMessage) })));
        // Local scope (the default) reads no header and allocates nothing more.
        if (req.scope === FederationScope.UNSPECIFIED || parseScope(req.scope) === FederationScope.LOCAL) return local;
        return federatedDiscover(req, ctx, q, agents, local);
      });
    },
    async listTools(req, ctx) {
      const page = await directory.tools(parseListTools(req, ctx.values.get(principalKey).tenant));
      return create(ListToolsResponseSchema, {
        tools: page.tools.map(catalogTool),
        nextPageToken: page.next ? encodeToken([page.next.agentId, page.next.tool.name]) : "",
      });
    },
    searchTools(req, ctx) {
      const q = parseSearchTools(req, ctx.values.get(principalKey).tenant);
      const page = directory.searchTools(q);
      const res = create(SearchToolsResponseSchema, {
        tools: page.entries.map((e) => {
          const providers = page.providers.get(e.id);
          const lastProvider = providers?.ids.at(-1);
          return {
            toolId: e.id,
            name: e.tool.name,
            description: e.tool.description,
            inputSchema: e.tool.inputSchema,
            providerCount: e.providerCount,
            healthyProviderCount: e.healthyCount,
            providerAgentIds: providers?.ids ?? [],
            providersNextPageToken:
              providers && lastProvider !== undefined && providers.total > providers.ids.length ? encodeToken(lastProvider) : "",
            score: e.score,
          };
        }),
        nextPageToken: page.next ? encodeToken([page.next.score, page.next.key]) : "",
        totalCount: page.total,
      });
      // Remote entries join the first page only; paging goes on through the local catalog.
      if (req.scope === FederationScope.UNSPECIFIED || parseScope(req.scope) === FederationScope.LOCAL || q.after) return res;
      const hop = hopsOf(ctx);
      const want = directory.federation.remoteWanted(req.scope, page.entries.length, q.limit, hop);
      if (want === 0) return res;
      return directory.federation
        .searchTools(q.tenant, { ...q, limit: want, scope: req.scope }, hop, budgetOf(ctx))
        .then((remote) => (res.tools.push(...remote), res));
    },
    listToolProviders(req, ctx) {
      const { toolId, after, size } = parseListToolProviders(req);
      const page = directory.toolProviders(ctx.values.get(principalKey).tenant, toolId, after, size);
      const last = page.ids.at(-1);
      // More after this page: fewer ids than the page size means the end.
      const more = page.ids.length === size && last !== undefined;
      return create(ListToolProvidersResponseSchema, {
        agentIds: page.ids,
        nextPageToken: more ? encodeToken(last) : "",
        totalCount: page.total,
      });
    },
  };
}

/**
 * A Discover request's query for the tenant. The lean gRPC path hands a
 * repeated request as the same frozen message (grpc-fast-path.ts, `parse`):
 * its query is remembered with it (by the last tenant that asked), so a
 * repeated Discover is not validated and its query not built again.
 */
function queryOf(req: DiscoverRequest, tenant: string): AgentQuery {
  if (!Object.isFrozen(req)) return parseDiscover(req, tenant);
  const known = queries.get(req);
  if (known !== undefined && known.tenant === tenant) return known;
  const q = parseDiscover(req, tenant);
  queries.set(req, q);
  return q;
}
const queries = new WeakMap<DiscoverRequest, AgentQuery>();

/** The call's budget, read only if the peers are asked (an answer from the cache needs no signal: making one costs). */
class LazyBudget implements CallBudget {
  constructor(private readonly ctx: HandlerContext) {}
  get signal(): AbortSignal {
    return this.ctx.signal;
  }
  get timeoutMs(): number | undefined {
    return this.ctx.timeoutMs();
  }
}
const budgetOf = (ctx: HandlerContext): CallBudget => new LazyBudget(ctx);

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function catalogTool(e: CatalogEntry): MessageInitShape<typeof CatalogToolSchema> {
  return {
    agentId: e.agentId,
    agentName: e.agentName,
    name: e.tool.name,
    description: e.tool.description,
    inputSchema: e.tool.inputSchema,
    toolId: e.toolId,
  };
}
