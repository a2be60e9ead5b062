import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import type http from "node:http";
import { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import { errors } from "../errors.js";
import { childOf, formatTraceparent } from "../transport/trace-context.js";
import { DispatchRefused, type PinnedTarget } from "./address-guard.js";
import { AttemptFailed, cancelled, timedOut, type AgentClient, type ExecuteAnswer, type ExecuteCall } from "./attempt.js";
import { ConnectionPool } from "./connection-pool.js";
import { pinnedFetch } from "./pinned-fetch.js";
import { keepAliveAgent } from "./pinned-connection.js";

/**
 * The `_meta` keys of a dispatched tools/call (MCP's reserved-prefix rules
 * leave `federation-core/` to us). The same values also travel as HTTP
 * headers on the request that carries the call, like the HTTP/JSON
 * dispatcher's: idempotency-key and x-federation-task-id (the task id),
 * x-federation-route-ticket, traceparent.
 */
export const MCP_META = {
  taskId: "federation-core/task_id",
  ticket: "federation-core/ticket",
  tenant: "federation-core/tenant",
  capabilities: "federation-core/capabilities",
} as const;

/** The tools/call a task makes: see RouteRequest.task in proto/federation/v1/router_service.proto. */
export interface McpToolCall {
  readonly name: string;
  readonly arguments: Record<string, JsonValue>;
}

/**
 * The task names its tool: `task.tool`, else the first requested capability
 * (an agent that names its tools after its capabilities needs nothing more).
 * The arguments are `task.arguments`, else the task's other fields.
 * A malformed task is the caller's error (INVALID_ARGUMENT), not the agent's.
 */
export function mcpToolCall(task: JsonObject | undefined, capabilities: readonly string[]): McpToolCall {
  const { tool, arguments: args, ...rest } = task ?? {};
  if (tool !== undefined && (typeof tool !== "string" || tool === "")) {
    throw errors.invalidArgument("task.tool", "must be a non-empty string naming the MCP tool to call");
  }
  if (args !== undefined && (args === null || typeof args !== "object" || Array.isArray(args))) {
    throw errors.invalidArgument("task.arguments", "must be an object (the MCP tool's arguments)");
  }
  const name = (tool as string | undefined) ?? capabilities[0]!;
  return { name, arguments: (args as Record<string, JsonValue> | undefined) ?? rest };
}

/** One MCP session with one agent endpoint, initialized once and shared by the tasks sent to it. */
interface McpSession {
  readonly client: Client;
  readonly transport: StreamableHTTPClientTransport;
  readonly agent: http.Agent;
  readonly ready: Promise<void>;
  /** Task id → how to fail its call when its answer turns out too big or breaks off. */
  readonly calls: Map<string, (err: AttemptFailed) => void>;
}

/** A reused session the agent no longer knows (it restarted, or expired it): open a new one. */
class SessionGone extends Error {}

export interface McpClientOptions {
  /** Sessions kept at most (least recently used closed past it). */
  readonly maxSessions: number;
  /** A session unused for this long is closed (DELETE, then its sockets). */
  readonly idleMs: number;
  readonly maxResponseBytes: number;
}

/** Resolves or rejects with `p`, or rejects with the signal's reason when it aborts first. */
function race<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * MCP dispatch: the task becomes one `tools/call` over Streamable HTTP with
 * the official SDK's Client. Sessions are pooled per tenant × endpoint URL ×
 * pinned address (a tenant's tasks never share a session with another's:
 * an agent may keep state per session), so a task pays `initialize` only
 * when its session is new. Every request goes through `pinnedFetch`: the
 * checked address only, no redirects. A JSON-RPC error, an `isError`
 * result, a broken connection or a timeout fails the attempt (failover).
 */
export class McpAgentClient {
  private readonly pool: ConnectionPool<McpSession>;

  constructor(private readonly opts: McpClientOptions) {
    this.pool = new ConnectionPool<McpSession>({ max: opts.maxSessions, idleMs: opts.idleMs, close: (s) => void this.end(s) });
  }

  readonly execute: AgentClient = async (t, call) => {
    const tool = mcpToolCall(call.payload, call.capabilities);
    const key = `${call.tenant}|${t.url.href}|${t.address}`;
    try {
      return await this.pool.with(key, () => this.open(t, call), (s, reused) => this.callTool(key, s, reused, tool, call));
    } catch (err) {
      if (!(err instanceof SessionGone)) throw err;
      return this.pool.with(key, () => this.open(t, call), (s) => this.callTool(key, s, false, tool, call));
    }
  };

  /** Open sessions (for tests and metrics). */
  get sessions(): number {
    return this.pool.size;
  }

  close(): void {
    this.pool.close();
  }

  private open(t: PinnedTarget, call: ExecuteCall): McpSession {
    const agent = keepAliveAgent(t);
    const calls = new Map<string, (err: AttemptFailed) => void>();
    const fetch = pinnedFetch(t, {
      agent,
      maxResponseBytes: this.opts.maxResponseBytes,
      forRequest: (body) => {
        // Only a tools/call carries a task; its headers come from its own _meta.
        if (body === undefined || !body.includes(MCP_META.taskId)) return undefined;
        const meta = (JSON.parse(body) as { params?: { _meta?: Record<string, unknown> } }).params?._meta ?? {};
        const taskId = String(meta[MCP_META.taskId] ?? "");
        const headers: Record<string, string> = {
          "idempotency-key": taskId,
          "x-federation-task-id": taskId,
          "x-federation-route-ticket": String(meta[MCP_META.ticket] ?? ""),
        };
        if (typeof meta.traceparent === "string") headers.traceparent = meta.traceparent;
        return { headers, fail: calls.get(taskId) };
      },
    });
    const transport = new StreamableHTTPClientTransport(t.url, { fetch, reconnectionOptions: { maxReconnectionDelay: 1_000, initialReconnectionDelay: 200, reconnectionDelayGrowFactor: 2, maxRetries: 0 } });
    const client = new Client({ name: "federation-core", version: "1" });
    // Initialize is the session's, not one task's: bounded by the first attempt's time, not its caller.
    const ready = client.connect(transport, { timeout: call.timeoutMs });
    ready.catch(() => {}); // each waiter sees the rejection through its own race()
    return { client, transport, agent, ready, calls };
  }

  private async callTool(key: string, s: McpSession, reused: boolean, tool: McpToolCall, call: ExecuteCall): Promise<ExecuteAnswer> {
    const answerFailed = new AbortController();
    const signal = AbortSignal.any([call.signal, answerFailed.signal]);
    s.calls.set(call.taskId, (err) => answerFailed.abort(err));
    const meta: Record<string, unknown> = {
      [MCP_META.taskId]: call.taskId,
      [MCP_META.ticket]: call.ticket,
      [MCP_META.tenant]: call.tenant,
      [MCP_META.capabilities]: [...call.capabilities],
    };
    if (call.trace) meta.traceparent = formatTraceparent(childOf(call.trace));
    try {
      await race(s.ready, signal);
      const res = await s.client.callTool({ name: tool.name, arguments: tool.arguments, _meta: meta }, undefined, {
        signal,
        // The attempt's own signal ends it first; this only backs it up.
        timeout: call.timeoutMs + 1_000,
      });
      const { content, structuredContent, isError } = res as { content?: unknown; structuredContent?: unknown; isError?: boolean };
      if (isError) {
        const text = Array.isArray(content) ? content.map((c: { text?: unknown }) => (typeof c.text === "string" ? c.text : "")).join(" ").trim() : "";
        throw new AttemptFailed(AttemptOutcome.ERROR, `tool "${tool.name}" answered isError${text ? `: ${text.slice(0, 200)}` : ""}`);
      }
      const result = (structuredContent === undefined ? { content } : { content, structuredContent }) as JsonObject;
      const bytes = Buffer.byteLength(JSON.stringify(result));
      if (bytes > this.opts.maxResponseBytes) {
        throw new AttemptFailed(AttemptOutcome.BAD_RESPONSE, `answer over ${this.opts.maxResponseBytes} bytes (DISPATCH_MAX_RESPONSE_BYTES)`);
      }
      return { result, bytes };
    } catch (err) {
      throw this.failure(err, key, s, reused, call);
    } finally {
      s.calls.delete(call.taskId);
    }
  }

  /** What a failed call means for the attempt, and for the session (a broken one leaves the pool). */
  private failure(err: unknown, key: string, s: McpSession, reused: boolean, call: ExecuteCall): Error {
    const broken = (e: Error) => (this.pool.discard(key, s), e);
    if (err instanceof AttemptFailed) return err.outcome === AttemptOutcome.UNREACHABLE ? broken(err) : err;
    if (err instanceof DispatchRefused) return broken(err);
    if (call.signal.aborted) {
      return timedOut(call.signal) ? new AttemptFailed(AttemptOutcome.TIMEOUT, `no answer within ${call.timeoutMs}ms`) : cancelled(call.signal);
    }
    if (err instanceof StreamableHTTPError) {
      // The SDK's server answers 404 for a session it does not know.
      if (err.code === 404 && reused) return broken(new SessionGone(err.message));
      return broken(new AttemptFailed(AttemptOutcome.ERROR, `HTTP ${err.code ?? "?"}: ${err.message.slice(0, 200)}`));
    }
    if (err instanceof McpError) {
      if (err.code === ErrorCode.RequestTimeout) return new AttemptFailed(AttemptOutcome.TIMEOUT, `no answer within ${call.timeoutMs}ms`);
      if (err.code === ErrorCode.ConnectionClosed) return broken(new AttemptFailed(AttemptOutcome.UNREACHABLE, err.message.slice(0, 200)));
      return new AttemptFailed(AttemptOutcome.ERROR, err.message.slice(0, 200));
    }
    const e = err as NodeJS.ErrnoException;
    return broken(new AttemptFailed(AttemptOutcome.UNREACHABLE, `${e.code ?? ""} ${e.message ?? String(err)}`.trim().slice(0, 200)));
  }

  /** Ends a session: DELETE it at the agent (briefly), then close the client and its sockets. */
  private async end(s: McpSession): Promise<void> {
    const grace = new Promise<void>((r) => setTimeout(r, 1_000).unref());
    await Promise.race([s.ready.then(() => s.transport.terminateSession()).catch(() => {}), grace]);
    await s.client.close().catch(() => {});
    s.agent.destroy();
  }
}
