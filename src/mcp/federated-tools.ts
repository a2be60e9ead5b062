import { createHash, randomUUID } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { SpanContext } from "@opentelemetry/api";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorCode, McpError, type CallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import type { ToolEntry } from "../../gen/federation/v1/directory_service_pb.js";
import { FederationScope } from "../../gen/federation/v1/origin_pb.js";
import type { Clock } from "../clock.js";
import type { Directory } from "../directory/directory.js";
import { FIRST_HOP } from "../federation/hop-headers.js";
import { isRemoteAgent, remoteAgentMessage, remoteAgentRecord } from "../federation/remote-agents.js";
import type { CatalogCursor, ToolView } from "../directory/tool-catalog.js";
import type { Dispatcher } from "../dispatch/dispatcher.js";
import { Transport, type AgentRecord } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";
import type { Candidate, Router } from "../router/router.js";
import { limits } from "../validation/limits.js";
import { decodeCursor, encodeCursor, nameOfKey, pageNames, parseSuffixed, suffixedName } from "./tool-names.js";

/** Tools per tools/list page (what ListTools gives by default). */
const PAGE_SIZE = limits.defaultPageSize;
/** Providers of one tool read per tools/call (in id order): the candidates scored. */
const MAX_PROVIDERS = 256;
/** A remote tool's providers asked of its peer per tools/call (SearchTools' provider_page_size is at most 100). */
const MAX_REMOTE_PROVIDERS = 100;
/** The peer's agents read to find a remote tool's providers (Discover's largest page). */
const REMOTE_AGENTS_READ = 1_000;
/** `_meta` keys of a listed tool (MCP's reserved-prefix rules leave `federation-core/` to us). */
export const TOOL_META = {
  toolId: "federation-core/tool_id",
  providers: "federation-core/providers",
  healthyProviders: "federation-core/healthy_providers",
  /** A remote tool's origin: { peerId, peerUrl, remoteId } (remoteId: its tool id there). */
  origin: "federation-core/origin",
} as const;

/** What tools/list reads: this federation's catalog only (LOCAL), or with its peers' (see FederatedTools.list). */
export type ListScope = FederationScope.LOCAL | FederationScope.FEDERATED | FederationScope.AUTO;

/** The values of the `/mcp?scope=` query parameter. */
export const LIST_SCOPES: Readonly<Record<string, ListScope>> = {
  local: FederationScope.LOCAL,
  federated: FederationScope.FEDERATED,
  auto: FederationScope.AUTO,
};

/** Separates a remote tool's peer id from its name: `<peer id>__<tool name>`. */
const PEER_SEPARATOR = "__";

export interface FederatedToolsDeps {
  readonly directory: Directory;
  readonly store: AgentStore;
  readonly router: Pick<Router, "rankAgents" | "commit">;
  readonly dispatcher: Pick<Dispatcher, "dispatch">;
  readonly clock: Clock;
  /** The configured peers (tools/call names the peer of a remote tool); none when absent. */
  readonly peers?: () => readonly { readonly peerId: string; readonly url: string }[];
}

/**
 * The federation's tool catalog as one MCP server's tools, for one tenant
 * at a time: `list` pages the tenant's distinct tool catalog (its own and
 * shared agents' tools, once per distinct tool), `call` routes a tools/call
 * to an agent offering the tool and dispatches it (failover included).
 * Knows MCP's shapes, not HTTP or sessions (mcp-endpoint.ts).
 */
export class FederatedTools {
  constructor(private readonly deps: FederatedToolsDeps) {}

  /**
   * One tools/list page; an unknown cursor is INVALID_PARAMS. With scope
   * FEDERATED (or AUTO, when the local page is not full) the first page
   * also lists the permitted peers' tools (the federation's SearchTools
   * read: one deadline, cached, by peer reputation) after the local ones,
   * each named `<peer id>__<name>` with its origin in `_meta`; later pages
   * go on through the local catalog (as SearchTools pages).
   */
  async list(
    tenant: string,
    cursor: string | undefined,
    opts: { readonly scope?: ListScope; readonly signal?: AbortSignal } = {},
  ): Promise<{ tools: Tool[]; nextCursor?: string }> {
    const local = this.listLocal(tenant, cursor);
    const scope = opts.scope ?? FederationScope.LOCAL;
    if (cursor !== undefined || scope === FederationScope.LOCAL) return local;
    const federation = this.deps.directory.federation;
    const want = federation.remoteWanted(scope, local.tools.length, PAGE_SIZE, FIRST_HOP);
    if (want === 0) return local;
    const remote = await federation.searchTools(
      tenant,
      { text: "", capabilities: [], tags: [], labels: [], healthyOnly: false, limit: want, providerPageSize: 0, scope },
      FIRST_HOP,
      { signal: opts.signal },
    );
    return { ...local, tools: [...local.tools, ...this.remoteTools(tenant, remote)] };
  }

  /** Peers' catalog entries as MCP tools: `<peer id>__<name>`, suffixed as local ones are when a name would repeat (or is a local tool's). */
  private remoteTools(tenant: string, entries: readonly ToolEntry[]): Tool[] {
    const named = entries.map((e) => `${e.origin?.peerId ?? ""}${PEER_SEPARATOR}${e.name}`);
    const count = new Map<string, number>();
    for (const n of named) count.set(n, (count.get(n) ?? 0) + 1);
    return entries.map((e, i) => {
      let name = named[i]!;
      if (count.get(name)! > 1 || this.named(tenant, name, 1).length > 0) name = suffixedName(name, e.toolId);
      const schema = e.inputSchema;
      return {
        name,
        title: e.name,
        description: e.description,
        inputSchema: schema && schema.type === "object" ? (schema as Tool["inputSchema"]) : { type: "object" },
        _meta: {
          [TOOL_META.toolId]: e.toolId,
          [TOOL_META.providers]: e.providerCount,
          [TOOL_META.healthyProviders]: e.healthyProviderCount,
          [TOOL_META.origin]: { peerId: e.origin?.peerId ?? "", peerUrl: e.origin?.peerUrl ?? "", remoteId: e.origin?.remoteId ?? e.toolId },
        },
      };
    });
  }

  private listLocal(tenant: string, cursor: string | undefined): { tools: Tool[]; nextCursor?: string } {
    let after: CatalogCursor | undefined;
    if (cursor !== undefined) {
      after = decodeCursor(cursor);
      if (!after) throw new McpError(ErrorCode.InvalidParams, "invalid cursor");
    }
    // One entry read ahead: whether the last one shares its name with the next page's first.
    const page = this.search(tenant, after, PAGE_SIZE + 1);
    const entries = page.entries.slice(0, PAGE_SIZE);
    const ahead = page.entries[PAGE_SIZE];
    const names = pageNames(entries, after ? nameOfKey(after.key) : undefined, ahead?.tool.name);
    const tools = entries.map((e, i) => mcpTool(e, names[i]!));
    const last = entries.at(-1);
    return ahead && last ? { tools, nextCursor: encodeCursor({ score: 0, key: last.key }) } : { tools };
  }

  /**
   * A token of the tenant's tool list: it changes when a tool appears or
   * goes, or a name's suffix would (not on load, lease or status changes).
   */
  digest(tenant: string): string {
    const h = createHash("sha256");
    let after: CatalogCursor | undefined;
    for (;;) {
      const page = this.search(tenant, after, limits.maxPageSize);
      for (const e of page.entries) h.update(e.id).update("\n");
      if (!page.next) break;
      after = page.next;
    }
    return h.digest("base64url");
  }

  /** The catalog entry an MCP tool name stands for in the tenant's view. */
  resolve(tenant: string, mcpName: string): ToolView | undefined {
    const plain = this.named(tenant, mcpName, 2);
    if (plain.length === 1) return plain[0];
    const s = parseSuffixed(mcpName);
    if (!s) return undefined;
    return this.named(tenant, s.name, MAX_PROVIDERS).find((e) => e.id.startsWith(s.idPrefix));
  }

  /**
   * tools/call: the tool's providers the tenant sees, ranked by the router
   * as Route ranks (its default strategy; open circuits last), then
   * dispatched in that order. The agent's failure, or no agent able to
   * serve, is a result with isError (the model reads why); an unknown tool
   * or bad arguments are protocol errors. A configured peer's
   * `<peer id>__<name>` on a federated (or auto) session is callRemote's.
   */
  async call(
    tenant: string,
    mcpName: string,
    args: Record<string, unknown> | undefined,
    opts: { readonly signal: AbortSignal; readonly trace: SpanContext | undefined; readonly scope?: ListScope },
  ): Promise<CallToolResult> {
    const entry = this.resolve(tenant, mcpName);
    if (!entry) {
      const peer = this.peerOf(mcpName);
      if (peer) {
        if ((opts.scope ?? FederationScope.LOCAL) === FederationScope.LOCAL) {
          throw new McpError(
            ErrorCode.InvalidParams,
            `Tool ${mcpName} is a remote tool of peer "${peer.peerId}" (${peer.url}): this session lists and calls this federation's own tools only; ` +
              `connect to /mcp?scope=federated to call the peers' tools`,
          );
        }
        return this.callRemote(tenant, peer, mcpName, args, opts);
      }
      throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${mcpName}`);
    }
    const task = this.taskOf(entry.tool.name, args);
    const candidates = await this.candidates(tenant, entry);
    if (candidates.length === 0) {
      return failed(`no healthy agent offers tool "${mcpName}" now (${entry.providerCount} registered, none healthy)`);
    }
    // A tool call asks for a tool, not a capability: the task names it (task.tool), as an MCP agent gets it.
    return this.dispatch(tenant, candidates, [], task, `tools/call ${entry.tool.name}: ${candidates.length} provider(s) scored`, opts);
  }

  /** The configured peer a `<peer id>__<name>` tool name names, if any. */
  private peerOf(mcpName: string): { readonly peerId: string; readonly url: string } | undefined {
    if (!mcpName.includes(PEER_SEPARATOR)) return undefined;
    return this.deps.peers?.().find((p) => mcpName.startsWith(`${p.peerId}${PEER_SEPARATOR}`));
  }

  private search(tenant: string, after: CatalogCursor | undefined, limit: number) {
    try {
      return this.deps.directory.searchTools({
        tenant,
        text: "",
        capabilities: [],
        tags: [],
        labels: [],
        healthyOnly: false,
        after,
        limit,
        providerPageSize: 0,
      });
    } catch (err) {
      // The catalog is still loading from a shared store: the client may retry.
      throw new McpError(ErrorCode.InternalError, ConnectError.from(err).rawMessage);
    }
  }

  /**
   * The peer's own catalog entry a `<peer id>__<name>` (or
   * `<peer id>__<name>__<id prefix>`) tool name stands for, with its
   * provider ids: the federation's SearchTools read (cached, permitted
   * peers only: a peer that may not serve the tenant answers nothing),
   * asking the peers for their own tools (scope LOCAL), those of the
   * named peer kept.
   */
  private async resolveRemote(
    tenant: string,
    peerId: string,
    mcpName: string,
    signal: AbortSignal,
  ): Promise<ToolEntry | undefined> {
    const rest = mcpName.slice(peerId.length + PEER_SEPARATOR.length);
    const entries = (
      await this.deps.directory.federation.searchTools(
        tenant,
        { text: "", capabilities: [], tags: [], labels: [], healthyOnly: false, limit: PAGE_SIZE, providerPageSize: MAX_REMOTE_PROVIDERS, scope: FederationScope.LOCAL },
        FIRST_HOP,
        { signal },
      )
    ).filter((e) => e.origin?.peerId === peerId);
    const plain = entries.filter((e) => e.name === rest);
    if (plain.length === 1) return plain[0];
    const s = parseSuffixed(rest);
    return s ? entries.find((e) => e.name === s.name && (e.origin?.remoteId || e.toolId).startsWith(s.idPrefix)) : undefined;
  }

  /**
   * tools/call of a remote tool: its providers at the peer (the peer's
   * Discover, its agents that can take work, those offering the tool kept)
   * are ranked by the router like Route's remote candidates (locality 0.5),
   * and the dispatcher carries the call to the peer as a forwarded Route
   * (dispatch, scope LOCAL, our task id and ticket, the hop headers) for
   * the first one's capabilities, with the task naming the tool by its name
   * there; the home federation picks among its agents with those
   * capabilities and calls the tool. Candidates lacking one of those
   * capabilities are left out (the forwarded Route names one set).
   */
  private async callRemote(
    tenant: string,
    peer: { readonly peerId: string },
    mcpName: string,
    args: Record<string, unknown> | undefined,
    opts: { readonly signal: AbortSignal; readonly trace: SpanContext | undefined },
  ): Promise<CallToolResult> {
    const entry = await this.resolveRemote(tenant, peer.peerId, mcpName, opts.signal);
    if (!entry) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${mcpName}`);
    const task = this.taskOf(entry.name, args);
    const providers = new Set(entry.providerAgentIds);
    const found = (
      await this.deps.directory.federation.discover(
        tenant,
        { capabilities: [], tags: [], statuses: [], limit: REMOTE_AGENTS_READ, scope: FederationScope.LOCAL },
        FIRST_HOP,
        { signal: opts.signal },
      )
    ).filter((a) => a.origin?.peerId === peer.peerId && providers.has(a.origin.remoteId || a.id));
    const now = this.deps.clock.now();
    const ranked = this.deps.router.rankAgents(
      tenant,
      found.map((a) => remoteAgentRecord(a, tenant, now)),
      { now },
    );
    if (ranked.length === 0) {
      return failed(`no agent of peer "${peer.peerId}" offering tool "${entry.name}" can take work now (${entry.providerCount} registered there, ${entry.healthyProviderCount} healthy)`);
    }
    const capabilities = ranked[0]!.agent.capabilities.map((c) => c.name);
    const candidates = ranked.filter((c) => capabilities.every((n) => c.agent.capabilities.some((k) => k.name === n)));
    return this.dispatch(tenant, candidates, capabilities, task, `tools/call ${mcpName}: ${candidates.length} provider(s) of peer "${peer.peerId}" scored`, opts);
  }

  /** The task of a tools/call: the tool's name (at its agent) and its arguments, bounded. */
  private taskOf(tool: string, args: Record<string, unknown> | undefined): JsonObject {
    const task: JsonObject = { tool, arguments: (args ?? {}) as JsonObject };
    if (Buffer.byteLength(JSON.stringify(task)) > limits.maxTaskBytes) {
      throw new McpError(ErrorCode.InvalidParams, `arguments: larger than ${limits.maxTaskBytes} bytes`);
    }
    return task;
  }

  /** Commits the router's first candidate and dispatches in the candidates' order; the agent's answer as a CallToolResult. */
  private async dispatch(
    tenant: string,
    candidates: Candidate[],
    capabilities: string[],
    task: JsonObject,
    reason: string,
    opts: { readonly signal: AbortSignal; readonly trace: SpanContext | undefined },
  ): Promise<CallToolResult> {
    const routeId = randomUUID();
    await this.deps.router.commit(tenant, routeId, candidates, capabilities);
    const decision = { routeId, agent: candidates[0]!.agent, candidates, reason };
    try {
      const answer = await this.deps.dispatcher.dispatch(
        decision,
        { capabilities, excludeAgentIds: new Set(), task, dispatch: true },
        tenant,
        { signal: opts.signal, trace: opts.trace },
      );
      return toolResult(answer.agent, answer.result, answer.taskId);
    } catch (err) {
      const e = ConnectError.from(err);
      if (e.code === Code.Unavailable || e.code === Code.DeadlineExceeded || e.code === Code.FailedPrecondition) return failed(e.rawMessage);
      if (e.code === Code.Canceled) throw new McpError(ErrorCode.RequestTimeout, e.rawMessage);
      throw new McpError(ErrorCode.InternalError, e.rawMessage);
    }
  }

  /** Up to `limit` distinct tools of this exact name (browse order: name, then id). */
  private named(tenant: string, name: string, limit: number): ToolView[] {
    const page = this.search(tenant, { score: 0, key: `${name}\u0000` }, limit);
    const out: ToolView[] = [];
    for (const e of page.entries) {
      if (e.tool.name !== name) break;
      out.push(e);
    }
    return out;
  }

  /** The providers that may take the call, in the router's order. */
  private async candidates(tenant: string, entry: ToolView): Promise<Candidate[]> {
    const { directory, store, router, clock } = this.deps;
    let ids: string[];
    try {
      ids = directory.toolProviders(tenant, entry.id, "", MAX_PROVIDERS).ids;
    } catch {
      return [];
    }
    const agents = await Promise.all(ids.map((id) => store.get(id)));
    // The router leaves out other tenants' unshared agents (the catalog shows none: defence in depth).
    return router.rankAgents(tenant, agents.filter((a): a is AgentRecord => a !== undefined), { now: clock.now() });
  }
}

/** A catalog tool as an MCP Tool: its input schema must be a JSON Schema object (an empty object schema when it has none). */
function mcpTool(e: ToolView, name: string): Tool {
  const schema = e.tool.inputSchema;
  return {
    name,
    ...(name !== e.tool.name ? { title: e.tool.name } : {}),
    description: e.tool.description,
    inputSchema: schema && schema.type === "object" ? (schema as Tool["inputSchema"]) : { type: "object" },
    _meta: { [TOOL_META.toolId]: e.id, [TOOL_META.providers]: e.providerCount, [TOOL_META.healthyProviders]: e.healthyCount },
  };
}

/**
 * The agent's answer as a CallToolResult: an MCP agent's is one already
 * (content, structuredContent); an HTTP/JSON or gRPC agent's result object
 * becomes structuredContent with its JSON as the text content.
 */
function toolResult(agent: AgentRecord, result: JsonObject | undefined, taskId: string): CallToolResult {
  const meta = { "federation-core/task_id": taskId, "federation-core/agent_id": agent.id };
  // A remote agent's transport is the one its home federation reports (the record keeps none).
  const transport = isRemoteAgent(agent) ? (remoteAgentMessage(agent)?.endpoint?.transport ?? Transport.UNSPECIFIED) : agent.endpoint.transport;
  if (transport === Transport.MCP_STREAMABLE_HTTP && result && Array.isArray(result.content)) {
    const out: CallToolResult = { content: result.content as CallToolResult["content"], _meta: meta };
    const structured = result.structuredContent as JsonValue | undefined;
    if (structured && typeof structured === "object" && !Array.isArray(structured)) out.structuredContent = structured as Record<string, unknown>;
    return out;
  }
  const value = result ?? {};
  return { content: [{ type: "text", text: JSON.stringify(value) }], structuredContent: value, _meta: meta };
}

function failed(message: string): CallToolResult {
  return { isError: true, content: [{ type: "text", text: message }] };
}
