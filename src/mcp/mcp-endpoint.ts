import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Code } from "@connectrpc/connect";
import { codeFromHttpStatus } from "@connectrpc/connect/protocol-connect";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import {
  CallToolRequestSchema,
  ErrorCode,
  isInitializeRequest,
  ListToolsRequestSchema,
  McpError,
} from "@modelcontextprotocol/sdk/types.js";
import type { SpanContext } from "@opentelemetry/api";
import type { McpConfig } from "../config.js";
import type { Logger } from "../logger.js";
import { routePolicy } from "../security/access-policy.js";
import type { Principal } from "../security/principal.js";
import type { HttpRoute } from "../transport/http-routes.js";
import type { NodeRequest, NodeResponse } from "../transport/node-types.js";
import type { Call } from "../transport/pipeline.js";
import type { CatalogWatch } from "./catalog-watch.js";
import { LIST_SCOPES, type FederatedTools, type ListScope } from "./federated-tools.js";

export interface McpEndpointOptions extends McpConfig {
  /** The server's name in `initialize` (FEDERATION_NAME) and its version. */
  readonly name: string;
  readonly version: string;
  /** Largest request body (MAX_BODY_BYTES). */
  readonly maxBodyBytes: number;
}

/** One MCP session: an SDK server and its transport, bound to the principal that opened it. */
interface Session {
  readonly server: McpServer;
  readonly transport: StreamableHTTPServerTransport;
  readonly tenant: string;
  readonly subject: string;
  lastUsed: number;
  /** Requests being handled now (an idle session has none). */
  active: number;
  unwatch: () => void;
}

/** What the endpoint hands each JSON-RPC handler of one HTTP request (as the SDK's AuthInfo.extra). */
interface RequestContext {
  readonly principal: Principal;
  readonly trace: SpanContext | undefined;
  /** tools/list's catalog: from the request URL's `scope` (`/mcp?scope=federated`); local by default. */
  readonly scope: ListScope;
}

/**
 * `/mcp`: the federation as one MCP server over Streamable HTTP (the
 * official SDK's McpServer and StreamableHTTPServerTransport, stateful
 * sessions, JSON responses; server notifications on the session's GET
 * stream). An entry of the HTTP route table, so every HTTP request of a
 * session runs the call pipeline — bearer token, access policy
 * (`agents:read`; tools/call also `route`), the tenant's quota, one log
 * line, metrics — before it gets here. A session belongs to the tenant and
 * subject that initialized it: another caller's request with its id is
 * answered 404, as an unknown session is. Sessions are bounded in number
 * (an initialize past MCP_MAX_SESSIONS is refused with 503, after idle
 * ones are closed) and in idle time (MCP_SESSION_IDLE without a request).
 * The request URL's `scope` (`/mcp?scope=federated|auto|local`) says
 * which catalog tools/list reads (see FederatedTools.list).
 */
export class McpEndpoint {
  private readonly sessions = new Map<string, Session>();
  /** Initializations under way (counted against the cap before their session exists). */
  private opening = 0;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly tools: FederatedTools,
    private readonly watch: CatalogWatch,
    private readonly opts: McpEndpointOptions,
    private readonly log: Logger,
  ) {
    this.sweeper = setInterval(() => this.sweep(), Math.max(250, Math.min(30_000, opts.sessionIdleMs / 4))).unref();
  }

  route(): HttpRoute {
    return { path: "/mcp", requirement: routePolicy["/mcp"], handle: (req, res, call) => this.handle(req, res, call) };
  }

  /** Open sessions (metrics, tests). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Shutdown: every session's streams end, no new session opens. */
  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const [id, s] of this.sessions) this.end(id, s);
    this.watch.close();
  }

  private async handle(req: NodeRequest, res: NodeResponse, call: Call): Promise<void> {
    const principal = call.principal!;
    const scope = scopeOf(req.url);
    if (scope === undefined) {
      return refuse(res, call, 400, Code.InvalidArgument, ErrorCode.InvalidRequest, `scope: must be one of ${Object.keys(LIST_SCOPES).join(", ")} (the /mcp URL's query)`);
    }
    let body: unknown;
    let raw: Buffer | undefined;
    if (req.method === "POST") {
      raw = await readBody(req, this.opts.maxBodyBytes);
      if (!raw) return refuse(res, call, 413, Code.ResourceExhausted, ErrorCode.InvalidRequest, `request body larger than ${this.opts.maxBodyBytes} bytes (MAX_BODY_BYTES)`);
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        return refuse(res, call, 400, Code.InvalidArgument, ErrorCode.ParseError, "Parse error: the body is not JSON");
      }
    }
    const sid = req.headers["mcp-session-id"];
    if (typeof sid === "string") {
      const s = this.sessions.get(sid);
      // Another tenant's (or subject's) session is not revealed to exist.
      if (!s || s.tenant !== principal.tenant || s.subject !== principal.subject) {
        return refuse(res, call, 404, Code.NotFound, -32001, "Session not found");
      }
      return this.serve(s, req, res, call, body, raw, scope);
    }
    if (req.method !== "POST" || !isInitializeRequest(body)) {
      return refuse(res, call, 400, Code.InvalidArgument, -32000, "Bad Request: no Mcp-Session-Id header, and not an initialize request");
    }
    if (this.closed) return refuse(res, call, 503, Code.Unavailable, -32000, "server is shutting down");
    if (this.sessions.size + this.opening >= this.opts.maxSessions) {
      this.sweep();
      if (this.sessions.size + this.opening >= this.opts.maxSessions) {
        return refuse(res, call, 503, Code.Unavailable, -32000, `too many MCP sessions (MCP_MAX_SESSIONS=${this.opts.maxSessions}); retry later`, {
          "retry-after": "5",
        });
      }
    }
    this.opening++;
    try {
      await this.open(principal, req, res, call, body, raw, scope);
    } finally {
      this.opening--;
    }
  }

  /** A new session: an SDK server with the catalog's handlers, then the initialize request through its transport. */
  private async open(
    principal: Principal,
    req: NodeRequest,
    res: NodeResponse,
    call: Call,
    body: unknown,
    raw: Buffer | undefined,
    scope: ListScope,
  ): Promise<void> {
    const server = new McpServer(
      { name: this.opts.name, version: this.opts.version },
      {
        capabilities: { tools: { listChanged: true } },
        instructions: "The federation's tools: every tool its agents offer to your tenant, each called on a healthy agent that offers it.",
      },
    );
    const contextOf = (extra: { authInfo?: AuthInfo }): RequestContext => {
      const ctx = extra.authInfo?.extra?.federation as RequestContext | undefined;
      if (!ctx) throw new McpError(ErrorCode.InternalError, "request outside the pipeline");
      return ctx;
    };
    server.server.setRequestHandler(ListToolsRequestSchema, (r, extra) => {
      const ctx = contextOf(extra);
      return this.tools.list(ctx.principal.tenant, r.params?.cursor, { scope: ctx.scope, signal: extra.signal });
    });
    server.server.setRequestHandler(CallToolRequestSchema, (r, extra) => {
      const ctx = contextOf(extra);
      const p = ctx.principal;
      const needed = routePolicy["/mcp tools/call"];
      if (!p.scopes.has(needed) && !p.scopes.has("admin")) throw new McpError(ErrorCode.InvalidRequest, `tools/call requires scope "${needed}"`);
      return this.tools.call(p.tenant, r.params.name, r.params.arguments, { signal: extra.signal, trace: ctx.trace, scope: ctx.scope });
    });
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: true,
      onsessioninitialized: (id) => {
        const s: Session = { server, transport, tenant: principal.tenant, subject: principal.subject, lastUsed: Date.now(), active: 1, unwatch: () => {} };
        s.unwatch = this.watch.watch(principal.tenant, () => void server.sendToolListChanged());
        this.sessions.set(id, s);
      },
      onsessionclosed: (id) => this.forget(id),
    });
    server.server.onclose = () => {
      if (transport.sessionId) this.forget(transport.sessionId);
    };
    transport.onerror = (err) => this.log.debug({ err }, "mcp transport error");
    await server.connect(transport);
    await this.handleRequest(transport, req, res, call, body, raw, scope);
    const s = transport.sessionId ? this.sessions.get(transport.sessionId) : undefined;
    if (s) {
      s.active--;
      s.lastUsed = Date.now();
    } else {
      // The initialize failed (a bad request, an unsupported version): nothing to keep.
      void server.close();
    }
  }

  private async serve(s: Session, req: NodeRequest, res: NodeResponse, call: Call, body: unknown, raw: Buffer | undefined, scope: ListScope): Promise<void> {
    s.lastUsed = Date.now();
    // The GET stream (server notifications) stays open as long as the
    // client likes: it is not a request in flight, so it does not keep the
    // session from idling out.
    if (req.method === "GET") return this.handleRequest(s.transport, req, res, call, body, raw, scope);
    s.active++;
    try {
      await this.handleRequest(s.transport, req, res, call, body, raw, scope);
    } finally {
      s.active--;
      s.lastUsed = Date.now();
    }
  }

  private async handleRequest(
    transport: StreamableHTTPServerTransport,
    req: NodeRequest,
    res: NodeResponse,
    call: Call,
    body: unknown,
    raw: Buffer | undefined,
    scope: ListScope,
  ): Promise<void> {
    const r = req as IncomingMessage & { auth?: AuthInfo; rawBody?: Buffer };
    const context: RequestContext = { principal: call.principal!, trace: call.trace, scope };
    r.auth = { token: "", clientId: context.principal.subject, scopes: [...context.principal.scopes], extra: { federation: context } };
    // The body is read already: the SDK's request adapter takes it from here.
    if (raw) r.rawBody = raw;
    await transport.handleRequest(r, res as ServerResponse, body);
    if (res.headersSent && res.statusCode >= 400) call.code = codeFromHttpStatus(res.statusCode);
  }

  /** Closes sessions idle past MCP_SESSION_IDLE. */
  private sweep(): void {
    const before = Date.now() - this.opts.sessionIdleMs;
    for (const [id, s] of this.sessions) if (s.active === 0 && s.lastUsed <= before) this.end(id, s);
  }

  private end(id: string, s: Session): void {
    this.forget(id);
    void s.transport.close().catch(() => {});
  }

  private forget(id: string): void {
    const s = this.sessions.get(id);
    if (!s) return;
    this.sessions.delete(id);
    s.unwatch();
  }
}

/** The request URL's `scope` (local when absent), or undefined for a value that is none of LIST_SCOPES. */
function scopeOf(url: string | undefined): ListScope | undefined {
  const q = url?.indexOf("?") ?? -1;
  if (q < 0) return LIST_SCOPES.local;
  const values = new URLSearchParams(url!.slice(q + 1)).getAll("scope");
  if (values.length === 0) return LIST_SCOPES.local;
  return values.length === 1 && Object.hasOwn(LIST_SCOPES, values[0]!) ? LIST_SCOPES[values[0]!] : undefined;
}

/** The body, or undefined when it is larger than `max`. */
async function readBody(req: NodeRequest, max: number): Promise<Buffer | undefined> {
  if (Number(req.headers["content-length"]) > max) return undefined;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** A JSON-RPC error answered by the endpoint itself (no session to answer it). */
function refuse(
  res: NodeResponse,
  call: Call,
  status: number,
  code: Code,
  rpcCode: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  call.code = code;
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: rpcCode, message }, id: null }));
}
