import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

/**
 * What the tests and the benchmark need on a machine, found or made on first
 * use, so that every entry point (npm test, vitest alone, npm run bench) works
 * on a fresh machine: Debian tools (scripts/ensure-tools.sh), the FerretDB
 * binary (scripts/build-ferretdb.sh, cached) and throw-away PostgreSQL
 * clusters on loopback. Used by test/support/servers.ts and bench/run.ts.
 */
const root = path.resolve(import.meta.dirname, "../..");
const run = promisify(execFile);

export type Tool = "h2load" | "redis-server" | "postgresql" | "chromium" | "jemalloc";

/** Installs the tools that are missing (Debian, through scripts/ensure-tools.sh); quick when all are there. */
export function ensureTools(...tools: Tool[]): void {
  execFileSync("bash", [path.join(root, "scripts/ensure-tools.sh"), ...tools], { stdio: ["ignore", "ignore", "inherit"] });
}

/**
 * The FerretDB binary: $FERRETDB_BIN when set (scripts/test.sh sets it),
 * otherwise whatever scripts/build-ferretdb.sh prints — the cached binary
 * for the current scripts/ferretdb/main.go, built from the Go module proxy
 * on first use. `env` is the environment the script sees (FC_BIN moves the cache).
 */
export function ferretDbBinary(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRETDB_BIN) {
    if (!existsSync(env.FERRETDB_BIN)) throw new Error(`FERRETDB_BIN=${env.FERRETDB_BIN} does not exist (unset it to build FerretDB)`);
    return env.FERRETDB_BIN;
  }
  let out: string;
  try {
    out = execFileSync("bash", [path.join(root, "scripts/build-ferretdb.sh")], { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 15 * 60_000 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`scripts/build-ferretdb.sh failed: ${stderr || String(err)}`);
  }
  const bin = out.trim().split("\n").at(-1)!;
  if (!existsSync(bin)) throw new Error(`scripts/build-ferretdb.sh printed ${bin}, which does not exist`);
  return bin;
}

/** Where initdb and postgres are: $PG_BIN, Debian's newest /usr/lib/postgresql/N/bin, or PATH. */
export function postgresBinDir(): string | undefined {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(path.join(base, v, "bin/initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(base, versions[0], "bin") : undefined;
}

export interface PostgresCluster {
  readonly port: number;
  /** The cluster's directory (data, socket): removed by stop(). */
  readonly dir: string;
  /** A URL for `database` as the `postgres` superuser (trust auth, loopback). */
  url(database: string): string;
  /** Immediate shutdown (bounded: SIGKILL after 10 s), then the cluster's directory is removed. */
  stop(): Promise<void>;
}

export interface PostgresOptions {
  /** The loopback port to listen on. */
  port: number;
  /** Databases to create once it is up. */
  databases?: string[];
  /** Extra server settings (`-c name=value`), e.g. fsync off for tests. */
  settings?: Record<string, string>;
  /** Pin the server to this CPU (taskset), as the benchmark pins its peers. */
  cpu?: number;
  /** Called with the postmaster's process, e.g. to kill it if the caller exits. */
  onSpawn?: (child: ChildProcess) => void;
}

/** Settings for tests: no durability (a crash loses the throw-away cluster anyway), faster writes. */
export const TEST_POSTGRES_SETTINGS: Record<string, string> = { fsync: "off", synchronous_commit: "off", full_page_writes: "off" };

const postmasters = new Set<ChildProcess>();
process.once("exit", () => {
  // Immediate shutdown of any cluster a crashed test or bench left running: the postmaster
  // stops its backends and exits by itself after we are gone.
  for (const c of postmasters) c.kill("SIGQUIT");
});

/** The uid and gid of the `postgres` user: PostgreSQL refuses to run as root. */
function postgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("running as root and there is no 'postgres' user to run PostgreSQL as (install Debian's postgresql)");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * A throw-away PostgreSQL cluster on 127.0.0.1:`port`: initdb (trust auth,
 * superuser `postgres`) in a new temporary directory, `postgres` as a child
 * of this process (as the `postgres` user when we are root), its Unix socket
 * in that directory, then the databases are created.
 */
export async function startPostgres(o: PostgresOptions): Promise<PostgresCluster> {
  ensureTools("postgresql");
  const bin = postgresBinDir();
  const exe = (name: string) => (bin ? path.join(bin, name) : name);
  const user = postgresUser();
  const dir = mkdtempSync(path.join(os.tmpdir(), "fc-pg-"));
  const data = path.join(dir, "data");
  let child: ChildProcess | undefined;
  const cleanup = async () => {
    const c = child;
    child = undefined;
    if (c && c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once("exit", r));
      c.kill("SIGQUIT"); // immediate shutdown
      const timer = setTimeout(() => c.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (c) postmasters.delete(c);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (user) chownSync(dir, user.uid, user.gid);
    const asPg = { ...user, cwd: dir, env: { ...process.env, LC_ALL: "C" }, timeout: 60_000 };
    await run(exe("initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], asPg);
    const settings = { listen_addresses: "127.0.0.1", unix_socket_directories: dir, ...o.settings };
    const args = ["-D", data, "-p", String(o.port), ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`])];
    const pinned = o.cpu !== undefined && hasTaskset();
    const [file, argv] = pinned ? ["taskset", ["-c", String(o.cpu), exe("postgres"), ...args]] : [exe("postgres"), args];
    let log = "";
    const c = spawn(file, argv, { ...user, cwd: dir, env: asPg.env, stdio: ["ignore", "ignore", "pipe"] });
    child = c;
    postmasters.add(c);
    o.onSpawn?.(c);
    c.stderr!.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-4_000)));
    const deadline = Date.now() + 30_000;
    for (const db of o.databases ?? []) {
      // createdb over TCP as `postgres` (trust): retried while the server starts.
      for (;;) {
        if (c.exitCode !== null || c.signalCode !== null) throw new Error(`postgres exited: ${log}`);
        try {
          await run(exe("createdb"), ["-h", "127.0.0.1", "-p", String(o.port), "-U", "postgres", db], { timeout: 10_000 });
          break;
        } catch (err) {
          if (Date.now() > deadline) throw new Error(`createdb ${db} failed: ${(err as { stderr?: string }).stderr ?? err}\n${log}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    if (!o.databases?.length) await waitForLoopbackPort(o.port, deadline - Date.now());
  } catch (err) {
    await cleanup();
    throw err;
  }
  return {
    port: o.port,
    dir,
    url: (database) => `postgres://postgres@127.0.0.1:${o.port}/${database}`,
    stop: cleanup,
  };
}

let taskset: boolean | undefined;
function hasTaskset(): boolean {
  if (taskset === undefined) {
    try {
      execFileSync("taskset", ["-c", "0", "true"], { stdio: "ignore" });
      taskset = true;
    } catch {
      taskset = false;
    }
  }
  return taskset;
}

/** Resolves once something accepts connections on 127.0.0.1:port. */
export async function waitForLoopbackPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs}ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
