import type http2 from "node:http2";
import { create, fromBinary, isMessage, type DescMessage, type DescMethod, type DescService, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { HealthService } from "../../gen/federation/v1/health_service_pb.js";
import { errors } from "../errors.js";
import { baseOf } from "../message-hints.js";
import { requirementOf, type Requirement } from "../security/access-policy.js";
import { peerCertificateOfSocket } from "../security/client-certificate.js";
import { peerKey, principalKey } from "../security/principal.js";
import { parseWatch } from "../validation/requests.js";
import { CallContext, CallValues, CLIENT_GONE, DEADLINE, FINISHED } from "./call-context.js";
import { FanOut, type Subscriber } from "./fan-out.js";
import { percentEncode } from "./grpc-message.js";
import { onStreamClosed, parseGrpcTimeout, type PendingRequests } from "./http2-limits.js";
import { MessageEncoder } from "./message-encoding.js";
import { decodeSimple } from "./simple-decoding.js";
import type { Call, Pipeline } from "./pipeline.js";
import { traceKey } from "./trace-context.js";

type UnaryImpl = (req: Message, ctx: HandlerContext) => unknown;
const WATCH_PROCEDURE = `${HealthService.typeName}/${HealthService.method.watchEvents.name}`;


interface Route {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly impl: UnaryImpl;
  /** "package.Service/Method", made once: the outcome record's method. */
  readonly procedure: string;
  /** Its access-policy entry, looked up once (undefined: closed to callers). */
  readonly requirement: Requirement | undefined;
  /** Parsed requests by their bytes, on a route whose handler only reads its request (`parse`). */
  readonly requests: Map<string, Message> | undefined;
}

export interface FastPathOptions {
  readonly services: readonly { service: DescService; impl: object }[];
  /** The call pipeline: the guard runs in it, and every call ends in it with its outcome. */
  readonly pipeline: Pipeline;
  /** The event feed in gRPC frames, shared with connect-node's WatchEvents. */
  readonly feed: FanOut;
  readonly maxBodyBytes: number;
  /** Requests still being received: the server ends those that take longer than REQUEST_TIMEOUT. */
  readonly pending: PendingRequests;
  /** Deadlines are clamped to this (a longer timer would fire at once). */
  readonly maxDeadlineMs: number;
  readonly shutdownSignal: AbortSignal;
}

/**
 * A lean gRPC path for the hot calls: unary RPCs and the WatchEvents feed
 * over HTTP/2, with identity encoding. It runs the same service
 * implementations, the same RequestGuard and the same generated
 * descriptors and the same call pipeline as connect-node, but reads the one request frame and writes
 * the response frame and trailers straight on the http2 stream, without
 * connect-node's per-request async-iterable pipeline (a CPU profile shows
 * that pipeline, its AbortSignals and its garbage as most of the time).
 * The handler context is built lazily (signal and headers only when a
 * handler asks), responses reuse the encoding of immutable agent messages
 * (message-encoding.ts), and WatchEvents writes each event's pre-encoded
 * frame (encoded once, written once per group of subscribers with the same
 * filter and loop turn, fan-out.ts). Everything else — compression,
 * gRPC-Web, Connect, other streaming shapes — stays on connect-node, which
 * remains the reference.
 */
export class GrpcFastPath {
  private readonly routes = new Map<string, Route>();
  /** Bidirectional streams (HeartbeatStream): their impl takes and returns async iterables. */
  private readonly bidiRoutes = new Map<string, Route>();
  private readonly watchPath = `/${HealthService.typeName}/${HealthService.method.watchEvents.name}`;
  private readonly encoder = new MessageEncoder(baseOf);
  private readonly feed: FanOut;
  /** Calls served here (tests use it to tell which path answered). */
  served = 0;
  /** Requests answered with a message parsed for the same bytes before (`parse`). */
  reusedRequests = 0;

  private readonly watchRequirement = requirementOf(HealthService.typeName, HealthService.method.watchEvents.name);

  constructor(readonly opts: FastPathOptions) {
    this.feed = opts.feed;
    for (const { service, impl } of opts.services) {
      for (const method of service.methods) {
        const fn = (impl as Record<string, unknown>)[method.localName];
        if (typeof fn !== "function") continue;
        const procedure = `${service.typeName}/${method.name}`;
        const route: Route = {
          service,
          method,
          impl: fn.bind(impl) as UnaryImpl,
          procedure,
          requirement: requirementOf(service.typeName, method.name),
          requests: SHARED_REQUEST_PROCEDURES.has(procedure) ? new Map() : undefined,
        };
        if (method.methodKind === "unary") this.routes.set(`/${procedure}`, route);
        else if (method.methodKind === "bidi_streaming") this.bidiRoutes.set(`/${procedure}`, route);
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
    const bidi = route ? undefined : this.bidiRoutes.get(path);
    if (!route && !bidi && path !== this.watchPath) return false;
    this.served++;
    const record = this.opts.pipeline.begin(requestId, "grpc", path);
    const served = route ?? bidi;
    record.method = served?.procedure ?? WATCH_PROCEDURE;
    // A TLS client's certificate; nothing on a plain connection (peerKey's default).
    const values = new CallValues();
    const peer = peerCertificateOfSocket(stream.session?.socket);
    if (peer !== undefined) values.set(peerKey, peer);
    const call = new CallContext({
      service: served?.service ?? HealthService,
      method: served?.method ?? HealthService.method.watchEvents,
      protocolName: "grpc",
      requestMethod: "POST",
      url: path,
      headers: h,
      timeoutMs: clampedTimeout(h["grpc-timeout"], this.opts.maxDeadlineMs),
      shutdown: this.opts.shutdownSignal,
      values,
      requestId,
    });
    if (bidi) this.serveBidi(stream, call, record, bidi);
    else this.serve(stream, call, record, route);
    return true;
  }

  /**
   * A bidirectional stream: admitted once when it opens (the pipeline's
   * guard reads its headers), then each request frame is parsed as it
   * arrives and handed to the handler's async iterable, and each message
   * the handler yields is written as one frame. Backpressure both ways:
   * reading pauses while requests wait unread, writing waits for drain.
   * The handler ends the stream: returning is OK, throwing is its status.
   */
  private serveBidi(stream: http2.ServerHttp2Stream, call: CallContext, record: Call, route: Route): void {
    const output = route.method.output;
    let code: number = Code.Canceled;
    const input = new RequestFrames(stream, route.method.input, this.opts.maxBodyBytes, call.signal, (n) => (record.bytesIn += n));
    const onClose = () => call.abort(CLIENT_GONE);
    stream.on("close", onClose);
    if (call.timeoutMs() !== undefined) {
      call.onDeadline = () => {
        code = Code.DeadlineExceeded;
        if (!stream.headersSent) sendError(stream, call, DEADLINE);
      };
    }
    const run = async (): Promise<void> => {
      const admitting = this.admit(call, record, undefined, route.requirement);
      if (admitting) await admitting;
      if (stream.destroyed) return;
      stream.respond(responseHeaders(call), WAIT_FOR_TRAILERS);
      for await (const m of (route.impl as unknown as BidiImpl)(input, call)) {
        if (call.finished || stream.destroyed) return;
        const frame = this.encoder.frame(output, isMessage(m, output) ? m : create(output, m as never));
        record.bytesOut += frame.length;
        if (!stream.write(frame)) await drained(stream, call.signal);
      }
    };
    run()
      .then(
        () => {
          if (call.finished || stream.destroyed) return;
          code = 0;
          endStream(stream, call, undefined);
        },
        (err: unknown) => {
          // Deadline and client gone: already said (or nobody to tell).
          if (call.finished && (call.signal.reason === CLIENT_GONE || code === Code.DeadlineExceeded)) return;
          code = ConnectError.from(err).code;
          endStream(stream, call, err);
        },
      )
      .finally(() => {
        input.detach();
        stream.off("close", onClose);
        call.abort(FINISHED);
        this.opts.pipeline.finish(record, code);
      });
  }

  /**
   * One call, start to end: every outcome is answered, and the call is
   * always finished. The request is read by listeners shared by every call
   * (the call's state hangs off the stream: `UnaryCall`, no closures per
   * call) and only the handler's part may be async. When the call ends its
   * state leaves the stream — node's stream objects survive
   * young-generation GCs (see README, "Node flags"), and whatever still
   * hangs off them would be copied and promoted with them; the shared
   * listeners stay (they hold nothing of the call).
   */
  private serve(stream: http2.ServerHttp2Stream, call: CallContext, record: Call, route: Route | undefined): void {
    const u = new UnaryCall(this, this.opts.pending, stream, call, record, route);
    (stream as UnaryStream)[UNARY] = u;
    onStreamClosed(stream, onUnaryClose);
    // Past its deadline: a call that has not answered gets a trailers-only
    // DEADLINE_EXCEEDED; a stream already under way ends with it in its
    // trailers when the abort reaches it (a reset here would race it).
    if (call.timeoutMs() !== undefined) call.onDeadline = () => u.deadline();
    this.opts.pending.add(stream);
    stream.on("data", onUnaryData);
    stream.on("end", onUnaryEnd);
    stream.on("error", onUnaryError);
  }

  /**
   * The request message: parsed, or — on a route whose handler only reads
   * its request (`route.requests`) — the same frozen message as for the
   * same bytes before: a repeated Discover is not parsed again.
   */
  parse(route: Route | undefined, buf: Buffer): Message {
    const shared = route?.requests;
    if (!shared || buf.length > MAX_SHARED_REQUEST_BYTES + 5) return parseRequest(route?.method.input ?? HealthService.method.watchEvents.input, buf);
    const key = buf.toString("latin1");
    const known = shared.get(key);
    if (known) {
      this.reusedRequests++;
      return known;
    }
    const message = parseRequest(route.method.input, buf);
    if (shared.size >= MAX_SHARED_REQUESTS) shared.clear();
    shared.set(key, deepFreeze(message));
    return message;
  }

  /** Admits the call, runs the handler and answers; a failure anywhere on the way is the call's outcome. */
  unary(u: UnaryCall, input: Message): void {
    let admitting: void | Promise<void>;
    try {
      admitting = this.admit(u.call, u.record, input, u.route!.requirement);
    } catch (err) {
      u.fail(err);
      return;
    }
    if (admitting) admitting.then(() => this.handle(u, input), (err: unknown) => u.fail(err));
    else this.handle(u, input);
  }

  private handle(u: UnaryCall, input: Message): void {
    let result: unknown;
    try {
      result = u.route!.impl(input, u.call);
    } catch (err) {
      u.fail(err);
      return;
    }
    if (isThenable(result)) result.then((r: unknown) => u.answer(r), (err: unknown) => u.fail(err));
    else u.answer(result);
  }

  /** The response frame of a handler's result. */
  frame(route: Route, result: unknown): Buffer {
    const output = route.method.output;
    return this.encoder.frame(output, isMessage(result, output) ? result : create(output, result as never));
  }

  /** WatchEvents on its stream, then the call's end with its outcome. */
  watchCall(u: UnaryCall, input: Message): void {
    this.watch(input, u.call, u.record, u.stream).then(
      (end) => {
        if (end !== undefined) u.code = end;
        u.finish();
      },
      (err: unknown) => u.fail(err),
    );
  }

  /** The pipeline's links (the guard), reading the raw HTTP/2 headers (no Headers object per call); a promise only if a link needs one. */
  private admit(call: CallContext, record: Call, message: unknown, requirement: Requirement | undefined): void | Promise<void> {
    const admitting = this.opts.pipeline.admit(record, {
      service: call.service.typeName,
      method: call.method.name,
      header: call.rawHeader,
      peer: call.values.get(peerKey),
      message,
      requirement,
    });
    if (admitting) return admitting.then(() => admitted(call, record));
    admitted(call, record);
  }

  /**
   * WatchEvents: after the guard and validation, the stream gets its
   * headers at once, then one pre-encoded frame per event. A subscriber
   * whose unsent bytes pass the bound is ended with RESOURCE_EXHAUSTED; a
   * resume whose history is not all held, with errors.eventHistoryGap.
   */
  private async watch(input: Message, call: CallContext, record: Call, stream: http2.ServerHttp2Stream): Promise<number | undefined> {
    await this.admit(call, record, input, this.watchRequirement);
    const { filter, afterId } = parseWatch(input as never, call.values.get(principalKey).tenant);
    if (stream.destroyed) return undefined;
    stream.respond(responseHeaders(call), WAIT_FOR_TRAILERS);
    const signal = call.signal;
    return new Promise<number>((resolve) => {
      let ended: unknown = null;
      const finish = (err: unknown, removed = false) => {
        if (ended !== null) return;
        ended = err ?? false;
        record.bytesOut = subscriber.sent;
        membership.leave(!removed);
        signal.removeEventListener("abort", onAbort);
        if (!stream.destroyed) {
          onTrailers(stream, () => trailers(call, err));
          stream.end();
        }
        resolve(err === undefined ? (signal.reason === CLIENT_GONE ? Code.Canceled : 0) : ConnectError.from(err).code);
      };
      const onAbort = () => finish(signal.reason instanceof ConnectError && signal.reason !== CLIENT_GONE ? signal.reason : undefined);
      const subscriber: Subscriber = {
        out: stream,
        sent: 0,
        tooSlow: (unsent, limit) => finish(errors.subscriberTooSlow(unsent, limit), true),
        // after_id's events are not all held: OUT_OF_RANGE (UNAVAILABLE when the replay could not be read).
        historyLost: (error) => finish(error, true),
      };
      const membership = this.feed.join(filter, afterId, subscriber);
      signal.addEventListener("abort", onAbort);
      if (signal.aborted) onAbort();
    });
  }
}

/** A unary call's state, on its stream while it runs (see `serve`). */
const UNARY = Symbol("unary call");
type UnaryStream = http2.ServerHttp2Stream & { [UNARY]?: UnaryCall };

/** The stream listeners of every unary call: shared, the call's state is on the stream (none once it ended). */
function onUnaryData(this: UnaryStream, chunk: Buffer): void {
  this[UNARY]?.data(chunk);
}
function onUnaryEnd(this: UnaryStream): void {
  this[UNARY]?.end();
}
function onUnaryClose(this: UnaryStream): void {
  this[UNARY]?.closed();
}
function onUnaryError(this: UnaryStream, err: unknown): void {
  this[UNARY]?.fail(err);
}

/**
 * One unary call (or WatchEvents) on the lean path, from its request's
 * first byte to its outcome: the request read whole, parsed, admitted,
 * handled and answered, and the call finished exactly once.
 */
class UnaryCall {
  code: number = Code.Canceled;
  private ended = false;
  /** Until the request is read (or refused). */
  private reading = true;
  /** The request's first chunk, and all of them when there are more (most requests are one). */
  private first: Buffer | undefined = undefined;
  private chunks: Buffer[] | undefined = undefined;
  private size = 0;

  constructor(
    private readonly path: GrpcFastPath,
    private readonly pending: PendingRequests,
    readonly stream: http2.ServerHttp2Stream,
    readonly call: CallContext,
    readonly record: Call,
    readonly route: Route | undefined,
  ) {}

  data(chunk: Buffer): void {
    if (!this.reading) return;
    this.size += chunk.length;
    const max = this.path.opts.maxBodyBytes;
    if (this.size > max + 5) {
      this.reading = false;
      this.first = this.chunks = undefined;
      this.stream.resume();
      this.fail(new ConnectError(`message larger than ${max} bytes`, Code.ResourceExhausted));
      return;
    }
    if (this.first === undefined) this.first = chunk;
    else (this.chunks ??= [this.first]).push(chunk);
  }

  end(): void {
    if (!this.reading) return;
    this.reading = false;
    const buf = this.chunks !== undefined ? Buffer.concat(this.chunks) : (this.first ?? EMPTY);
    this.first = this.chunks = undefined;
    this.pending.delete(this.stream);
    let input: Message;
    try {
      input = this.path.parse(this.route, buf);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.record.bytesIn = buf.length;
    if (this.route) this.path.unary(this, input);
    else this.path.watchCall(this, input);
  }

  closed(): void {
    this.call.abort(CLIENT_GONE);
    // Closed before the request was read: nothing more will come.
    if (this.reading) this.finish();
  }

  /** The deadline passed: trailers-only DEADLINE_EXCEEDED unless an answer is under way. */
  deadline(): void {
    this.code = Code.DeadlineExceeded;
    if (!this.stream.headersSent) sendError(this.stream, this.call, DEADLINE);
  }

  /** The handler's result: one frame, then trailers (unless the call ended meanwhile). */
  answer(result: unknown): void {
    const { stream, call } = this;
    // Cancelled, past its deadline (already answered) or shutting down: nothing to send.
    if (call.finished || stream.destroyed) {
      this.finish();
      return;
    }
    try {
      const frame = this.path.frame(this.route!, result);
      stream.respond(responseHeaders(call), WAIT_FOR_TRAILERS);
      if (call.touchedResponseTrailer === undefined) stream.on("wantTrailers", sendOkTrailers);
      else onTrailers(stream, () => trailers(call, undefined));
      stream.end(frame);
      this.record.bytesOut = frame.length;
      this.code = 0;
    } catch (err) {
      this.fail(err);
      return;
    }
    this.finish();
  }

  fail(err: unknown): void {
    if (!this.call.finished) {
      this.code = ConnectError.from(err).code;
      sendError(this.stream, this.call, err);
    }
    this.finish();
  }

  finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.pending.delete(this.stream);
    (this.stream as UnaryStream)[UNARY] = undefined;
    this.call.abort(FINISHED);
    this.path.opts.pipeline.finish(this.record, this.code);
  }
}

const EMPTY = Buffer.alloc(0);

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v instanceof Promise || (typeof v === "object" && v !== null && typeof (v as { then?: unknown }).then === "function");
}

/** A successful call's trailers (`this` is the stream): one frozen object for every call. */
function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  try {
    this.sendTrailers(OK_TRAILERS);
  } catch {
    this.close();
  }
}
const OK_TRAILERS: http2.OutgoingHttpHeaders = Object.freeze({ "grpc-status": "0" });

/** Requests of a route that shares parsed requests: at most this many remembered (then forgotten all at once), each at most this large. */
const MAX_SHARED_REQUESTS = 1_024;
const MAX_SHARED_REQUEST_BYTES = 512;

/** Procedures whose handlers only read their request: a repeated request is parsed once (`GrpcFastPath.parse`). */
const SHARED_REQUEST_PROCEDURES: ReadonlySet<string> = new Set(["federation.v1.DirectoryService/Discover"]);

/** Freezes a message and every message and list in it (a shared request: a handler that wrote to it would throw, not corrupt the next call). */
function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || Object.isFrozen(value) || ArrayBuffer.isView(value)) return value;
  for (const k of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[k]);
  return Object.freeze(value);
}

/** What the handler reads in its context once the call is admitted. */
function admitted(call: CallContext, record: Call): void {
  call.values.set(principalKey, record.principal!);
  call.values.set(traceKey, record);
}

/**
 * The one length-prefixed, uncompressed message of a request body, parsed.
 * A message that does not parse is the client's error (a Struct nested
 * past the parser's depth lands there too).
 */
function parseRequest(schema: DescMessage, buf: Buffer): Message {
  if (buf.length < 5) throw new ConnectError("protocol error: missing message", Code.Unimplemented);
  if (buf[0] !== 0) throw new ConnectError("compressed message without grpc-encoding", Code.InvalidArgument);
  if (buf.readUInt32BE(1) !== buf.length - 5) throw new ConnectError("protocol error: expected exactly one message", Code.Unimplemented);
  try {
    const body = buf.subarray(5);
    return decodeSimple(schema, body) ?? fromBinary(schema, body);
  } catch (err) {
    throw new ConnectError(`request message: cannot parse binary: ${(err as Error).message}`, Code.InvalidArgument);
  }
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

type BidiImpl = (requests: AsyncIterable<Message>, ctx: HandlerContext) => AsyncIterable<unknown>;

/** Ends a stream whose headers may have been sent: trailers with the status (trailers-only before any headers). */
function endStream(stream: http2.ServerHttp2Stream, call: CallContext, err: unknown): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.headersSent) {
    stream.respond({ ...responseHeaders(call), ...trailers(call, err) }, { endStream: true });
    return;
  }
  onTrailers(stream, () => trailers(call, err));
  stream.end();
}

/** Resolves when the stream can take more, or the call ends. */
function drained(stream: http2.ServerHttp2Stream, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
    signal.addEventListener("abort", done);
  });
}

/** Requests read unanswered before reading pauses (and resumes below half of it). */
const MAX_UNREAD = 64;

/**
 * The request messages of a streaming call, read frame by frame from the
 * HTTP/2 stream as they arrive: an async iterable for the handler. A frame
 * too large, compressed without grpc-encoding, or not parsing ends it with
 * the client's error; so does the call's end (deadline, client gone).
 */
class RequestFrames implements AsyncIterableIterator<Message> {
  private pending: Buffer | undefined;
  private readonly ready: Message[] = [];
  private waiter: { resolve: (r: IteratorResult<Message>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private error: unknown;
  private paused = false;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly schema: DescMessage,
    private readonly maxBytes: number,
    private readonly signal: AbortSignal,
    private readonly counted: (bytes: number) => void,
  ) {
    stream.on("data", this.onData);
    stream.on("end", this.onEnd);
    signal.addEventListener("abort", this.onAbort);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Message>> {
    const m = this.ready.shift();
    if (m !== undefined) {
      if (this.paused && this.ready.length < MAX_UNREAD / 2) {
        this.paused = false;
        this.stream.resume();
      }
      return Promise.resolve({ value: m, done: false });
    }
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<Message>> {
    this.detach();
    return Promise.resolve({ value: undefined, done: true });
  }

  detach(): void {
    this.stream.off("data", this.onData);
    this.stream.off("end", this.onEnd);
    this.signal.removeEventListener("abort", this.onAbort);
    this.ready.length = 0;
    this.pending = undefined;
  }

  private readonly onData = (chunk: Buffer) => {
    this.counted(chunk.length);
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    while (buf.length >= 5) {
      const length = buf.readUInt32BE(1);
      if (length > this.maxBytes) return this.fail(new ConnectError(`message larger than ${this.maxBytes} bytes`, Code.ResourceExhausted));
      if (buf[0] !== 0) return this.fail(new ConnectError("compressed message without grpc-encoding", Code.InvalidArgument));
      if (buf.length < 5 + length) break;
      let m: Message;
      try {
        const body = buf.subarray(5, 5 + length);
        m = decodeSimple(this.schema, body) ?? fromBinary(this.schema, body);
      } catch (err) {
        return this.fail(new ConnectError(`request message: cannot parse binary: ${(err as Error).message}`, Code.InvalidArgument));
      }
      buf = buf.subarray(5 + length);
      this.deliver(m);
    }
    this.pending = buf.length > 0 ? buf : undefined;
    if (!this.paused && this.ready.length >= MAX_UNREAD) {
      this.paused = true;
      this.stream.pause();
    }
  };

  private readonly onEnd = () => {
    if (this.pending !== undefined) return this.fail(new ConnectError("protocol error: incomplete message", Code.InvalidArgument));
    this.ended = true;
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve({ value: undefined, done: true });
  };

  private readonly onAbort = () => this.fail(this.signal.reason);

  private deliver(m: Message): void {
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w.resolve({ value: m, done: false });
    } else this.ready.push(m);
  }

  private fail(err: unknown): void {
    if (this.error !== undefined) return;
    this.error = err;
    this.pending = undefined;
    this.stream.off("data", this.onData);
    this.stream.resume();
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }
}

function sendError(stream: http2.ServerHttp2Stream, ctx: CallContext, err: unknown): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close();
    return;
  }
  // Trailers-only response: status and message in the one HEADERS frame.
  stream.respond({ ...responseHeaders(ctx), ...trailers(ctx, ConnectError.from(err)) }, { endStream: true });
}

const WAIT_FOR_TRAILERS: http2.ServerStreamResponseOptions = Object.freeze({ waitForTrailers: true });

function responseHeaders(ctx: CallContext): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = { ":status": 200, "content-type": "application/grpc", "x-request-id": ctx.requestId };
  ctx.touchedResponseHeader?.forEach((v, k) => (out[k] = v));
  return out;
}

function trailers(ctx: CallContext, err: unknown): http2.OutgoingHttpHeaders {
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

/** The call's deadline, at most `maxMs` (a longer timer would fire at once). */
function clampedTimeout(value: string | string[] | undefined, maxMs: number): number | undefined {
  const ms = parseGrpcTimeout(value);
  return ms === undefined ? undefined : Math.min(ms, maxMs);
}
