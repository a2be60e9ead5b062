import type http2 from "node:http2";
import { create, fromBinary, isMessage, type DescMethod, type DescService, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import { AgentSchema, CapabilitySchema, EndpointSchema, ToolSchema } from "../../gen/federation/v1/agent_pb.js";
import { HealthService } from "../../gen/federation/v1/health_service_pb.js";
import type { EventBus } from "../events/event-bus.js";
import { errors } from "../errors.js";
import { peerCertificateOfSocket } from "../security/client-certificate.js";
import { peerKey, principalKey } from "../security/principal.js";
import type { RequestGuard } from "../security/request-guard.js";
import { parseWatch } from "../validation/requests.js";
import { MessageEncoder } from "./message-encoding.js";

type UnaryImpl = (req: Message, ctx: HandlerContext) => unknown;

const FINISHED = new ConnectError("call finished", Code.Canceled);
const CLIENT_GONE = new ConnectError("client cancelled the call", Code.Canceled);
const DEADLINE = new ConnectError("the call's deadline passed", Code.DeadlineExceeded);

interface Route {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly impl: UnaryImpl;
}

export interface FastPathOptions {
  readonly services: readonly { service: DescService; impl: object }[];
  readonly guard: RequestGuard;
  readonly bus: EventBus;
  readonly maxBodyBytes: number;
  /** Bytes a WatchEvents stream may have unsent before it is cut off as too slow. */
  readonly maxStreamBufferBytes: number;
  readonly shutdownSignal: AbortSignal;
}

/**
 * A lean gRPC path for the hot calls: unary RPCs and the WatchEvents feed
 * over HTTP/2, with identity encoding. It runs the same service
 * implementations, the same RequestGuard and the same generated
 * descriptors as connect-node, but reads the one request frame and writes
 * the response frame and trailers straight on the http2 stream, without
 * connect-node's per-request async-iterable pipeline (a CPU profile shows
 * that pipeline, its AbortSignals and its garbage as most of the time).
 * The handler context is built lazily (signal and headers only when a
 * handler asks), responses reuse the encoding of immutable agent messages
 * (message-encoding.ts), and WatchEvents writes each event's pre-encoded
 * frame (encoded once for all subscribers). Everything else — compression,
 * gRPC-Web, Connect, other streaming shapes — stays on connect-node, which
 * remains the reference.
 */
export class GrpcFastPath {
  private readonly routes = new Map<string, Route>();
  private readonly watchPath = `/${HealthService.typeName}/${HealthService.method.watchEvents.name}`;
  /** Agents and the parts of them shared across revisions are never mutated (registry/agent-message.ts). */
  private readonly encoder = new MessageEncoder(
    new Set([AgentSchema, EndpointSchema, CapabilitySchema, ToolSchema].map((s) => s.typeName)),
  );
  /** Calls served here (tests use it to tell which path answered). */
  served = 0;

  constructor(private readonly opts: FastPathOptions) {
    for (const { service, impl } of opts.services) {
      for (const method of service.methods) {
        const fn = (impl as Record<string, unknown>)[method.localName];
        if (method.methodKind !== "unary" || typeof fn !== "function") continue;
        this.routes.set(`/${service.typeName}/${method.name}`, { service, method, impl: fn.bind(impl) as UnaryImpl });
      }
    }
  }

  /**
   * Serves the stream if it is plain gRPC on a route this path knows; false
   * leaves it to connect-node (through node's compat layer). Runs on the
   * raw HTTP/2 stream, before any request/response objects are made.
   */
  tryServe(stream: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders, requestId: string): boolean {
    if (h[":method"] !== "POST") return false;
    const ct = h["content-type"];
    if (ct !== "application/grpc" && ct !== "application/grpc+proto") return false;
    const encoding = h["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    const path = h[":path"] ?? "";
    const route = this.routes.get(path);
    if (!route && path !== this.watchPath) return false;
    this.served++;
    const call = new FastCall(
      route?.service ?? HealthService,
      route?.method ?? HealthService.method.watchEvents,
      path,
      h,
      parseTimeout(h["grpc-timeout"]),
      this.opts.shutdownSignal,
      createContextValues().set(peerKey, peerCertificateOfSocket(stream.session?.socket)),
      requestId,
    );
    const onClose = () => call.abort(CLIENT_GONE);
    stream.once("close", onClose);
    call.onDeadline = () => sendError(stream, call, DEADLINE);
    readFrame(stream, this.opts.maxBodyBytes)
      .then((bytes) => {
        let input: Message;
        try {
          input = fromBinary(call.method.input, bytes);
        } catch (err) {
          throw new ConnectError(`parse binary: ${(err as Error).message}`, Code.Internal);
        }
        return route ? this.unary(route, input, call, stream) : this.watch(input, call, stream);
      })
      .catch((err: unknown) => {
        if (!call.finished) sendError(stream, call, err);
      })
      .finally(() => {
        stream.off("close", onClose);
        call.abort(FINISHED);
      });
    return true;
  }

  private async unary(route: Route, input: Message, call: FastCall, stream: http2.ServerHttp2Stream): Promise<void> {
    await this.admit(call, input);
    const result = await route.impl(input, call);
    // Cancelled, past its deadline (already answered) or shutting down: nothing to send.
    if (call.finished || stream.destroyed) return;
    const output = isMessage(result, route.method.output) ? result : create(route.method.output, result as never);
    const parts = this.encoder.encodeParts(route.method.output, output);
    let length = 0;
    for (const p of parts) length += p.length;
    const frame = Buffer.allocUnsafe(5 + length);
    frame[0] = 0;
    frame.writeUInt32BE(length, 1);
    let at = 5;
    for (const p of parts) {
      frame.set(p, at);
      at += p.length;
    }
    stream.respond(responseHeaders(call), { waitForTrailers: true });
    onTrailers(stream, () => trailers(call, undefined));
    stream.end(frame);
  }

  /** The RequestGuard, reading the raw HTTP/2 headers (no Headers object per call). */
  private async admit(call: FastCall, message: unknown): Promise<void> {
    const principal = await this.opts.guard.admit({
      service: call.service.typeName,
      method: call.method.name,
      header: call.rawHeader,
      peer: call.values.get(peerKey),
      message,
    });
    call.values.set(principalKey, principal);
  }

  /**
   * WatchEvents: after the guard and validation, the stream gets its
   * headers at once, then one pre-encoded frame per event. A subscriber
   * whose unsent bytes pass the bound is ended with RESOURCE_EXHAUSTED.
   */
  private async watch(input: Message, call: FastCall, stream: http2.ServerHttp2Stream): Promise<void> {
    await this.admit(call, input);
    const { filter, afterId } = parseWatch(input as never, call.values.get(principalKey).tenant);
    if (stream.destroyed) return;
    stream.respond(responseHeaders(call), { waitForTrailers: true });
    const signal = call.signal;
    await new Promise<void>((resolve) => {
      let ended: unknown = null;
      const finish = (err: unknown) => {
        if (ended !== null) return;
        ended = err ?? false;
        subscription.close();
        signal.removeEventListener("abort", onAbort);
        if (!stream.destroyed) {
          onTrailers(stream, () => trailers(call, err));
          stream.end();
        }
        resolve();
      };
      const onAbort = () => finish(signal.reason instanceof ConnectError && signal.reason !== CLIENT_GONE ? signal.reason : undefined);
      const subscription = this.opts.bus.subscribe(filter, afterId, (event) => {
        if (ended !== null || stream.destroyed) return;
        if (stream.writableLength > this.opts.maxStreamBufferBytes) {
          finish(errors.subscriberTooSlow(0));
          return;
        }
        stream.write(event.grpcFrame());
      });
      signal.addEventListener("abort", onAbort);
      if (signal.aborted) onAbort();
    });
  }
}

/**
 * The HandlerContext of one fast-path call. Service implementations get
 * the same interface connect-node gives them, but the AbortSignal and the
 * Headers objects are only made if something reads them: a Discover needs
 * neither, and making them was a tenth of its CPU.
 */
class FastCall implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  readonly rawHeader: { get(name: string): string | null };
  /** Set when the call is answered, cancelled or past its deadline. */
  finished = false;
  onDeadline: (() => void) | undefined;
  private controller: AbortController | undefined;
  private reason: unknown;
  private requestHeaders: Headers | undefined;
  private responseHeaders: Headers | undefined;
  private responseTrailers: Headers | undefined;
  private readonly deadlineAt: number | undefined;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly onShutdown = () => this.abort(this.shutdown.reason);

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    readonly url: string,
    private readonly raw: http2.IncomingHttpHeaders,
    timeoutMs: number | undefined,
    private readonly shutdown: AbortSignal,
    readonly values: ContextValues,
    readonly requestId: string,
  ) {
    this.rawHeader = { get: (name) => headerValue(raw, name) };
    if (timeoutMs !== undefined) {
      this.deadlineAt = Date.now() + timeoutMs;
      this.timer = setTimeout(() => {
        this.onDeadline?.();
        this.abort(DEADLINE);
      }, timeoutMs);
    }
  }

  readonly timeoutMs = (): number | undefined => (this.deadlineAt === undefined ? undefined : this.deadlineAt - Date.now());

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.finished) this.controller.abort(this.reason);
      else this.shutdown.addEventListener("abort", this.onShutdown, { once: true });
    }
    return this.controller.signal;
  }

  get requestHeader(): Headers {
    return (this.requestHeaders ??= headersOf(this.raw));
  }

  get responseHeader(): Headers {
    return (this.responseHeaders ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.responseTrailers ??= new Headers());
  }

  /** The response headers and trailers, if a handler set any. */
  get touchedResponseHeader(): Headers | undefined {
    return this.responseHeaders;
  }

  get touchedResponseTrailer(): Headers | undefined {
    return this.responseTrailers;
  }

  abort(reason: unknown): void {
    if (this.finished) return;
    this.finished = true;
    this.reason = reason;
    if (this.timer) clearTimeout(this.timer);
    if (this.controller) {
      this.shutdown.removeEventListener("abort", this.onShutdown);
      this.controller.abort(reason);
    }
  }
}

function headerValue(h: http2.IncomingHttpHeaders, name: string): string | null {
  const v = h[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
}

/** Reads exactly one length-prefixed, uncompressed message from the request stream. */
function readFrame(stream: import("node:stream").Readable, maxBytes: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes + 5) {
        stream.removeAllListeners("data");
        stream.resume();
        reject(new ConnectError(`message larger than ${maxBytes} bytes`, Code.ResourceExhausted));
        return;
      }
      chunks.push(chunk);
    });
    stream.once("end", () => {
      const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      if (buf.length < 5) return reject(new ConnectError("protocol error: missing message", Code.Unimplemented));
      if (buf[0] !== 0) return reject(new ConnectError("compressed message without grpc-encoding", Code.Internal));
      const len = buf.readUInt32BE(1);
      if (len !== buf.length - 5) {
        return reject(new ConnectError("protocol error: expected exactly one message", Code.Unimplemented));
      }
      resolve(buf.subarray(5));
    });
    stream.once("error", reject);
  });
}

/**
 * Sends our trailers when the stream asks for them. The compat response
 * object registered its own (empty) trailer handler on the stream; it is
 * removed so grpc-status is the only answer.
 */
function onTrailers(stream: http2.ServerHttp2Stream, make: () => http2.OutgoingHttpHeaders): void {
  stream.removeAllListeners("wantTrailers");
  stream.once("wantTrailers", () => {
    try {
      stream.sendTrailers(make());
    } catch {
      stream.close();
    }
  });
}

function sendError(stream: http2.ServerHttp2Stream, ctx: FastCall, err: unknown): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close();
    return;
  }
  // Trailers-only response: status and message in the one HEADERS frame.
  stream.respond({ ...responseHeaders(ctx), ...trailers(ctx, ConnectError.from(err)) }, { endStream: true });
}

function responseHeaders(ctx: FastCall): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = { ":status": 200, "content-type": "application/grpc", "x-request-id": ctx.requestId };
  ctx.touchedResponseHeader?.forEach((v, k) => (out[k] = v));
  return out;
}

function trailers(ctx: FastCall, err: unknown): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  ctx.touchedResponseTrailer?.forEach((v, k) => (out[k] = v));
  if (!err) {
    out["grpc-status"] = "0";
    return out;
  }
  const e = ConnectError.from(err);
  e.metadata.forEach((v, k) => (out[k] = v));
  out["grpc-status"] = String(e.code);
  out["grpc-message"] = percentEncode(e.rawMessage);
  return out;
}

/**
 * grpc-message as the gRPC spec asks: UTF-8, with every byte outside
 * printable ASCII, and "%" itself, as %XX. (encodeURIComponent also encodes
 * ";", ",", "/" ..., which grpc-js and grpc-go then show undecoded.)
 */
function percentEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function headersOf(h: http2.IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const k in h) {
    if (k.charCodeAt(0) === 58 /* ":" */) continue;
    const v = h[k];
    if (typeof v === "string") out.set(k, v);
    else if (Array.isArray(v)) for (const x of v) out.append(k, x);
  }
  return out;
}

const timeoutUnits: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000001 };

/** grpc-timeout: up to 8 digits and a unit (H, M, S, m, u, n). */
function parseTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string") return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return undefined;
  return Math.max(1, Math.ceil(Number(m[1]) * timeoutUnits[m[2]!]!));
}
