/**
 * Soak (issue 14): two replicas of the built service (dist/src/main.js) on
 * FerretDB + Redis on loopback, under steady mixed load from many clients,
 * while Redis is restarted twice, FerretDB twice and one replica is killed
 * (SIGKILL) and restarted. Checks, and fails (exit 1) on any violation:
 *
 * - no lost registration: every agent whose Register was answered OK is
 *   listed at the end unless its Unregister was answered OK (leases are 1 h,
 *   so nothing expires during a run: an expiry is a violation too);
 * - no lost and no duplicated event per subscriber (/ws and gRPC WatchEvents
 *   on both replicas, resuming with after_id after every disconnect);
 * - no growth of descriptors or RSS of the replica that lives through the
 *   run between the first and the last window beyond the stated bounds;
 * - p99 of the last window within 2× of the first window's.
 *
 * `npm run soak` (5 minutes; `-- --minutes=N`) writes
 * bench/results/soak-latest.{json,md}; `npm run soak -- --short` (~75 s,
 * 15 s windows) is the CI form and writes nothing. `--backend=sqlite|postgresql`
 * picks FerretDB's backend (default postgresql: SQLite takes ~15 writes/s here,
 * too few for a baseline that is not saturated). Every process started here is killed when it ends, also on failure.
 */
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, createWriteStream } from "node:fs";
import type { ChildProcess } from "node:child_process";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import WebSocket from "ws";
import { AgentStatus, Transport } from "../gen/federation/v1/agent_pb.js";
import {
  GetAgentRequestSchema,
  HeartbeatRequestSchema,
  HeartbeatResponseSchema,
  ListAgentsRequestSchema,
  ListAgentsResponseSchema,
  RegisterRequestSchema,
  RegisterResponseSchema,
  UnregisterRequestSchema,
} from "../gen/federation/v1/registry_service_pb.js";
import { DiscoverRequestSchema } from "../gen/federation/v1/directory_service_pb.js";
import { RouteRequestSchema, RouteResponseSchema } from "../gen/federation/v1/router_service_pb.js";
import { WatchEventsRequestSchema, WatchEventsResponseSchema } from "../gen/federation/v1/health_service_pb.js";
import { ensureTools, ferretDbBinary, startPostgres, TEST_POSTGRES_SETTINGS, type PostgresCluster } from "../test/support/provision.js";
import { freePort, machine, percentile, root, serviceNodeFlags, sleep, spawnPinned, stop, TOKEN, waitForPort } from "./lib.js";

// ---------------------------------------------------------------- options

const argv = process.argv.slice(2);
const opt = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const SHORT = argv.includes("--short");
const BACKEND = (opt("backend") ?? "postgresql") as "sqlite" | "postgresql";
const DURATION_MS = SHORT ? 75_000 : Number(opt("minutes") ?? 5) * 60_000;
/** The first and last windows compared (resources, p99): a minute, 15 s in the short form. */
const WINDOW_MS = SHORT ? 15_000 : 60_000;
/**
 * Ops per second, all clients together (`--rate=x` scales them). FerretDB is
 * the bottleneck here (every Discover, Route and GetAgent is a query to it,
 * every write two or three; ~15 writes/s on SQLite): the load stays well
 * under what it takes, so the first window is a clean baseline. Unregisters
 * match registers: the fleet stays the same size, so no latency or memory
 * growth comes from a growing fleet.
 */
const RATE_SCALE = Number(opt("rate") ?? 1);
const RATES: Record<Op, number> = Object.fromEntries(
  Object.entries(SHORT
    ? { register: 1, heartbeat: 3, unregister: 1, discover: 6, route: 2, get: 2 }
    : { register: 1, heartbeat: 4, unregister: 1, discover: 8, route: 3, get: 3 }).map(([k, v]) => [k, v * RATE_SCALE]),
) as Record<Op, number>;
const CLIENTS_PER_REPLICA = 8;
const SUBSCRIBERS_PER_KIND_PER_REPLICA = SHORT ? 2 : 3;
const INITIAL_AGENTS = 30;
/** Outage length of each Redis and FerretDB restart, and how long the killed replica stays down. */
const OUTAGE_MS = SHORT ? 2_000 : 4_000;
const EVENT_RETENTION = 200_000;
/** Stated bounds between the first and the last window (the replica that lives through the run). */
const FD_GROWTH_MAX = 16;
const RSS_GROWTH_MAX_MIB = 48;
const P99_RATIO_MAX = 2;
/** Below this a p99 is noise on a 2-core VM (timer and GC granularity): the ratio is not held against it. */
const P99_FLOOR_MS = 5;
/**
 * The short form shows the p99 ratio but does not fail on it: its 15 s
 * windows hold ~200 calls, so its p99 is two or three calls, set by
 * FerretDB's stalls after a restart (506 ms against 82 ms in one CI-like
 * run, every correctness check held). The long form holds the ratio.
 */
const P99_HELD = !SHORT;
const CALL_TIMEOUT_MS = 5_000;

type Op = "register" | "heartbeat" | "unregister" | "discover" | "route" | "get";
const OPS = ["register", "heartbeat", "unregister", "discover", "route", "get"] as const;

// ---------------------------------------------------------------- processes

const runDir = mkdtempSync(path.join(os.tmpdir(), "fc-soak-"));
const logDir = path.join(runDir, "logs");
mkdirSync(logDir);
const cleanups: (() => Promise<void> | void)[] = [];

/** A server we kill and start again on the same port. */
interface Restartable {
  readonly name: string;
  readonly port: number;
  child: ChildProcess | undefined;
  start(): Promise<void>;
  kill(): Promise<void>;
}

function restartable(name: string, port: number, cpu: number, launch: () => [string, string[], Record<string, string>?], ready: () => Promise<void>): Restartable {
  const log = createWriteStream(path.join(logDir, `${name}.log`), { flags: "a" });
  cleanups.push(() => void log.end());
  const r: Restartable = {
    name,
    port,
    child: undefined,
    async start() {
      const [cmd, args, env] = launch();
      const child = spawnPinned(cpu, cmd, args, env);
      child.stdout!.pipe(log, { end: false });
      child.stderr!.pipe(log, { end: false });
      r.child = child;
      await ready();
    },
    async kill() {
      const c = r.child;
      r.child = undefined;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((res) => c.once("exit", res));
      c.kill("SIGKILL");
      await exited;
    },
  };
  cleanups.push(() => r.kill());
  return r;
}

async function startBackends(): Promise<{ redis: Restartable; ferret: Restartable; mongoUrl: string; redisUrl: string }> {
  ensureTools("redis-server", ...(BACKEND === "postgresql" ? (["postgresql"] as const) : []));
  const bin = ferretDbBinary();
  const redisPort = await freePort();
  const redis = restartable(
    "redis",
    redisPort,
    1,
    () => ["redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]],
    () => waitForPort(redisPort, 15_000),
  );
  const ferretPort = await freePort();
  let pg: PostgresCluster | undefined;
  const sqliteDir = path.join(runDir, "ferret-sqlite");
  if (BACKEND === "postgresql") {
    pg = await startPostgres({ port: await freePort(), databases: ["ferretdb"], settings: TEST_POSTGRES_SETTINGS, cpu: 1 });
    cleanups.push(() => pg!.stop());
  } else mkdirSync(sqliteDir);
  const backendArgs = pg ? ["--handler", "postgresql", "--postgresql-url", pg.url("ferretdb")] : ["--sqlite-url", `file:${sqliteDir}/`];
  const ferret = restartable(
    "ferretdb",
    ferretPort,
    1,
    () => [bin, ["--listen-addr", `127.0.0.1:${ferretPort}`, ...backendArgs]],
    () => waitForPort(ferretPort, 15_000),
  );
  await Promise.all([redis.start(), ferret.start()]);
  return { redis, ferret, mongoUrl: `mongodb://127.0.0.1:${ferretPort}`, redisUrl: `redis://127.0.0.1:${redisPort}` };
}

interface Replica extends Restartable {
  readonly url: string;
  pid(): number | undefined;
  /** SIGTERM and the exit code (0: drained cleanly). */
  terminate(): Promise<number | null>;
}

function replica(name: string, port: number, env: Record<string, string>): Replica {
  const url = `http://127.0.0.1:${port}`;
  const r = restartable(
    `replica-${name}`,
    port,
    0,
    () => [process.execPath, [...serviceNodeFlags(), "dist/src/main.js"], { ...env, PORT: String(port), REPLICA_ID: `soak-${name}` }],
    () => waitServing(url, 30_000),
  ) as Replica;
  Object.assign(r, {
    url,
    pid: () => r.child?.pid,
    async terminate() {
      const c = r.child;
      if (!c || c.exitCode !== null) return c?.exitCode ?? null;
      await stop(c);
      r.child = undefined;
      return c.exitCode;
    },
  });
  return r;
}

/** The last /health answer of each replica that was not SERVING (for the report). */
const lastNotServing = new Map<string, string>();

async function health(url: string): Promise<string> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
    const text = await res.text();
    const status = (JSON.parse(text) as { status?: string }).status ?? `HTTP ${res.status}`;
    if (status !== "SERVING_STATUS_SERVING") lastNotServing.set(url, text);
    return status;
  } catch (err) {
    return `unreachable (${(err as Error).cause ?? (err as Error).message})`;
  }
}

async function waitServing(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    last = await health(url);
    if (last === "SERVING_STATUS_SERVING") return;
    await sleep(50);
  }
  throw new Error(`${url} not SERVING after ${timeoutMs} ms: ${last} ${lastNotServing.get(url) ?? ""}`);
}

/** Socket inodes of TCP connections to `port` (IPv4 and IPv6 tables of this network namespace). */
function socketsTo(port: number): Set<string> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[2]!.endsWith(`:${hex}`)) inodes.add(f[9]!);
    }
  }
  return inodes;
}

/**
 * Descriptors of a process, and how many of them are connections to
 * FerretDB: the MongoDB driver's pool grows under a backlog (up to its
 * maxPoolSize, 100) and never shrinks (no maxIdleTimeMS), so those are
 * counted apart from the rest.
 */
function fds(pid: number | undefined, mongoPort: number): { all: number; mongo: number } {
  try {
    if (!pid) return { all: NaN, mongo: NaN };
    const dir = `/proc/${pid}/fd`;
    const names = readdirSync(dir);
    const mongo = socketsTo(mongoPort);
    let n = 0;
    for (const fd of names) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`${dir}/${fd}`));
        if (m && mongo.has(m[1]!)) n++;
      } catch {
        // closed meanwhile
      }
    }
    return { all: names.length, mongo: n };
  } catch {
    return { all: NaN, mongo: NaN };
  }
}

function rssMiB(pid: number | undefined): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------- gRPC clients

interface Answer {
  /** gRPC status; -1 for a transport failure or a client-side timeout. */
  status: number;
  message: string;
  bytes: Buffer;
}

/** One client: an HTTP/2 session to one replica, made again when it breaks. */
class Client {
  private session: http2.ClientHttp2Session | undefined;

  constructor(
    readonly port: number,
    private readonly token: string,
  ) {}

  private live(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      const s = http2.connect(`http://127.0.0.1:${this.port}`, {
        createConnection: () => net.connect({ port: this.port, host: "127.0.0.1", noDelay: true }),
      });
      s.on("error", () => undefined);
      s.on("close", () => this.session === s && (this.session = undefined));
      this.session = s;
    }
    return this.session;
  }

  call(method: string, body: Uint8Array): Promise<Answer> {
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    return new Promise((resolve) => {
      let done = false;
      const finish = (a: Answer) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(a);
      };
      const timer = setTimeout(() => {
        finish({ status: -1, message: "client timeout", bytes: Buffer.alloc(0) });
        stream?.close(http2.constants.NGHTTP2_CANCEL);
      }, CALL_TIMEOUT_MS + 1_000);
      let stream: http2.ClientHttp2Stream | undefined;
      try {
        stream = this.live().request({
          ":method": "POST",
          ":path": method,
          "content-type": "application/grpc",
          te: "trailers",
          "grpc-timeout": `${CALL_TIMEOUT_MS}m`,
          authorization: `Bearer ${this.token}`,
        });
      } catch (err) {
        this.session?.destroy();
        this.session = undefined;
        finish({ status: -1, message: String(err), bytes: Buffer.alloc(0) });
        return;
      }
      const chunks: Buffer[] = [];
      let status = -1;
      let message = "";
      const read = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) status = Number(h["grpc-status"]);
        if (typeof h["grpc-message"] === "string") message = decodeURIComponent(h["grpc-message"]);
      };
      stream.on("response", read);
      stream.on("trailers", read);
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("close", () => finish({ status, message: status === -1 && !message ? "stream closed without status" : message, bytes: Buffer.concat(chunks).subarray(5) }));
      stream.on("error", (err) => finish({ status: -1, message: err.message, bytes: Buffer.alloc(0) }));
      stream.end(frame);
    });
  }

  close(): void {
    this.session?.destroy();
  }
}

// ---------------------------------------------------------------- subscribers

interface SeenEvent {
  id: bigint;
  key: string;
  type: string;
  reason: string;
}

/** Key of an event as the writes know it: unique per logical change. */
function eventKey(type: string, agentId: string, revision: string, routeId: string): string {
  if (type === "task.routed") return `task.routed:${routeId}`;
  if (type === "agent.registered" || type === "agent.unregistered" || type === "agent.expired") return `${type}:${agentId}`;
  return `${type}:${agentId}:${revision}`;
}

/** An event-feed subscriber that resumes with after_id after every disconnect. */
class Subscriber {
  readonly seen: SeenEvent[] = [];
  lastId = 0n;
  disconnects = 0;
  resumes = 0;
  private stopped = false;
  private closeCurrent: () => void = () => undefined;
  /** Wall time of the last event received. */
  lastAt = 0;
  /** The feed is open (a /ws handshake or the WatchEvents response headers arrived). */
  connected = false;

  constructor(
    readonly name: string,
    readonly kind: "ws" | "grpc",
    readonly port: number,
    private readonly token: string,
  ) {}

  private record(e: SeenEvent): void {
    this.seen.push(e);
    if (e.id > this.lastId) this.lastId = e.id;
    this.lastAt = Date.now();
  }

  /** Connects (the first time with after_id=0: every event the stream holds) and keeps reconnecting until stop(). */
  start(): Promise<void> {
    return new Promise((ready) => this.connect(ready));
  }

  private reconnect(): void {
    this.connected = false;
    if (this.stopped) return;
    this.disconnects++;
    setTimeout(() => {
      if (this.stopped) return;
      this.resumes++;
      this.connect(() => undefined);
    }, 200);
  }

  private connect(opened: () => void): void {
    if (this.kind === "ws") this.connectWs(opened);
    else this.connectGrpc(opened);
  }

  private connectWs(opened: () => void): void {
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws?after_id=${this.lastId}`, { headers: { authorization: `Bearer ${this.token}` } });
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      this.reconnect();
    };
    this.closeCurrent = () => ws.terminate();
    ws.on("open", () => ((this.connected = true), opened()));
    ws.on("message", (data) => {
      const e = JSON.parse(String(data)) as {
        id: string;
        type: string;
        agentId?: string;
        agentChange?: { agent?: { revision?: string }; reason?: string };
        taskRouted?: { routeId?: string };
      };
      this.record({
        id: BigInt(e.id),
        type: e.type,
        key: eventKey(e.type, e.agentId ?? "", e.agentChange?.agent?.revision ?? "0", e.taskRouted?.routeId ?? ""),
        reason: e.agentChange?.reason ?? "",
      });
    });
    ws.on("error", () => undefined);
    ws.on("close", end);
  }

  private connectGrpc(opened: () => void): void {
    const session = http2.connect(`http://127.0.0.1:${this.port}`, {
      createConnection: () => net.connect({ port: this.port, host: "127.0.0.1", noDelay: true }),
    });
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      session.destroy();
      this.reconnect();
    };
    this.closeCurrent = () => session.destroy();
    session.on("error", () => undefined);
    session.on("close", end);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request({
        ":method": "POST",
        ":path": "/federation.v1.HealthService/WatchEvents",
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${this.token}`,
      });
    } catch {
      end();
      return;
    }
    const body = toBinary(WatchEventsRequestSchema, create(WatchEventsRequestSchema, { afterId: this.lastId }));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    stream.on("response", () => ((this.connected = true), opened()));
    let buf: Buffer = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length < 5 + len) break;
        const m = fromBinary(WatchEventsResponseSchema, buf.subarray(5, 5 + len)).event!;
        buf = buf.subarray(5 + len);
        const change = m.payload.case === "agentChange" ? m.payload.value : undefined;
        const routed = m.payload.case === "taskRouted" ? m.payload.value : undefined;
        this.record({
          id: m.id,
          type: m.type,
          key: eventKey(m.type, m.agentId, String(change?.agent?.revision ?? 0n), routed?.routeId ?? ""),
          reason: change?.reason ?? "",
        });
      }
    });
    stream.on("error", () => undefined);
    stream.on("close", end);
    stream.end(frame);
  }

  stop(): void {
    this.stopped = true;
    this.closeCurrent();
  }
}

// ---------------------------------------------------------------- the run

interface Sample {
  t: number;
  /** The replica's port. */
  port: number;
  op: Op;
  ms: number;
  status: number;
}

interface ResourceSample {
  t: number;
  replica: string;
  /** Descriptors other than connections to FerretDB. */
  fds: number;
  /** Connections to FerretDB (the driver's pool). */
  mongoFds: number;
  rssMiB: number;
}

interface Incident {
  t: number;
  what: string;
  ms: number;
}

const CAP = "soak.work";
function registerBody(i: number): Uint8Array {
  return toBinary(
    RegisterRequestSchema,
    create(RegisterRequestSchema, {
      name: `soak-${i}`,
      version: "1.0.0",
      endpoint: { url: `grpc://10.9.${(i >> 8) & 255}.${i & 255}:50051`, transport: Transport.GRPC },
      capabilities: [{ name: CAP, tags: [`t${i % 5}`] }, { name: `cap.${i % 7}` }],
      tools: [{ name: `tool_${i % 13}`, description: `Tool of soak agent ${i}`, inputSchema: { type: "object" } }],
      labels: { zone: `z${i % 3}` },
      leaseTtl: { seconds: 3600n },
    }),
  );
}

async function main(): Promise<void> {
  const startedAt = new Date();
  console.log(`soak: ${SHORT ? "short form" : "long form"}, ${DURATION_MS / 1000} s of load, windows of ${WINDOW_MS / 1000} s, FerretDB on ${BACKEND}; logs in ${logDir}`);
  const { redis, ferret, mongoUrl, redisUrl } = await startBackends();
  const dataDir = path.join(runDir, "data");
  const env: Record<string, string> = {
    HOST: "127.0.0.1",
    LOG_LEVEL: "warn",
    DATA_DIR: dataDir,
    FEDERATION_BOOTSTRAP_TOKEN: TOKEN,
    MONGODB_URI: mongoUrl,
    MONGODB_DB: "soak",
    REDIS_URL: redisUrl,
    REDIS_PREFIX: `soak-${process.pid}`,
    EVENT_RETENTION: String(EVENT_RETENTION),
    RATE_LIMIT_TENANT: "1000000",
    RATE_LIMIT_HEARTBEAT: "1000",
  };
  const a = replica("a", await freePort(), env);
  const b = replica("b", await freePort(), env);
  // A first: it writes the signing keys both share (DATA_DIR).
  await a.start();
  await b.start();
  const minted = await fetch(`${a.url}/admin/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ tenant: "default", subject: "soak", scopes: ["agents:read", "agents:write", "route", "events:read"], ttl: "7200s" }),
  });
  const token = ((await minted.json()) as { token: string }).token;
  const replicas = [a, b];

  // Subscribers first, with after_id=0: each must see every event of the run.
  const subscribers: Subscriber[] = [];
  for (const r of replicas)
    for (const kind of ["ws", "grpc"] as const)
      for (let i = 0; i < SUBSCRIBERS_PER_KIND_PER_REPLICA; i++) subscribers.push(new Subscriber(`${r.name.slice(8)}-${kind}-${i}`, kind, r.port, token));
  await Promise.all(subscribers.map((s) => s.start()));

  const clients = replicas.flatMap((r) => Array.from({ length: CLIENTS_PER_REPLICA }, () => new Client(r.port, token)));
  let clientTurn = 0;
  const client = () => clients[clientTurn++ % clients.length]!;

  // What the writes say.
  const live = new Map<string, { status: AgentStatus | undefined; busy: boolean }>();
  const unregistered = new Set<string>();
  const uncertain = new Set<string>(); // unregister answered with an error: either way
  const required = new Set<string>(); // event keys that must reach every subscriber
  let ambiguousWrites = 0;
  let nextAgent = 0;
  const samples: Sample[] = [];
  const failures = new Map<string, number>();
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const note = (op: Op, status: number, message: string) => {
    if (status === 0) return;
    const k = `${op}: ${status === -1 ? "transport" : `grpc ${status}`} ${message.slice(0, 80)}`;
    failures.set(k, (failures.get(k) ?? 0) + 1);
  };
  const pick = () => {
    const ids = [...live.entries()].filter(([, v]) => !v.busy);
    return ids.length ? ids[Math.floor(Math.random() * ids.length)]! : undefined;
  };

  const run: Record<Op, (started: number) => Promise<void>> = {
    async register(started) {
      const cl = client();
      const res = await cl.call("/federation.v1.RegistryService/Register", registerBody(nextAgent++));
      samples.push({ t: now(), port: cl.port, op: "register", ms: performance.now() - started, status: res.status });
      if (res.status === 0) {
        const agent = fromBinary(RegisterResponseSchema, res.bytes).agent!;
        live.set(agent.id, { status: agent.status, busy: false });
        required.add(eventKey("agent.registered", agent.id, "", ""));
      } else ambiguousWrites++;
      return void note("register", res.status, res.message);
    },
    async heartbeat(started) {
      const p = pick();
      if (!p) return;
      const [id, state] = p;
      state.busy = true;
      // One heartbeat in four flips the status: a status_changed event.
      const flip = Math.random() < 0.25;
      const want = flip ? (state.status === AgentStatus.DEGRADED ? AgentStatus.HEALTHY : AgentStatus.DEGRADED) : AgentStatus.UNSPECIFIED;
      const cl = client();
      const res = await cl.call(
        "/federation.v1.RegistryService/Heartbeat",
        toBinary(HeartbeatRequestSchema, create(HeartbeatRequestSchema, { agentId: id, status: want, load: Math.random() })),
      );
      state.busy = false;
      samples.push({ t: now(), port: cl.port, op: "heartbeat", ms: performance.now() - started, status: res.status });
      if (res.status === 0) {
        const agent = fromBinary(HeartbeatResponseSchema, res.bytes).agent!;
        if (want !== AgentStatus.UNSPECIFIED && state.status !== undefined && state.status !== want) {
          required.add(eventKey("agent.status_changed", id, String(agent.revision), ""));
        }
        state.status = agent.status;
      } else {
        if (want !== AgentStatus.UNSPECIFIED) state.status = undefined; // it may or may not have changed
        ambiguousWrites++;
      }
      note("heartbeat", res.status, res.message);
    },
    async unregister(started) {
      if (live.size < INITIAL_AGENTS) return;
      const p = pick();
      if (!p) return;
      const [id, state] = p;
      state.busy = true;
      const cl = client();
      const res = await cl.call("/federation.v1.RegistryService/Unregister", toBinary(UnregisterRequestSchema, create(UnregisterRequestSchema, { agentId: id })));
      samples.push({ t: now(), port: cl.port, op: "unregister", ms: performance.now() - started, status: res.status });
      live.delete(id);
      if (res.status === 0) {
        unregistered.add(id);
        required.add(eventKey("agent.unregistered", id, "", ""));
      } else {
        uncertain.add(id);
        ambiguousWrites++;
      }
      note("unregister", res.status, res.message);
    },
    async discover(started) {
      const cl = client();
      const res = await cl.call(
        "/federation.v1.DirectoryService/Discover",
        toBinary(DiscoverRequestSchema, create(DiscoverRequestSchema, { capabilities: [CAP], tags: [`t${Math.floor(Math.random() * 5)}`], limit: 20 })),
      );
      samples.push({ t: now(), port: cl.port, op: "discover", ms: performance.now() - started, status: res.status });
      note("discover", res.status, res.message);
    },
    async route(started) {
      const cl = client();
      const res = await cl.call("/federation.v1.RouterService/Route", toBinary(RouteRequestSchema, create(RouteRequestSchema, { capabilities: [CAP] })));
      samples.push({ t: now(), port: cl.port, op: "route", ms: performance.now() - started, status: res.status });
      if (res.status === 0) required.add(eventKey("task.routed", "", "", fromBinary(RouteResponseSchema, res.bytes).routeId));
      note("route", res.status, res.message);
    },
    async get(started) {
      const p = pick();
      if (!p) return;
      const cl = client();
      const res = await cl.call("/federation.v1.RegistryService/GetAgent", toBinary(GetAgentRequestSchema, create(GetAgentRequestSchema, { agentId: p[0] })));
      samples.push({ t: now(), port: cl.port, op: "get", ms: performance.now() - started, status: res.status });
      note("get", res.status, res.message);
    },
  };
  const timed = (op: Op) => () => run[op](performance.now());

  // Initial fleet, so heartbeats, routes and unregisters have agents.
  for (let i = 0; i < INITIAL_AGENTS; i++) await timed("register")();
  samples.length = 0;
  failures.clear();

  // Resources of both replicas, once a second.
  const resources: ResourceSample[] = [];
  const healthLog: { t: number; replica: string; status: string }[] = [];
  const sampler = setInterval(() => {
    for (const r of replicas) {
      const f = fds(r.pid(), ferret.port);
      resources.push({ t: now(), replica: r.name, fds: f.all - f.mongo, mongoFds: f.mongo, rssMiB: rssMiB(r.pid()) });
    }
  }, 1_000);
  cleanups.push(() => clearInterval(sampler));
  let probing = true;
  const prober = (async () => {
    while (probing) {
      await Promise.all(replicas.map(async (r) => healthLog.push({ t: now(), replica: r.name, status: await health(r.url) })));
      await sleep(1_000);
    }
  })();

  // Disruptions, evenly spread between the first and the last window.
  const incidents: Incident[] = [];
  const disruptionErrors: string[] = [];
  const plan: [string, () => Promise<void>][] = [
    ["Redis restarted (SIGKILL, no persistence)", async () => (await redis.kill(), await sleep(OUTAGE_MS), await redis.start())],
    ["FerretDB restarted (SIGKILL)", async () => (await ferret.kill(), await sleep(OUTAGE_MS), await ferret.start())],
    [
      "replica b killed (SIGKILL) and restarted",
      async () => {
        await b.kill();
        await sleep(OUTAGE_MS);
        await b.start();
        // Its subscribers resume (after_id) before the next disruption: a Redis
        // restart without persistence empties the stream they replay from.
        const until = Date.now() + 15_000;
        while (subscribers.some((x) => !x.connected) && Date.now() < until) await sleep(100);
      },
    ],
    ["Redis restarted (SIGKILL, no persistence)", async () => (await redis.kill(), await sleep(OUTAGE_MS), await redis.start())],
    ["FerretDB restarted (SIGKILL)", async () => (await ferret.kill(), await sleep(OUTAGE_MS), await ferret.start())],
  ];
  // The first disruption a little after the first window; the last one leaves time to recover before the last window.
  const margin = SHORT ? 2_000 : 5_000;
  const recovery = SHORT ? 10_000 : 20_000;
  const span = DURATION_MS - 2 * WINDOW_MS - margin - recovery;
  const disrupt = (async () => {
    for (let k = 0; k < plan.length; k++) {
      const at = WINDOW_MS + margin + (span * k) / (plan.length - 1);
      await sleep(Math.max(0, at - now()));
      const [what, act] = plan[k]!;
      const began = now();
      console.log(`  ${(began / 1000).toFixed(1)} s: ${what}`);
      try {
        await act();
      } catch (err) {
        // A replica that does not come back is a finding, not a crash of the soak.
        disruptionErrors.push(`${what}: ${(err as Error).message}`);
        console.log(`  ${(now() / 1000).toFixed(1)} s: ${(err as Error).message}`);
      }
      incidents.push({ t: began, what, ms: now() - began });
    }
  })();

  // Steady open-loop load: each op at its rate, bounded in flight.
  const inFlight: Record<Op, number> = { register: 0, heartbeat: 0, unregister: 0, discover: 0, route: 0, get: 0 };
  const skipped: Record<Op, number> = { register: 0, heartbeat: 0, unregister: 0, discover: 0, route: 0, get: 0 };
  const owed: Record<Op, number> = { register: 0, heartbeat: 0, unregister: 0, discover: 0, route: 0, get: 0 };
  const pending = new Set<Promise<void>>();
  const tick = 50;
  let lastTick = now();
  while (now() < DURATION_MS) {
    await sleep(tick);
    const t = now();
    const dt = (t - lastTick) / 1000;
    lastTick = t;
    for (const op of OPS) {
      owed[op] += RATES[op] * dt;
      while (owed[op] >= 1) {
        owed[op]--;
        if (inFlight[op] >= 64) {
          skipped[op]++;
          continue;
        }
        inFlight[op]++;
        const p = timed(op)().finally(() => {
          inFlight[op]--;
          pending.delete(p);
        });
        pending.add(p);
      }
    }
  }
  await Promise.all(pending);
  await disrupt;
  const loadMs = now();
  console.log(`  load stopped at ${(loadMs / 1000).toFixed(1)} s; waiting for the feed to settle`);

  // Both replicas must serve again, and every subscriber catch up.
  const recovered: Record<string, boolean> = {};
  for (const r of replicas) {
    try {
      await waitServing(r.url, 20_000);
      recovered[r.name] = true;
    } catch {
      recovered[r.name] = false;
    }
  }
  const settleDeadline = Date.now() + 20_000;
  for (;;) {
    const maxId = subscribers.reduce((m, s) => (s.lastId > m ? s.lastId : m), 0n);
    const quiet = subscribers.every((s) => Date.now() - s.lastAt > 2_000);
    if ((subscribers.every((s) => s.lastId === maxId) && quiet) || Date.now() > settleDeadline) break;
    await sleep(250);
  }
  probing = false;
  await prober;
  clearInterval(sampler);

  // Registrations: everything answered OK and not unregistered is listed.
  const listed = new Set<string>();
  let listError = "";
  for (let pageToken = "", pages = 0; pages < 1000; pages++) {
    const res = await new Client(a.port, token).call(
      "/federation.v1.RegistryService/ListAgents",
      toBinary(ListAgentsRequestSchema, create(ListAgentsRequestSchema, { pageSize: 1000, pageToken })),
    );
    if (res.status !== 0) {
      listError = `ListAgents: ${res.status} ${res.message}`;
      break;
    }
    const page = fromBinary(ListAgentsResponseSchema, res.bytes);
    for (const ag of page.agents) listed.add(ag.id);
    pageToken = page.nextPageToken;
    if (!pageToken) break;
  }
  const lostRegistrations = [...live.keys()].filter((id) => !listed.has(id));
  const resurrected = [...unregistered].filter((id) => listed.has(id));
  const knownIds = new Set([...live.keys(), ...unregistered, ...uncertain]);
  const unknownListed = [...listed].filter((id) => !knownIds.has(id)).length;

  // Events, per subscriber.
  const union = new Map<bigint, SeenEvent>();
  for (const s of subscribers) for (const e of s.seen) union.set(e.id, e);
  const unionKeys = new Set([...union.values()].map((e) => e.key));
  const requiredMissingEverywhere = [...required].filter((k) => !unionKeys.has(k));
  const expiries = [...union.values()].filter((e) => e.type === "agent.expired" || e.reason === "lease expired");
  const perSubscriber = subscribers.map((s) => {
    const ids = new Set<bigint>();
    const keys = new Map<string, number>();
    let dupIds = 0;
    let outOfOrder = 0;
    let prev = 0n;
    for (const e of s.seen) {
      if (ids.has(e.id)) dupIds++;
      ids.add(e.id);
      keys.set(e.key, (keys.get(e.key) ?? 0) + 1);
      if (e.id <= prev) outOfOrder++;
      prev = e.id;
    }
    const dupKeys = [...keys.values()].filter((n) => n > 1).reduce((x, n) => x + n - 1, 0);
    const missingIds = [...union.keys()].filter((id) => !ids.has(id));
    const missingRequired = [...required].filter((k) => !keys.has(k));
    return {
      name: s.name,
      received: s.seen.length,
      disconnects: s.disconnects,
      resumes: s.resumes,
      lost: new Set([...missingIds.map((id) => union.get(id)!.key), ...missingRequired]).size,
      lostSample: [...missingIds.slice(0, 3).map((id) => `${id} ${union.get(id)!.key}`), ...missingRequired.slice(0, 3)],
      duplicates: dupKeys, // extra copies of one logical event (a repeated id repeats its key too)
      duplicateIds: dupIds,
      outOfOrder,
    };
  });

  // Resources: the replica that lives through the run (a); b's are shown.
  const windowStats = (name: string, from: number, to: number) => {
    const xs = resources.filter((r) => r.replica === name && r.t >= from && r.t < to && !Number.isNaN(r.fds));
    return { fdsMax: Math.max(...xs.map((x) => x.fds)), mongoFdsMax: Math.max(...xs.map((x) => x.mongoFds)), rssMaxMiB: Math.max(...xs.map((x) => x.rssMiB)), fdsMedian: percentile(xs.map((x) => x.fds), 50), rssMedianMiB: percentile(xs.map((x) => x.rssMiB), 50) };
  };
  const firstWin = [0, WINDOW_MS] as const;
  const lastWin = [loadMs - WINDOW_MS, loadMs] as const;
  const resA = { first: windowStats(a.name, ...firstWin), last: windowStats(a.name, ...lastWin) };
  const resB = { first: windowStats(b.name, ...firstWin), last: windowStats(b.name, ...lastWin) };

  // Latency per op and over all, first and last window (OK answers).
  const lat = (op: Op | "all", from: number, to: number) => {
    const xs = samples.filter((s) => (op === "all" || s.op === op) && s.status === 0 && s.t >= from && s.t < to).map((s) => s.ms);
    return { n: xs.length, p50: percentile(xs, 50), p99: percentile(xs, 99) };
  };
  const opRows = [...OPS, "all" as const].map((op) => {
    const all = samples.filter((s) => op === "all" || s.op === op);
    const first = lat(op, ...firstWin);
    const last = lat(op, ...lastWin);
    return {
      op,
      calls: all.length,
      ok: all.filter((s) => s.status === 0).length,
      failed: all.filter((s) => s.status !== 0).length,
      rps: all.length / (loadMs / 1000),
      first,
      last,
      ratio: last.p99 / first.p99,
      skipped: op === "all" ? Object.values(skipped).reduce((x, y) => x + y, 0) : skipped[op],
    };
  });
  const allRow = opRows.find((r) => r.op === "all")!;

  // A timeline in 5 s buckets: calls, failures, p50/p99 of OK calls, descriptors and RSS.
  const timeline: { atS: number; calls: number; failed: number; p50: number; p99: number; p99A: number; p99B: number; fdsA: number; fdsB: number; poolA: number; poolB: number; rssA: number; rssB: number }[] = [];
  for (let from = 0; from < loadMs; from += 5_000) {
    const xs = samples.filter((x) => x.t >= from && x.t < from + 5_000);
    const ok = xs.filter((x) => x.status === 0).map((x) => x.ms);
    const res = (name: string, f: "fds" | "mongoFds" | "rssMiB") => Math.max(...resources.filter((r) => r.replica === name && r.t >= from && r.t < from + 5_000).map((r) => r[f]).filter((v) => !Number.isNaN(v)));
    timeline.push({ atS: from / 1000, calls: xs.length, failed: xs.length - ok.length, p50: round(percentile(ok, 50)), p99: round(percentile(ok, 99)), p99A: round(percentile(xs.filter((x) => x.status === 0 && x.port === a.port).map((x) => x.ms), 99)), p99B: round(percentile(xs.filter((x) => x.status === 0 && x.port === b.port).map((x) => x.ms), 99)), fdsA: res(a.name, "fds"), fdsB: res(b.name, "fds"), poolA: res(a.name, "mongoFds"), poolB: res(b.name, "mongoFds"), rssA: round(res(a.name, "rssMiB")), rssB: round(res(b.name, "rssMiB")) });
  }

  // Stopping: each replica drains and exits 0.
  const exitCodes: Record<string, number | null> = {};
  for (const r of replicas) exitCodes[r.name] = await r.terminate();

  const totalEvents = union.size;
  const checks = [
    { check: "registrations answered OK, not unregistered, missing at the end", value: lostRegistrations.length, bound: "0", held: lostRegistrations.length === 0 && !listError, detail: listError || lostRegistrations.slice(0, 5).join(" ") },
    { check: "agents unregistered OK but listed at the end", value: resurrected.length, bound: "0", held: resurrected.length === 0, detail: resurrected.slice(0, 5).join(" ") },
    { check: "agents listed that no answered write explains", value: unknownListed, bound: `≤ ${ambiguousWrites} (writes answered with an error)`, held: unknownListed <= ambiguousWrites, detail: "" },
    { check: "lease expiries (agent.expired / status_changed 'lease expired')", value: expiries.length, bound: "0", held: expiries.length === 0, detail: expiries.slice(0, 3).map((e) => e.key).join(" ") },
    { check: "events of writes answered OK that no subscriber saw", value: requiredMissingEverywhere.length, bound: "0", held: requiredMissingEverywhere.length === 0, detail: requiredMissingEverywhere.slice(0, 5).join(" ") },
    { check: "events lost, worst subscriber", value: Math.max(...perSubscriber.map((s) => s.lost)), bound: "0", held: perSubscriber.every((s) => s.lost === 0), detail: perSubscriber.filter((s) => s.lost).map((s) => `${s.name}: ${s.lost} (${s.lostSample.join(", ")})`).join("; ") },
    { check: "events duplicated, worst subscriber", value: Math.max(...perSubscriber.map((s) => s.duplicates)), bound: "0", held: perSubscriber.every((s) => s.duplicates === 0), detail: perSubscriber.filter((s) => s.duplicates).map((s) => `${s.name}: ${s.duplicates}`).join("; ") },
    { check: "events out of id order, worst subscriber", value: Math.max(...perSubscriber.map((s) => s.outOfOrder)), bound: "0", held: perSubscriber.every((s) => s.outOfOrder === 0), detail: "" },
    { check: "events in the run vs EVENT_RETENTION (all must stay resumable)", value: totalEvents, bound: `< ${EVENT_RETENTION}`, held: totalEvents < EVENT_RETENTION, detail: "" },
    { check: "connections of replica a to FerretDB (driver pool), last window max", value: resA.last.mongoFdsMax, bound: "≤ 100 (maxPoolSize)", held: resA.last.mongoFdsMax <= 100, detail: `${resA.first.mongoFdsMax} → ${resA.last.mongoFdsMax}` },
    { check: "descriptors of replica a except FerretDB connections, last window max − first window max", value: resA.last.fdsMax - resA.first.fdsMax, bound: `≤ ${FD_GROWTH_MAX}`, held: resA.last.fdsMax - resA.first.fdsMax <= FD_GROWTH_MAX, detail: `${resA.first.fdsMax} → ${resA.last.fdsMax}` },
    { check: "RSS of replica a (MiB), last window max − first window max", value: round(resA.last.rssMaxMiB - resA.first.rssMaxMiB), bound: `≤ ${RSS_GROWTH_MAX_MIB}`, held: resA.last.rssMaxMiB - resA.first.rssMaxMiB <= RSS_GROWTH_MAX_MIB, detail: `${round(resA.first.rssMaxMiB)} → ${round(resA.last.rssMaxMiB)}` },
    {
      check: "p99 of all calls, last window / first window",
      value: round(allRow.ratio),
      bound: P99_HELD ? `≤ ${P99_RATIO_MAX} (or last p99 ≤ ${P99_FLOOR_MS} ms)` : "shown only (short form)",
      held: !P99_HELD || allRow.last.p99 <= Math.max(P99_RATIO_MAX * allRow.first.p99, P99_FLOOR_MS),
      detail: `${round(allRow.first.p99)} → ${round(allRow.last.p99)} ms`,
    },
    { check: "every disruption recovered from (backend listening, restarted replica SERVING within 30 s)", value: disruptionErrors.length, bound: "0", held: disruptionErrors.length === 0, detail: disruptionErrors.join("; ") },
    { check: "both replicas SERVING again after the last disruption", value: Object.values(recovered).filter(Boolean).length, bound: "2", held: Object.values(recovered).every(Boolean), detail: JSON.stringify(recovered) },
    { check: "replicas drained cleanly on SIGTERM (exit 0)", value: Object.values(exitCodes).filter((c) => c === 0).length, bound: "2", held: Object.values(exitCodes).every((c) => c === 0), detail: JSON.stringify(exitCodes) },
  ];

  const notServing = replicas.map((r) => {
    const bad = healthLog.filter((h) => h.replica === r.name && h.status !== "SERVING_STATUS_SERVING");
    return `${r.name}: ${bad.length} of ${healthLog.filter((h) => h.replica === r.name).length} probes not SERVING`;
  });
  const result = {
    form: SHORT ? "short" : "long",
    startedAt: startedAt.toISOString(),
    machine: machine(),
    backend: `FerretDB ${BACKEND}`,
    durationMs: Math.round(loadMs),
    windowMs: WINDOW_MS,
    rates: RATES,
    clients: clients.length,
    subscribers: subscribers.length,
    incidents: incidents.map((i) => ({ atS: round(i.t / 1000), what: i.what, tookMs: Math.round(i.ms) })),
    ops: opRows.map((r) => ({ ...r, rps: round(r.rps), ratio: round(r.ratio), first: { ...r.first, p50: round(r.first.p50), p99: round(r.first.p99) }, last: { ...r.last, p50: round(r.last.p50), p99: round(r.last.p99) } })),
    failures: Object.fromEntries([...failures.entries()].sort((x, y) => y[1] - x[1])),
    events: { total: totalEvents, requiredFromOkWrites: required.size, writesAnsweredWithError: ambiguousWrites },
    subscribers_: perSubscriber,
    registrations: { live: live.size, unregistered: unregistered.size, uncertain: uncertain.size, listed: listed.size },
    resources: { a: resA, b: resB, note: "replica b was killed and restarted: its windows are different processes" },
    health: notServing,
    timeline,
    checks,
  };

  const md = renderMarkdown(result);
  console.log(`\n${md}`);
  if (!SHORT) {
    const dir = path.join(root, "bench/results");
    writeFileSync(path.join(dir, "soak-latest.json"), `${JSON.stringify(result, (_k, v) => (typeof v === "bigint" ? String(v) : v), 2)}\n`);
    writeFileSync(path.join(dir, "soak-latest.md"), md);
    console.log("wrote bench/results/soak-latest.{json,md}");
  }
  for (const s of subscribers) s.stop();
  for (const c of clients) c.close();
  const failed = checks.filter((c) => !c.held);
  if (failed.length) {
    console.error(`\nSOAK FAILED: ${failed.map((c) => c.check).join("; ")}\nlogs: ${logDir}`);
    for (const f of readdirSync(logDir)) {
      const text = readFileSync(path.join(logDir, f), "utf8").trim().split("\n").slice(-15).join("\n");
      if (text) console.error(`--- ${f} (last lines)\n${text}`);
    }
    process.exitCode = 1;
  } else console.log("soak: every check held");
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

function renderMarkdown(r: any): string {
  const lines: string[] = [];
  lines.push(`Soak (${r.form} form), ${r.startedAt}: ${Math.round(r.durationMs / 1000)} s of load, windows of ${r.windowMs / 1000} s; two replicas (CPU 0) on ${r.backend} + Redis (CPU 1, with the clients).`);
  lines.push(`Machine: ${r.machine.cpus} × ${r.machine.cpu}, ${r.machine.memoryGiB} GiB, Node ${r.machine.node}. ${r.clients} gRPC clients, ${r.subscribers} subscribers (/ws and WatchEvents, both replicas, resuming with after_id).`);
  lines.push(`Disruptions: ${r.incidents.map((i: any) => `${i.atS} s ${i.what} (${(i.tookMs / 1000).toFixed(1)} s)`).join("; ")}.`);
  lines.push("");
  lines.push("| scenario | throughput /s | p50 ms | p99 ms | vs first window | ratio | note |");
  lines.push("| --- | ---: | ---: | ---: | --- | ---: | --- |");
  for (const o of r.ops) {
    lines.push(
      `| ${o.op === "all" ? "all calls" : `${o.op} gRPC`}, last window | ${o.rps} | ${o.last.p50} | ${o.last.p99} | first window p99 ${o.first.p99} ms | ${o.ratio} | ${o.calls} calls, ${o.failed} failed (over the whole run)${o.skipped ? `, ${o.skipped} not sent (64 in flight)` : ""} |`,
    );
  }
  lines.push("");
  lines.push("| check | value | bound | held | detail |");
  lines.push("| --- | ---: | --- | --- | --- |");
  for (const c of r.checks) lines.push(`| ${c.check} | ${c.value} | ${c.bound} | ${c.held ? "yes" : "**no**"} | ${String(c.detail).replaceAll("|", "/")} |`);
  lines.push("");
  lines.push(`Events: ${r.events.total} in all, ${r.events.requiredFromOkWrites} from writes answered OK (required at every subscriber); ${r.events.writesAnsweredWithError} writes answered with an error (their events may or may not exist, but if one subscriber saw it, every subscriber must).`);
  lines.push(`Subscribers: ${r.subscribers_.map((s: any) => `${s.name} ${s.received} received, ${s.disconnects} disconnects`).join("; ")}.`);
  lines.push(`Health probes: ${r.health.join("; ")}.`);
  lines.push("");
  lines.push("Timeline (5 s buckets; p50/p99 of calls answered OK; descriptors other than FerretDB connections, FerretDB connections and RSS MiB, max of the bucket, replica a / b):");
  lines.push("");
  lines.push("| at s | calls | failed | p50 ms | p99 ms | p99 a | p99 b | fds a | fds b | FerretDB conns a | FerretDB conns b | RSS a | RSS b |");
  lines.push("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const t of r.timeline) lines.push(`| ${t.atS} | ${t.calls} | ${t.failed} | ${t.p50} | ${t.p99} | ${t.p99A} | ${t.p99B} | ${t.fdsA} | ${t.fdsB} | ${t.poolA} | ${t.poolB} | ${t.rssA} | ${t.rssB} |`);
  lines.push("");
  const fails = Object.entries(r.failures);
  if (fails.length) lines.push(`Failed calls (during the disruptions): ${fails.map(([k, n]) => `${k} ×${n}`).join("; ")}.`);
  return `${lines.join("\n")}\n`;
}

let exiting = false;
async function cleanup(): Promise<void> {
  if (exiting) return;
  exiting = true;
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  rmSync(path.join(runDir, "data"), { recursive: true, force: true });
  rmSync(path.join(runDir, "ferret-sqlite"), { recursive: true, force: true });
}

// Bounded: the whole run may take the load, settling and checks, plus set-up; then it stops itself.
const hardStop = setTimeout(() => {
  console.error("soak: over its time limit; stopping");
  process.exitCode = 1;
  void cleanup().then(() => process.exit(1));
}, DURATION_MS + 5 * 60_000);
hardStop.unref();

main()
  .catch((err) => {
    console.error("soak failed:", err);
    process.exitCode = 1;
  })
  .finally(async () => {
    await cleanup();
    clearTimeout(hardStop);
    process.exit();
  });
