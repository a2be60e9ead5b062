import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { openWs } from "./support/feeds.js";
import { grpc, grpcClients, unary } from "./support/grpc-client.js";
import { startFerret, startRedis, type ManagedServer } from "./support/servers.js";

type Server = ManagedServer & { dispose(): Promise<void> };

/** Real outages: the backing servers are killed and started again mid-traffic. */
describe("outages of Redis and of the MongoDB-compatible server", () => {
  let ferret: Server;
  let redis: Server;
  let t: TestApp;

  beforeAll(async () => {
    [ferret, redis] = await Promise.all([startFerret(), startRedis()]);
    t = await startApp({
      MONGODB_URI: ferret.url,
      MONGODB_DB: `outages_${process.pid}`,
      REDIS_URL: redis.url,
      STORE_TIMEOUT: "1s",
    });
    await until(async () => (await health(t)).status === "SERVING_STATUS_SERVING", 10_000);
  });
  afterAll(async () => {
    await t.close();
    await Promise.all([ferret.dispose(), redis.dispose()]);
  });

  it("keeps registering and answering reads while Redis is down, reports it, and resumes events", async () => {
    const ws = await openWs(t.port, "?types=agent.registered");
    await new Promise((r) => setTimeout(r, 100));
    const registered: string[] = [];
    const failures: number[] = [];
    let sawDegraded = false;
    let stopTraffic = false;
    const traffic = (async () => {
      while (!stopTraffic) {
        const res = await postJson(`${t.url}/agents/register`, registerBody({ name: `steady-${registered.length}` }));
        if (res.status === 200) registered.push(res.json.agent.id);
        else failures.push(res.status);
        if (registered.length > 1) {
          const hb = await postJson(`${t.url}/agents/${registered[registered.length - 2]}/heartbeat`, {});
          if (hb.status !== 200) failures.push(hb.status);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    await new Promise((r) => setTimeout(r, 300));
    await redis.stop();
    await until(async () => {
      const h = await health(t);
      const bus = h.components.find((c: any) => c.name === "event-bus");
      sawDegraded ||= h.status === "SERVING_STATUS_NOT_SERVING" && /Redis unreachable/.test(bus.message);
      return sawDegraded;
    }, 5_000);
    const duringOutage = await getJson(`${t.url}/agents/discover?capabilities=code.generate&limit=1000`);
    expect(duringOutage.status).toBe(200);
    await new Promise((r) => setTimeout(r, 1_000));
    await redis.start();
    await until(async () => (await health(t)).status === "SERVING_STATUS_SERVING", 10_000);
    stopTraffic = true;
    await traffic;

    expect(sawDegraded).toBe(true);
    expect(failures).toEqual([]);
    const listed = await getJson(`${t.url}/agents?page_size=1000`);
    const stored = new Set(listed.json.agents.map((a: any) => a.id));
    expect(registered.every((id) => stored.has(id))).toBe(true);

    // Events queued during the outage arrive, and new ones flow again.
    const after = (await postJson(`${t.url}/agents/register`, registerBody({ name: "after-outage" }))).json.agent.id;
    const events = await ws.events.waitFor(registered.length + 1, 10_000);
    expect(events.map((e) => e.agentId)).toEqual([...registered, after]);
    ws.close();
  });

  it("fails writes fast with UNAVAILABLE while the store is down, and succeeds once it returns", async () => {
    const kept = (await postJson(`${t.url}/agents/register`, registerBody({ name: "kept", leaseTtl: "3600s" }))).json.agent.id;
    await ferret.stop();

    const started = Date.now();
    const res = await postJson(`${t.url}/agents/register`, registerBody({ name: "while-down" }));
    const elapsed = Date.now() - started;
    expect(res.status).toBe(503);
    expect(res.json.code).toBe(14);
    expect(res.json.message).toMatch(/^agent store unavailable/);
    // STORE_TIMEOUT is 1s: the answer comes well inside a 5s client deadline.
    expect(elapsed).toBeLessThan(4_000);

    const c = grpcClients(t.port);
    try {
      const err = await unary(c.registry, "Heartbeat", { agent_id: kept }).catch((e) => e);
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
    } finally {
      c.close();
    }
    await until(async () => (await health(t)).components.some((x: any) => x.name === "agent-store" && x.status !== "SERVING_STATUS_SERVING"), 5_000);

    await ferret.start();
    await until(async () => (await postJson(`${t.url}/agents/register`, registerBody({ name: "back" }))).status === 200, 15_000);
    expect((await getJson(`${t.url}/agents/${kept}`)).json.agent.name).toBe("kept");
    await until(async () => (await health(t)).status === "SERVING_STATUS_SERVING", 10_000);
  });
});

async function health(t: TestApp): Promise<any> {
  return (await getJson(`${t.url}/health`)).json;
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs}ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
