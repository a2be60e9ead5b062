import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUTH, postJson, registerBody, startApp, waitServing, type TestApp } from "./support/app.js";
import { openWs } from "./support/feeds.js";
import { bearer, grpc, grpcClients, type GrpcClients } from "./support/grpc-client.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

/**
 * A client resuming with after_id whose events are not all held any more is
 * told so on every transport — WatchEvents on the lean gRPC path
 * (OUT_OF_RANGE), /ws (close 4410), REST NDJSON (a final error line) —
 * instead of getting a silently partial feed.
 */

/** How a /ws resume ended: its events and its close code and reason. */
function wsResume(port: number, query: string): Promise<{ events: any[]; code: number; reason: string }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws${query}`, { headers: AUTH });
  const events: any[] = [];
  ws.on("message", (d) => events.push(JSON.parse(d.toString())));
  return new Promise((resolve, reject) => {
    ws.once("error", reject);
    ws.once("close", (code, reason) => resolve({ events, code, reason: reason.toString() }));
    setTimeout(() => (ws.terminate(), reject(new Error(`/ws still open after 5s with ${events.length} event(s)`))), 5_000).unref();
  });
}

/** How a WatchEvents resume ended (grpc-js, identity encoding: the lean path). */
function grpcResume(c: GrpcClients, request: Record<string, unknown>): Promise<{ events: any[]; code: number; details: string }> {
  const call = c.health.WatchEvents(request, bearer());
  const events: any[] = [];
  call.on("data", (m: any) => events.push(m.event));
  return new Promise((resolve, reject) => {
    call.on("error", (e: grpc.ServiceError) => resolve({ events, code: e.code, details: e.details }));
    call.on("end", () => resolve({ events, code: 0, details: "" }));
    setTimeout(() => (call.cancel(), reject(new Error(`WatchEvents still open after 5s with ${events.length} event(s)`))), 5_000).unref();
  });
}

/**
 * The error a REST resume ended with: the NDJSON stream's final error line,
 * or — when the gap was known before the stream's headers went out (the
 * memory bus knows at once) — the plain error answer (400 for OUT_OF_RANGE).
 */
async function restResume(url: string): Promise<{ events: any[]; error: { code: number; message: string } }> {
  const res = await fetch(url, { headers: AUTH, signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  if (res.status !== 200) {
    expect(res.status).toBe(400);
    return { events: [], error: JSON.parse(text) };
  }
  const lines = text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l));
  expect(lines.at(-1)).toHaveProperty("error");
  return { events: lines.slice(0, -1), error: lines.at(-1).error };
}

async function expectRefusedEverywhere(t: TestApp, c: GrpcClients, afterId: string, why: RegExp): Promise<void> {
  const ws = await wsResume(t.port, `?types=agent.registered&after_id=${afterId}`);
  expect(ws.events).toEqual([]);
  expect(ws.code).toBe(4410);
  expect(ws.reason).toMatch(new RegExp(`^after_id ${afterId} cannot be resumed: re-read state`));

  const served = t.app.server.fastPath!.served;
  const watch = await grpcResume(c, { types: ["agent.registered"], after_id: afterId });
  expect(t.app.server.fastPath!.served).toBe(served + 1);
  expect(watch.events).toEqual([]);
  expect(watch.code).toBe(grpc.status.OUT_OF_RANGE);
  expect(watch.details).toMatch(new RegExp(`^after_id ${afterId} cannot be resumed: re-read state, then watch without after_id`));
  expect(watch.details).toMatch(why);

  const rest = await restResume(`${t.url}/events?types=agent.registered&after_id=${afterId}`);
  expect(rest.events).toEqual([]);
  expect(rest.error.code).toBe(11); // OUT_OF_RANGE
  expect(rest.error.message).toMatch(why);
}

describe("a resume whose events Redis no longer has", () => {
  let redis: ManagedServer & { dispose(): Promise<void> };
  let t: TestApp;
  let c: GrpcClients;

  beforeAll(async () => {
    redis = await startRedis();
    t = await startApp({ REDIS_URL: redis.url, REDIS_PREFIX: `gap-${process.pid}` });
    await waitServing(t);
    c = grpcClients(t.port);
  });
  afterAll(async () => {
    c.close();
    await t.close();
    await redis.dispose();
  });

  it("is refused on /ws, gRPC and REST after Redis restarted empty between the disconnect and the resume", async () => {
    const first = await openWs(t.port, "?types=agent.registered");
    await new Promise((r) => setTimeout(r, 100));
    await postJson(`${t.url}/agents/register`, registerBody({ name: "seen" }));
    const [seen] = await first.events.waitFor(1);
    first.close();
    // Published while the client is away, then lost with Redis.
    await postJson(`${t.url}/agents/register`, registerBody({ name: "lost" }));
    await new Promise((r) => setTimeout(r, 100));

    await redis.stop();
    await redis.start();
    // The service is back on the new, empty Redis once a live client sees a new event.
    const live = await openWs(t.port, "?types=agent.registered");
    for (let i = 0; live.events.items.length === 0 && i < 100; i++) {
      await postJson(`${t.url}/agents/register`, registerBody({ name: `after-${i}` }));
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(live.events.items.length).toBeGreaterThan(0);
    live.close();

    await expectRefusedEverywhere(t, c, seen.id, /Redis restarted empty/);

    // A resume from an id of the new stream is whole.
    const fresh = await openWs(t.port, `?types=agent.registered&after_id=${live.events.items[0].id}`);
    const next = (await postJson(`${t.url}/agents/register`, registerBody({ name: "next" }))).json.agent.id;
    const events = await fresh.events.waitFor(1);
    expect(events.at(-1).agentId).toBe(next);
    fresh.close();
  });
});

describe("a resume older than the memory bus's EVENT_RETENTION", () => {
  let t: TestApp;
  let c: GrpcClients;

  beforeAll(async () => {
    t = await startApp({ EVENT_RETENTION: "3" });
    await waitServing(t);
    c = grpcClients(t.port);
  });
  afterAll(async () => {
    c.close();
    await t.close();
  });

  it("is refused on /ws, gRPC and REST; an id ahead of the newest too; after_id 0 never is", async () => {
    const first = await openWs(t.port, "?types=agent.registered");
    await postJson(`${t.url}/agents/register`, registerBody({ name: "seen" }));
    const [seen] = await first.events.waitFor(1);
    first.close();
    for (const name of ["gap-1", "gap-2", "gap-3", "gap-4"]) await postJson(`${t.url}/agents/register`, registerBody({ name }));

    await expectRefusedEverywhere(t, c, seen.id, /older than what is held/);
    await expectRefusedEverywhere(t, c, "1000000", /no event with this id was issued yet/);

    const fromOldest = await openWs(t.port, "?types=agent.registered&after_id=0");
    const events = await fromOldest.events.waitFor(3);
    expect(events.map((e: any) => e.type)).toEqual(["agent.registered", "agent.registered", "agent.registered"]);
    fromOldest.close();
  });
});
