/**
 * etcd as a peer in the benchmark (issue 21): Debian's etcd-server (3.4),
 * started here on loopback, single member, data dir in /tmp, fsync on (its
 * default), pinned to CPU 0 like the service. Its gRPC API is plain gRPC, so
 * the bench's own HTTP/2 client drives it (etcdLoader: GrpcLoader's calls,
 * minus the bearer token); the few messages it needs are hand-encoded below (field numbers from etcd's etcdserverpb/rpc.proto).
 *
 * Also a subprocess (CPU 1): `tsx bench/etcd.ts watchers <port> <watchers>
 * <expectedPuts> <timeoutMs>` opens that many Watch streams on the prefix
 * the burst writes, prints READY once every watch is created, then one JSON
 * summary in bench/clients.ts's format.
 */
import { execFileSync } from "node:child_process";
import http2 from "node:http2";
import net from "node:net";
import path from "node:path";
import { rmSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { GrpcLoader } from "./grpc-client.js";
import { cpuMs, freePort, grpcMessages, percentile, root, rss, sleep, spawnPinned, stop, waitForPort, type LoadResult } from "./lib.js";

// --- etcd's messages (etcdserverpb/rpc.proto) -------------------------------------

export const ETCD = {
  leaseGrant: "/etcdserverpb.Lease/LeaseGrant",
  leaseKeepAlive: "/etcdserverpb.Lease/LeaseKeepAlive",
  put: "/etcdserverpb.KV/Put",
  range: "/etcdserverpb.KV/Range",
  watch: "/etcdserverpb.Watch/Watch",
} as const;

const utf8 = new TextEncoder();

/** LeaseGrantRequest{TTL = 1, ID = 2}: a client-chosen ID (etcd takes any unused one). */
export function leaseGrantRequest(ttlSeconds: number, id: number): Uint8Array {
  return new BinaryWriter().tag(1, WireType.Varint).int64(ttlSeconds).tag(2, WireType.Varint).int64(id).finish();
}

/** PutRequest{key = 1, value = 2, lease = 3}. */
export function putRequest(key: string, value: Uint8Array | string, lease = 0): Uint8Array {
  const w = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(utf8.encode(key));
  w.tag(2, WireType.LengthDelimited).bytes(typeof value === "string" ? utf8.encode(value) : value);
  if (lease) w.tag(3, WireType.Varint).int64(lease);
  return w.finish();
}

/** The range_end that makes `prefix` a prefix query: the prefix with its last byte + 1. */
function prefixEnd(prefix: string): Uint8Array {
  const end = utf8.encode(prefix);
  end[end.length - 1]!++;
  return end;
}

/** RangeRequest{key = 1, range_end = 2, limit = 3}: every key under `prefix` (linearizable, etcd's default). */
export function rangePrefixRequest(prefix: string, limit = 0): Uint8Array {
  const w = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(utf8.encode(prefix)).tag(2, WireType.LengthDelimited).bytes(prefixEnd(prefix));
  if (limit) w.tag(3, WireType.Varint).int64(limit);
  return w.finish();
}

/** LeaseKeepAliveRequest{ID = 1}. */
export function keepAliveRequest(id: number): Uint8Array {
  return new BinaryWriter().tag(1, WireType.Varint).int64(id).finish();
}

/** WatchRequest{create_request = 1: WatchCreateRequest{key = 1, range_end = 2}}. */
function watchPrefixRequest(prefix: string): Uint8Array {
  const create = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(utf8.encode(prefix)).tag(2, WireType.LengthDelimited).bytes(prefixEnd(prefix)).finish();
  return new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(create).finish();
}

/** Each occurrence of field `n` of a message: varints as numbers, length-delimited fields as bytes. */
function fields(m: Uint8Array, n: number): (number | Uint8Array)[] {
  const out: (number | Uint8Array)[] = [];
  const r = new BinaryReader(m);
  while (r.pos < r.len) {
    const [no, wire] = r.tag();
    if (no === n && wire === WireType.Varint) out.push(Number(r.int64()));
    else if (no === n && wire === WireType.LengthDelimited) out.push(r.bytes());
    else r.skip(wire, no);
  }
  return out;
}

/** RangeResponse.kvs (2): how many keys an answer holds. */
export function rangeCount(response: Uint8Array): number {
  return fields(response, 2).length;
}

/** One gRPC length-prefixed message. */
function frame(body: Uint8Array): Buffer {
  const f = Buffer.alloc(5 + body.length);
  f.writeUInt32BE(body.length, 1);
  f.set(body, 5);
  return f;
}

/** A long-lived stream's session (TCP_NODELAY like the bench's other clients) and its request headers (no `authorization`: see below). */
const h2 = (port: number) => http2.connect(`http://127.0.0.1:${port}`, { createConnection: () => net.connect({ port, host: "127.0.0.1", noDelay: true }) });
const grpcHeaders = (path: string) => ({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });

/** The bench's gRPC client without an `authorization` header (see GrpcLoader's constructor). */
export const etcdLoader = (port: number, connections = 4): GrpcLoader => new GrpcLoader(port, connections, null);

// --- the server -------------------------------------------------------------------

export interface Etcd {
  readonly port: number;
  readonly pid: number;
  rssBytes(): number;
  cpuMs(): number;
  stop(): Promise<void>;
}

/** Installs Debian's etcd-server when missing (scripts/ensure-tools.sh; ~10 s on a fresh machine). */
export function ensureEtcd(): void {
  execFileSync("bash", [path.join(root, "scripts/ensure-tools.sh"), "etcd"], { stdio: ["ignore", "ignore", "inherit"] });
}

/** A fresh single-member etcd on loopback, pinned to CPU 0, data in /tmp (removed on stop). */
export async function startEtcd(): Promise<Etcd> {
  const port = await freePort();
  const peer = await freePort();
  const dir = path.join("/tmp", `fc-bench-etcd-${port}`);
  rmSync(dir, { recursive: true, force: true });
  const child = spawnPinned(0, "etcd", [
    "--name", "bench",
    "--data-dir", dir,
    "--listen-client-urls", `http://127.0.0.1:${port}`,
    "--advertise-client-urls", `http://127.0.0.1:${port}`,
    "--listen-peer-urls", `http://127.0.0.1:${peer}`,
    "--initial-advertise-peer-urls", `http://127.0.0.1:${peer}`,
    "--initial-cluster", `bench=http://127.0.0.1:${peer}`,
    "--logger", "zap", "--log-outputs", "stderr", "--log-level", "error",
  ]);
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d).slice(-4000)));
  const etcd: Etcd = {
    port,
    pid: child.pid!,
    rssBytes: () => rss(child.pid!),
    cpuMs: () => cpuMs(child.pid!),
    stop: async () => {
      await stop(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitForPort(port);
    // Listening comes before the member has elected itself: wait for a write.
    const loader = etcdLoader(port, 1);
    try {
      for (const deadline = Date.now() + 20_000; ; await sleep(50)) {
        const res = await loader.call(ETCD.put, putRequest("/fc/ready", "1"));
        if (res.status === 0) break;
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`etcd not ready (${res.status} ${res.message}): ${stderr}`);
      }
    } finally {
      loader.close();
    }
  } catch (err) {
    await etcd.stop();
    throw err;
  }
  return etcd;
}

// --- load ---------------------------------------------------------------------------

/**
 * GrpcLoader.load's closed loop for an operation of several calls (etcd's
 * registration is a lease grant, then a put): `total` operations,
 * `concurrency` in flight; op(i) resolves false when a call failed.
 */
export async function loadOps(total: number, op: (i: number) => Promise<boolean>, concurrency = 64): Promise<LoadResult> {
  const times: number[] = [];
  let next = 0;
  let failed = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const t0 = performance.now();
        if (!(await op(i))) failed++;
        times.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { rps: total / seconds, p50Ms: percentile(times, 50), p99Ms: percentile(times, 99), ok: total - failed, failed };
}

/**
 * etcd's keepalive at its best: `streams` long-lived LeaseKeepAlive streams
 * over `connections` HTTP/2 connections (as GrpcLoader's), each sending the
 * next keepalive when the previous is answered; `total` keepalives over
 * `leases` in turn. A keepalive answered with TTL 0 (unknown lease) fails.
 */
export function keepAliveLoad(port: number, leases: number[], total: number, offset = 0, connections = 4, streams = 64): Promise<LoadResult> {
  return streamedLoad({
    port,
    path: ETCD.leaseKeepAlive,
    message: (i) => keepAliveRequest(leases[(i + offset) % leases.length]!),
    ok: (m) => (fields(m, 3)[0] as number | undefined)! > 0, // LeaseKeepAliveResponse.TTL (3)
    total,
    connections,
    streams,
  });
}

export interface StreamedLoad {
  readonly port: number;
  readonly path: string;
  /** Extra request headers (ours: `authorization`). */
  readonly headers?: Record<string, string>;
  /** The i-th request message (unframed). */
  message(i: number): Uint8Array;
  /** Whether an answer message says the request succeeded. */
  ok(m: Uint8Array): boolean;
  readonly total: number;
  readonly connections: number;
  readonly streams: number;
}

/**
 * Requests over long-lived bidirectional streams (etcd's keepalives, our
 * HeartbeatStream): each stream sends its next request when the previous is
 * answered; a stream that ends early fails what it did not send.
 */
export async function streamedLoad(o: StreamedLoad): Promise<LoadResult> {
  const sessions = Array.from({ length: o.connections }, () => h2(o.port));
  const bodies = Array.from({ length: o.total }, (_, i) => frame(o.message(i)));
  const times: number[] = [];
  let next = 0;
  let failed = 0;
  const started = performance.now();
  try {
    await Promise.all(
      Array.from(
        { length: o.streams },
        (_, s) =>
          new Promise<void>((resolve, reject) => {
            const stream = sessions[s % o.connections]!.request({ ...grpcHeaders(o.path), ...o.headers });
            let t0 = 0;
            const send = () => {
              if (next >= o.total) return void stream.end();
              t0 = performance.now();
              stream.write(bodies[next++]!);
            };
            stream.on(
              "data",
              grpcMessages((m) => {
                times.push(performance.now() - t0);
                if (!o.ok(m)) failed++;
                send();
              }),
            );
            stream.on("end", resolve);
            stream.on("close", resolve);
            stream.on("error", reject);
            send();
          }),
      ),
    );
  } finally {
    for (const s of sessions) s.close();
  }
  const seconds = (performance.now() - started) / 1000;
  return { rps: o.total / seconds, p50Ms: percentile(times, 50), p99Ms: percentile(times, 99), ok: times.length - failed, failed: failed + (o.total - times.length) };
}

// --- watch fan-out ----------------------------------------------------------------------

const WATCH_PREFIX = "/fc/changes/";

export interface WatchBurst {
  received: number;
  expected: number;
  p50Ms: number;
  p99Ms: number;
  /** Burst start to the last delivery. */
  spanMs: number;
  serverCpuMs: number;
  subscriberCpuMs: number;
}

/**
 * `watchers` Watch streams (a subprocess on CPU 1, one HTTP/2 connection per
 * 100 watchers as bench/clients.ts's WatchEvents subscribers), then a burst
 * of `puts` puts at once from one connection, as the WatchEvents burst's
 * Route calls. A put's value starts with its send time (ms): etcd's events
 * carry no server time, so etcd's latency counts from the put's send,
 * including its Raft commit and fsync.
 */
export async function etcdWatchBurst(etcd: Etcd, watchers: number, puts: number, valueBytes: number, timeoutMs: number): Promise<WatchBurst> {
  const clients = spawnPinned(1, process.execPath, ["--import", "tsx", "bench/etcd.ts", "watchers", String(etcd.port), String(watchers), String(puts), String(timeoutMs)]);
  let out = "";
  clients.stdout!.on("data", (d: Buffer) => (out += d));
  while (!out.includes("READY")) {
    if (clients.exitCode !== null) throw new Error(`etcd watchers exited: ${out}`);
    await sleep(20);
  }
  const done = new Promise((r) => clients.once("exit", r));
  const loader = etcdLoader(etcd.port, 1);
  const started = Date.now();
  const cpuAtStart = etcd.cpuMs();
  let failed = 0;
  await Promise.all(
    Array.from({ length: puts }, async (_, i) => {
      const sent = String(Date.now());
      const res = await loader.call(ETCD.put, putRequest(`${WATCH_PREFIX}${i % 100}`, sent.padEnd(valueBytes, " ")));
      if (res.status !== 0) failed++;
    }),
  );
  loader.close();
  await done;
  if (failed > 0) throw new Error(`etcd watch burst: ${failed} puts failed`);
  const s = JSON.parse(out.slice(out.indexOf("READY") + 6).trim()) as { received: number; expected: number; p50Ms: number; p99Ms: number; last: number; cpuMs: number };
  return { received: s.received, expected: s.expected, p50Ms: s.p50Ms, p99Ms: s.p99Ms, spanMs: Math.max(1, s.last - started), serverCpuMs: etcd.cpuMs() - cpuAtStart, subscriberCpuMs: s.cpuMs };
}

/** The subprocess: Watch streams on WATCH_PREFIX; every event's value starts with its put's send time. */
async function watchers(port: number, n: number, expectedPuts: number, timeoutMs: number): Promise<void> {
  const expected = n * expectedPuts;
  const latencies: number[] = [];
  let received = 0;
  let last = 0;
  let cpuAtReady: NodeJS.CpuUsage | undefined;
  const finish = () => {
    const cpu = process.cpuUsage(cpuAtReady);
    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
    process.stdout.write(`${JSON.stringify({ received, expected, p50Ms: pct(50), p99Ms: pct(99), last, cpuMs: Math.round((cpu.user + cpu.system) / 1000) })}\n`);
    process.exit(0);
  };
  const sessions = Array.from({ length: Math.max(1, Math.ceil(n / 100)) }, () => h2(port));
  const create = frame(watchPrefixRequest(WATCH_PREFIX));
  let created = 0;
  for (let k = 0; k < n; k++) {
    const stream = sessions[k % sessions.length]!.request(grpcHeaders(ETCD.watch));
    stream.on(
      "data",
      grpcMessages((m) => {
        // WatchResponse{created = 3, events = 11: Event{kv = 2: KeyValue{value = 5}}}
        if (fields(m, 3)[0] === 1) created++;
        const events = fields(m, 11) as Uint8Array[];
        if (events.length === 0) return;
        const now = Date.now();
        for (const e of events) {
          const value = fields(fields(e, 2)[0] as Uint8Array, 5)[0] as Uint8Array;
          let sent = 0;
          for (let i = 0; i < value.length && value[i]! >= 48 && value[i]! <= 57; i++) sent = sent * 10 + value[i]! - 48;
          latencies.push(now - sent);
          received++;
        }
        last = now;
        if (received >= expected) finish();
      }),
    );
    stream.on("error", (e) => {
      process.stderr.write(`watch stream: ${e.message}\n`);
      process.exit(1);
    });
    stream.write(create);
  }
  while (created < n) await sleep(10);
  cpuAtReady = process.cpuUsage();
  process.stdout.write("READY\n");
  setTimeout(finish, timeoutMs);
  await new Promise(() => undefined);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === "watchers") {
  const [port, n, puts, timeoutMs] = process.argv.slice(3).map(Number);
  void watchers(port!, n!, puts!, timeoutMs!);
}
