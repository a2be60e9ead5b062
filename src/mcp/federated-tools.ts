import { createHash, randomUUID } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { SpanContext } from "@opentelemetry/api";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorCode, McpError, type CallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import type { Clock } from "../clock.js";
import type { Directory } from "../directory/directory.js";
import type { CatalogCursor, ToolView } from "../directory/tool-catalog.js";
import type { Dispatcher } from "../dispatch/dispatcher.js";
import { Transport, type AgentRecord } from "../registry/agent-record.js";
import type { AgentStore } from "../registry/agent-store.js";
import type { Candidate, Router } from "../router/router.js";
import { limits } from "../validation/limits.js";
import { decodeCursor, encodeCursor, nameOfKey, pageNames, parseSuffixed } from "./tool-names.js";

/** Tools per tools/list page (what ListTools gives by default). */
const PAGE_SIZE = limits.defaultPageSize;
/** Providers of one tool read per tools/call (in id order): the candidates scored. */
const MAX_PROVIDERS = 256;
/** `_meta` keys of a listed tool (MCP's reserved-prefix rules leave `federation-core/` to us). */
export const TOOL_META = {
  toolId: "federation-core/tool_id",
  providers: "federation-core/providers",
  healthyProviders: "federation-core/healthy_providers",
} as const;

export interface FederatedToolsDeps {
  readonly directory: Directory;
  readonly store: AgentStore;
  readonly router: Pick<Router, "rankAgents" | "commit">;
  readonly dispatcher: Pick<Dispatcher, "dispatch">;
  readonly clock: Clock;
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

  /** One tools/list page; an unknown cursor is INVALID_PARAMS. */
  list(tenant: string, cursor: string | undefined): { tools: Tool[]; nextCursor?: string } {
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
   * or bad arguments are protocol errors.
   */
  async call(
    tenant: string,
    mcpName: string,
    args: Record<string, unknown> | undefined,
    opts: { readonly signal: AbortSignal; readonly trace: SpanContext | undefined },
  ): Promise<CallToolResult> {
    const entry = this.resolve(tenant, mcpName);
    if (!entry) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${mcpName}`);
    const task: JsonObject = { tool: entry.tool.name, arguments: (args ?? {}) as JsonObject };
    if (Buffer.byteLength(JSON.stringify(task)) > limits.maxTaskBytes) {
      throw new McpError(ErrorCode.InvalidParams, `arguments: larger than ${limits.maxTaskBytes} bytes`);
    }
    const candidates = await this.candidates(tenant, entry);
    if (candidates.length === 0) {
      return failed(`no healthy agent offers tool "${mcpName}" now (${entry.providerCount} registered, none healthy)`);
    }
    const routeId = randomUUID();
    // A tool call asks for a tool, not a capability: the task names it (task.tool), as an MCP agent gets it.
    await this.deps.router.commit(tenant, routeId, candidates, []);
    const decision = {
      routeId,
      agent: candidates[0]!.agent,
      candidates,
      reason: `tools/call ${entry.tool.name}: ${candidates.length} provider(s) scored`,
    };
    try {
      const answer = await this.deps.dispatcher.dispatch(
        decision,
        { capabilities: [], excludeAgentIds: new Set(), task, dispatch: true },
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
  if (agent.endpoint.transport === Transport.MCP_STREAMABLE_HTTP && result && Array.isArray(result.content)) {
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
