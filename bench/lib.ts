import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

/** Shared helpers for the benchmark: processes, ports, h2load, percentiles. */
export const root = path.resolve(import.meta.dirname, "..");
export const TOKEN = "bench-bootstrap-token";
export const hasTaskset = (() => {
  try {
    execFileSync("taskset", ["-c", "0", "true"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

const children = new Set<ChildProcess>();
for (const sig of ["exit", "SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    for (const c of children) c.kill("SIGKILL");
    if (sig !== "exit") process.exit(1);
  });
}

/**
 * Pins this process (every thread) to `cpu`: the orchestrator runs the
 * in-process load generators (autocannon, the gRPC write loader), which must
 * stay off the server's core.
 */
export function pinSelf(cpu: number): void {
  if (hasTaskset) execFileSync("taskset", ["-a", "-p", "-c", String(cpu), String(process.pid)], { stdio: "ignore" });
}

/** Spawns a command pinned to `cpu` (when taskset exists); killed when the bench exits. */
export function spawnPinned(cpu: number, cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const [file, argv] = hasTaskset ? ["taskset", ["-c", String(cpu), cmd, ...args]] : [cmd, args];
  const child = spawn(file, argv, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.once("exit", () => children.delete(child));
  // Always drain the pipes: a chatty child (FerretDB logs every connection)
  // blocks once a pipe buffer fills. Callers add their own listeners.
  child.stdout!.resume();
  child.stderr!.resume();
  return child;
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await sleep(20);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The service under test as its own process (built code), on CPU 0. */
export interface Service {
  readonly port: number;
  readonly url: string;
  readonly child: ChildProcess;
  /** Milliseconds from spawn to the first SERVING answer of GET /health. */
  readonly readyMs: number;
  /**
   * A JWT minted by the service (agents:read/write, route, events:read): what
   * real callers send, verified once and then served from the token cache.
   * The bootstrap token is only for minting it.
   */
  readonly token: string;
  rssBytes(): number;
  /** CPU time the service process (all its threads) has used, in ms. */
  cpuMs(): number;
  stop(): Promise<void>;
}

export async function startService(env: Record<string, string> = {}): Promise<Service> {
  const port = await freePort();
  const dataDir = path.join(os.tmpdir(), `fc-bench-${port}`);
  const started = performance.now();
  // BENCH_PROFILE=dir writes a CPU profile of each service run there (node --cpu-prof).
  const profile = process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
  const extra = process.env.BENCH_NODE_FLAGS ? process.env.BENCH_NODE_FLAGS.split(" ") : [];
  // Started as `npm start` and the Dockerfile start it: with package.json's node flags.
  const child = spawnPinned(0, process.execPath, [...serviceNodeFlags(), ...profile, ...extra, "dist/src/main.js"], {
    ...serviceAllocatorEnv(),
    PORT: String(port),
    HOST: "127.0.0.1",
    LOG_LEVEL: "warn",
    DATA_DIR: dataDir,
    FEDERATION_BOOTSTRAP_TOKEN: TOKEN,
    RATE_LIMIT_TENANT: "10000000",
    RATE_LIMIT_HEARTBEAT: "10000",
    // 10k /ws subscribers and h2load all connect from 127.0.0.1 (the fd limit here is 20k).
    MAX_CONNECTIONS: "16000",
    MAX_CONNECTIONS_PER_CLIENT: "16000",
    LEASE_TTL_DEFAULT: "3600s",
    ...env,
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d));
  // BENCH_SERVICE_STDOUT=file keeps the service's stdout (e.g. with BENCH_NODE_FLAGS=--trace-gc).
  if (process.env.BENCH_SERVICE_STDOUT) child.stdout!.pipe(createWriteStream(process.env.BENCH_SERVICE_STDOUT, { flags: "a" }));
  const url = `http://127.0.0.1:${port}`;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`service exited: ${stderr}`);
    try {
      const res = await fetch(`${url}/health`);
      const body = (await res.json()) as { status?: string };
      if (body.status === "SERVING_STATUS_SERVING") break;
    } catch {
      // not listening yet
    }
    if (performance.now() - started > 30_000) throw new Error(`service not ready: ${stderr}`);
    await sleep(5);
  }
  const readyMs = performance.now() - started;
  const minted = await fetch(`${url}/admin/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ tenant: "default", subject: "bench", scopes: ["agents:read", "agents:write", "route", "events:read"], ttl: "3600s" }),
  });
  const answer = (await minted.json()) as { token?: string; message?: string };
  if (!minted.ok || !answer.token) throw new Error(`could not mint a bench token: HTTP ${minted.status} ${answer.message ?? ""}`);
  const token = answer.token;
  return {
    port,
    url,
    child,
    readyMs,
    token,
    rssBytes: () => rss(child.pid!),
    cpuMs: () => cpuMs(child.pid!),
    stop: async () => {
      await stop(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The node flags the service is deployed with (package.json `config.node_flags`). */
export function serviceNodeFlags(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { config?: { node_flags?: string } };
  return (pkg.config?.node_flags ?? "").split(" ").filter(Boolean);
}

/**
 * The allocator the service is deployed with (the Dockerfile's LD_PRELOAD and
 * MALLOC_CONF: jemalloc, package.json `config.malloc_conf`), when this machine
 * has it (the bench installs libjemalloc2); {} otherwise. BENCH_MALLOC=system
 * runs on glibc's malloc instead, for a comparison.
 */
export function serviceAllocatorEnv(malloc = process.env.BENCH_MALLOC): Record<string, string> {
  if (malloc === "system") return {};
  const lib = ["x86_64", "aarch64"].map((arch) => `/usr/lib/${arch}-linux-gnu/libjemalloc.so.2`).find((f) => existsSync(f));
  if (!lib) return {};
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { config?: { malloc_conf?: string } };
  return { LD_PRELOAD: lib, MALLOC_CONF: pkg.config?.malloc_conf ?? "" };
}

/** utime + stime of a process from /proc (clock ticks of 10 ms on Linux). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

export function rss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

export interface LoadResult {
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly ok: number;
  readonly failed: number;
}

interface H2loadOptions {
  url: string;
  body: Uint8Array;
  requests: number;
  connections?: number;
  streams?: number;
  headers?: Record<string, string>;
  /** HTTP/1.1 GETs of the URL instead of gRPC (REST/JSON); body unused. */
  h1?: boolean;
  /** The HTTP statuses that count as answered (default: any 2xx), e.g. [304] for conditional GETs. */
  okStatus?: readonly number[];
}

/**
 * Loads a gRPC method with h2load on CPU 1: a pre-encoded request body,
 * `connections` × `streams` in flight, `requests` in all. Percentiles come
 * from h2load's per-request log.
 */
export async function h2load(o: H2loadOptions): Promise<LoadResult> {
  const dir = path.join(os.tmpdir(), `fc-h2load-${process.pid}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir, { recursive: true });
  const bodyFile = path.join(dir, "body");
  const logFile = path.join(dir, "log");
  const frame = Buffer.alloc(5 + o.body.length);
  frame.writeUInt32BE(o.body.length, 1);
  frame.set(o.body, 5);
  writeFileSync(bodyFile, frame);
  const grpc = o.h1 ? {} : { "content-type": "application/grpc", te: "trailers" };
  const headers = { ...grpc, authorization: `Bearer ${TOKEN}`, ...o.headers };
  const args = [
    "-n", String(Math.ceil(o.requests)),
    "-c", String(o.connections ?? 8),
    "-m", String(o.h1 ? 1 : (o.streams ?? 16)),
    ...(o.h1 ? ["--h1"] : ["-d", bodyFile]),
    `--log-file=${logFile}`,
    ...Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
    o.url,
  ];
  const child = spawnPinned(1, "h2load", args);
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d));
  child.stderr!.on("data", (d: Buffer) => (err += d));
  await new Promise((resolve) => {
    child.once("close", resolve); // after stdout is drained ("exit" can come first)
    child.once("error", (e) => resolve((err += e.message)));
  });
  if (!existsSync(logFile)) throw new Error(`h2load did not run (is Debian's nghttp2-client installed?): ${err || out}`);
  // Log lines: start (µs), HTTP status, duration (µs).
  const entries = readFileSync(logFile, "utf8")
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split("\t"));
  rmSync(dir, { recursive: true, force: true });
  const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out);
  const done = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(out);
  if (!rps || !done) throw new Error(`h2load output not understood:\n${out}\n${err}`);
  const answered = o.okStatus ? (status: string) => o.okStatus!.includes(Number(status)) : (status: string) => /^2\d\d$/.test(status);
  const notOk = entries.filter((e) => !answered(e[1]!)).length;
  const times = entries.map((e) => Number(e[2]) / 1000);
  return {
    rps: Number(rps[1]),
    p50Ms: percentile(times, 50),
    p99Ms: percentile(times, 99),
    ok: Number(done[1]) - notOk,
    failed: Number(done[2]) + notOk,
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function machine(): Record<string, string | number> {
  const cpu = /model name\s*:\s*(.+)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  return { cpus: os.cpus().length, cpu, node: process.version, memoryGiB: Math.round(os.totalmem() / 2 ** 30) };
}

/** Splits a byte stream into gRPC messages (the 5-byte length prefix read off; one callback per message). */
export function grpcMessages(onMessage: (body: Buffer) => void): (chunk: Buffer) => void {
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
