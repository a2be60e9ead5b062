import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { WebSocketServer, type WebSocket } from "ws";
import { WatchEventsRequestSchema } from "../../gen/federation/v1/health_service_pb.js";
import type { EventBus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { parseWatch } from "../validation/requests.js";
import { httpStatus } from "./rest/http-status.js";

export interface WebSocketBridgeOptions {
  /** Bytes buffered for one client before it is cut off as too slow. */
  readonly maxBufferedBytes: number;
  readonly pingIntervalMs: number;
  readonly maxPayloadBytes: number;
}

/**
 * /ws: the WatchEvents feed over a WebSocket, one text frame per event in
 * proto3 JSON. Query: `types` (repeated or comma-separated), `agent_id`,
 * `after_id` to resume. Each event is serialized once for all clients
 * (PublishedEvent.json); a client whose send buffer passes the bound is
 * closed with 1013 rather than slowing the others.
 */
export class WebSocketBridge {
  private readonly wss: WebSocketServer;
  private readonly alive = new WeakSet<WebSocket>();
  private readonly pinger: NodeJS.Timeout;

  constructor(
    private readonly bus: EventBus,
    private readonly opts: WebSocketBridgeOptions,
    private readonly log: Logger,
  ) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxPayloadBytes, clientTracking: true });
    this.pinger = setInterval(() => this.ping(), opts.pingIntervalMs).unref();
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? "/", "http://localhost");
    let input: ReturnType<typeof parseWatch>;
    try {
      const types = url.searchParams.getAll("types").flatMap((t) => t.split(",")).filter((t) => t !== "");
      const afterRaw = url.searchParams.get("after_id") ?? url.searchParams.get("afterId") ?? "0";
      if (!/^\d{1,20}$/.test(afterRaw)) throw new ConnectError("after_id: must be an unsigned integer", 3);
      input = parseWatch(
        create(WatchEventsRequestSchema, {
          types,
          agentId: url.searchParams.get("agent_id") ?? url.searchParams.get("agentId") ?? "",
          afterId: BigInt(afterRaw),
        }),
      );
    } catch (err) {
      return rejectUpgrade(socket, err);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.alive.add(ws);
      ws.on("pong", () => this.alive.add(ws));
      // Clients only listen; anything they send is ignored.
      ws.on("error", (err) => this.log.debug({ err }, "websocket error"));
      const subscription = this.bus.subscribe(input.filter, input.afterId, (event) => {
        if (ws.readyState !== ws.OPEN) return;
        if (ws.bufferedAmount > this.opts.maxBufferedBytes) {
          subscription.close();
          ws.close(1013, "subscriber too slow");
          return;
        }
        ws.send(event.json());
      });
      ws.on("close", () => subscription.close());
    });
  }

  get clientCount(): number {
    return this.wss.clients.size;
  }

  /** Closes every client with 1001 (going away). */
  close(): void {
    clearInterval(this.pinger);
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
  socket.end(
    `HTTP/1.1 ${status} ${status === 400 ? "Bad Request" : "Error"}\r\n` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
