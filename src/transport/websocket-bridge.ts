import { STATUS_CODES, type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { WebSocketServer, type WebSocket } from "ws";
import { HealthService, WatchEventsRequestSchema } from "../../gen/federation/v1/health_service_pb.js";
import type { PeerCertificate } from "../security/principal.js";
import type { RequestGuard } from "../security/request-guard.js";
import type { EventBus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { parseWatch } from "../validation/requests.js";
import { httpStatus } from "./rest/http-status.js";
import { headerValue } from "./call-context.js";
import { FanOut } from "./fan-out.js";

export interface WebSocketBridgeOptions {
  /** Bytes buffered for one client before it is cut off as too slow. */
  readonly maxBufferedBytes: number;
  readonly pingIntervalMs: number;
  readonly maxPayloadBytes: number;
}

/**
 * /ws: the WatchEvents feed over a WebSocket, one text frame per event in
 * proto3 JSON. Query: `types` (repeated or comma-separated), `agent_id`,
 * `after_id` to resume. Each event is serialized and framed once for all
 * clients (PublishedEvent.wsFrame) and that frame is written straight to
 * each client's socket; ws keeps the handshake, pings, reading and the
 * closing handshake (no extensions are negotiated, so frames are plain).
 * A client whose unsent bytes pass the bound is closed with 1013 rather
 * than slowing the others.
 */
export class WebSocketBridge {
  private readonly wss: WebSocketServer;
  private readonly alive = new WeakSet<WebSocket>();
  private readonly pinger: NodeJS.Timeout;
  /** Each event framed once, a loop turn's frames written once per client (fan-out.ts). */
  private readonly feed: FanOut;

  constructor(
    bus: EventBus,
    private readonly guard: RequestGuard,
    opts: WebSocketBridgeOptions,
    private readonly log: Logger,
  ) {
    this.wss = new WebSocketServer({
      noServer: true,
      // Event frames are written pre-framed (see handleUpgrade): no extensions.
      perMessageDeflate: false,
      maxPayload: opts.maxPayloadBytes,
      clientTracking: true,
      // Echo "bearer" when the token came as a subprotocol, as browsers require.
      handleProtocols: (protocols) => (protocols.has("bearer") ? "bearer" : false),
    });
    this.pinger = setInterval(() => this.ping(), opts.pingIntervalMs).unref();
    this.feed = new FanOut(bus, (event) => event.wsFrame(), opts.maxBufferedBytes);
  }

  /**
   * Authenticates like any WatchEvents call — the Authorization header, or
   * for browsers (which cannot set headers on a WebSocket) the subprotocol
   * pair `bearer, <token>` or `?access_token=` — then upgrades.
   */
  async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, peer: PeerCertificate | undefined): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    let input: ReturnType<typeof parseWatch>;
    socket.on("error", () => undefined);
    try {
      const principal = await this.guard.admit({
        service: HealthService.typeName,
        method: HealthService.method.watchEvents.name,
        header: { get: (name) => headerValue(req.headers, name) },
        peer,
        message: undefined,
        token: tokenFromHandshake(req, url),
      });
      const types = url.searchParams.getAll("types").flatMap((t) => t.split(",")).filter((t) => t !== "");
      const afterRaw = url.searchParams.get("after_id") ?? url.searchParams.get("afterId") ?? undefined;
      if (afterRaw !== undefined && !/^\d{1,20}$/.test(afterRaw)) throw new ConnectError("after_id: must be an unsigned integer", 3);
      input = parseWatch(
        create(WatchEventsRequestSchema, {
          types,
          agentId: url.searchParams.get("agent_id") ?? url.searchParams.get("agentId") ?? "",
          afterId: afterRaw === undefined ? undefined : BigInt(afterRaw),
        }),
        principal.tenant,
      );
    } catch (err) {
      return rejectUpgrade(socket, err);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.alive.add(ws);
      ws.on("pong", () => this.alive.add(ws));
      // Clients only listen; anything they send is ignored.
      ws.on("error", (err) => this.log.debug({ err }, "websocket error"));
      const membership = this.feed.join(input.filter, input.afterId, {
        out: socket,
        open: () => ws.readyState === ws.OPEN,
        buffered: () => ws.bufferedAmount,
        tooSlow: () => {
          ws.close(1013, "subscriber too slow");
          // A client that does not read will not answer the close either.
          setTimeout(() => ws.terminate(), 1_000).unref();
        },
      });
      ws.on("close", () => membership.leave(false));
    });
  }

  get clientCount(): number {
    return this.wss.clients.size;
  }

  /** Closes every client with 1001 (going away). */
  close(): void {
    clearInterval(this.pinger);
    this.feed.flushNow();
    for (const ws of this.wss.clients) ws.close(1001, "server shutting down");
    this.wss.close();
  }

  private ping(): void {
    for (const ws of this.wss.clients) {
      if (!this.alive.has(ws)) {
        ws.terminate();
        continue;
      }
      this.alive.delete(ws);
      ws.ping();
    }
  }
}

function rejectUpgrade(socket: Duplex, err: unknown): void {
  const e = ConnectError.from(err);
  const status = httpStatus(e.code);
  const body = JSON.stringify({ code: e.code, message: e.rawMessage, details: [] });
  let extra = "";
  for (const name of ["www-authenticate", "retry-after"]) {
    const v = e.metadata.get(name);
    if (v) extra += `${name}: ${v}\r\n`;
  }
  if (!socket.writable) return;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\n` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}

/** `Sec-WebSocket-Protocol: bearer, <token>` or `?access_token=<token>`; undefined when neither. */
function tokenFromHandshake(req: IncomingMessage, url: URL): string | undefined {
  const protocols = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim());
  const at = protocols.indexOf("bearer");
  if (at >= 0 && protocols[at + 1]) return protocols[at + 1];
  return url.searchParams.get("access_token") ?? undefined;
}
