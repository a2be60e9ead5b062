/**
 * Subscribers for the fan-out benchmark, in their own process (CPU 1).
 * Usage: tsx bench/clients.ts <ws|grpc|raw> <port> <subscribers> <expectedEvents> <timeoutMs> <token>
 * Prints "READY" once every subscriber is connected, then one JSON summary:
 * deliveries received, latency p50/p99 (receive time − the event's publish
 * time, same machine clock), first and last receive time.
 */
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import WebSocket from "ws";
import { WatchEventsRequestSchema } from "../gen/federation/v1/health_service_pb.js";

const [kind, portArg, nArg, expectedArg, timeoutArg, token] = process.argv.slice(2);
const port = Number(portArg);
const n = Number(nArg);
const expected = Number(expectedArg) * n;
const latencies: number[] = [];
let received = 0;
let first = 0;
let last = 0;

function record(publishedAt: number): void {
  const now = Date.now();
  latencies.push(now - publishedAt);
  received++;
  if (first === 0) first = now;
  last = now;
  if (received >= expected) finish();
}

function finish(): void {
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  process.stdout.write(`${JSON.stringify({ received, expected, p50Ms: pct(50), p99Ms: pct(99), first, last })}\n`);
  process.exit(0);
}

/** Splits a byte stream into gRPC messages. */
function frames(onMessage: (body: Buffer) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      onMessage(buf.subarray(5, 5 + len));
      buf = buf.subarray(5 + len);
    }
  };
}

/**
 * The event's time without decoding the whole event: one process receives
 * every delivery, and a full decode per delivery made the subscribers, not
 * the server, the bottleneck. proto3 JSON writes fields in declaration
 * order, so "time" comes right after "id" and "type".
 */
function jsonTime(text: string): number {
  const at = text.indexOf('"time":"') + 8;
  return Date.parse(text.slice(at, text.indexOf('"', at)));
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

async function main(): Promise<void> {
  const ready: Promise<void>[] = [];
  if (kind === "ws") {
    for (let i = 0; i < n; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?types=task.routed`, { headers: { authorization: `Bearer ${token}` } });
      ws.on("message", (data) => record(jsonTime(data.toString())));
      ready.push(new Promise((resolve, reject) => (ws.once("open", () => resolve()), ws.once("error", reject))));
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
  process.stdout.write("READY\n");
  setTimeout(finish, Number(timeoutArg)).unref();
  setInterval(() => undefined, 1_000);
}

void main();
