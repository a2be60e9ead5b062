import { Redis } from "ioredis";
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

/** `n` cheap reads (GET /agents), `inFlight` at a time; returns how many were admitted and refused. */
async function reads(url: string, token: string, n: number, inFlight = 16): Promise<{ ok: number; limited: number }> {
  let next = 0;
  const out = { ok: 0, limited: 0 };
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        next++;
        const res = await fetch(`${url}/agents?page_size=1`, auth(token));
        await res.arrayBuffer();
        if (res.status === 200) out.ok++;
        else if (res.status === 429) out.limited++;
        else throw new Error(`unexpected ${res.status}`);
      }
    }),
  );
  return out;
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

  // 640 per window: counted in chunks of 10 points taken ahead (rate-limits.ts), exact near the quota.
  const chunked = { RATE_LIMITS: JSON.stringify({ "tenant-q": 640 }), RATE_LIMIT_TENANT: "1000", RATE_LIMIT_WINDOW: "30s" };

  it("counts a large quota in chunks taken ahead and still refuses exactly at the quota", async () => {
    const t = await startApp({ ...idp.env(), ...chunked });
    apps.push(t);
    const token = await idp.token("tenant-q", ALL_SCOPES);
    expect(await reads(t.url, token, 700)).toEqual({ ok: 640, limited: 60 });
  });

  it("never admits over a chunked quota with two replicas sharing Redis (at most a chunk less)", async () => {
    const env = { ...idp.env(), ...chunked, REDIS_URL: redis.url, REDIS_PREFIX: `rlq-${process.pid}` };
    const [r1, r2] = [await startApp(env), await startApp(env)];
    apps.push(r1, r2);
    const token = await idp.token("tenant-q", ALL_SCOPES);
    const commands = async () => {
      const client = new Redis(redis.url, { lazyConnect: true });
      await client.connect();
      const stats = await client.info("commandstats");
      client.disconnect();
      // The limiter's counting is one script call (EVALSHA, or EVAL the first time) per consume.
      return [...stats.matchAll(/cmdstat_(evalsha|eval):calls=(\d+)/g)].reduce((n, m) => n + Number(m[2]), 0);
    };
    const before = await commands();
    const [a, b] = await Promise.all([reads(r1.url, token, 350, 8), reads(r2.url, token, 350, 8)]);
    // Counted in chunks: far fewer limiter scripts than calls (one a call before).
    const scripts = (await commands()) - before;
    expect(scripts).toBeGreaterThan(0);
    expect(scripts).toBeLessThan(200);
    const ok = a.ok + b.ok;
    expect(ok).toBeLessThanOrEqual(640);
    expect(ok).toBeGreaterThanOrEqual(640 - 9);
    expect(a.limited + b.limited).toBe(700 - ok);
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
