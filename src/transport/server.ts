import { randomUUID } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import type { Duplex } from "node:stream";
import type tls from "node:tls";
import { createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { NodeRequest, NodeResponse } from "./node-types.js";
import { errors } from "../errors.js";
import type { Logger } from "../logger.js";
import { peerCertificateOf } from "../security/client-certificate.js";
import { peerKey } from "../security/principal.js";
import type { RequestGuard } from "../security/request-guard.js";
import type { DescService } from "@bufbuild/protobuf";
import type { EventBus } from "../events/event-bus.js";
import type { CorsPolicy } from "./cors.js";
import { GrpcFastPath } from "./grpc-fast-path.js";
import { createOnePortListener, createTlsListener } from "./one-port-listener.js";
import { createRestTranscoder, type RestBinding } from "./rest/rest-transcoder.js";
import type { WebSocketBridge } from "./websocket-bridge.js";

export interface ServerOptions {
  readonly bindings: readonly RestBinding[];
  readonly routes: (router: ConnectRouter) => void;
  readonly bridge: WebSocketBridge;
  readonly guard: RequestGuard;
  /** Services served by connect-node but not transcoded to REST (grpc.health.v1). */
  readonly extraServices: readonly { service: DescService; impl: object }[];
  readonly bus: EventBus;
  /** TLS (and mTLS) mode of the same port; cleartext when undefined. */
  readonly tls: tls.SecureContextOptions & { requestCert: boolean; rejectUnauthorized: boolean } | undefined;
  readonly maxBodyBytes: number;
  /** Unsent bytes a WatchEvents stream may have before it is cut off as too slow. */
  readonly subscriberBufferBytes: number;
  readonly sniffTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly log: Logger;
  /** Which browser origins may call (CORS preflights, /ws handshakes). */
  readonly cors: CorsPolicy;
}

/**
 * The one-port server: gRPC, gRPC-Web and Connect through connect-node's
 * adapter; REST/JSON through the transcoder as the adapter's fallback; the
 * WebSocket feed on /ws; all behind one listener that sends HTTP/2 (prior
 * knowledge) and HTTP/1.1 connections to their own stack.
 */
export class FederationServer {
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly listener: net.Server;
  private readonly sessions = new Set<http2.Http2Session>();
  private readonly sockets = new Set<net.Socket>();
  private readonly shutdown = new AbortController();
  readonly fastPath: GrpcFastPath;

  constructor(private readonly opts: ServerOptions) {
    const contextValues = (req: NodeRequest) => createContextValues().set(peerKey, peerCertificateOf(req));
    const rest = createRestTranscoder(opts.bindings, {
      maxBodyBytes: opts.maxBodyBytes,
      log: opts.log,
      shutdownSignal: this.shutdown.signal,
      contextValues,
      admit: (ctx, message) => opts.guard.admitContext(ctx, message),
    });
    const adapter = connectNodeAdapter({
      routes: opts.routes,
      fallback: (req, res) => void rest(req, res),
      readMaxBytes: opts.maxBodyBytes,
      shutdownSignal: this.shutdown.signal,
      jsonOptions: { ignoreUnknownFields: true },
      interceptors: [opts.guard.interceptor()],
      contextValues,
    });
    this.fastPath = new GrpcFastPath({
      services: [...opts.bindings, ...opts.extraServices],
      guard: opts.guard,
      bus: opts.bus,
      maxBodyBytes: opts.maxBodyBytes,
      maxStreamBufferBytes: opts.subscriberBufferBytes,
      shutdownSignal: this.shutdown.signal,
    });
    const log = opts.log;
    const handler = (req: NodeRequest, res: NodeResponse) => {
      const reqId = requestIdOf(req.headers["x-request-id"]);
      const start = performance.now();
      res.once("close", () => {
        if (!log.isLevelEnabled("info")) return;
        const path = (req.url ?? "/").split("?", 1)[0];
        log.info({ reqId, method: req.method, path, status: res.statusCode, ms: +(performance.now() - start).toFixed(2) }, "request");
      });
      res.setHeader("x-request-id", reqId);
      if (opts.cors.handle(req, res)) return;
      adapter(req, res);
    };

    this.h1 = http.createServer({ keepAliveTimeout: 65_000, headersTimeout: 30_000, requestTimeout: 0 }, handler);
    this.h1.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head));
    this.h1.on("connection", (socket: net.Socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
    });
    this.h1.on("clientError", (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return;
      const status = err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    });

    this.h2 = http2.createServer({ maxSessionMemory: 64 }, handler);
    // The lean gRPC path takes its streams before node's compat layer makes
    // request/response objects for them; every other stream goes on to the
    // compat listener that createServer(handler) installed.
    const compat = this.h2.listeners("stream") as ((...args: unknown[]) => void)[];
    if (compat.length === 0) throw new Error("node:http2 installed no compat stream listener");
    this.h2.removeAllListeners("stream");
    this.h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      const reqId = requestIdOf(headers["x-request-id"]);
      if (this.fastPath.tryServe(stream, headers, reqId)) {
        if (log.isLevelEnabled("info")) {
          const start = performance.now();
          stream.once("close", () =>
            log.info({ reqId, method: "POST", path: headers[":path"], grpcCall: true, ms: +(performance.now() - start).toFixed(2) }, "request"),
          );
        }
        return;
      }
      for (const listener of compat) listener.call(this.h2, stream, headers, ...rest);
    });
    this.h2.on("session", (session) => {
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
    });
    this.h2.on("sessionError", (err) => log.debug({ err }, "http2 session error"));

    this.listener = opts.tls
      ? createTlsListener(this.h1, this.h2, opts.tls, opts.sniffTimeoutMs)
      : createOnePortListener(this.h1, this.h2, { sniffTimeoutMs: opts.sniffTimeoutMs });
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
        this.h1.emit("listening");
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
  async close(): Promise<void> {
    this.shutdown.abort(errors.shuttingDown());
    this.opts.bridge.close();
    const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    for (const session of this.sessions) session.close();
    this.h1.closeIdleConnections();
    const grace = setTimeout(() => {
      this.h1.closeAllConnections();
      for (const session of this.sessions) session.destroy();
    }, this.opts.shutdownGraceMs).unref();
    const drained = new Promise<void>((resolve) => {
      const check = () => {
        this.h1.closeIdleConnections();
        if (this.sessions.size === 0 && this.sockets.size === 0) resolve();
        else setTimeout(check, 20).unref();
      };
      check();
    });
    await Promise.all([closed, drained]);
    clearTimeout(grace);
    this.h1.close();
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = (req.url ?? "/").split("?", 1)[0];
    if (path === "/ws" && (req.headers.upgrade ?? "").toLowerCase() === "websocket") {
      if (!this.opts.cors.allows(req.headers.origin, req.headers)) {
        socket.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\norigin not allowed (CORS_ALLOWED_ORIGINS)`);
        return;
      }
      void this.opts.bridge.handleUpgrade(req, socket, head, peerCertificateOf(req));
      return;
    }
    // Any other upgrade (curl --http2 and Java's HttpClient offer "h2c"):
    // decline it by serving the request over HTTP/1.1, as a server without
    // h2c upgrade support must. The parser already consumed the head of the
    // request, so it is rebuilt without the upgrade headers and replayed.
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase();
      if (name === "upgrade" || name === "http2-settings" || name === "connection") continue;
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    }
    socket.unshift(Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`), head]));
    this.h1.emit("connection", socket);
    (socket as net.Socket).resume();
  }
}

let requestSeq = 0;
const bootId = randomUUID().slice(0, 8);

/** The caller's x-request-id if it is sane, else one of ours (unique, not secret: no CSPRNG per call). */
function requestIdOf(header: string | string[] | undefined): string {
  if (typeof header === "string" && /^[\w.-]{1,128}$/.test(header)) return header;
  return `${bootId}-${(++requestSeq).toString(36)}`;
}
