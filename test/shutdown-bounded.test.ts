import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type net from "node:net";
import { getJson, postJson, registerBody } from "./support/app.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { bearer, grpc, grpcClients, type GrpcClients } from "./support/grpc-client.js";
import { deadPort, stalledRequest, stalledWs, startProcess, type ServiceProcess } from "./support/process.js";
import { startFerret, startRedis, type ManagedServer } from "./support/servers.js";

/**
 * Shutdown is bounded in every state (issue 19): the real process, real
 * signals, real backends that are down from the start or killed mid-traffic.
 * After SIGTERM/SIGINT it exits within SHUTDOWN_GRACE + 2 s; 0 for a clean
 * drain, 1 when the grace ran out with work left; a second signal exits now.
 */

const GRACE_MS = 3_000;
const BOUND_MS = GRACE_MS + 2_000;

type Server = ManagedServer & { dispose(): Promise<void> };

const procs: ServiceProcess[] = [];
const clients: GrpcClients[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  sockets.splice(0).forEach((s) => s.destroy());
  clients.splice(0).forEach((c) => c.close());
  await Promise.all(procs.splice(0).map((p) => p.dispose()));
});

async function service(env: Record<string, string>): Promise<ServiceProcess> {
  const p = await startProcess({ SHUTDOWN_GRACE: `${GRACE_MS}ms`, ...env });
  procs.push(p);
  return p;
}

/** A /ws subscriber and a WatchEvents subscriber (grpc-js) that read, with how each ended. */
async function subscribers(p: ServiceProcess) {
  const ws: WsFeed = await openWs(p.port);
  const wsClosed = new Promise<number>((resolve) => ws.ws.on("close", (code) => resolve(code)));
  const c = grpcClients(p.port);
  clients.push(c);
  const stream = c.health.WatchEvents({}, bearer());
  const streamEnded = new Promise<number>((resolve) => {
    stream.on("data", () => undefined);
    stream.on("error", (e: grpc.ServiceError) => resolve(e.code));
    stream.on("status", (s: grpc.StatusObject) => resolve(s.code));
  });
  await new Promise((r) => setTimeout(r, 200));
  return { ws, wsClosed, streamEnded };
}

/** Waits for exit, at most `ms` (the test's bound), and says how long it took. */
async function exitOf(p: ServiceProcess, sentAt: number, ms = BOUND_MS + 3_000) {
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`still running ${ms}ms after the signal; output:\n${tail(p.output())}`)), ms).unref(),
  );
  const e = await Promise.race([p.exited, timeout]);
  return { ...e, afterMs: e.at - sentAt };
}

const tail = (s: string) => s.split("\n").slice(-25).join("\n");
const linesAfter = (p: ServiceProcess, msg: string) => p.lines.slice(p.lines.findIndex((l) => l.msg === msg) + 1);
const finalLine = (p: ServiceProcess) => p.lines.find((l) => typeof l.msg === "string" && l.msg.startsWith("stopped"));

describe("bounded shutdown of the real process", () => {
  it("backends unreachable from the start: logs each once, NOT_SERVING with reasons, exits 0 at once on SIGTERM", async () => {
    const p = await service({
      MONGODB_URI: `mongodb://127.0.0.1:${await deadPort()}/x`,
      REDIS_URL: `redis://127.0.0.1:${await deadPort()}`,
      STORE_TIMEOUT: "500ms",
      REAPER_INTERVAL: "100ms",
    });
    const subs = await subscribers(p);
    // A few connect attempts, reaper intervals and retries pass.
    await new Promise((r) => setTimeout(r, 2_500));
    const health = await getJson(`${p.url}/health`);
    // A write fails fast with the reason, not the driver's "Topology is closed".
    const write = await postJson(`${p.url}/agents/register`, registerBody());

    const sent = p.signal("SIGTERM");
    const e = await exitOf(p, sent);
    expect(e.afterMs).toBeLessThan(BOUND_MS);
    expect(e.code).toBe(0);
    expect(await subs.wsClosed).toBe(1001);
    expect(await subs.streamEnded).toBe(grpc.status.UNAVAILABLE);
    expect(finalLine(p)).toMatchObject({ msg: "stopped: drained cleanly", exitCode: 0, unpublishedEvents: 0 });
    // No retries after the drain started.
    expect(linesAfter(p, "draining").filter((l) => /unreachable|unavailable|retry/i.test(l.msg))).toEqual([]);

    // Start-up said each backend's state once and clearly; /health says why it is NOT_SERVING.
    expect(health.json.status).toBe("SERVING_STATUS_NOT_SERVING");
    const reasons = Object.fromEntries(health.json.components.map((c: any) => [c.name, c.message]));
    expect(reasons["agent-store"]).toMatch(/MongoDB unreachable: connect ECONNREFUSED/);
    expect(reasons["event-bus"]).toMatch(/Redis unreachable: connect ECONNREFUSED/);
    expect(write.status).toBe(503);
    expect(JSON.stringify(write.json)).toMatch(/MongoDB unreachable/);
    expect(p.output()).not.toMatch(/Topology is closed/);
    expect(p.lines.filter((l) => /^MongoDB unavailable/.test(l.msg))).toHaveLength(1);
    expect(p.lines.filter((l) => /^Redis unreachable/.test(l.msg))).toHaveLength(1);
    expect(p.lines.filter((l) => l.level >= 50)).toEqual([]);
    console.log(`unreachable backends: exit ${e.code} ${e.afterMs} ms after SIGTERM`);
  }, 40_000);

  it("a second signal exits at once, even while the drain waits on a slow client and dead backends", async () => {
    const p = await service({
      SHUTDOWN_GRACE: "20s",
      MONGODB_URI: `mongodb://127.0.0.1:${await deadPort()}/x`,
      REDIS_URL: `redis://127.0.0.1:${await deadPort()}`,
      STORE_TIMEOUT: "500ms",
    });
    sockets.push(await stalledRequest(p.port), await stalledWs(p.port));
    await new Promise((r) => setTimeout(r, 200));
    p.signal("SIGINT");
    await p.waitForLine((l) => l.msg === "draining", 5_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(p.child.exitCode).toBeNull(); // still draining: the slow client holds it
    const sent = p.signal("SIGTERM");
    const e = await exitOf(p, sent, 5_000);
    expect(e.afterMs).toBeLessThan(1_000);
    expect(e.code).toBe(128 + 15);
    expect(p.lines.some((l) => /^second signal/.test(l.msg))).toBe(true);
    console.log(`second signal: exit ${e.code} ${e.afterMs} ms after it`);
  }, 40_000);

  it("slow clients (a /ws client that stopped reading, an unfinished upload) are cut at the grace: exit 1 within the bound", async () => {
    const p = await service({});
    const subs = await subscribers(p);
    sockets.push(await stalledWs(p.port), await stalledRequest(p.port));
    await new Promise((r) => setTimeout(r, 200));
    const sent = p.signal("SIGTERM");
    // The subscribers that read are ended at once, not at the grace.
    expect(await subs.wsClosed).toBe(1001);
    expect(await subs.streamEnded).toBe(grpc.status.UNAVAILABLE);
    expect(Date.now() - sent).toBeLessThan(1_500);
    const e = await exitOf(p, sent);
    expect(e.afterMs).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(e.afterMs).toBeLessThan(BOUND_MS);
    expect(e.code, tail(p.output())).toBe(1);
    expect(finalLine(p)).toMatchObject({ exitCode: 1, connectionsCut: true });
    console.log(`slow clients: exit ${e.code} ${e.afterMs} ms after SIGTERM`);
  }, 40_000);
});

describe("bounded shutdown with real backends killed mid-traffic", () => {
  let ferret: Server;
  let redis: Server;
  const dirs: string[] = [];
  beforeAll(async () => {
    [ferret, redis] = await Promise.all([startFerret(), startRedis()]);
  });
  afterAll(async () => {
    await Promise.all([ferret?.dispose(), redis?.dispose()]);
    dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  let run = 0;
  /** Whether the replica scenario restarted Redis itself. */
  let redisBack = false;
  const sharedEnv = () => {
    run++;
    const dir = mkdtempSync(path.join(os.tmpdir(), "fc-shutdown-"));
    dirs.push(dir);
    return {
      DATA_DIR: dir,
      MONGODB_URI: ferret.url,
      MONGODB_DB: `shutdown_${process.pid}_${run}`,
      REDIS_URL: redis.url,
      REDIS_PREFIX: `shutdown-${process.pid}-${run}`,
      STORE_TIMEOUT: "1s",
    };
  };
  const serving = async (p: ServiceProcess) => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const h = await getJson(`${p.url}/health`).catch(() => undefined);
      if (h?.json?.status === "SERVING_STATUS_SERVING") return;
      if (Date.now() > deadline) throw new Error(`not serving: ${JSON.stringify(h?.json)}\n${tail(p.output())}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  /** Registrations from `workers` loops until stopped; counts what succeeded and when. */
  function traffic(url: string, workers = 3) {
    const ok: number[] = [];
    const failed: number[] = [];
    const slowest = { ms: 0, at: 0 };
    let stop = false;
    let n = 0;
    const loops = Array.from({ length: workers }, async () => {
      while (!stop) {
        const t0 = Date.now();
        const res = await postJson(`${url}/agents/register`, registerBody({ name: `load-${n++}` })).catch(() => ({ status: 0 }));
        const ms = Date.now() - t0;
        if (ms > slowest.ms) Object.assign(slowest, { ms, at: t0 });
        (res.status === 200 ? ok : failed).push(Date.now());
        await new Promise((r) => setTimeout(r, 10));
      }
    });
    return {
      ok,
      failed,
      slowest,
      stop: async () => {
        stop = true;
        await Promise.all(loops);
      },
    };
  }

  it("Redis and FerretDB killed under load with subscribers open: exits 1 within the bound and counts the lost events", async () => {
    const p = await service(sharedEnv());
    await serving(p);
    try {
      await killedMidTraffic(p);
    } finally {
      await Promise.all([redis.start(), ferret.start()]);
    }
  }, 60_000);

  async function killedMidTraffic(p: ServiceProcess): Promise<void> {
    const subs = await subscribers(p);
    const load = traffic(p.url);
    await new Promise((r) => setTimeout(r, 500));
    const redisKilledAt = Date.now();
    await redis.stop();
    await new Promise((r) => setTimeout(r, 700));
    await ferret.stop();
    await new Promise((r) => setTimeout(r, 300));
    const sent = p.signal("SIGTERM");
    const e = await exitOf(p, sent);
    await load.stop();
    const queuedAfterRedisDied = load.ok.filter((t) => t > redisKilledAt + 50).length;

    expect(e.afterMs).toBeLessThan(BOUND_MS);
    expect(e.code, tail(p.output())).toBe(1);
    expect(await subs.wsClosed).toBe(1001);
    expect(await subs.streamEnded).toBe(grpc.status.UNAVAILABLE);
    const last = finalLine(p);
    expect(last.msg).toMatch(/event\(s\) still queued for Redis were not published and are lost/);
    expect(queuedAfterRedisDied).toBeGreaterThan(0);
    expect(last.unpublishedEvents).toBeGreaterThanOrEqual(queuedAfterRedisDied);
    expect(p.output()).not.toMatch(/Topology is closed/);
    console.log(
      `killed mid-traffic: exit ${e.code} ${e.afterMs} ms after SIGTERM; ${last.unpublishedEvents} events lost ` +
        `(${queuedAfterRedisDied} registrations succeeded after Redis died)`,
    );
  }

  it("two replicas: one's SIGTERM during a Redis outage does not stall the other", async () => {
    const env = sharedEnv();
    const a = await service(env);
    const b = await service(env);
    await Promise.all([serving(a), serving(b)]);
    const reg = await postJson(`${a.url}/agents/register`, registerBody({ name: "from-a" }));
    expect(reg.status).toBe(200);
    const id = reg.json.agent.id;

    await redis.stop();
    try {
      await replicaOutage(a, b, id);
    } finally {
      if (!redisBack) await redis.start();
    }
  }, 90_000);

  async function replicaOutage(a: ServiceProcess, b: ServiceProcess, id: string): Promise<void> {
    const loadA = traffic(a.url, 2);
    const loadB = traffic(b.url, 2);
    await new Promise((r) => setTimeout(r, 500));
    const sent = a.signal("SIGTERM");
    const e = await exitOf(a, sent);
    await loadA.stop();
    // B went on throughout A's shutdown: every request answered, none slow.
    const duringA = loadB.ok.filter((t) => t >= sent && t <= e.at).length;
    expect(duringA).toBeGreaterThan(0);
    expect(loadB.failed).toEqual([]);
    expect(loadB.slowest.ms).toBeLessThan(1_000);
    const hb = await postJson(`${b.url}/agents/${id}/heartbeat`, {});
    expect(hb.status).toBe(200);
    await loadB.stop();

    expect(e.afterMs).toBeLessThan(BOUND_MS);
    expect(e.code, tail(a.output())).toBe(1);
    expect(finalLine(a).unpublishedEvents).toBeGreaterThan(0);

    // Redis returns: B serves again, delivers what it queued and streams new events.
    await redis.start();
    redisBack = true;
    await serving(b);
    const ws = await openWs(b.port, "?types=agent.registered");
    await new Promise((r) => setTimeout(r, 200));
    const after = await postJson(`${b.url}/agents/register`, registerBody({ name: "after" }));
    expect(after.status).toBe(200);
    const streamed = async () => {
      const deadline = Date.now() + 5_000;
      while (Date.now() < deadline) {
        if (ws.events.items.some((ev) => ev.agentId === after.json.agent.id)) return true;
        await new Promise((r) => setTimeout(r, 50));
      }
      return false;
    };
    expect(await streamed()).toBe(true);
    ws.close();
    const sentB = b.signal("SIGTERM");
    const eb = await exitOf(b, sentB);
    expect(eb.afterMs).toBeLessThan(BOUND_MS);
    expect(eb.code).toBe(0);
    expect(finalLine(b)).toMatchObject({ exitCode: 0, unpublishedEvents: 0 });
    console.log(
      `replicas: A exit ${e.code} ${e.afterMs} ms after SIGTERM (${finalLine(a).unpublishedEvents} events lost); ` +
        `B answered ${duringA} registrations meanwhile, slowest ${loadB.slowest.ms} ms; B exit ${eb.code} ${eb.afterMs} ms`,
    );
  }
});
