import { create, fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import http from "node:http";
import https from "node:https";
import { connect as netConnect, isIP, type LookupFunction } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { AgentService, ExecuteRequestSchema, ExecuteResponseSchema } from "../../gen/federation/v1/agent_service_pb.js";
import { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import { childOf, formatTraceparent } from "../transport/trace-context.js";
import type { SpanContext } from "@opentelemetry/api";
import { DispatchRefused, type PinnedTarget } from "./address-guard.js";

/** What one attempt carries to the agent. */
export interface ExecuteCall {
  readonly taskId: string;
  readonly tenant: string;
  readonly capabilities: readonly string[];
  readonly payload: JsonObject | undefined;
  readonly ticket: string;
  /** This attempt's time. */
  readonly timeoutMs: number;
  /** Aborts when the attempt's time is up or the caller gave up. */
  readonly signal: AbortSignal;
  /** An answer over this many bytes fails the attempt. */
  readonly maxResponseBytes: number;
  /** The Route call's span: the agent gets a child of it (W3C traceparent). */
  readonly trace?: SpanContext;
}

export interface ExecuteAnswer {
  readonly result: JsonObject | undefined;
  readonly bytes: number;
}

/** The attempt reached (or tried to reach) the agent and failed: the outcome says how. */
export class AttemptFailed extends Error {
  override name = "AttemptFailed";
  constructor(
    readonly outcome: AttemptOutcome,
    message: string,
  ) {
    super(message);
  }
}

/** The caller gave up (or the server is stopping): the task stops, no failover. */
function cancelled(signal: AbortSignal): ConnectError {
  return signal.reason instanceof ConnectError ? signal.reason : new ConnectError("the caller cancelled the task", Code.Canceled);
}

/** A transport that carries a task to an agent at a checked address. */
export type AgentClient = (target: PinnedTarget, call: ExecuteCall) => Promise<ExecuteAnswer>;

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
 * W3C trace context for the agent: the Route call's trace with a new span
 * id per attempt (the attempt is a child of the call's span).
 */
function traceHeaders(trace: SpanContext | undefined): { traceparent?: string } {
  return trace ? { traceparent: formatTraceparent(childOf(trace)) } : {};
}

/** A host name's form for TLS SNI (none for an IP literal, as RFC 6066 says). */
function sni(t: PinnedTarget): string | undefined {
  return isIP(t.hostname) === 0 ? t.hostname : undefined;
}

/** IPv6 text forms differ (zeros, case): compare canonical forms. */
function sameAddress(a: string | undefined, b: string): boolean {
  if (a === undefined) return false;
  const canon = (x: string) => (isIP(x) === 6 ? new URL(`http://[${x}]`).hostname : x);
  return canon(a) === canon(b);
}

/** A `lookup` that answers the pinned address whatever it is asked (node asks with `all` when it races families). */
function pinnedLookup(t: PinnedTarget): LookupFunction {
  return ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
    if (opts?.all) cb(null, [{ address: t.address, family: t.family }]);
    else cb(null, t.address, t.family);
  }) as unknown as LookupFunction;
}

/**
 * JSON over HTTP: POSTs the proto3 JSON of ExecuteRequest to the endpoint
 * URL and reads the proto3 JSON of ExecuteResponse. Connects to the pinned
 * address only (Host and SNI keep the URL's name), never through a proxy
 * or a pooled connection, and never follows a redirect.
 */
export const executeHttpJson: AgentClient = (t, call) => {
  const body = Buffer.from(JSON.stringify(toJson(ExecuteRequestSchema, executeRequest(call))));
  const secure = t.url.protocol === "https:" || t.url.protocol === "grpcs:";
  const mod = secure ? https : http;
  return new Promise<ExecuteAnswer>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      req.destroy();
      reject(err);
    };
    const req = mod.request({
      protocol: secure ? "https:" : "http:",
      hostname: t.hostname,
      port: t.port,
      path: `${t.url.pathname}${t.url.search}`,
      method: "POST",
      agent: false,
      lookup: pinnedLookup(t),
      servername: sni(t),
      headers: {
        host: t.url.host,
        "content-type": "application/json",
        accept: "application/json",
        "content-length": body.length,
        "idempotency-key": call.taskId,
        "x-federation-task-id": call.taskId,
        ...traceHeaders(call.trace),
      },
    });
    req.on("socket", (socket) => {
      // The address actually connected to must be the one checked.
      socket.once(secure ? "secureConnect" : "connect", () => {
        if (!sameAddress(socket.remoteAddress, t.address)) {
          fail(new DispatchRefused(`dispatch refused: connected to ${socket.remoteAddress}, not the checked ${t.address}`));
        }
      });
    });
    const onAbort = () => {
      const timedOut = (call.signal.reason as Error | undefined)?.name === "TimeoutError";
      fail(
        timedOut
          ? new AttemptFailed(AttemptOutcome.TIMEOUT, `no answer within ${call.timeoutMs}ms`)
          : cancelled(call.signal),
      );
    };
    if (call.signal.aborted) return onAbort();
    call.signal.addEventListener("abort", onAbort, { once: true });
    req.on("close", () => call.signal.removeEventListener("abort", onAbort));
    req.on("error", (err: NodeJS.ErrnoException) =>
      fail(new AttemptFailed(AttemptOutcome.UNREACHABLE, `${err.code ?? ""} ${err.message}`.trim())),
    );
    req.on("response", (res) => {
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
          const json = text.trim() === "" ? {} : (JSON.parse(text) as JsonValue);
          result = fromJson(ExecuteResponseSchema, json, { ignoreUnknownFields: true }).result;
        } catch (err) {
          return fail(new AttemptFailed(AttemptOutcome.BAD_RESPONSE, `answer is not an ExecuteResponse in JSON: ${(err as Error).message.slice(0, 200)}`));
        }
        settled = true;
        resolve({ result, bytes: size });
      });
    });
    req.end(body);
  });
};

/**
 * gRPC: calls federation.v1.AgentService/Execute over an HTTP/2 connection
 * opened to the pinned address (TLS with the URL's name as SNI for https /
 * grpcs), one connection per attempt (pooling per pinned address is a later
 * optimisation).
 */
export const executeGrpc: AgentClient = async (t, call) => {
  const secure = t.url.protocol === "https:" || t.url.protocol === "grpcs:";
  const base = new URL(t.url.href.replace(/^grpcs?:/, secure ? "https:" : "http:"));
  const sessions = new Http2SessionManager(
    base,
    {},
    {
      createConnection: () => {
        const socket = secure
          ? tlsConnect({ host: t.address, port: t.port, servername: sni(t), ALPNProtocols: ["h2"] })
          : netConnect({ host: t.address, port: t.port });
        return socket;
      },
    },
  );
  const client = createClient(
    AgentService,
    createGrpcTransport({ baseUrl: base.href, sessionManager: sessions, readMaxBytes: call.maxResponseBytes }),
  );
  let bytes = 0;
  try {
    const res = await client.execute(executeRequest(call), {
      signal: call.signal,
      timeoutMs: call.timeoutMs,
      headers: { "idempotency-key": call.taskId, ...traceHeaders(call.trace) },
      onHeader: (h) => void (bytes = Number(h.get("content-length") ?? 0)),
    });
    return { result: res.result, bytes: bytes || Buffer.byteLength(JSON.stringify(res.result ?? {})) };
  } catch (err) {
    const e = ConnectError.from(err);
    const timedOut = (call.signal.reason as Error | undefined)?.name === "TimeoutError";
    if (e.code === Code.DeadlineExceeded || (e.code === Code.Canceled && timedOut)) {
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
  } finally {
    sessions.abort();
  }
};
