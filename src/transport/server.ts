import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import type { Duplex } from "node:stream";
import type tls from "node:tls";
import { Code, ConnectError, createContextKey, createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { codeFromHttpStatus, codeFromString } from "@connectrpc/connect/protocol-connect";
import type { DescService } from "@bufbuild/protobuf";
import { errors } from "../errors.js";
import type { Logger } from "../logger.js";
import { peerCertificateOf } from "../security/client-certificate.js";
import { peerKey } from "../security/principal.js";
import { headerValue } from "./call-context.js";
import type { ConnectionLimits } from "../config.js";
import { ConnectionGate, isHealthOnly, isHealthPath } from "./connection-gate.js";
import { createConnectAdapter } from "./connect-adapter.js";
import type { CorsPolicy } from "./cors.js";
import { clampDeadline, PendingRequests, refuseStream, rememberContentType, requestTooSlow, SessionState } from "./http2-limits.js";
import type { FanOut } from "./fan-out.js";
import { GrpcFastPath } from "./grpc-fast-path.js";
import { percentEncode } from "./grpc-message.js";
import type { HttpRoute } from "./http-routes.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";
import { createOnePortListener, createTlsListener } from "./one-port-listener.js";
import type { Call, Pipeline, Protocol } from "./pipeline.js";
import { httpStatus } from "./rest/http-status.js";
import { createRestTranscoder, sendError, type RestBinding, type RestTranscoder } from "./rest/rest-transcoder.js";

export interface ServerOptions {
  readonly bindings: readonly RestBinding[];
  readonly routes: (router: ConnectRouter) => void;
  /** HTTP routes that are not RPCs (/ws), each with its access-policy entry. */
  readonly httpRoutes: readonly HttpRoute[];
  /** The one call pipeline every entry point runs. */
  readonly pipeline: Pipeline;
  /** Services served by connect-node but not transcoded to REST (grpc.health.v1). */
  readonly extraServices: readonly { service: DescService; impl: object }[];
  /** The event feed in gRPC frames (the lean path's WatchEvents). */
  readonly feed: FanOut;
  /** TLS (and mTLS) mode of the same port; cleartext when undefined. */
  readonly tls: tls.SecureContextOptions & { requestCert: boolean; rejectUnauthorized: boolean } | undefined;
  readonly maxBodyBytes: number;
  readonly sniffTimeoutMs: number;
  readonly shutdownGraceMs: number;
  /** Caps and time limits on every phase of a connection. */
  readonly connections: ConnectionLimits;
  /** Plain gRPC on the lean path (grpc-fast-path.ts); off sends everything through connect-node. */
  readonly grpcFastPath: boolean;
  readonly log: Logger;
  /** Which browser origins may call (CORS preflights, /ws handshakes). */
  readonly cors: CorsPolicy;
  /** Closes the event feeds that write straight to sockets (/ws), before connections close. */
  readonly onShutdown: () => void;
}

/** The call of an HTTP request, as the entry point left it for connect-node and the fallbacks. */
const CALL = Symbol("call");
type Tagged = NodeRequest & { [CALL]?: Call };
const callKey = createContextKey<Call | undefined>(undefined, { description: "pipeline call" });

/**
 * The one-port server: gRPC, gRPC-Web and Connect through connect-node's
 * adapter; REST/JSON through the transcoder as the adapter's fallback; the
 * non-RPC HTTP routes (/ws) from a table; all behind one listener that
 * sends HTTP/2 (prior knowledge) and HTTP/1.1 connections to their own
 * stack. Every entry runs the same call pipeline (pipeline.ts).
 */
export class FederationServer {
  private readonly h1: http.Server;
  private readonly h1s: readonly http.Server[];
  private readonly h2: http2.Http2Server;
  private readonly listener: net.Server;
  private readonly sessions = new Map<http2.Http2Session, SessionState>();
  private readonly gate: ConnectionGate;
  /** HTTP/2 requests whose headers and body have not all arrived yet. */
  private readonly pending: PendingRequests;
  private readonly sockets = new Set<net.Socket>();
  private readonly shutdown = new AbortController();
  private readonly httpRoutes: ReadonlyMap<string, HttpRoute>;
  private readonly pipeline: Pipeline;
  readonly fastPath: GrpcFastPath | undefined;

  constructor(private readonly opts: ServerOptions) {
    // Every call in flight that reads its AbortSignal listens here until it
    // ends (call-context.ts): as many listeners as calls, not a leak.
    setMaxListeners(0, this.shutdown.signal);
    const pipeline = (this.pipeline = opts.pipeline);
    const limits = opts.connections;
    this.gate = new ConnectionGate(limits);
    this.pending = new PendingRequests(limits.requestTimeoutMs, (stream) => refuseStream(stream, requestTooSlow(limits.requestTimeoutMs)));
    this.httpRoutes = new Map(opts.httpRoutes.map((r) => [r.path, r]));
    const contextValues = (req: NodeRequest) =>
      createContextValues().set(peerKey, peerCertificateOf(req)).set(callKey, (req as Tagged)[CALL]);
    const rest = createRestTranscoder(opts.bindings, {
      maxBodyBytes: opts.maxBodyBytes,
      shutdownSignal: this.shutdown.signal,
      contextValues,
      pipeline,
      callOf: (req) => (req as Tagged)[CALL]!,
    });
    const adapter = createConnectAdapter({
      routes: opts.routes,
      fallback: (req, res) => this.fallback(req, res, rest),
      readMaxBytes: opts.maxBodyBytes,
      shutdownSignal: this.shutdown.signal,
      jsonOptions: { ignoreUnknownFields: true },
      interceptors: [pipeline.interceptor((values) => values.get(callKey))],
      contextValues,
    });
    this.fastPath = opts.grpcFastPath
      ? new GrpcFastPath({
          services: [...opts.bindings, ...opts.extraServices],
          pipeline,
          feed: opts.feed,
          maxBodyBytes: opts.maxBodyBytes,
          shutdownSignal: this.shutdown.signal,
          pending: this.pending,
          maxDeadlineMs: limits.maxDeadlineMs,
        })
      : undefined;

    // Every HTTP request (HTTP/1.1, and HTTP/2 streams the lean path left):
    // request id, CORS, then connect-node, whose fallback is the route
    // table, REST and the unknown-RPC answer. The call ends with the response.
    const dispatch = (req: NodeRequest, res: NodeResponse) => {
      const path = pathOf(req.url);
      const call = pipeline.begin(requestIdOf(req.headers["x-request-id"]), protocolOf(req.headers, path), path);
      (req as Tagged)[CALL] = call;
      call.bytesIn = Number(req.headers["content-length"]) || 0;
      observeResponse(res, call);
      res.once("close", () => pipeline.finish(call, call.code >= 0 ? call.code : inferCode(call, res), res.statusCode));
      res.setHeader("x-request-id", call.requestId);
      if (isHealthOnly(req.socket) && !isHealthPath(path)) {
        call.code = Code.Unavailable;
        res.writeHead(503, { "content-type": "application/json", connection: "close", "retry-after": "1" });
        res.end(JSON.stringify({ code: Code.Unavailable, message: "connection limit reached (MAX_CONNECTIONS); only health checks are answered", details: [] }));
        return;
      }
      clampDeadline(req.headers, limits.maxDeadlineMs);
      if (opts.cors.handle(req, res)) {
        call.protocol = "http";
        call.code = 0;
        return;
      }
      adapter(req, res);
    };

    const makeH1 = () => {
      const server = http.createServer(
        {
          keepAliveTimeout: 65_000,
          // A request's headers and body must arrive in time (408 otherwise),
          // checked often enough for the limit to mean what it says.
          requestTimeout: limits.requestTimeoutMs,
          headersTimeout: Math.min(30_000, limits.requestTimeoutMs),
          connectionsCheckingInterval: Math.max(50, Math.min(1_000, limits.requestTimeoutMs / 4)),
        },
        dispatch,
      );
      server.on("connection", (socket: net.Socket) => {
        // A declined upgrade replays its socket here once more: tracked once.
        if (this.sockets.has(socket)) return;
        this.sockets.add(socket);
        socket.once("close", () => this.sockets.delete(socket));
      });
      server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
        if (!socket.writable) return;
        const status =
          err.code === "HPE_HEADER_OVERFLOW"
            ? "431 Request Header Fields Too Large"
            : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
              ? "408 Request Timeout"
              : "400 Bad Request";
        socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
        // A lingering close: what the client still sends is read and dropped
        // for a moment, so its kernel does not answer the answer with a reset
        // (which would discard the status before the client read it).
        socket.on("data", () => undefined);
        socket.resume();
        setTimeout(() => socket.destroy(), 1_000).unref();
      });
      return server;
    };
    this.h1 = makeH1();
    this.h1.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head));
    this.h1s = [this.h1];

    this.h2 = http2.createServer(
      // Streams past the limit are refused (REFUSED_STREAM); node ends a
      // session that keeps opening them with ENHANCE_YOUR_CALM.
      { maxSessionMemory: 64, settings: { maxConcurrentStreams: limits.http2MaxConcurrentStreams } },
      dispatch,
    );
    // Every stream passes here before node's compat layer makes
    // request/response objects for it: counted for the session's idle
    // timer, refused on a health-only connection unless it asks for health,
    // then the lean gRPC path takes its own and the rest go on to the compat
    // listener that createServer(dispatch) installed, with a time limit on
    // receiving the request.
    const compat = this.h2.listeners("stream") as ((...args: unknown[]) => void)[];
    if (compat.length === 0) throw new Error("node:http2 installed no compat stream listener");
    this.h2.removeAllListeners("stream");
    const fastPath = this.fastPath;
    this.h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      const state = this.sessions.get(stream.session!);
      if (state) state.opened(stream);
      rememberContentType(stream, headers);
      if (isHealthOnly(stream.session?.socket) && !isHealthPath(pathOf(headers[":path"]))) {
        refuseStream(stream, new ConnectError("connection limit reached (MAX_CONNECTIONS); only health checks are answered", Code.Unavailable));
        return;
      }
      if (fastPath?.tryServe(stream, headers, requestIdOf(headers["x-request-id"]))) return;
      this.pending.add(stream);
      stream.on("end", this.pending.onRequestEnd);
      for (const listener of compat) listener.call(this.h2, stream, headers, ...rest);
    });
    // The socket a session is made on: node creates the session inside its
    // own "connection" listener, so ours runs first and remembers it.
    let accepted: Duplex | undefined;
    this.h2.prependListener("connection", (socket: Duplex) => (accepted = socket));
    this.h2.on("session", (session) => {
      const state = new SessionState(session, accepted!, limits.http2IdleTimeoutMs);
      accepted = undefined;
      this.sessions.set(session, state);
      session.once("close", () => {
        state.stop();
        this.sessions.delete(session);
      });
    });
    this.h2.on("sessionError", (err) => opts.log.debug({ err }, "http2 session error"));

    this.listener = opts.tls
      ? createTlsListener(this.h1, this.h2, opts.tls, opts.sniffTimeoutMs, this.gate)
      : createOnePortListener(this.h1, this.h2, { sniffTimeoutMs: opts.sniffTimeoutMs, gate: this.gate });
  }

  /**
   * connect-node found no RPC for the path: a non-RPC route, a REST path,
   * or an unknown RPC — answered in the caller's own protocol, so gRPC
   * clients see UNIMPLEMENTED rather than an HTTP 404 without trailers.
   */
  private fallback(req: NodeRequest, res: NodeResponse, rest: RestTranscoder): void {
    const call = (req as Tagged)[CALL]!;
    const route = this.httpRoutes.get(call.path);
    if (route) {
      call.protocol = "http";
      call.method = route.path;
      void this.serveRoute(route, req, res, call);
    } else if (call.protocol === "rest") {
      void rest(req, res);
    } else {
      call.code = Code.Unimplemented;
      answerUnimplemented(req, res, call);
    }
  }

  private async serveRoute(route: HttpRoute, req: NodeRequest, res: NodeResponse, call: Call): Promise<void> {
    try {
      if (!route.handle) throw new ConnectError(`${route.path} takes only upgrade requests`, Code.FailedPrecondition);
      await this.pipeline.admit(call, this.routeAdmission(route, req));
      await route.handle(req, res, call);
      if (call.code < 0) call.code = 0;
    } catch (err) {
      call.code = ConnectError.from(err).code;
      sendError(res, err);
    }
  }

  private routeAdmission(route: HttpRoute, req: http.IncomingMessage | NodeRequest) {
    return {
      service: "",
      method: route.path,
      header: { get: (name: string) => headerValue(req.headers, name) },
      peer: peerCertificateOf(req as NodeRequest),
      message: undefined,
      token: route.credential?.(req as http.IncomingMessage, new URL(req.url ?? "/", "http://localhost")),
      requirement: route.requirement,
    };
  }

  /** Connections open now (what the gate counts). */
  get openConnections(): number {
    return this.gate.openConnections;
  }

  /** Listens and resolves with the bound port (useful with port 0). */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.listener.once("error", reject);
      this.listener.listen(port, host, () => {
        this.listener.off("error", reject);
        // The h1 server never listen()s itself; this starts its connection
        // tracking, without which headersTimeout and closeAllConnections()
        // silently do nothing.
        for (const h1 of this.h1s) h1.emit("listening");
        const addr = this.listener.address();
        resolve(typeof addr === "object" && addr ? addr.port : port);
      });
    });
  }

  /**
   * Graceful shutdown: stop accepting, end streams (the shutdown signal
   * reaches every handler), GOAWAY every HTTP/2 session, close idle
   * HTTP/1.1 connections, and after the grace period close the rest.
   */
  /** Resolves true when everything drained within the grace, false when the rest had to be cut. */
  async close(): Promise<boolean> {
    this.shutdown.abort(errors.shuttingDown());
    this.opts.onShutdown();
    const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    this.pending.stop();
    for (const session of this.sessions.keys()) session.close();
    for (const h1 of this.h1s) h1.closeIdleConnections();
    let forced = false;
    const grace = setTimeout(() => {
      forced = true;
      for (const h1 of this.h1s) h1.closeAllConnections();
      for (const session of this.sessions.keys()) session.destroy();
      // Upgraded sockets (/ws) are no longer the http server's to close.
      for (const socket of this.sockets) socket.destroy();
    }, this.opts.shutdownGraceMs).unref();
    const drained = new Promise<void>((resolve) => {
      const check = () => {
        for (const h1 of this.h1s) h1.closeIdleConnections();
        if (this.sessions.size === 0 && this.sockets.size === 0) resolve();
        else setTimeout(check, 20).unref();
      };
      check();
    });
    await Promise.all([closed, drained]);
    clearTimeout(grace);
    for (const h1 of this.h1s) h1.close();
    return !forced;
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const route = this.httpRoutes.get(pathOf(req.url));
    if (route?.upgrade && (req.headers.upgrade ?? "").toLowerCase() === "websocket") {
      void this.serveUpgrade(route, req, socket, head);
      return;
    }
    // Any other upgrade (curl --http2 and Java's HttpClient offer "h2c"):
    // decline it by serving the request over HTTP/1.1, as a server without
    // h2c upgrade support must. An offer on a connection's first request is
    // declined by the listener before the parser sees it; a later one has
    // been parsed already, so it is rebuilt without the upgrade headers and
    // replayed into a new parser — once the response before it is done:
    // that parser would queue its answer behind a response it knows nothing
    // of, and never send it.
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase();
      if (name === "upgrade" || name === "http2-settings" || name === "connection") continue;
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    }
    const replay = () => {
      socket.unshift(Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`), head]));
      this.h1.emit("connection", socket);
      (socket as net.Socket).resume();
    };
    const inFlight = (socket as Duplex & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (inFlight && !inFlight.writableFinished) inFlight.once("finish", replay);
    else replay();
  }

  /** A WebSocket route: the browser origin, the pipeline, then the route takes the socket; the call ends when it closes. */
  private async serveUpgrade(route: HttpRoute, req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const call = this.pipeline.begin(requestIdOf(req.headers["x-request-id"]), "ws", route.path);
    call.method = route.path;
    let status = 101;
    socket.on("error", () => undefined);
    socket.once("close", () => {
      const s = socket as net.Socket;
      call.bytesIn = s.bytesRead ?? 0;
      call.bytesOut = s.bytesWritten ?? 0;
      this.pipeline.finish(call, call.code >= 0 ? call.code : 0, status);
    });
    try {
      if (!this.opts.cors.allows(req.headers.origin, req.headers)) {
        throw errors.permissionDenied(`origin ${String(req.headers.origin).slice(0, 200)} is not allowed (CORS_ALLOWED_ORIGINS)`);
      }
      await this.pipeline.admit(call, this.routeAdmission(route, req));
      route.upgrade!(req, socket, head, call, new URL(req.url ?? "/", "http://localhost"));
    } catch (err) {
      const e = ConnectError.from(err);
      call.code = e.code;
      status = httpStatus(e.code);
      rejectUpgrade(socket, e, call.requestId);
    }
  }
}

let requestSeq = 0;
const bootId = randomUUID().slice(0, 8);

/** The caller's x-request-id if it is sane, else one of ours (unique, not secret: no CSPRNG per call). */
function requestIdOf(header: string | string[] | undefined): string {
  if (typeof header === "string" && /^[\w.-]{1,128}$/.test(header)) return header;
  return `${bootId}-${(++requestSeq).toString(36)}`;
}

function pathOf(url: string | undefined): string {
  const u = url ?? "/";
  const q = u.indexOf("?");
  return q < 0 ? u : u.slice(0, q);
}

/** `/package.Service/Method`: a path only an RPC has (REST paths never have a dotted first segment). */
const RPC_PATH = /^\/[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\/[A-Za-z_]\w*$/;

/** The protocol a request speaks, from its headers (before anything routes it). */
function protocolOf(h: http.IncomingHttpHeaders, path: string): Protocol {
  const ct = h["content-type"] ?? "";
  if (ct.startsWith("application/grpc-web")) return "grpc-web";
  if (ct.startsWith("application/grpc")) return "grpc";
  if (h["connect-protocol-version"] !== undefined || ct.startsWith("application/connect+") || RPC_PATH.test(path)) return "connect";
  return "rest";
}

/**
 * Counts what a response writes; reads the outcome of gRPC calls from
 * their trailers and of Connect errors from their body, since errors can
 * happen before any interceptor (a malformed message, a body too large).
 */
function observeResponse(res: NodeResponse, call: Call): void {
  const write = res.write as (this: NodeResponse, ...args: unknown[]) => boolean;
  const end = res.end as (this: NodeResponse, ...args: unknown[]) => NodeResponse;
  res.write = function (this: NodeResponse, chunk: unknown, ...rest: unknown[]) {
    noteChunk(call, res, chunk);
    return write.call(this, chunk, ...rest);
  } as NodeResponse["write"];
  res.end = function (this: NodeResponse, chunk?: unknown, ...rest: unknown[]) {
    if (chunk !== undefined && typeof chunk !== "function") noteChunk(call, res, chunk);
    return end.call(this, chunk, ...rest);
  } as NodeResponse["end"];
  if (call.protocol === "grpc") {
    const addTrailers = res.addTrailers.bind(res) as (t: http.OutgoingHttpHeaders) => void;
    res.addTrailers = ((t: http.OutgoingHttpHeaders) => {
      if (t["grpc-status"] !== undefined) call.code = Number(t["grpc-status"]);
      addTrailers(t);
    }) as NodeResponse["addTrailers"];
  }
}

function noteChunk(call: Call, res: NodeResponse, chunk: unknown): void {
  const bytes = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Uint8Array);
  call.bytesOut += bytes.length;
  if (call.protocol === "connect" && call.code < 0 && res.statusCode >= 400) {
    try {
      const code = codeFromString((JSON.parse(Buffer.from(bytes).toString("utf8")) as { code?: string }).code ?? "");
      if (code !== undefined) call.code = code;
    } catch {
      // Not a Connect error body: the HTTP status decides below.
    }
  }
}

/** The outcome of a call no handler reported on, from what its response said. */
function inferCode(call: Call, res: NodeResponse): number {
  if (!res.writableFinished) return Code.Canceled;
  if (call.protocol === "grpc" || call.protocol === "grpc-web") {
    const header = res.getHeader("grpc-status");
    if (header !== undefined) return Number(header);
    return res.statusCode === 200 ? Code.Unknown : codeFromHttpStatus(res.statusCode);
  }
  return res.statusCode < 400 ? 0 : codeFromHttpStatus(res.statusCode);
}

/** UNIMPLEMENTED for an unknown RPC, in the caller's protocol. */
function answerUnimplemented(req: NodeRequest, res: NodeResponse, call: Call): void {
  const message = `unknown method ${call.path.slice(1, 300)}`;
  const ct = req.headers["content-type"] ?? "";
  if (call.protocol === "grpc" || call.protocol === "grpc-web") {
    // Trailers-only: the status in the one HEADERS frame, which grpc-go
    // and grpcio require (a HEADERS frame then an empty DATA frame reads as
    // "closed without trailers").
    const headers = {
      ":status": 200,
      "content-type": call.protocol === "grpc" ? "application/grpc" : ct,
      "grpc-status": String(Code.Unimplemented),
      "grpc-message": percentEncode(message),
      "x-request-id": call.requestId,
      ...corsHeadersOf(res),
    };
    const stream = (res as NodeResponse & { stream?: http2.ServerHttp2Stream }).stream;
    if (stream && !stream.headersSent) {
      stream.respond(headers, { endStream: true });
      return;
    }
    const { ":status": _, ...plain } = headers;
    res.writeHead(200, plain);
    res.end();
    return;
  }
  const error = { code: "unimplemented", message };
  if (ct.startsWith("application/connect+")) {
    // A Connect stream ends with an end-stream message (flag 0x02) carrying the error.
    const json = Buffer.from(JSON.stringify({ error }));
    const prefix = Buffer.from([2, 0, 0, 0, 0]);
    prefix.writeUInt32BE(json.length, 1);
    res.writeHead(200, { "content-type": ct });
    res.end(Buffer.concat([prefix, json]));
    return;
  }
  res.writeHead(404, { "content-type": "application/json" });
  res.end(JSON.stringify(error));
}

/** The CORS headers already set on a response (kept when the raw stream answers). */
function corsHeadersOf(res: NodeResponse): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of res.getHeaderNames()) if (name.startsWith("access-control-") || name === "vary") out[name] = String(res.getHeader(name));
  return out;
}

function rejectUpgrade(socket: Duplex, e: ConnectError, requestId: string): void {
  if (!socket.writable) return;
  const status = httpStatus(e.code);
  const body = JSON.stringify({ code: e.code, message: e.rawMessage, details: [] });
  let extra = "";
  for (const name of ["www-authenticate", "retry-after"]) {
    const v = e.metadata.get(name);
    if (v) extra += `${name}: ${v}\r\n`;
  }
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? "Error"}\r\nx-request-id: ${requestId}\r\n` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}
