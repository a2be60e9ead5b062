import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { WebSocketServer, type WebSocket } from "ws";
import { WatchEventsRequestSchema } from "../../gen/federation/v1/health_service_pb.js";
import { errors } from "../errors.js";
import type { EventBus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { parseWatch } from "../validation/requests.js";
import { FanOut } from "./fan-out.js";
import type { HttpRoute } from "./http-routes.js";

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
 * than slowing the others; a resume whose events are not all held any more,
 * with 4410 (1011 when the replay could not be read) and the error's text.
 */
export class WebSocketBridge {
  private readonly wss: WebSocketServer;
  private readonly alive = new WeakSet<WebSocket>();
  private readonly pinger: NodeJS.Timeout;
  /** Each event framed once, a loop turn's frames written once per client (fan-out.ts). */
  private readonly feed: FanOut;

  constructor(
    bus: EventBus,
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
   * /ws as an entry of the HTTP route table: the pipeline admits the
   * handshake like a WatchEvents call (events:read) — the Authorization
   * header, or for browsers, which cannot set headers on a WebSocket, the
   * subprotocol pair `bearer, <token>` or `?access_token=` — then the
   * bridge takes the socket.
   */
  route(): HttpRoute {
    return {
      path: "/ws",
      requirement: "events:read",
      credential: tokenFromHandshake,
      handle: () => {
        throw new ConnectError("/ws is a WebSocket: send an Upgrade: websocket handshake", Code.FailedPrecondition);
      },
      upgrade: (req, socket, head, call, url) => this.accept(req, socket, head, call.principal!.tenant, url),
    };
  }

  /** Checks the query (throwing INVALID_ARGUMENT before anything is written), then upgrades. */
  private accept(req: IncomingMessage, socket: Duplex, head: Buffer, tenant: string, url: URL): void {
    const types = url.searchParams.getAll("types").flatMap((t) => t.split(",")).filter((t) => t !== "");
    const afterRaw = url.searchParams.get("after_id") ?? url.searchParams.get("afterId") ?? undefined;
    if (afterRaw !== undefined && !/^\d{1,20}$/.test(afterRaw)) throw errors.invalidArgument("after_id", "must be an unsigned integer");
    const input = parseWatch(
      create(WatchEventsRequestSchema, {
        types,
        agentId: url.searchParams.get("agent_id") ?? url.searchParams.get("agentId") ?? "",
        afterId: afterRaw === undefined ? undefined : BigInt(afterRaw),
      }),
      tenant,
    );
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.alive.add(ws);
      ws.on("pong", () => this.alive.add(ws));
      // Clients only listen; anything they send is ignored.
      ws.on("error", (err) => this.log.debug({ err }, "websocket error"));
      const membership = this.feed.join(input.filter, input.afterId, {
        out: socket,
        sent: 0,
        open: () => ws.readyState === ws.OPEN,
        buffered: () => ws.bufferedAmount,
        tooSlow: (unsent, limit) => {
          // A close reason holds at most 123 bytes.
          ws.close(1013, Buffer.from(errors.subscriberTooSlow(unsent, limit).rawMessage).subarray(0, 123).toString());
          // A client that does not read will not answer the close either.
          setTimeout(() => ws.terminate(), 1_000).unref();
        },
        historyLost: (error) => {
          // 4410 ("gone", as HTTP 410): after_id's events are not all held, re-read state;
          // 1011 when the replay could not be read (retry with the same after_id).
          ws.close(historyCloseCode(error), Buffer.from(error.rawMessage).subarray(0, 123).toString());
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

/** The close code for errors.eventHistoryGap: 4410 for OUT_OF_RANGE (history gone), else 1011. */
export function historyCloseCode(error: ConnectError): number {
  return error.code === Code.OutOfRange ? 4410 : 1011;
}

/** `Sec-WebSocket-Protocol: bearer, <token>` or `?access_token=<token>`; undefined when neither. */
function tokenFromHandshake(req: IncomingMessage, url: URL): string | undefined {
  const protocols = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim());
  const at = protocols.indexOf("bearer");
  if (at >= 0 && protocols[at + 1]) return protocols[at + 1];
  return url.searchParams.get("access_token") ?? undefined;
}
