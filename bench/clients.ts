/**
 * Subscribers for the fan-out benchmark, in their own process (CPU 1).
 * Usage: tsx bench/clients.ts <ws|grpc|raw> <port> <subscribers> <expectedEvents> <timeoutMs> <token>
 * Prints "READY" once every subscriber is connected, then one JSON summary:
 * deliveries received, latency p50/p99 (receive time − the event's publish
 * time, same machine clock), first and last receive time, and the CPU
 * time this process used from READY to the end.
 */
import http2 from "node:http2";
import net from "node:net";
import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { WatchEventsRequestSchema } from "../gen/federation/v1/health_service_pb.js";
import { grpcMessages as frames } from "./lib.js";

const [kind, portArg, nArg, expectedArg, timeoutArg, token] = process.argv.slice(2);
const port = Number(portArg);
const n = Number(nArg);
const expected = Number(expectedArg) * n;
const latencies: number[] = [];
let received = 0;
let first = 0;
let last = 0;
let cpuAtReady: NodeJS.CpuUsage | undefined;

function record(publishedAt: number): void {
  const now = Date.now();
  latencies.push(now - publishedAt);
  received++;
  if (first === 0) first = now;
  last = now;
  if (received >= expected) finish();
}

function finish(): void {
  const cpu = process.cpuUsage(cpuAtReady);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  const cpuMs = Math.round((cpu.user + cpu.system) / 1000);
  process.stdout.write(`${JSON.stringify({ received, expected, p50Ms: pct(50), p99Ms: pct(99), first, last, cpuMs })}\n`);
  process.exit(0);
}


/** WatchEventsResponse.event (1) → Event.time (3) → Timestamp seconds (1), nanos (2), read off the wire. */
function protoTime(m: Buffer): number {
  const event = field(m, 1);
  const time = event && field(event, 3);
  if (!time) return NaN;
  let seconds = 0;
  let nanos = 0;
  for (let i = 0; i < time.length; ) {
    const tag = time[i++]!;
    const [value, next] = varint(time, i);
    i = next;
    if (tag === 0x08) seconds = value;
    else if (tag === 0x10) nanos = value;
  }
  return seconds * 1000 + Math.floor(nanos / 1e6);
}

/** The first length-delimited field `n` of a message, or undefined. */
function field(m: Buffer, n: number): Buffer | undefined {
  for (let i = 0; i < m.length; ) {
    const [tag, afterTag] = varint(m, i);
    const wire = tag & 7;
    if (wire === 0) {
      i = varint(m, afterTag)[1];
    } else if (wire === 2) {
      const [len, start] = varint(m, afterTag);
      if (tag >>> 3 === n) return m.subarray(start, start + len);
      i = start + len;
    } else if (wire === 1) i = afterTag + 8;
    else if (wire === 5) i = afterTag + 4;
    else return undefined;
  }
  return undefined;
}

function varint(b: Buffer, at: number): [number, number] {
  let value = 0;
  let mul = 1;
  for (;;) {
    const byte = b[at++]!;
    value += (byte & 0x7f) * mul;
    if (byte < 0x80) return [value, at];
    mul *= 128;
  }
}

/** One read buffer for every lean subscriber: each read is consumed before the next. */
const readBuffer = Buffer.alloc(256 * 1024);

/**
 * A lean WebSocket subscriber on a plain socket: the HTTP/1.1 upgrade, then
 * the server's frames (unmasked, RFC 6455 §5.2) split off the byte stream.
 * 10,000 `ws` clients in one process spent more CPU per message than the
 * server did writing them, so the subscribers set the p99; this reader does
 * per message only the framing a client must do, and reads through `onread`
 * into one shared buffer (no Buffer and no stream machinery per read; only
 * a frame split across reads is copied). Pings are answered (a masked pong
 * with a zero key); a close frame or a fragmented message ends the process
 * with an error — the service sends neither in this benchmark.
 */
function leanWs(path: string, onMessage: (payload: Buffer) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let pending: Buffer | undefined;
    let open = false;
    const socket = net.connect({
      port,
      host: "127.0.0.1",
      onread: {
        buffer: readBuffer,
        callback: (nread: number, shared: Uint8Array) => (read(nread, shared), true),
      },
    });
    function read(nread: number, shared: Uint8Array): void {
      const chunk = Buffer.from(shared.buffer, shared.byteOffset, nread);
      let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      pending = undefined;
      if (!open) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return void (pending = Buffer.from(buf));
        const status = buf.toString("latin1", 0, buf.indexOf("\r\n"));
        if (!status.startsWith("HTTP/1.1 101")) return void reject(new Error(`upgrade refused: ${status}`));
        open = true;
        buf = buf.subarray(end + 4);
        resolve();
      }
      while (buf.length > 0) {
        const b0 = buf[0]!;
        let len = buf.length >= 2 ? buf[1]! & 0x7f : 0;
        let at = 2;
        if (len === 126) (len = buf.length >= 4 ? buf.readUInt16BE(2) : Infinity), (at = 4);
        else if (len === 127) (len = buf.length >= 10 ? Number(buf.readBigUInt64BE(2)) : Infinity), (at = 10);
        if (buf.length < 2 || buf.length < at + len) return void (pending = Buffer.from(buf));
        const opcode = b0 & 0x0f;
        const payload = buf.subarray(at, at + len);
        buf = buf.subarray(at + len);
        if ((b0 & 0x80) === 0 || opcode === 0) fail("fragmented WebSocket message");
        if (opcode === 1 || opcode === 2) onMessage(payload);
        else if (opcode === 9) socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | len, 0, 0, 0, 0]), payload]));
        else if (opcode === 8) fail(`WebSocket closed by the server: ${payload.length >= 2 ? payload.readUInt16BE(0) : ""}`);
      }
    }
    socket.setNoDelay(true);
    socket.on("error", reject);
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    );
  });
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

/**
 * The event's time without decoding the whole event: one process receives
 * every delivery, and a full decode per delivery made the subscribers, not
 * the server, the bottleneck. proto3 JSON writes fields in declaration
 * order, so "time" comes right after "id" and "type". Date.parse runs once
 * per event, not per delivery: every subscriber gets the same string.
 */
let lastTime = "";
let lastParsed = 0;
function jsonTime(payload: Buffer): number {
  const at = payload.indexOf('"time":"') + 8;
  const text = payload.toString("latin1", at, payload.indexOf(34, at));
  if (text !== lastTime) (lastTime = text), (lastParsed = Date.parse(text));
  return lastParsed;
}

async function main(): Promise<void> {
  const ready: Promise<void>[] = [];
  if (kind === "ws") {
    for (let i = 0; i < n; i++) {
      ready.push(leanWs("/ws?types=task.routed", (m) => record(jsonTime(m))));
      if (i % 200 === 199) await Promise.all(ready.slice(-200));
    }
  } else {
    const sessions = Array.from({ length: Math.max(1, Math.ceil(n / 100)) }, () => http2.connect(`http://127.0.0.1:${port}`));
    const body = toBinary(WatchEventsRequestSchema, create(WatchEventsRequestSchema, { types: ["task.routed"] }));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    for (let i = 0; i < n; i++) {
      const session = sessions[i % sessions.length]!;
      const path = kind === "raw" ? "/subscribe" : "/federation.v1.HealthService/WatchEvents";
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${token}`,
      });
      stream.end(frame);
      stream.on(
        "data",
        frames((m) =>
          record(kind === "raw" ? m.readDoubleBE(0) : protoTime(m)),
        ),
      );
      ready.push(new Promise((resolve) => stream.once("response", () => resolve())));
    }
  }
  await Promise.all(ready);
  cpuAtReady = process.cpuUsage();
  process.stdout.write("READY\n");
  setTimeout(finish, Number(timeoutArg)).unref();
  setInterval(() => undefined, 1_000);
}

void main();
