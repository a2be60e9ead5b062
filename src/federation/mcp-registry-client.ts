import { create, type JsonObject } from "@bufbuild/protobuf";
import { AgentSchema, AgentStatus, Transport, type Agent } from "../../gen/federation/v1/agent_pb.js";
import { ToolEntrySchema, type ToolEntry } from "../../gen/federation/v1/directory_service_pb.js";
import type { Logger } from "../logger.js";
import { toolContentHash } from "../registry/shared-values.js";
import { PeerProblem } from "../../gen/federation/v1/event_pb.js";
import { NoisyAnswer, PeerCheckFailed, type PeerCall, type PeerClient, type PeerIdentity, type RemoteDiscover, type RemoteSearch } from "./peer-client.js";
import type { PeerSpec } from "./peer-spec.js";

/** The registry API caps a page at 100. */
const PAGE_LIMIT = 100;
/** Pages followed per request at most (within the deadline anyway). */
const MAX_PAGES = 5;
/** Largest page read. */
const MAX_PAGE_BYTES = 4 * 1024 * 1024;

/** A server.json record reduced to what we map, after checking its shape. */
interface RegistryServer {
  readonly name: string;
  readonly description: string;
  readonly version: string;
  readonly status: AgentStatus;
  readonly remote: { readonly url: string; readonly transport: Transport } | undefined;
  readonly tools: readonly { readonly name: string; readonly description: string; readonly inputSchema: JsonObject | undefined }[];
}

/**
 * An MCP registry speaking the official registry API: `GET /v0.1/servers`
 * with `limit`, `cursor` and `search` (a substring of the server name),
 * answering `{servers: [{server: <server.json>, _meta}], metadata:
 * {nextCursor}}`. Each server.json becomes an Agent: the name, description
 * and version; the first streamable-http (else sse) remote as the endpoint;
 * `tools` (an extension some registries carry; not in server.json's
 * schema) as its tools and capabilities, with the last segment of its name
 * as one more capability. A record that does not have this shape is skipped
 * with a warning. Registries have no manifest signature: an MCP registry
 * peer is trusted by configuration (use https).
 */
export class McpRegistryClient implements PeerClient {
  constructor(
    private readonly spec: PeerSpec,
    private readonly log: Logger,
    /** A page over this many bytes is an oversized answer. */
    private readonly maxPageBytes = MAX_PAGE_BYTES,
  ) {}

  /** The registry answers the API (one server asked for). */
  async verify(signal: AbortSignal): Promise<PeerIdentity> {
    let body: unknown;
    try {
      body = await this.page({ limit: 1 }, signal);
    } catch (err) {
      if (err instanceof PeerCheckFailed) throw err;
      throw new PeerCheckFailed("unreachable", `GET /v0.1/servers failed: ${(err as Error).message}`);
    }
    if (!isObject(body) || !Array.isArray(body.servers)) {
      throw new PeerCheckFailed("untrusted", 'GET /v0.1/servers did not answer {"servers": [...]}: not an MCP registry');
    }
    return { instanceId: "", keyId: "" };
  }

  async discover(q: RemoteDiscover, call: PeerCall): Promise<Agent[]> {
    // The registry knows no tags: a query with tags cannot match there.
    if (q.tags.length > 0) return [];
    const wanted = q.capabilities.map((c) => c.toLowerCase());
    const out: Agent[] = [];
    const skipped = { count: 0 };
    for await (const s of this.servers(wanted[0] ?? "", q.limit, call.signal, skipped)) {
      if (!q.statuses.includes(s.status)) continue;
      const caps = capabilitiesOf(s);
      if (!wanted.every((w) => caps.has(w) || s.name.toLowerCase().includes(w))) continue;
      out.push(agentOf(s, [...caps]));
      if (out.length >= q.limit) break;
    }
    return malformedIf(skipped.count, out);
  }

  async searchTools(q: RemoteSearch, call: PeerCall): Promise<ToolEntry[]> {
    if (q.tags.length > 0 || q.labels.length > 0) return [];
    const wanted = q.capabilities.map((c) => c.toLowerCase());
    const entries = new Map<string, ToolEntry>();
    // The registry searches server names: the query's first word picks servers, the rest must be in the tool.
    const words = q.text.toLowerCase().split(/\s+/).filter(Boolean);
    const skipped = { count: 0 };
    for await (const s of this.servers(words[0] ?? "", q.limit, call.signal, skipped)) {
      if (q.healthyOnly && s.status !== AgentStatus.HEALTHY) continue;
      const caps = capabilitiesOf(s);
      if (!wanted.every((w) => caps.has(w))) continue;
      const id = agentIdOf(s.name);
      for (const t of s.tools) {
        const text = `${s.name} ${t.name} ${t.description}`.toLowerCase();
        if (!words.every((w) => text.includes(w))) continue;
        const toolId = toolContentHash(t);
        const e =
          entries.get(toolId) ??
          create(ToolEntrySchema, { toolId, name: t.name, description: t.description, inputSchema: t.inputSchema });
        entries.set(toolId, e);
        e.providerCount++;
        if (s.status === AgentStatus.HEALTHY) e.healthyProviderCount++;
        if (e.providerAgentIds.length < q.providerPageSize) e.providerAgentIds.push(id);
      }
      if (entries.size >= q.limit) break;
    }
    return malformedIf(skipped.count, [...entries.values()].slice(0, q.limit));
  }

  close(): void {}

  /** Servers matching `search`, page after page, until `want` were seen or the pages run out. */
  private async *servers(search: string, want: number, signal: AbortSignal, skipped = { count: 0 }): AsyncGenerator<RegistryServer> {
    let cursor = "";
    let seen = 0;
    for (let n = 0; n < MAX_PAGES; n++) {
      const body = await this.page({ limit: Math.min(PAGE_LIMIT, Math.max(want, 1)), search, cursor }, signal);
      if (!isObject(body) || !Array.isArray(body.servers)) throw new Error('the answer is not {"servers": [...]}');
      for (let i = 0; i < body.servers.length; i++) {
        const s = parseServer(body.servers[i]);
        if (typeof s === "string") {
          this.log.warn({ peer: this.spec.id, index: i, reason: s }, "skipped a malformed registry record");
          skipped.count++;
          continue;
        }
        if (s === undefined) continue;
        seen++;
        yield s;
      }
      const next = isObject(body.metadata) && typeof body.metadata.nextCursor === "string" ? body.metadata.nextCursor : "";
      if (next === "" || next === cursor || seen >= want) return;
      cursor = next;
    }
  }

  private async page(params: { limit: number; search?: string; cursor?: string }, signal: AbortSignal): Promise<unknown> {
    const u = new URL(`${this.spec.url}/v0.1/servers`);
    u.searchParams.set("limit", String(params.limit));
    if (params.search) u.searchParams.set("search", params.search);
    if (params.cursor) u.searchParams.set("cursor", params.cursor);
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.spec.token) headers.authorization = `Bearer ${this.spec.token}`;
    const res = await fetch(u, { signal, headers, redirect: "error" });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`GET /v0.1/servers answered HTTP ${res.status}`);
    }
    const declared = Number(res.headers.get("content-length") ?? "0");
    if (declared > this.maxPageBytes) {
      await res.body?.cancel();
      throw new NoisyAnswer(PeerProblem.OVERSIZED, `a page of ${declared} bytes is over ${this.maxPageBytes}`);
    }
    const text = await res.text();
    if (Buffer.byteLength(text) > this.maxPageBytes) throw new NoisyAnswer(PeerProblem.OVERSIZED, `a page is over ${this.maxPageBytes} bytes`);
    try {
      return JSON.parse(text);
    } catch {
      throw new PeerCheckFailed("untrusted", "GET /v0.1/servers did not answer JSON");
    }
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown, max: number): string | undefined => (typeof v === "string" && v.length <= max ? v : undefined);

/** A checked record, a reason it is malformed, or undefined for a deleted server (skipped quietly). */
function parseServer(item: unknown): RegistryServer | string | undefined {
  if (!isObject(item) || !isObject(item.server)) return 'not {"server": {...}}';
  const s = item.server;
  const name = str(s.name, 200);
  if (!name) return "server.name is missing or longer than 200 characters";
  const official = isObject(item._meta) ? item._meta["io.modelcontextprotocol.registry/official"] : undefined;
  const state = isObject(official) && typeof official.status === "string" ? official.status : "active";
  if (state === "deleted") return undefined;
  if (s.description !== undefined && str(s.description, 4096) === undefined) return "server.description is not a string of at most 4096 characters";
  if (s.version !== undefined && str(s.version, 255) === undefined) return "server.version is not a string of at most 255 characters";
  let remote: RegistryServer["remote"];
  if (s.remotes !== undefined) {
    if (!Array.isArray(s.remotes)) return "server.remotes is not a list";
    for (const r of s.remotes) {
      if (!isObject(r) || typeof r.type !== "string" || typeof r.url !== "string") return "server.remotes[] needs a type and a url";
      if (!/^https?:\/\//.test(r.url)) return `server.remotes[] url is not http(s)`;
      const transport =
        r.type === "streamable-http" ? Transport.MCP_STREAMABLE_HTTP : r.type === "sse" ? Transport.MCP_SSE : undefined;
      if (transport !== undefined && (remote === undefined || (remote.transport === Transport.MCP_SSE && transport === Transport.MCP_STREAMABLE_HTTP))) {
        remote = { url: r.url, transport };
      }
    }
  }
  const tools: RegistryServer["tools"][number][] = [];
  if (s.tools !== undefined) {
    if (!Array.isArray(s.tools)) return "server.tools is not a list";
    for (const t of s.tools) {
      if (!isObject(t) || !str(t.name, 128)) return "server.tools[] needs a name of at most 128 characters";
      if (t.inputSchema !== undefined && !isObject(t.inputSchema)) return `server.tools[] "${t.name}": inputSchema is not an object`;
      tools.push({
        name: t.name as string,
        description: str(t.description, 4096) ?? "",
        inputSchema: t.inputSchema as JsonObject | undefined,
      });
    }
  }
  return {
    name,
    description: (s.description as string | undefined) ?? "",
    version: (s.version as string | undefined) ?? "",
    status: state === "active" ? AgentStatus.HEALTHY : AgentStatus.DEGRADED,
    remote,
    tools,
  };
}

/** The server's short name (after the last "/") and its tools' names, lowercased. */
function capabilitiesOf(s: RegistryServer): Set<string> {
  const caps = new Set<string>([s.name.slice(s.name.lastIndexOf("/") + 1).toLowerCase()]);
  for (const t of s.tools) caps.add(t.name.toLowerCase());
  return caps;
}

/** Our id pattern has no "/" or ".": the server name with those replaced (its exact name is the origin's remote_id). */
function agentIdOf(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64);
}

function agentOf(s: RegistryServer, capabilities: string[]): Agent {
  return create(AgentSchema, {
    id: agentIdOf(s.name),
    name: s.name,
    version: s.version,
    status: s.status,
    endpoint: s.remote ? { url: s.remote.url, transport: s.remote.transport } : undefined,
    capabilities: capabilities.map((name) => ({ name })),
    tools: s.tools.map((t) => ({ name: t.name, description: t.description, inputSchema: t.inputSchema })),
    shared: true,
    // The exact server name: the id above had to lose its "/" and ".".
    origin: { remoteId: s.name },
  });
}

/** The results, or — when records were skipped — a malformed answer that still shows them. */
function malformedIf<T>(skipped: number, results: T[]): T[] {
  if (skipped === 0) return results;
  throw new NoisyAnswer(PeerProblem.MALFORMED, `${skipped} malformed record(s) skipped`, results);
}
