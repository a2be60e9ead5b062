import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ferretDbBinary, startPostgres, TEST_POSTGRES_SETTINGS, waitForLoopbackPort } from "./provision.js";

/**
 * Real Redis and FerretDB servers on loopback, one set per test file, that
 * a test can stop and start again. scripts/test.sh installs redis-server and
 * PostgreSQL and builds FerretDB; run alone (vitest), FerretDB is built on
 * first use (test/support/provision.ts). FERRETDB_BIN overrides where it is found.
 */
export interface ManagedServer {
  readonly port: number;
  readonly url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
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


function managed(port: number, url: string, launch: () => ChildProcess, onDispose?: () => void | Promise<void>): ManagedServer & { dispose(): Promise<void> } {
  let child: ChildProcess | undefined;
  const stop = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await exited;
  };
  return {
    port,
    url,
    async start() {
      child = launch();
      await waitForLoopbackPort(port, 15_000);
    },
    stop,
    async dispose() {
      await stop();
      await onDispose?.();
    },
  };
}

export async function startRedis(): Promise<ManagedServer & { dispose(): Promise<void> }> {
  const port = await freePort();
  const server = managed(port, `redis://127.0.0.1:${port}`, () =>
    spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore",
    }),
  );
  await server.start();
  return server;
}

/** $FERRETDB_BIN, or the cached build of scripts/build-ferretdb.sh (built on first use). */
export function ferretBinary(): string {
  return ferretDbBinary();
}

export type FerretBackend = "sqlite" | "postgresql";

/**
 * FerretDB on loopback, on its SQLite backend (a temporary directory) or its
 * PostgreSQL backend (a throw-away cluster on another loopback port, see
 * startPostgres). stop()/start() stop and start FerretDB only; dispose()
 * stops everything it started and removes its files.
 */
export async function startFerret(options: { backend?: FerretBackend } = {}): Promise<ManagedServer & { dispose(): Promise<void> }> {
  const bin = ferretBinary();
  const port = await freePort();
  if (options.backend === "postgresql") {
    const pg = await startPostgres({ port: await freePort(), databases: ["ferretdb"], settings: TEST_POSTGRES_SETTINGS });
    const server = managed(
      port,
      `mongodb://127.0.0.1:${port}`,
      () => spawn(bin, ["--listen-addr", `127.0.0.1:${port}`, "--handler", "postgresql", "--postgresql-url", pg.url("ferretdb")], { stdio: "ignore" }),
      () => pg.stop(),
    );
    try {
      await server.start();
    } catch (err) {
      await server.dispose();
      throw err;
    }
    return server;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "fc-ferret-"));
  const server = managed(
    port,
    `mongodb://127.0.0.1:${port}`,
    () => spawn(bin, ["--listen-addr", `127.0.0.1:${port}`, "--sqlite-url", `file:${dir}/`], { stdio: "ignore" }),
    () => rmSync(dir, { recursive: true, force: true }),
  );
  await server.start();
  return server;
}

/** FerretDB on its PostgreSQL backend: startFerret({ backend: "postgresql" }). */
export const startFerretDbPostgres = () => startFerret({ backend: "postgresql" });

/** Listens on a free loopback port; resolves with it. */
export function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)));
}

/** Closes a server and every socket still open on it (hung requests included). */
export function closer(server: net.Server): () => Promise<void> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  return () => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(() => r()));
  };
}
