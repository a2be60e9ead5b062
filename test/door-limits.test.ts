import http2 from "node:http2";
import net from "node:net";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { DiscoverRequestSchema } from "../gen/federation/v1/directory_service_pb.js";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { ADMIN_TOKEN, AUTH, startApp, type TestApp } from "./support/app.js";

/**
 * The door under a hostile client (issue 14, findings 1-3, 5, 6): every
 * phase of a connection has a limit, checked with raw node:net / node:http2
 * clients on loopback, bounded in count and time.
 */
const apps: TestApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});
async function app(env: Record<string, string>, deps = {}): Promise<TestApp> {
  const t = await startApp(env, deps);
  apps.push(t);
  return t;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` holds, or fails after `ms`. */
async function eventually(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(20);
  }
}

function grpcFrame(bytes: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + bytes.length);
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  return frame;
}

/** /health latencies from a well-behaved client while something else goes on. */
async function healthLatencies(url: string, ms: number): Promise<number[]> {
  const out: number[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const start = performance.now();
    const res = await fetch(`${url}/health`);
    await res.arrayBuffer();
    expect(res.status).toBe(200);
    out.push(performance.now() - start);
    await sleep(10);
  }
  return out.sort((a, b) => a - b);
}
const p99 = (xs: number[]) => xs[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!;

describe("HTTP/2 streams that never finish their request (finding 1)", () => {
  it("are refused past the per-session limit and ended after REQUEST_TIMEOUT, with /health fast meanwhile", async () => {
    const t = await app({ HTTP2_MAX_CONCURRENT_STREAMS: "50", REQUEST_TIMEOUT: "1s" });
    const rssBefore = process.memoryUsage().rss;
    const sessions = Array.from({ length: 10 }, () => http2.connect(t.url));
    let answered = 0;
    let refused = 0;
    const streams: http2.ClientHttp2Stream[] = [];
    for (const session of sessions) {
      session.on("error", () => undefined);
      await new Promise((r) => session.once("remoteSettings", r));
      expect(session.remoteSettings.maxConcurrentStreams).toBe(50);
      for (let i = 0; i < 50; i++) {
        // Headers, then silence: the request body never comes.
        const s = session.request(
          { ":method": "POST", ":path": "/federation.v1.DirectoryService/Discover", "content-type": "application/grpc", authorization: `Bearer ${ADMIN_TOKEN}` },
          { endStream: false },
        );
        s.on("response", (h) => {
          if (h["grpc-status"] === "4") answered++;
        });
        s.on("error", () => refused++);
        s.resume();
        streams.push(s);
      }
    }
    const latencies = await healthLatencies(t.url, 500);
    expect(p99(latencies)).toBeLessThan(100);
    // After REQUEST_TIMEOUT every stalled request is answered DEADLINE_EXCEEDED and ended.
    await eventually(() => answered + refused === streams.length, 4_000, `${answered} answered, ${refused} refused of ${streams.length}`);
    expect(answered).toBe(500);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(200 * 1024 * 1024);
    for (const s of sessions) s.destroy();
  });
});

describe("sockets held open (findings 2 and 3)", () => {
  it("closes sessions left after a GOAWAY for a protocol error, within HTTP2_IDLE_TIMEOUT", async () => {
    const t = await app({ HTTP2_IDLE_TIMEOUT: "500ms" });
    const closed: boolean[] = [];
    const sockets = Array.from({ length: 20 }, (_, i) => {
      const s = net.connect(t.port, "127.0.0.1", () => {
        // The preface, an empty SETTINGS, then HEADERS with an invalid HPACK byte.
        s.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 1, 1, 5, 0, 0, 0, 1, 0xff])]));
      });
      s.on("error", () => undefined);
      s.on("close", () => (closed[i] = true));
      s.resume();
      return s;
    });
    await eventually(() => closed.filter(Boolean).length === sockets.length, 3_000, "every socket closed by the server");
    await eventually(() => t.app.server.openConnections === 0, 1_000, "descriptors back to baseline");
  });

  it("frees the socket of a closed session even when the client stops reading", async () => {
    const t = await app({ HTTP2_IDLE_TIMEOUT: "300ms" });
    const sockets = Array.from({ length: 20 }, () => {
      const s = net.connect(t.port, "127.0.0.1", () => s.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])])));
      s.on("error", () => undefined);
      return s;
    });
    await eventually(() => t.app.server.openConnections === 20, 1_000, "20 sessions");
    await eventually(() => t.app.server.openConnections === 0, 3_000, "descriptors back to baseline");
    for (const s of sockets) s.destroy();
  });

  it("closes sockets that send only the start of the HTTP/2 preface, after SNIFF_TIMEOUT", async () => {
    const t = await app({ SNIFF_TIMEOUT: "300ms" });
    let closed = 0;
    const sockets = Array.from({ length: 200 }, () => {
      const s = net.connect(t.port, "127.0.0.1", () => s.write("PRI "));
      s.on("error", () => undefined);
      s.on("close", () => closed++);
      return s;
    });
    await eventually(() => closed === sockets.length, 3_000, `${closed} of ${sockets.length} closed`);
    expect(t.app.server.openConnections).toBe(0);
  });

  it("answers 408 to an HTTP/1.1 request whose body trickles past REQUEST_TIMEOUT", async () => {
    const t = await app({ REQUEST_TIMEOUT: "500ms" });
    const s = net.connect(t.port, "127.0.0.1");
    s.on("error", () => undefined);
    let text = "";
    s.on("data", (d: Buffer) => (text += d.toString()));
    await new Promise((r) => s.once("connect", r));
    s.write(`POST /agents/register HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\nauthorization: Bearer ${ADMIN_TOKEN}\r\n\r\n{`);
    const started = Date.now();
    const trickle = setInterval(() => s.writable && s.write(" "), 100);
    await eventually(() => text.startsWith("HTTP/1.1 408"), 3_000, `a 408, got ${JSON.stringify(text.slice(0, 40))}`);
    clearInterval(trickle);
    expect(Date.now() - started).toBeLessThan(2_500);
    s.destroy();
  });

  it("caps connections per client address", async () => {
    const t = await app({ MAX_CONNECTIONS_PER_CLIENT: "20" });
    const closedEarly: number[] = [];
    const sockets = await Promise.all(
      Array.from({ length: 30 }, (_, i) => {
        const s = net.connect(t.port, "127.0.0.1");
        s.on("error", () => undefined);
        s.on("close", () => closedEarly.push(i));
        return new Promise<net.Socket>((r) => s.once("connect", () => r(s)));
      }),
    );
    await eventually(() => closedEarly.length === 10, 2_000, `${closedEarly.length} refused`);
    expect(t.app.server.openConnections).toBe(20);
    for (const s of sockets) s.destroy();
    await eventually(() => t.app.server.openConnections === 0, 1_000, "all released");
  });

  it("keeps answering health checks on the reserve when MAX_CONNECTIONS is reached, and nothing else", async () => {
    const t = await app({ MAX_CONNECTIONS: "20", HEALTH_RESERVE: "3", MAX_CONNECTIONS_PER_CLIENT: "1000" });
    const held = await Promise.all(
      Array.from({ length: 20 }, () => {
        const s = net.connect(t.port, "127.0.0.1");
        s.on("error", () => undefined);
        return new Promise<net.Socket>((r) => s.once("connect", () => r(s)));
      }),
    );
    await eventually(() => t.app.server.openConnections === 20, 1_000, "20 held");
    // HTTP/1.1 and gRPC health on the reserve: answered.
    const health = await fetch(`${t.url}/health`, { headers: { connection: "close" } });
    expect(health.status).toBe(200);
    const session = http2.connect(t.url);
    session.on("error", () => undefined);
    const grpcHealth = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
      const s = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", te: "trailers" });
      let h: http2.IncomingHttpHeaders = {};
      s.on("response", (r) => (h = r));
      s.on("trailers", (tr) => (h = { ...h, ...tr }));
      s.on("end", () => resolve(h));
      s.resume();
      s.end(grpcFrame(new Uint8Array()));
    });
    expect(grpcHealth["grpc-status"]).toBe("0");
    // Anything else on the reserve: 503 / UNAVAILABLE.
    const other = await fetch(`${t.url}/agents`, { headers: { ...AUTH, connection: "close" } });
    expect(other.status).toBe(503);
    const discover = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
      const s = session.request({ ":method": "POST", ":path": "/federation.v1.DirectoryService/Discover", "content-type": "application/grpc", authorization: `Bearer ${ADMIN_TOKEN}` });
      s.on("response", (h) => resolve(h));
      s.resume();
      s.end(grpcFrame(toBinary(DiscoverRequestSchema, create(DiscoverRequestSchema))));
    });
    expect(discover["grpc-status"]).toBe("14");
    session.destroy();
    for (const s of held) s.destroy();
  });
});

describe("deadlines (findings 5 and 6)", () => {
  /** A unary gRPC call with a raw grpc-timeout header; resolves with its status and how long it took. */
  function rawCall(url: string, path: string, body: Uint8Array, timeout: string, extra: Record<string, string> = {}): Promise<{ status: string | undefined; ms: number }> {
    const session = http2.connect(url);
    session.on("error", () => undefined);
    const started = performance.now();
    return new Promise((resolve) => {
      const s = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", "grpc-timeout": timeout, authorization: `Bearer ${ADMIN_TOKEN}`, ...extra });
      let status: string | undefined;
      s.on("response", (h) => (status ??= h["grpc-status"] as string | undefined));
      s.on("trailers", (h) => (status = h["grpc-status"] as string));
      s.on("close", () => {
        session.close();
        resolve({ status, ms: performance.now() - started });
      });
      s.resume();
      s.end(body[0] === 1 ? body : grpcFrame(body));
    });
  }

  for (const fastPath of ["on", "off"]) {
    it(`takes grpc-go's 30-day deadline as a long one, not an expired one (GRPC_FAST_PATH=${fastPath})`, async () => {
      const t = await app({ GRPC_FAST_PATH: fastPath });
      const discover = await rawCall(t.url, "/federation.v1.DirectoryService/Discover", toBinary(DiscoverRequestSchema, create(DiscoverRequestSchema)), "2592000S");
      expect(discover.status).toBe("0");
      // A feed with that deadline stays open.
      const session = http2.connect(t.url);
      session.on("error", () => undefined);
      const s = session.request({ ":method": "POST", ":path": "/federation.v1.HealthService/WatchEvents", "content-type": "application/grpc", te: "trailers", "grpc-timeout": "2592000S", authorization: `Bearer ${ADMIN_TOKEN}` });
      let ended = false;
      s.on("close", () => (ended = true));
      s.resume();
      s.end(grpcFrame(new Uint8Array()));
      await sleep(300);
      expect(ended).toBe(false);
      session.destroy();
    });
  }

  it("answers a call whose deadline passed before its handler ran, and the handler's own failure goes nowhere", async () => {
    const t = await app({});
    const rejections: unknown[] = [];
    const onRejection = (r: unknown) => rejections.push(r);
    process.on("unhandledRejection", onRejection);
    try {
      // connect-timeout-ms 0: expired on arrival; the handler then rejects (a bad field).
      const res = await fetch(`${t.url}/federation.v1.DirectoryService/ListTools`, {
        method: "POST",
        headers: { "content-type": "application/json", "connect-protocol-version": "1", "connect-timeout-ms": "0", ...AUTH },
        body: JSON.stringify({ name: "\u0011bad" }),
      });
      expect(res.status).toBe(504);
      await sleep(100);
      expect(rejections).toEqual([]);
      expect((await fetch(`${t.url}/health`)).status).toBe(200);
    } finally {
      process.off("unhandledRejection", onRejection);
    }
  });

  it("answers DEADLINE_EXCEEDED on time on every protocol when the handler is slower than the deadline", async () => {
    // A store that answers reads slowly (a fault injected around the real memory store).
    const store = new MemoryAgentStore();
    const get = store.get.bind(store);
    store.get = async (id: string) => {
      await sleep(400);
      return get(id);
    };
    const t = await app({}, { store });
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const clients: Record<string, Client<typeof RegistryService>> = {
      "grpc gzip (connect-node)": createClient(RegistryService, createGrpcTransport({ baseUrl: t.url, sendCompression: compressionGzip, compressMinBytes: 0 })),
      "grpc-web": createClient(RegistryService, createGrpcWebTransport({ baseUrl: t.url, httpVersion: "1.1" })),
      connect: createClient(RegistryService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" })),
      "grpc (lean path)": createClient(RegistryService, createGrpcTransport({ baseUrl: t.url })),
    };
    for (const [name, client] of Object.entries(clients)) {
      const started = performance.now();
      const err = await client.getAgent({ agentId: "any" }, { headers, timeoutMs: 50 }).then(
        () => undefined,
        (e: { code: number }) => e,
      );
      expect(err?.code, name).toBe(4);
      expect(performance.now() - started, name).toBeLessThan(300);
    }
    // The clients above stop at their own deadline whatever the server does:
    // raw requests, with no client timer, show the server's answer.
    const getAgent = new Uint8Array([10, 3, 97, 110, 121]); // agent_id: "any"
    const lean = await rawCall(t.url, "/federation.v1.RegistryService/GetAgent", getAgent, "50m");
    expect(lean.status).toBe("4");
    expect(lean.ms).toBeLessThan(300);
    // Compressed gRPC (connect-node's path).
    const gz = gzipSync(getAgent);
    const compressed = Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), gz]);
    compressed.writeUInt32BE(gz.length, 1);
    const zipped = await rawCall(t.url, "/federation.v1.RegistryService/GetAgent", compressed, "50m", { "grpc-encoding": "gzip" });
    expect(zipped.status).toBe("4");
    expect(zipped.ms).toBeLessThan(300);
    // gRPC-Web over HTTP/1.1: the status is in the trailer frame of the body.
    const started = performance.now();
    const web = await fetch(`${t.url}/federation.v1.RegistryService/GetAgent`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", "grpc-timeout": "50m", ...headers },
      body: grpcFrame(getAgent),
    });
    const body = Buffer.from(await web.arrayBuffer()).toString("latin1");
    expect(web.headers.get("grpc-status") ?? /grpc-status: ?(\d+)/.exec(body)?.[1]).toBe("4");
    expect(performance.now() - started).toBeLessThan(300);
  });
});

describe("Upgrade: h2c offers (finding 8)", () => {
  it("answers every pipelined request after an h2c offer over HTTP/1.1, without piling up listeners", async () => {
    const t = await app({});
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      const s = net.connect(t.port, "127.0.0.1");
      s.on("error", () => undefined);
      let text = "";
      s.on("data", (d: Buffer) => (text += d.toString("latin1")));
      await new Promise((r) => s.once("connect", r));
      const offer = "GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
      s.write(offer + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + offer);
      const answers = () => (text.match(/HTTP\/1\.1 200 OK/g) ?? []).length;
      await eventually(() => answers() === 3, 2_000, `3 answers, got ${answers()}`);
      for (let i = 0; i < 15; i++) s.write(offer);
      await eventually(() => answers() === 18, 2_000, `18 answers, got ${answers()}`);
      expect(text).not.toMatch(/101 Switching/);
      s.destroy();
      // A WebSocket still upgrades on the same port.
      const { default: WebSocket } = await import("ws");
      const ws = new WebSocket(`ws://127.0.0.1:${t.port}/ws`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      await new Promise((r, j) => (ws.once("open", r), ws.once("error", j)));
      ws.close();
    } finally {
      process.off("warning", onWarning);
    }
    expect(warnings).not.toContain("MaxListenersExceededWarning");
  });
});
