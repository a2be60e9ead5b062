import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectionGate } from "../src/transport/connection-gate.js";
import { createOnePortListener } from "../src/transport/one-port-listener.js";
import { fcParams, fuzzSeed, Violations } from "./support/fuzz.js";

/**
 * The first-bytes sniffer on a real loopback port, with arbitrary byte
 * prefixes: every connection is handed to exactly the stack its bytes
 * call for (the whole HTTP/2 preface and a SETTINGS frame → http2; any
 * other start with a complete head or 8 KiB → http/1.1) or closed (a
 * preface with another frame, or bytes that never decide within the
 * sniff timeout, or the client ending early); the process never crashes
 * and no socket is left behind.
 */

const seed = fuzzSeed("fuzz-sniffer");
const SNIFF_MS = 50;
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

let h1: http.Server;
let h2: http2.Http2Server;
let listener: net.Server;
let gate: ConnectionGate;
let port: number;
const handedTo: ("h1" | "h2")[] = [];
const sessions = new Set<http2.ServerHttp2Session>();

beforeAll(async () => {
  h1 = http.createServer((_req, res) => res.end("h1"));
  h2 = http2.createServer((_req, res) => res.end("h2"));
  h2.on("sessionError", () => {});
  // After the handover the socket is http2's: this bare server has no idle
  // timeout (the real one does, http2-limits.ts), so end its sessions here.
  h2.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    session.setTimeout(100, () => session.destroy());
  });
  h1.on("connection", () => handedTo.push("h1"));
  h2.on("connection", () => handedTo.push("h2"));
  gate = new ConnectionGate({ max: 1000, maxPerClient: 1000, healthReserve: 10 });
  listener = createOnePortListener(h1, h2, { sniffTimeoutMs: SNIFF_MS, gate });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  port = (listener.address() as net.AddressInfo).port;
});
afterAll(async () => {
  h1?.closeAllConnections();
  for (const session of sessions) session.destroy();
  await new Promise((r) => listener?.close(r));
});

/** What the sniffer must do with these bytes (the client then waits, or half-closes). */
function expected(bytes: Buffer, clientEnds: boolean): "h1" | "h2" | "closed" {
  const n = Math.min(bytes.length, PREFACE.length);
  if (bytes.subarray(0, n).equals(PREFACE.subarray(0, n))) {
    const at = PREFACE.length;
    if (bytes.length < at + 9) return "closed";
    if (bytes[at + 3] !== 4) return "closed";
    if (bytes.length < at + 9 + bytes.readUIntBE(at, 3)) return "closed";
    return "h2";
  }
  if (bytes.indexOf("\r\n\r\n") >= 0 || bytes.length >= 8192) return "h1";
  return clientEnds ? "closed" : "closed";
}

/** Arbitrary first bytes, weighted toward the interesting edges: preface prefixes, SETTINGS frames, HTTP heads. */
const settingsFrame = fc
  .record({ len: fc.oneof(fc.constant(0), fc.nat(64), fc.constant(0xffffff)), type: fc.oneof(fc.constant(4), fc.nat(255)), payload: fc.uint8Array({ maxLength: 70 }) })
  .map(({ len, type, payload }) => Buffer.concat([Buffer.from([len >> 16, (len >> 8) & 255, len & 255, type, 0, 0, 0, 0, 0]), payload]));
const firstBytes: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc.nat(PREFACE.length).chain((n) => fc.uint8Array({ maxLength: 16 }).map((b) => Buffer.concat([PREFACE.subarray(0, n), b]))),
  settingsFrame.map((f) => Buffer.concat([PREFACE, f])),
  fc.tuple(fc.uint8Array({ maxLength: 40 }), fc.boolean()).map(([b, crlf]) => Buffer.concat([Buffer.from(b), Buffer.from(crlf ? "\r\n\r\n" : "\n\n")])),
  fc.tuple(fc.constantFrom("GET / HTTP/1.1\r\nHost: x\r\n", "PRI * HTTP/1.1\r\n", "POST /x HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", "G"), fc.uint8Array({ maxLength: 30 }), fc.boolean()).map(([head, junk, end]) =>
    Buffer.concat([Buffer.from(head, "latin1"), Buffer.from(junk), Buffer.from(end ? "\r\n\r\n" : "")]),
  ),
  fc.integer({ min: 8000, max: 9000 }).map((n) => Buffer.alloc(n, 0x41)),
);

/** Connects, writes the bytes (in one or two writes), and reports what the server did. */
function probe(bytes: Buffer, split: number, clientEnds: boolean): Promise<{ outcome: "h1" | "h2" | "closed"; ms: number }> {
  const before = handedTo.length;
  const t0 = performance.now();
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let settled = false;
    const settle = (outcome: "h1" | "h2" | "closed") => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      resolve({ outcome, ms: performance.now() - t0 });
      s.destroy();
    };
    const poll = setInterval(() => {
      if (handedTo.length > before) settle(handedTo[before]!);
    }, 2);
    s.on("error", () => {});
    s.on("close", () => setTimeout(() => settle(handedTo.length > before ? handedTo[before]! : "closed"), 5));
    s.on("connect", () => {
      const at = Math.min(split, bytes.length);
      s.write(bytes.subarray(0, at));
      setTimeout(() => {
        if (s.destroyed) return;
        s.write(bytes.subarray(at));
        if (clientEnds) s.end();
      }, 3);
    });
    // A bound on every probe: the sniff timeout plus slack.
    setTimeout(() => settle(handedTo.length > before ? handedTo[before]! : s.destroyed ? "closed" : ("open" as never)), SNIFF_MS * 6);
  });
}

describe("fuzz: the one-port sniffer on arbitrary first bytes", () => {
  it("hands each connection to the stack its bytes call for, or closes it within the sniff timeout", async () => {
    const violations = new Violations();
    const heapBefore = process.memoryUsage().heapUsed;
    await fc.assert(
      fc.asyncProperty(firstBytes, fc.nat(80), fc.boolean(), async (bytes, split, clientEnds) => {
        const want = expected(bytes, clientEnds);
        const { outcome, ms } = await probe(bytes, split, clientEnds);
        const input = { hex: bytes.subarray(0, 64).toString("hex"), length: bytes.length, split, clientEnds };
        if (outcome !== want) violations.add(`expected ${want}, got ${outcome}`, input);
        if (ms > SNIFF_MS * 4) violations.add(`decided after ${Math.round(ms)} ms`, input);
      }),
      fcParams(seed, 200),
    );
    // Nothing left behind: every sniffed socket closes or was handed over.
    h1.closeAllConnections();
    for (const session of sessions) session.destroy();
    const deadline = Date.now() + 3000;
    while (gate.openConnections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(gate.openConnections, "sockets still open after the run").toBe(0);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
    // Still answers a plain request.
    const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" } });
    expect(await res.text()).toBe("h1");
    expect(violations.size, violations.report()).toBe(0);
  }, 60_000);
});
