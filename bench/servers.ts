/**
 * The limit and the peers, each run as its own process on CPU 0 and loaded
 * exactly like the service:
 *   http2-fixed   bare node:http2 answering every stream with a fixed gRPC reply
 *   grpc-js       @grpc/grpc-js server, unary echo
 *   connect       connect-node on http2.createServer, grpc.health.v1 Check
 *   http2-stream  bare node:http2 long-lived streams answering every gRPC message on them with a fixed reply
 *   http2-fanout  bare node:http2 streams; POST /emit writes one pre-encoded frame per event to all
 *   ws-fanout     bare ws server; POST /emit writes one pre-framed WebSocket text frame per event to every socket
 * Usage: tsx bench/servers.ts <kind> <port> [reply bytes, http2-fixed and http2-stream]
 */
import http from "node:http";
import http2 from "node:http2";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import { buildEvent } from "../src/events/event-bus.js";
import { grpcMessages } from "./lib.js";
import { create } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { Health, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";

const [kind, portArg] = process.argv.slice(2);
const port = Number(portArg);

// A gRPC reply carrying a 2-byte message (field 1 = 1), like HealthCheckResponse{SERVING};
// or (http2-fixed's third argument) a message of that many bytes, for a limit beside a large answer.
const replyBytes = Number(process.argv[4] ?? 0);
const reply = replyBytes > 0 ? Buffer.concat([Buffer.from([0, replyBytes >>> 24, (replyBytes >>> 16) & 255, (replyBytes >>> 8) & 255, replyBytes & 255]), Buffer.alloc(replyBytes, 0x2a)]) : Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]);

function fixed(): void {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.on("data", () => undefined);
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(reply);
    });
  });
  server.listen(port, "127.0.0.1");
}

/** Each message in, one reply out, on the same stream (a bidirectional stream's floor: framing, no decode). */
function stream(): void {
  const server = http2.createServer();
  server.on("stream", (s) => {
    s.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    s.once("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
    s.on("data", grpcMessages(() => s.write(reply)));
    s.on("end", () => s.end());
    s.on("error", () => undefined);
  });
  server.listen(port, "127.0.0.1");
}

function grpcJs(): void {
  const server = new grpc.Server();
  const identity = (b: Buffer) => b;
  server.addService(
    {
      Check: {
        path: "/grpc.health.v1.Health/Check",
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    },
    { Check: (_call: unknown, cb: (e: null, r: Buffer) => void) => cb(null, reply.subarray(5)) },
  );
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), () => undefined);
}

function connect(): void {
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(Health, {
        check: () => create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING }),
      }),
  });
  http2.createServer(handler).listen(port, "127.0.0.1");
}

/** Every subscriber stream; POST /emit?n=&rate= writes n events (timestamp payload) to all, encoded once each. */
function fanout(): void {
  const streams = new Set<http2.ServerHttp2Stream>();
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    if (headers[":path"] === "/subscribe") {
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      streams.add(stream);
      stream.on("close", () => streams.delete(stream));
      return;
    }
    const url = new URL(String(headers[":path"]), "http://x");
    const n = Number(url.searchParams.get("n"));
    const rate = Number(url.searchParams.get("rate") ?? "0");
    // Frame size (5-byte envelope included), like the service's events; at least the 8-byte timestamp.
    const size = Math.max(13, Number(url.searchParams.get("size") ?? "13"));
    stream.respond({ ":status": 200 });
    stream.end();
    const emit = () => {
      const frame = Buffer.alloc(size);
      frame.writeUInt32BE(size - 5, 1);
      frame.writeDoubleBE(Date.now(), 5);
      for (const s of streams) s.write(frame);
    };
    emitEvents(n, rate, emit);
  });
  server.listen(port, "127.0.0.1");
}

/**
 * The /ws limit: `ws` does the handshakes, and each event (the service's own
 * task.routed event, JSON-encoded and framed once) is written to every
 * socket as it comes, with nothing else per subscriber.
 */
function wsFanout(): void {
  const sockets = new Set<Duplex>();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const n = Number(url.searchParams.get("n"));
    const rate = Number(url.searchParams.get("rate") ?? "0");
    res.end();
    let sent = 0;
    const emit = () => {
      const event = buildEvent(BigInt(++sent), Date.now(), {
        type: "task.routed",
        tenant: "default",
        agentId: "00000000-0000-4000-8000-000000000000",
        payload: { case: "taskRouted", value: { routeId: "00000000-0000-4000-8000-000000000001", capabilities: ["bench.fanout"], score: 0.9876 } },
      });
      const frame = event.wsFrame();
      for (const socket of sockets) socket.write(frame);
    };
    emitEvents(n, rate, emit);
  });
  server.on("upgrade", (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(socket);
      ws.on("close", () => sockets.delete(socket));
    }),
  );
  server.listen(port, "127.0.0.1");
}

/** Calls `emit` n times: paced at `rate` per second, or as fast as possible in bursts of 10 per loop turn. */
function emitEvents(n: number, rate: number, emit: () => void): void {
  let count = 0;
  const one = () => {
    emit();
    count++;
  };
  if (rate > 0) {
    // The first at once, like the service's triggers (event i at i / rate).
    one();
    if (count >= n) return;
    const timer = setInterval(() => {
      one();
      if (count >= n) clearInterval(timer);
    }, 1000 / rate);
  } else {
    const burst = () => {
      for (let i = 0; i < 10 && count < n; i++) one();
      if (count < n) setImmediate(burst);
    };
    burst();
  }
}

({ "http2-fixed": fixed, "http2-stream": stream, "grpc-js": grpcJs, connect, "http2-fanout": fanout, "ws-fanout": wsFanout })[kind as "connect"]();
