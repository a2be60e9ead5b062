/**
 * Subscribers for the fan-out benchmark, in their own process (CPU 1).
 * Usage: tsx bench/clients.ts <ws|grpc|raw> <port> <subscribers> <expectedEvents> <timeoutMs> <token>
 * Prints "READY" once every subscriber is connected, then one JSON summary:
 * deliveries received, latency p50/p99 (receive time − the event's publish
 * time, same machine clock), first and last receive time.
 */
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import WebSocket from "ws";
import { WatchEventsRequestSchema, WatchEventsResponseSchema } from "../gen/federation/v1/health_service_pb.js";

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

async function main(): Promise<void> {
  const ready: Promise<void>[] = [];
  if (kind === "ws") {
    for (let i = 0; i < n; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?types=agent.registered`, { headers: { authorization: `Bearer ${token}` } });
      ws.on("message", (data) => record(Date.parse((JSON.parse(data.toString()) as { time: string }).time)));
      ready.push(new Promise((resolve, reject) => (ws.once("open", () => resolve()), ws.once("error", reject))));
      if (i % 200 === 199) await Promise.all(ready.slice(-200));
    }
  } else {
    const sessions = Array.from({ length: Math.max(1, Math.ceil(n / 100)) }, () => http2.connect(`http://127.0.0.1:${port}`));
    const body = toBinary(WatchEventsRequestSchema, create(WatchEventsRequestSchema, { types: ["agent.registered"] }));
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
          record(kind === "raw" ? m.readDoubleBE(0) : timestampMs(fromBinary(WatchEventsResponseSchema, m).event!.time!)),
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
