import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { ALL_SCOPES, TestIdp } from "./support/idp.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** Registers `n` agents at once; returns the statuses. */
async function burst(url: string, token: string, n: number): Promise<{ status: number; retryAfter: string | null }[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const res = await postJson(`${url}/agents/register`, registerBody({ name: `burst-${i}` }), auth(token));
      return { status: res.status, retryAfter: res.headers.get("retry-after") };
    }),
  );
}

describe("per-tenant rate limits", () => {
  let idp: TestIdp;
  let redis: ManagedServer & { dispose(): Promise<void> };
  const apps: TestApp[] = [];

  beforeAll(async () => {
    idp = await TestIdp.create();
    redis = await startRedis();
  });
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close()));
    await redis.dispose();
  });

  // A long window, so a burst never straddles two windows.
  const limits = { RATE_LIMITS: JSON.stringify({ "tenant-a": 5 }), RATE_LIMIT_TENANT: "1000", RATE_LIMIT_WINDOW: "30s" };

  it("answers RESOURCE_EXHAUSTED/429 with Retry-After to a tenant over quota, while another tenant is unaffected", async () => {
    const t = await startApp({ ...idp.env(), ...limits });
    apps.push(t);
    const [a, b] = await Promise.all([
      burst(t.url, await idp.token("tenant-a", ALL_SCOPES), 12),
      burst(t.url, await idp.token("tenant-b", ALL_SCOPES), 12),
    ]);
    expect(a.filter((r) => r.status === 200)).toHaveLength(5);
    const limited = a.filter((r) => r.status === 429);
    expect(limited).toHaveLength(7);
    expect(Number(limited[0]!.retryAfter)).toBeGreaterThan(0);
    expect(b.every((r) => r.status === 200)).toBe(true);
  });

  it("limits heartbeats per agent", async () => {
    const t = await startApp({ ...idp.env(), RATE_LIMIT_HEARTBEAT: "2", RATE_LIMIT_WINDOW: "30s" });
    apps.push(t);
    const token = await idp.token("tenant-c", ALL_SCOPES);
    const id = (await postJson(`${t.url}/agents/register`, registerBody(), auth(token))).json.agent.id;
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await postJson(`${t.url}/agents/${id}/heartbeat`, {}, auth(token))).status);
    expect(statuses).toEqual([200, 200, 429, 429]);
  });

  it("counts another tenant's heartbeats for an agent id in that tenant's bucket, never the agent's", async () => {
    const t = await startApp({ ...idp.env(), RATE_LIMIT_HEARTBEAT: "2", RATE_LIMIT_WINDOW: "30s" });
    apps.push(t);
    const owner = await idp.token("tenant-e", ALL_SCOPES);
    const stranger = await idp.token("tenant-f", ALL_SCOPES);
    const id = (await postJson(`${t.url}/agents/register`, registerBody(), auth(owner))).json.agent.id;
    const spam = [];
    for (let i = 0; i < 4; i++) spam.push((await postJson(`${t.url}/agents/${id}/heartbeat`, {}, auth(stranger))).status);
    expect(spam).toEqual([404, 404, 429, 429]);
    const own = [];
    for (let i = 0; i < 2; i++) own.push((await postJson(`${t.url}/agents/${id}/heartbeat`, {}, auth(owner))).status);
    expect(own).toEqual([200, 200]);
  });

  it("holds one quota across two replicas sharing Redis", async () => {
    const env = { ...idp.env(), ...limits, REDIS_URL: redis.url, REDIS_PREFIX: `rl-${process.pid}` };
    const [r1, r2] = [await startApp(env), await startApp(env)];
    apps.push(r1, r2);
    const token = await idp.token("tenant-a", ALL_SCOPES);
    const results = (await Promise.all([burst(r1.url, token, 6), burst(r2.url, token, 6)])).flat();
    // Separate in-memory limiters would let 10 through; the shared one lets 5.
    expect(results.filter((r) => r.status === 200)).toHaveLength(5);
    expect(results.filter((r) => r.status === 429)).toHaveLength(7);
  });
});
