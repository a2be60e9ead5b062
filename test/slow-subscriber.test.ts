import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WatchEventsRequestSchema } from "../gen/federation/v1/health_service_pb.js";
import { ADMIN_TOKEN, startApp, waitServing, type TestApp } from "./support/app.js";
import WebSocket from "ws";

const EVENTS = 2_000;
/** 8 KB events: 16 MB in all, more than loopback socket buffers absorb for the stalled clients. */
const filler = "x".repeat(8_000);

/** A WebSocket client that completes the handshake and then never reads. */
async function stalledWs(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise((r) => socket.once("connect", r));
  socket.write(
    "GET /ws?types=task.routed HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Key: ${Buffer.alloc(16, 1).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n` +
      `Authorization: Bearer ${ADMIN_TOKEN}\r\n\r\n`,
  );
  const head = await new Promise<string>((r) => socket.once("data", (d: Buffer) => r(d.toString())));
  expect(head).toMatch(/^HTTP\/1.1 101/);
  socket.pause();
  return socket;
}

/** A WatchEvents stream over plain HTTP/2 whose reader stops reading at once. */
function stalledWatch(port: number): { session: http2.ClientHttp2Session; stream: http2.ClientHttp2Stream } {
  const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 65_535 } });
  const body = toBinary(WatchEventsRequestSchema, create(WatchEventsRequestSchema, { types: ["task.routed"] }));
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const stream = session.request({
    ":method": "POST",
    ":path": "/federation.v1.HealthService/WatchEvents",
    "content-type": "application/grpc",
    te: "trailers",
    authorization: `Bearer ${ADMIN_TOKEN}`,
  });
  stream.end(frame);
  stream.pause();
  return { session, stream };
}

/** A raw HTTP/1.1 request for a feed (Connect streaming or REST NDJSON) whose client stops reading after the headers. */
async function stalledHttp(port: number, request: string, body = Buffer.alloc(0)): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise((r) => socket.once("connect", r));
  socket.write(request);
  socket.write(body);
  // connect-node sends a stream's headers with its first message: nothing to wait for.
  socket.pause();
  return socket;
}

/** Everything the server sent until it closed (or the time ran out), as text. */
async function drain(socket: net.Socket, timeoutMs = 10_000): Promise<string> {
  let text = "";
  socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
  socket.resume();
  await Promise.race([new Promise((r) => socket.once("close", r)), new Promise((r) => setTimeout(r, timeoutMs))]);
  return text;
}

const TOO_SLOW = /subscriber too slow: \d+ bytes unsent, over the 65536-byte bound \(SUBSCRIBER_BUFFER_BYTES\)/;

describe("a slow subscriber", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp({ SUBSCRIBER_BUFFER_BYTES: "65536" });
    await waitServing(t);
  });
  afterAll(() => t.close());

  it("is cut off once its unsent bytes pass the bound, while the others get every event", async () => {
    const healthy = new WebSocket(`ws://127.0.0.1:${t.port}/ws?types=task.routed`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const received: string[] = [];
    healthy.on("message", (d) => received.push((JSON.parse(d.toString()) as { agentId: string }).agentId));
    await new Promise((r) => healthy.once("open", r));
    const slowWs = await stalledWs(t.port);
    const slowGrpc = stalledWatch(t.port);
    let grpcStatus: string | undefined;
    let grpcMessage = "";
    slowGrpc.stream.on("trailers", (h) => ((grpcStatus = String(h["grpc-status"])), (grpcMessage = decodeURIComponent(String(h["grpc-message"])))));
    // The feeds connect-node and REST frame themselves go through the same fan-out and rule.
    const json = Buffer.from(JSON.stringify({ types: ["task.routed"] }));
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, json.length >> 8, json.length & 0xff]).subarray(1), json]);
    const slowConnect = await stalledHttp(
      t.port,
      "POST /federation.v1.HealthService/WatchEvents HTTP/1.1\r\nHost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/connect+json\r\n" +
        `connect-protocol-version: 1\r\nauthorization: Bearer ${ADMIN_TOKEN}\r\ncontent-length: ${envelope.length}\r\n\r\n`,
      envelope,
    );
    const slowRest = await stalledHttp(
      t.port,
      `GET /events?types=task.routed HTTP/1.1\r\nHost: 127.0.0.1\r\nconnection: close\r\nauthorization: Bearer ${ADMIN_TOKEN}\r\n\r\n`,
    );
    await new Promise((r) => setTimeout(r, 200));

    // Published in batches a reading client keeps up with; the stalled ones fall behind.
    for (let i = 0; i < EVENTS; i++) {
      await t.app.bus.publish({
        type: "task.routed",
        tenant: "default",
        agentId: `agent-${i}`,
        payload: { case: "taskRouted", value: { routeId: `${i}-${filler}`, capabilities: ["c"], score: 1 } },
      });
      if (i % 4 === 3) {
        const deadline = Date.now() + 5_000;
        while (received.length <= i && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      }
    }
    // The healthy subscriber is neither slowed nor shorted.
    const deadline = Date.now() + 5_000;
    while (received.length < EVENTS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(received.length).toBe(EVENTS);
    expect(received.every((id, i) => id === `agent-${i}`)).toBe(true);

    // The stalled /ws client was closed with 1013; reading now shows the close frame.
    slowWs.resume();
    const closeCode = await new Promise<number>((resolve) => {
      let buf = Buffer.alloc(0);
      slowWs.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        // Walk the frames the server sent until the close frame (opcode 8).
        for (let at = 0; at + 2 <= buf.length; ) {
          let len = buf[at + 1]! & 0x7f;
          let head = 2;
          if (len === 126) (len = buf.readUInt16BE(at + 2)), (head = 4);
          else if (len === 127) (len = Number(buf.readBigUInt64BE(at + 2))), (head = 10);
          if (at + head + len > buf.length) break;
          if ((buf[at]! & 0x0f) === 8) return resolve(buf.readUInt16BE(at + head));
          at += head + len;
        }
      });
      slowWs.on("close", () => resolve(-1));
    });
    expect(closeCode).toBe(1013);

    // Connect's end-stream message and REST's last line carry the same error.
    const connectText = await drain(slowConnect);
    expect(connectText).toMatch(/^HTTP\/1.1 200/);
    expect(connectText).toContain('"code":"resource_exhausted"');
    expect(connectText).toMatch(TOO_SLOW);
    const restText = await drain(slowRest);
    expect(restText).toMatch(/^HTTP\/1.1 200/);
    expect(restText).toContain('{"error":{"code":8,');
    expect(restText).toMatch(TOO_SLOW);

    // The stalled WatchEvents stream ends with RESOURCE_EXHAUSTED (8) once it reads again.
    slowGrpc.stream.resume();
    await new Promise((r) => slowGrpc.stream.once("close", r));
    expect(grpcStatus).toBe("8");
    expect(grpcMessage).toMatch(TOO_SLOW);
    healthy.close();
    slowWs.destroy();
    slowGrpc.session.close();
  });
});
