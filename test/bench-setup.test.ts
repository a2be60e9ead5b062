import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { MongoClient } from "mongodb";
import { afterAll, describe, expect, it } from "vitest";
import { serviceAllocatorEnv } from "../bench/lib.js";
import { ensureTools, ferretDbBinary, postgresBinDir, startPostgres } from "./support/provision.js";
import { freePort } from "./support/servers.js";

// Finding 10 of issue 14: `npm run bench` on a fresh machine expected a
// FerretDB binary that only `npm test` built. The bench (bench/run.ts) and
// the test servers now resolve everything through test/support/provision.ts;
// these tests run that code from the state of a fresh machine.
const root = path.resolve(import.meta.dirname, "..");
const cache = mkdtempSync(path.join(os.tmpdir(), "fc-ferret-cache-"));
afterAll(() => rmSync(cache, { recursive: true, force: true }));

describe("the benchmark's and the tests' set-up finds or makes what they need", () => {
  it("builds FerretDB through scripts/build-ferretdb.sh when FERRETDB_BIN is unset and nothing is cached", async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, FC_BIN: cache };
    delete env.FERRETDB_BIN;
    const bin = ferretDbBinary(env);
    expect(path.dirname(bin)).toBe(cache);
    expect(existsSync(bin)).toBe(true);
    expect(ferretDbBinary(env)).toBe(bin); // cached: the same binary, not built again
    // It is built from the current scripts/ferretdb/main.go (which knows --handler) ...
    const bad = spawnSync(bin, ["--handler", "nope"], { encoding: "utf8", timeout: 10_000 });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('unknown --handler "nope"');
    // ... and it serves the MongoDB wire protocol.
    const dir = mkdtempSync(path.join(os.tmpdir(), "fc-ferret-"));
    const port = await freePort();
    const child = spawn(bin, ["--listen-addr", `127.0.0.1:${port}`, "--sqlite-url", `file:${dir}/`], { stdio: "ignore" });
    const client = new MongoClient(`mongodb://127.0.0.1:${port}`, { serverSelectionTimeoutMS: 10_000 });
    try {
      const info = await client.db("admin").command({ buildInfo: 1 });
      expect(info).toHaveProperty("ferretdbVersion");
    } finally {
      await client.close();
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);

  it("a FERRETDB_BIN that does not exist is an error naming it, not 'nothing listens'", () => {
    expect(() => ferretDbBinary({ ...process.env, FERRETDB_BIN: "/nonexistent/ferretdb" })).toThrow(/FERRETDB_BIN=\/nonexistent\/ferretdb does not exist/);
  });

  it("h2load and PostgreSQL are found, or installed from Debian (scripts/ensure-tools.sh)", () => {
    ensureTools("h2load", "postgresql");
    expect(spawnSync("h2load", ["--version"], { encoding: "utf8" }).stdout).toMatch(/h2load nghttp2/);
    const bin = postgresBinDir();
    expect(bin && existsSync(path.join(bin, "initdb"))).toBe(true);
    expect(spawnSync("bash", [path.join(root, "scripts/ensure-tools.sh"), "no-such-tool"]).status).toBe(2);
  });

  it("starts the service's node on jemalloc, as the Docker image does, with package.json's MALLOC_CONF", () => {
    ensureTools("jemalloc");
    const env = serviceAllocatorEnv();
    expect(env.LD_PRELOAD && existsSync(env.LD_PRELOAD)).toBe(true);
    const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { config: { malloc_conf: string } };
    expect(env.MALLOC_CONF).toBe(pkg.config.malloc_conf);
    const probe = spawnSync(process.execPath, ["-e", "process.stdout.write(require('fs').readFileSync('/proc/self/maps', 'utf8'))"], { env: { ...process.env, ...env }, encoding: "utf8" });
    expect(probe.status).toBe(0);
    expect(probe.stderr).toBe(""); // jemalloc accepted every MALLOC_CONF option (it complains on stderr otherwise)
    expect(probe.stdout).toMatch(/libjemalloc\.so\.2/);
    const system = spawnSync(process.execPath, ["-e", "process.stdout.write(require('fs').readFileSync('/proc/self/maps', 'utf8'))"], { env: { ...process.env, ...serviceAllocatorEnv("system") }, encoding: "utf8" });
    expect(system.stdout).not.toMatch(/libjemalloc/);
  });

  it("starts a throw-away PostgreSQL cluster on loopback and removes it on stop", async () => {
    const pg = await startPostgres({ port: await freePort(), databases: ["ferretdb"], settings: { fsync: "off" } });
    const psql = path.join(postgresBinDir()!, "psql");
    const q = spawnSync(psql, [pg.url("ferretdb"), "-Atc", "select current_database(), inet_server_addr()"], { encoding: "utf8", timeout: 10_000 });
    expect(q.stdout.trim()).toBe("ferretdb|127.0.0.1");
    await pg.stop();
    const after = spawnSync(psql, [pg.url("ferretdb"), "-Atc", "select 1"], { encoding: "utf8", timeout: 10_000 });
    expect(after.status).not.toBe(0);
    expect(existsSync(pg.dir)).toBe(false);
  }, 60_000);

  it("bench/run.ts resolves FerretDB and its tools through that set-up, not a fixed path", () => {
    const bench = readFileSync(path.join(root, "bench/run.ts"), "utf8");
    expect(bench).toContain("ferretDbBinary()");
    expect(bench).toContain('ensureTools("h2load", "jemalloc")');
    expect(bench).not.toMatch(/ferretdb-v1\.24\.2/);
  });
});
