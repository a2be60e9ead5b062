import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AUTH, postJson, registerBody, startApp, waitServing, type TestApp } from "./support/app.js";
import { backends } from "./support/backends.js";
import { openWatch, openWs, type GrpcFeed, type WsFeed } from "./support/feeds.js";
import { grpcClients, unary, type GrpcClients } from "./support/grpc-client.js";
import { ManualClock } from "./support/manual-clock.js";

describe.each(backends())("the event feed on /ws and WatchEvents ($name)", (backend) => {
  const clock = new ManualClock(Date.now());
  let t: TestApp;
  let c: GrpcClients;
  const open: (WsFeed | GrpcFeed)[] = [];

  beforeAll(async () => {
    t = await startApp({ LEASE_GRACE: "60s", REAPER_INTERVAL: "1h", ...(await backend.env()) }, { clock });
    await waitServing(t);
    c = grpcClients(t.port);
  });
  afterEach(() => open.splice(0).forEach((f) => f.close()));
  afterAll(async () => {
    c.close();
    await t.close();
  });

  it("delivers registration, the status change on a missed lease and unregistration, in order, to both feeds", async () => {
    const ws = await openWs(t.port, "?types=agent.registered,agent.status_changed,agent.unregistered");
    const watch = await openWatch(c.health, {
      types: ["agent.registered", "agent.status_changed", "agent.unregistered"],
    });
    open.push(ws, watch);

    const reg = await postJson(`${t.url}/agents/register`, registerBody({ leaseTtl: "10s" }));
    const id = reg.json.agent.id;
    clock.advance(10_001);
    await t.app.reaper.tick();
    await unary(c.registry, "Unregister", { agent_id: id });

    for (const feed of [ws, watch]) {
      const events = await feed.events.waitFor(3);
      expect(events.map((e) => e.type)).toEqual(["agent.registered", "agent.status_changed", "agent.unregistered"]);
      expect(events.every((e) => (e.agentId ?? e.agent_id) === id)).toBe(true);
      const ids = events.map((e) => BigInt(e.id));
      expect([...ids].sort((a, b) => (a < b ? -1 : 1))).toEqual(ids);
    }
    const change = ws.events.items[1];
    expect(change.agentChange.agent.status).toBe("AGENT_STATUS_UNHEALTHY");
    expect(change.agentChange.previousStatus).toBe("AGENT_STATUS_HEALTHY");
    expect(change.agentChange.reason).toBe("lease expired");
    const grpcChange = watch.events.items[1];
    expect(grpcChange.agent_change.agent.status).toBe("AGENT_STATUS_UNHEALTHY");
  });

  it("filters by agent id", async () => {
    // A registration's event is accepted, not yet delivered, when its call
    // returns; on the Redis bus it can still be in flight and reach a feed
    // opened right after. Wait until a feed has seen both, so the feeds
    // below start after them.
    const all = await openWs(t.port, "?types=agent.registered");
    open.push(all);
    const a = (await postJson(`${t.url}/agents/register`, registerBody({ name: "a" }))).json.agent.id;
    const b = (await postJson(`${t.url}/agents/register`, registerBody({ name: "b" }))).json.agent.id;
    for (let n = 1; !all.events.items.some((e: any) => e.agentId === b); n++) await all.events.waitFor(n);
    const ws = await openWs(t.port, `?agent_id=${b}`);
    const watch = await openWatch(c.health, { agent_id: b });
    open.push(ws, watch);
    await unary(c.registry, "Heartbeat", { agent_id: a, status: "AGENT_STATUS_DEGRADED" });
    await unary(c.registry, "Heartbeat", { agent_id: b, status: "AGENT_STATUS_DEGRADED" });
    for (const feed of [ws, watch]) {
      const [event] = await feed.events.waitFor(1);
      expect(event.type).toBe("agent.status_changed");
      expect(event.agentId ?? event.agent_id).toBe(b);
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(ws.events.items).toHaveLength(1);
    expect(watch.events.items).toHaveLength(1);
  });

  it("lets a reconnecting client resume after its last event id without missing any", async () => {
    const first = await openWs(t.port, "?types=agent.registered");
    const seen = (await postJson(`${t.url}/agents/register`, registerBody({ name: "before" }))).json.agent.id;
    const [lastSeen] = await first.events.waitFor(1);
    expect(lastSeen.agentId).toBe(seen);
    first.close();

    // Published while the client is away.
    const missed: string[] = [];
    for (const name of ["gap-1", "gap-2", "gap-3"]) {
      missed.push((await postJson(`${t.url}/agents/register`, registerBody({ name }))).json.agent.id);
    }

    const ws = await openWs(t.port, `?types=agent.registered&after_id=${lastSeen.id}`);
    const watch = await openWatch(c.health, { types: ["agent.registered"], after_id: lastSeen.id });
    open.push(ws, watch);
    const live = (await postJson(`${t.url}/agents/register`, registerBody({ name: "live" }))).json.agent.id;
    for (const feed of [ws, watch]) {
      const events = await feed.events.waitFor(4);
      expect(events.map((e) => e.agentId ?? e.agent_id)).toEqual([...missed, live]);
    }
  });

  it("refuses an unknown event type on both feeds with INVALID_ARGUMENT", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${t.port}/ws?types=agent.exploded`, { headers: AUTH });
    const refused = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      ws.on("open", () => reject(new Error("upgrade was accepted")));
      ws.on("error", () => undefined);
      ws.on("unexpected-response", (_req, res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      });
    });
    expect(refused.status).toBe(400);
    expect(refused.body.code).toBe(3);
    expect(refused.body.message).toMatch(/^types\[0\]: unknown event type "agent.exploded"/);
    const watch = await openWatch(c.health, { types: ["agent.exploded"] });
    const [err] = await watch.events.waitFor(1);
    expect(err).toEqual({ error: 3 });
  });
});

describe("leases on real timers", () => {
  it("marks a silent agent UNHEALTHY, then expires it, with one event each", async () => {
    const t = await startApp({ LEASE_TTL_MIN: "100ms", LEASE_GRACE: "300ms", REAPER_INTERVAL: "50ms" });
    try {
      const ws = await openWs(t.port, "?types=agent.status_changed,agent.expired");
      const reg = await postJson(`${t.url}/agents/register`, registerBody({ leaseTtl: "0.2s" }));
      const events = await ws.events.waitFor(2, 3_000);
      expect(events.map((e) => e.type)).toEqual(["agent.status_changed", "agent.expired"]);
      expect(events[1].agentId).toBe(reg.json.agent.id);
      const hb = await postJson(`${t.url}/agents/${reg.json.agent.id}/heartbeat`, {});
      expect(hb.status).toBe(404);
      ws.close();
    } finally {
      await t.close();
    }
  });
});
