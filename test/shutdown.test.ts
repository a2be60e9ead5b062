import { spawn } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { AgentStore } from "../src/registry/agent-store.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { ADMIN_TOKEN, postJson, registerBody, startApp } from "./support/app.js";
import { openWs } from "./support/feeds.js";
import { bearer, grpc, grpcClients } from "./support/grpc-client.js";

/** A real store whose writes take a while, so a request is in flight when shutdown starts. */
function slowStore(delayMs: number): AgentStore {
  const store = new MemoryAgentStore();
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop !== "put" || typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        await new Promise((r) => setTimeout(r, delayMs));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

describe("graceful shutdown", () => {
  it("finishes in-flight requests, ends streams, closes /ws with 1001 and stops accepting", async () => {
    const t = await startApp({}, { store: slowStore(300) });
    const c = grpcClients(t.port);
    const ws = await openWs(t.port);
    const wsClosed = new Promise<number>((resolve) => ws.ws.on("close", (code) => resolve(code)));
    const stream = c.health.WatchEvents({}, bearer());
    const streamEnded = new Promise<number>((resolve) => {
      stream.on("data", () => undefined);
      stream.on("error", (e: grpc.ServiceError) => resolve(e.code));
      stream.on("status", (s: grpc.StatusObject) => resolve(s.code));
    });
    await new Promise((r) => setTimeout(r, 100));

    const inFlight = postJson(`${t.url}/agents/register`, registerBody());
    await new Promise((r) => setTimeout(r, 50));
    const stopped = t.close();

    expect((await inFlight).status).toBe(200);
    expect(await wsClosed).toBe(1001);
    // UNAVAILABLE tells a client to reconnect, to another replica if there is one.
    expect(await streamEnded).toBe(grpc.status.UNAVAILABLE);
    await stopped;
    await expect(fetch(`${t.url}/health`)).rejects.toThrow();
    c.close();
  });

  it("ends 20 open WatchEvents streams at shutdown without a MaxListenersExceededWarning (each listens to the one shutdown signal)", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    const t = await startApp();
    const c = grpcClients(t.port);
    try {
      const ended = Array.from({ length: 20 }, () => {
        const stream = c.health.WatchEvents({}, bearer());
        return new Promise<number>((resolve) => {
          stream.on("data", () => undefined);
          stream.on("error", (e: grpc.ServiceError) => resolve(e.code));
          stream.on("status", (s: grpc.StatusObject) => resolve(s.code));
        });
      });
      // Every stream is open (served) before shutdown starts.
      const deadline = Date.now() + 5_000;
      while (t.app.server.fastPath!.served < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(t.app.server.fastPath!.served).toBe(20);
      await t.close();
      expect(await Promise.all(ended)).toEqual(Array(20).fill(grpc.status.UNAVAILABLE));
      await new Promise((r) => setImmediate(r));
      expect(warnings).not.toContain("MaxListenersExceededWarning");
    } finally {
      process.off("warning", onWarning);
      c.close();
    }
  });

  it("drains and exits 0 on SIGTERM when run as a process", async () => {
    const root = path.resolve(import.meta.dirname, "..");
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "fc-sigterm-"));
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: root,
      env: {
        ...process.env,
        PORT: "0",
        HOST: "127.0.0.1",
        LOG_LEVEL: "info",
        DATA_DIR: dataDir,
        FEDERATION_BOOTSTRAP_TOKEN: ADMIN_TOKEN,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 15_000);
      child.stdout.on("data", (d: Buffer) => {
        out += d;
        const m = /"port":(\d+).*"msg":"federation core listening"/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
    });
    const ws = await openWs(port);
    const closed = new Promise<number>((resolve) => ws.ws.on("close", (code) => resolve(code)));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    expect(await closed).toBe(1001);
    expect(await exited).toBe(0);
    expect(out).toContain('"msg":"draining"');
    rmSync(dataDir, { recursive: true, force: true });
  });
});
