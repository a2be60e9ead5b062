import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody, startApp, waitServing } from "./support/app.js";
import { startFerret, startRedis, type ManagedServer } from "./support/servers.js";

type Server = ManagedServer & { dispose(): Promise<void> };

describe("shared backends: start-up and telemetry", () => {
  let ferret: Server;
  let redis: Server;
  beforeAll(async () => {
    [ferret, redis] = await Promise.all([startFerret(), startRedis()]);
  });
  afterAll(async () => {
    await Promise.all([ferret.dispose(), redis.dispose()]);
  });

  it("starts while MongoDB is down, says NOT_SERVING with the reason, and becomes ready when it returns", async () => {
    await ferret.stop();
    const t = await startApp({ MONGODB_URI: ferret.url, MONGODB_DB: `boot_${process.pid}`, STORE_TIMEOUT: "500ms" });
    try {
      const h = (await getJson(`${t.url}/health`)).json;
      expect(h.status).toBe("SERVING_STATUS_NOT_SERVING");
      const store = h.components.find((c: { name: string }) => c.name === "agent-store");
      expect(store.message).toMatch(/connecting to MongoDB|MongoDB unreachable/);
      const write = await postJson(`${t.url}/agents/register`, registerBody());
      expect(write.status).toBe(503);
      await ferret.start();
      await waitServing(t, 20_000);
      expect((await postJson(`${t.url}/agents/register`, registerBody())).status).toBe(200);
    } finally {
      await t.close();
    }
  });

  it("publishes fleet telemetry on the Redis channel <prefix>:telemetry", async () => {
    const prefix = `telemetry-${process.pid}`;
    const t = await startApp({ REDIS_URL: redis.url, REDIS_PREFIX: prefix, TELEMETRY_INTERVAL: "200ms", REPLICA_ID: "replica-t" });
    const sub = new Redis(redis.url);
    try {
      const messages: Record<string, unknown>[] = [];
      await sub.subscribe(`${prefix}:telemetry`);
      sub.on("message", (_channel, text: string) => messages.push(JSON.parse(text)));
      await waitServing(t);
      const id = (await postJson(`${t.url}/agents/register`, registerBody())).json.agent.id;
      await postJson(`${t.url}/agents/${id}/heartbeat`, {});
      await postJson(`${t.url}/route`, { capabilities: ["code.generate"] });
      await postJson(`${t.url}/route`, { capabilities: ["nothing.here"] });
      const deadline = Date.now() + 3_000;
      const total = (k: string) => messages.reduce((n, m) => n + Number(m[k] ?? 0), 0);
      while (Date.now() < deadline && total("route_failures") < 1) await new Promise((r) => setTimeout(r, 50));
      expect(messages[0]).toMatchObject({ replica: "replica-t" });
      expect(total("registrations")).toBe(1);
      expect(total("heartbeats")).toBe(1);
      expect(total("routes")).toBe(1);
      expect(total("route_failures")).toBe(1);
    } finally {
      sub.disconnect();
      await t.close();
    }
  });
});
