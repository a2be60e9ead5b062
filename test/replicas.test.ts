import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AUTH, getJson, postJson, registerBody, startApp, waitServing, type TestApp } from "./support/app.js";
import { openWs } from "./support/feeds.js";
import { startFerret, startRedis, type ManagedServer } from "./support/servers.js";

/**
 * Several replicas sharing FerretDB and Redis behave as one registry with
 * one event stream.
 */
type Server = ManagedServer & { dispose(): Promise<void> };

describe("replicas sharing MongoDB (FerretDB) and Redis", () => {
  let ferret: Server;
  let redis: Server;
  let run = 0;
  const apps: TestApp[] = [];

  beforeAll(async () => {
    [ferret, redis] = await Promise.all([startFerret(), startRedis()]);
  });
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close().catch(() => undefined)));
    await Promise.all([ferret.dispose(), redis.dispose()]);
    dataDirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  /** Env for one scenario: its own database and stream, shared by its replicas. */
  const dataDirs: string[] = [];
  const sharedEnv = () => ({
    // One key set for all replicas: a passport from one verifies on the others.
    DATA_DIR: tempDir(dataDirs),
    MONGODB_URI: ferret.url,
    MONGODB_DB: `replicas_${process.pid}_${run}`,
    REDIS_URL: redis.url,
    REDIS_PREFIX: `replicas-${process.pid}-${run}`,
    STORE_TIMEOUT: "1s",
    LEASE_TTL_MIN: "100ms",
    LEASE_GRACE: "300ms",
    REAPER_INTERVAL: "50ms",
  });
  const replica = async (env: Record<string, string>) => {
    const app = await startApp(env);
    apps.push(app);
    await waitServing(app);
    return app;
  };

  it("registers on A, discovers and routes on B, streams A's events on B, unregisters on B", async () => {
    run++;
    const env = sharedEnv();
    const [a, b] = [await replica(env), await replica(env)];
    const ws = await openWs(b.port, "?types=agent.registered,agent.unregistered");
    await new Promise((r) => setTimeout(r, 100));

    const reg = await postJson(`${a.url}/agents/register`, registerBody({ name: "shared" }));
    expect(reg.status).toBe(200);
    const id = reg.json.agent.id;

    const found = await getJson(`${b.url}/agents/discover?capabilities=code.generate&tags=python`);
    expect(found.json.agents.map((x: any) => x.id)).toEqual([id]);
    const routed = await postJson(`${b.url}/route`, { capabilities: ["code.generate"] });
    expect(routed.json.agent.id).toBe(id);
    const tools = await getJson(`${b.url}/tools?query=writes`);
    expect(tools.json.tools.map((x: any) => x.agentId)).toEqual([id]);

    expect((await fetch(`${b.url}/agents/${id}`, { method: "DELETE", headers: AUTH })).status).toBe(200);
    expect((await getJson(`${a.url}/agents/${id}`)).status).toBe(404);

    const events = await ws.events.waitFor(2);
    expect(events.map((e) => [e.type, e.agentId])).toEqual([
      ["agent.registered", id],
      ["agent.unregistered", id],
    ]);
    ws.close();
  });

  it("emits exactly one agent.expired across both replicas for a lease that runs out", async () => {
    run++;
    const env = sharedEnv();
    const [a, b] = [await replica(env), await replica(env)];
    const onA = await openWs(a.port, "?types=agent.expired,agent.status_changed");
    const onB = await openWs(b.port, "?types=agent.expired,agent.status_changed");
    await new Promise((r) => setTimeout(r, 100));
    const id = (await postJson(`${a.url}/agents/register`, registerBody({ leaseTtl: "0.2s" }))).json.agent.id;
    for (const ws of [onA, onB]) {
      const events = await ws.events.waitFor(2, 5_000);
      expect(events.map((e) => [e.type, e.agentId])).toEqual([
        ["agent.status_changed", id],
        ["agent.expired", id],
      ]);
    }
    // Both reapers keep running: no second expiry shows up.
    await new Promise((r) => setTimeout(r, 400));
    expect(onA.events.items).toHaveLength(2);
    expect(onB.events.items).toHaveLength(2);
    onA.close();
    onB.close();
  });

  it("loses nothing when a replica restarts, and its clients resume from their last event id", async () => {
    run++;
    const env = sharedEnv();
    const a = await replica(env);
    const b = await replica(env);
    const first = await openWs(a.port, "?types=agent.registered");
    await new Promise((r) => setTimeout(r, 100));
    const before = (await postJson(`${a.url}/agents/register`, registerBody({ name: "before", leaseTtl: "3600s" }))).json.agent.id;
    const [last] = await first.events.waitFor(1);
    first.close();

    await a.close();
    const missed: string[] = [];
    for (const name of ["while-down-1", "while-down-2"]) {
      missed.push((await postJson(`${b.url}/agents/register`, registerBody({ name, leaseTtl: "3600s" }))).json.agent.id);
    }
    const a2 = await replica(env);
    const got = await getJson(`${a2.url}/agents/${before}`);
    expect(got.json, JSON.stringify(got.json)).toHaveProperty("agent.name", "before");

    const resumed = await openWs(a2.port, `?types=agent.registered&after_id=${last.id}`);
    const events = await resumed.events.waitFor(2);
    expect(events.map((e) => e.agentId)).toEqual(missed);
    resumed.close();
  });
});

function tempDir(into: string[]): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fc-replicas-"));
  into.push(dir);
  return dir;
}
