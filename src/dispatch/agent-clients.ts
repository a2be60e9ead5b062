import { create, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { SpanContext } from "@opentelemetry/api";
import http from "node:http";
import https from "node:https";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { AgentService, ExecuteRequestSchema } from "../../gen/federation/v1/agent_service_pb.js";
import { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import { childOf, formatTraceparent } from "../transport/trace-context.js";
import { DispatchRefused, type PinnedTarget } from "./address-guard.js";
import { AttemptFailed, cancelled, timedOut, type AgentClient, type ExecuteAnswer, type ExecuteCall } from "./attempt.js";
import { ConnectionPool } from "./connection-pool.js";
import { checkConnectedAddress, isSecure, keepAliveAgent, pinnedKey, sni } from "./pinned-connection.js";

/** How many connections dispatch keeps, and for how long unused. */
export interface ConnectionReuse {
  /** Pinned targets (HTTP agents, HTTP/2 sessions, MCP sessions) kept per transport at most. */
  readonly max: number;
  /** One unused for this long is closed. */
  readonly idleMs: number;
}

function executeRequest(call: ExecuteCall) {
  return create(ExecuteRequestSchema, {
    taskId: call.taskId,
    capabilities: [...call.capabilities],
    payload: call.payload,
    ticket: call.ticket,
    tenant: call.tenant,
    timeout: durationFromMs(call.timeoutMs),
  });
}

/**
 * The proto3 JSON of ExecuteRequest, written directly (what toJson wrote:
 * camelCase names, defaults left out, the Duration as "<seconds>s") — the
 * create + toJson + stringify round cost several µs per attempt.
 */
export function executeRequestJson(call: ExecuteCall): string {
  const ms = Math.max(0, Math.round(call.timeoutMs));
  const frac = ms % 1000;
  return JSON.stringify({
    taskId: call.taskId || undefined,
    capabilities: call.capabilities.length > 0 ? call.capabilities : undefined,
    payload: call.payload,
    ticket: call.ticket || undefined,
    tenant: call.tenant || undefined,
    timeout: `${Math.floor(ms / 1000)}${frac === 0 ? "" : `.${String(frac).padStart(3, "0")}`}s`,
  });
}

/**
 * ExecuteResponse.result from its proto3 JSON: unknown fields ignored, an
 * absent or null result is none; anything but a JSON object there (or as
 * the answer) is not an ExecuteResponse.
 */
export function executeResponseResult(json: JsonValue): JsonObject | undefined {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new TypeError(`cannot decode federation.v1.ExecuteResponse from JSON: ${json === null ? "null" : Array.isArray(json) ? "an array" : typeof json}`);
  }
  const result = json.result;
  if (result === undefined || result === null) return undefined;
  if (typeof result !== "object" || Array.isArray(result)) {
    throw new TypeError(`cannot decode field federation.v1.ExecuteResponse.result from JSON: ${Array.isArray(result) ? "an array" : typeof result}`);
  }
  return result;
}

/**
 * W3C trace context for the agent: the Route call's trace with a new span
 * id per attempt (the attempt is a child of the call's span).
 */
function traceHeaders(trace: SpanContext | undefined): { traceparent?: string } {
  return trace ? { traceparent: formatTraceparent(childOf(trace)) } : {};
}

/**
 * JSON over HTTP: POSTs the proto3 JSON of ExecuteRequest to the endpoint
 * URL and reads the proto3 JSON of ExecuteResponse. Connects to the pinned
 * address only (Host and SNI keep the URL's name), never through a proxy,
 * and never follows a redirect. Sockets are kept alive per pinned target
 * (a bounded pool), so a task does not pay a TCP (and TLS) handshake; a
 * request that meets a reused socket the agent had just closed is sent
 * once more on a new one (the agent deduplicates on the task id anyway).
 */
export class HttpJsonClient {
  private readonly agents: ConnectionPool<http.Agent>;

  constructor(reuse: ConnectionReuse) {
    this.agents = new ConnectionPool<http.Agent>({ ...reuse, close: (a) => a.destroy() });
  }

  readonly execute: AgentClient = (t, call) => {
    const body = Buffer.from(executeRequestJson(call));
    return this.agents.with(pinnedKey(t), () => keepAliveAgent(t), async (agent) => {
      try {
        return await postOnce(t, call, body, agent);
      } catch (err) {
        if (!(err instanceof StaleSocket)) throw err;
        return postOnce(t, call, body, agent);
      }
    });
  };

  close(): void {
    this.agents.close();
  }
}

/** A reused keep-alive socket the agent closed as the request went out: nothing was answered. */
class StaleSocket extends Error {}

function postOnce(t: PinnedTarget, call: ExecuteCall, body: Buffer, agent: http.Agent): Promise<ExecuteAnswer> {
  const secure = isSecure(t.url);
  const mod = secure ? https : http;
  return new Promise<ExecuteAnswer>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      req.destroy();
      reject(err);
    };
    // Headers as a flat list: node writes them as given, without a setHeader (name and value checks, a map) per header.
    const headers = [
      "host",
      t.url.host,
      "content-type",
      "application/json",
      "accept",
      "application/json",
      "content-length",
      String(body.length),
      "idempotency-key",
      call.taskId,
      "x-federation-task-id",
      call.taskId,
    ];
    if (call.trace) headers.push("traceparent", formatTraceparent(childOf(call.trace)));
    const req = mod.request({
      protocol: secure ? "https:" : "http:",
      hostname: t.hostname,
      port: t.port,
      path: `${t.url.pathname}${t.url.search}`,
      method: "POST",
      agent,
      headers: headers as unknown as http.OutgoingHttpHeaders,
    });
    // The address actually connected to must be the one checked.
    checkConnectedAddress(req, t, fail);
    let answered = false;
    const onAbort = () => {
      fail(
        timedOut(call.signal)
          ? new AttemptFailed(AttemptOutcome.TIMEOUT, `no answer within ${call.timeoutMs}ms`)
          : cancelled(call.signal),
      );
    };
    if (call.signal.aborted) return onAbort();
    call.signal.addEventListener("abort", onAbort, { once: true });
    req.on("close", () => call.signal.removeEventListener("abort", onAbort));
    req.on("error", (err: NodeJS.ErrnoException) => {
      if (!answered && req.reusedSocket && err.code === "ECONNRESET") return fail(new StaleSocket(err.message));
      fail(new AttemptFailed(AttemptOutcome.UNREACHABLE, `${err.code ?? ""} ${err.message}`.trim()));
    });
    req.on("response", (res) => {
      answered = true;
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) {
        const location = String(res.headers.location ?? "").slice(0, 200);
        return fail(
          new DispatchRefused(
            `dispatch refused: the agent answered HTTP ${status} redirecting to "${location}"; dispatch never follows redirects`,
          ),
        );
      }
      const declared = Number(res.headers["content-length"] ?? 0);
      const tooBig = () =>
        fail(new AttemptFailed(AttemptOutcome.BAD_RESPONSE, `answer over ${call.maxResponseBytes} bytes (DISPATCH_MAX_RESPONSE_BYTES)`));
      if (declared > call.maxResponseBytes) return tooBig();
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > call.maxResponseBytes) return tooBig();
        chunks.push(c);
      });
      res.on("error", (err) => fail(new AttemptFailed(AttemptOutcome.UNREACHABLE, err.message)));
      res.on("aborted", () => fail(new AttemptFailed(AttemptOutcome.UNREACHABLE, "the connection broke before the answer ended")));
      res.on("end", () => {
        if (settled) return;
        const text = Buffer.concat(chunks).toString("utf8");
        if (status < 200 || status >= 300) {
          return fail(new AttemptFailed(AttemptOutcome.ERROR, `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ""}`));
        }
        let result: JsonObject | undefined;
        try {
          result = executeResponseResult(text.trim() === "" ? {} : (JSON.parse(text) as JsonValue));
        } catch (err) {
          return fail(new AttemptFailed(AttemptOutcome.BAD_RESPONSE, `answer is not an ExecuteResponse in JSON: ${(err as Error).message.slice(0, 200)}`));
        }
        settled = true;
        resolve({ result, bytes: size });
      });
    });
    req.end(body);
  });
}

/** One pooled HTTP/2 connection to a gRPC agent, and the client on it. */
interface GrpcChannel {
  readonly sessions: Http2SessionManager;
  readonly client: Client<typeof AgentService>;
}

/**
 * gRPC: calls federation.v1.AgentService/Execute over an HTTP/2 connection
 * to the pinned address (TLS with the URL's name as SNI for https /
 * grpcs). One connection per pinned target, kept in a bounded pool and
 * shared by concurrent tasks (HTTP/2 multiplexes them); connect-node's
 * session manager reconnects a broken one and closes it when idle.
 */
export class GrpcAgentClient {
  private readonly channels: ConnectionPool<GrpcChannel>;

  constructor(private readonly reuse: ConnectionReuse) {
    this.channels = new ConnectionPool<GrpcChannel>({ ...reuse, close: (c) => c.sessions.abort() });
  }

  readonly execute: AgentClient = (t, call) =>
    this.channels.with(`${pinnedKey(t)}${t.url.pathname}|${call.maxResponseBytes}`, () => this.open(t, call.maxResponseBytes), (c) => callGrpc(c, call));

  close(): void {
    this.channels.close();
  }

  private open(t: PinnedTarget, readMaxBytes: number): GrpcChannel {
    const secure = isSecure(t.url);
    const base = new URL(t.url.href.replace(/^grpcs?:/, secure ? "https:" : "http:"));
    const sessions = new Http2SessionManager(
      base,
      { idleConnectionTimeoutMs: this.reuse.idleMs },
      {
        createConnection: () =>
          secure
            ? tlsConnect({ host: t.address, port: t.port, servername: sni(t), ALPNProtocols: ["h2"] })
            : netConnect({ host: t.address, port: t.port }),
      },
    );
    const client = createClient(AgentService, createGrpcTransport({ baseUrl: base.href, sessionManager: sessions, readMaxBytes }));
    return { sessions, client };
  }
}

async function callGrpc(c: GrpcChannel, call: ExecuteCall): Promise<ExecuteAnswer> {
  let bytes = 0;
  try {
    const res = await c.client.execute(executeRequest(call), {
      signal: call.signal,
      timeoutMs: call.timeoutMs,
      headers: { "idempotency-key": call.taskId, ...traceHeaders(call.trace) },
      onHeader: (h) => void (bytes = Number(h.get("content-length") ?? 0)),
    });
    return { result: res.result, bytes: bytes || Buffer.byteLength(JSON.stringify(res.result ?? {})) };
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code === Code.DeadlineExceeded || (e.code === Code.Canceled && timedOut(call.signal))) {
      throw new AttemptFailed(AttemptOutcome.TIMEOUT, `no answer within ${call.timeoutMs}ms`);
    }
    if (call.signal.aborted) throw cancelled(call.signal);
    if (e.code === Code.ResourceExhausted && /readMaxBytes/i.test(e.rawMessage)) {
      throw new AttemptFailed(AttemptOutcome.BAD_RESPONSE, `answer over ${call.maxResponseBytes} bytes (DISPATCH_MAX_RESPONSE_BYTES)`);
    }
    if (e.code === Code.Unavailable || e.code === Code.Canceled) {
      throw new AttemptFailed(AttemptOutcome.UNREACHABLE, `${Code[e.code]}: ${e.rawMessage.slice(0, 200)}`);
    }
    throw new AttemptFailed(AttemptOutcome.ERROR, `${Code[e.code]}: ${e.rawMessage.slice(0, 200)}`);
  }
}
