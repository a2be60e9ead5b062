import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { FederationScope } from "../gen/federation/v1/origin_pb.js";
import { ADMIN_TOKEN, AUTH, getJson, postJson } from "./support/app.js";
import { listPeers, mintToken, registerAgent, relay } from "./support/federation-peers.js";
import { startProcess, type ServiceProcess } from "./support/process.js";

/**
 * Three Federation Core processes on loopback: A peers with B (directly)
 * and with C (through a relay that can go silent); B peers with A. Each
 * has its own agents.
 */
const TIMEOUT_MS = 500;
let a: ServiceProcess, b: ServiceProcess, c: ServiceProcess;
let cRelay: Awaited<ReturnType<typeof relay>>;
const ids: Record<string, string> = {};

const FEDERATED = "FEDERATION_SCOPE_FEDERATED";
const discover = (url: string, query: string, headers: Record<string, string> = AUTH) =>
  getJson(`${url}/agents/discover?${query}`, { headers });

beforeAll(async () => {
  // Every federated read must reach the peers here (breakers, freshness): no remote cache.
  const env = { LOG_LEVEL: "debug", FEDERATION_CACHE_TTL: "0", FEDERATION_TIMEOUT: `${TIMEOUT_MS}ms`, BREAKER_MIN_OUTCOMES: "3", BREAKER_COOL_DOWN: "60s" };
  // One after the other: three cold starts at once on a loaded machine can miss startProcess's 20 s.
  a = await startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-a" });
  b = await startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-b" });
  c = await startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-c" });
  ids.a = await registerAgent(a.url, "alpha", "shared.cap", "alpha_tool");
  ids.b = await registerAgent(b.url, "bravo", "shared.cap", "bravo_tool");
  ids.b2 = await registerAgent(b.url, "bravo-only", "bravo.only", "bravo_special");
  ids.c = await registerAgent(c.url, "charlie", "charlie.only", "charlie_tool");
  cRelay = await relay(c.port);
}, 60_000);

afterAll(async () => {
  await cRelay?.close();
  await Promise.all([a, b, c].map((p) => p?.dispose()));
});

describe("federation between Federation Cores", () => {
  it("adds a peer whose manifest verifies, with the token minted on it, and lists it", async () => {
    const token = await mintToken(b.url, "default", ["agents:read"]);
    const added = await postJson(`${a.url}/federation/peers`, { peerId: "b", url: b.url, token, tenants: ["default"] });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
    expect(added.json.peer).toMatchObject({ peerId: "b", status: "PEER_STATUS_ACTIVE", instanceId: "fed-b", breaker: "CIRCUIT_STATE_CLOSED" });
    expect(JSON.stringify(added.json)).not.toContain(token);

    const cToken = await mintToken(c.url, "default", ["agents:read"]);
    const viaRelay = await postJson(`${a.url}/federation/peers`, { peerId: "c", url: cRelay.url, token: cToken, tenants: ["*"] });
    expect(viaRelay.status, JSON.stringify(viaRelay.json)).toBe(200);

    const peers = await listPeers(a.url);
    expect(peers.map((p) => p.peerId)).toEqual(["b", "c"]);
    expect(peers[0]).toMatchObject({ url: b.url, kind: "PEER_KIND_FEDERATION_CORE", tenants: ["default"], reputation: 1 });
    expect(peers[0].verifiedAt).toBeTruthy();
  });

  it("Discover with scope FEDERATED returns the peers' agents after the local ones, each naming its origin", async () => {
    const res = await discover(a.url, `capabilities=shared.cap&scope=${FEDERATED}`);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    const agents = res.json.agents as any[];
    expect(agents.map((x) => x.name)).toEqual(["alpha", "bravo"]);
    expect(agents[0].origin).toBeUndefined();
    expect(agents[1].origin).toEqual({ peerId: "b", remoteId: ids.b, peerUrl: b.url });
    expect(agents[1].id).toBe(ids.b);

    // The default scope is today's: local only.
    const local = await discover(a.url, "capabilities=shared.cap");
    expect((local.json.agents as any[]).map((x) => x.name)).toEqual(["alpha"]);
  });

  it("answers federated reads over gRPC too (the lean path), with origins", async () => {
    const client = createClient(DirectoryService, createGrpcTransport({ baseUrl: a.url }));
    const res = await client.discover(
      { capabilities: ["charlie.only"], scope: FederationScope.FEDERATED },
      { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
    );
    expect(res.agents.map((x) => [x.name, x.origin?.peerId, x.origin?.remoteId])).toEqual([["charlie", "c", ids.c]]);
  });

  it("SearchTools with scope FEDERATED adds the peers' tool entries with their origin", async () => {
    const res = await getJson(`${a.url}/tools/search?query=bravo&scope=${FEDERATED}&provider_page_size=5`);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    const remote = (res.json.tools as any[]).filter((t) => t.origin);
    expect(remote.map((t) => t.name).sort()).toEqual(["bravo_special", "bravo_tool"]);
    for (const t of remote) {
      expect(t.origin).toMatchObject({ peerId: "b", remoteId: t.toolId });
      expect(t.providerAgentIds.length).toBe(1);
    }
    expect(res.json.totalCount).toBe(0); // the local catalog's count only
    const local = await getJson(`${a.url}/tools/search?query=bravo`);
    expect(local.json.tools).toEqual([]);
  });

  it("shows remote results only to the tenants the peer names", async () => {
    const other = await mintToken(a.url, "other", ["agents:read"]);
    const before = (await listPeers(a.url)).find((p) => p.peerId === "b").requests;
    const res = await discover(a.url, `capabilities=bravo.only&scope=${FEDERATED}`, { authorization: `Bearer ${other}` });
    expect(res.status).toBe(200);
    expect(res.json.agents).toEqual([]);
    // Not even asked on that tenant's behalf ("c" permits every tenant but has no bravo.only).
    expect((await listPeers(a.url)).find((p) => p.peerId === "b").requests).toBe(before);
    const permitted = await discover(a.url, `capabilities=bravo.only&scope=${FEDERATED}`);
    expect((permitted.json.agents as any[]).map((x) => x.name)).toEqual(["bravo-only"]);
  });

  it("AUTO asks the peers only when the local results are fewer than asked for", async () => {
    const count = async () => (await listPeers(a.url)).find((p) => p.peerId === "b").requests as string;
    const before = await count();
    const enough = await discover(a.url, "capabilities=shared.cap&limit=1&scope=FEDERATION_SCOPE_AUTO");
    expect((enough.json.agents as any[]).map((x) => x.name)).toEqual(["alpha"]);
    expect(await count()).toBe(before);

    const short = await discover(a.url, "capabilities=shared.cap&limit=2&scope=FEDERATION_SCOPE_AUTO");
    expect((short.json.agents as any[]).map((x) => [x.name, x.origin?.peerId])).toEqual([
      ["alpha", undefined],
      ["bravo", "b"],
    ]);
    expect(Number(await count())).toBe(Number(before) + 1);
  });

  it("never loops: B peers with A, and a federated read from A is not asked back by B", async () => {
    const token = await mintToken(a.url, "default", ["agents:read"]);
    const added = await postJson(`${b.url}/federation/peers`, { peerId: "a", url: a.url, token, tenants: ["*"] });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
    expect(added.json.peer.instanceId).toBe("fed-a");

    // B asked directly federates to A ...
    const fromB = await discover(b.url, `capabilities=shared.cap&scope=${FEDERATED}`);
    expect((fromB.json.agents as any[]).map((x) => [x.name, x.origin?.peerId])).toEqual([
      ["bravo", undefined],
      ["alpha", "a"],
    ]);
    const askedBack = (await listPeers(b.url)).find((p) => p.peerId === "a").requests;

    // ... but when A asks B, B does not ask A back (A is in x-federation-visited).
    const started = Date.now();
    const fromA = await discover(a.url, `capabilities=nothing.anywhere&scope=${FEDERATED}`);
    expect(fromA.status).toBe(200);
    expect(fromA.json.agents).toEqual([]);
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS);
    expect((await listPeers(b.url)).find((p) => p.peerId === "a").requests).toBe(askedBack);
  });

  it("ends a cycle at the hop limit and answers locally when it was already visited", async () => {
    const count = async () => (await listPeers(a.url)).find((p) => p.peerId === "b").requests as string;
    const before = await count();
    // At the hop limit (FEDERATION_MAX_HOPS, 2): local results only.
    const atLimit = await discover(a.url, `capabilities=shared.cap&scope=${FEDERATED}`, { ...AUTH, "x-federation-hops": "2" });
    expect((atLimit.json.agents as any[]).map((x) => x.name)).toEqual(["alpha"]);
    // A request that has visited A before: local only, whatever the hop count.
    const visited = await discover(a.url, `capabilities=shared.cap&scope=${FEDERATED}`, {
      ...AUTH,
      "x-federation-hops": "1",
      "x-federation-visited": "somewhere,fed-a",
    });
    expect((visited.json.agents as any[]).map((x) => x.name)).toEqual(["alpha"]);
    // A request that has visited B: A does not send it there.
    const notToB = await discover(a.url, `capabilities=shared.cap&scope=${FEDERATED}`, {
      ...AUTH,
      "x-federation-hops": "1",
      "x-federation-visited": "fed-b",
    });
    expect((notToB.json.agents as any[]).map((x) => x.name)).toEqual(["alpha"]);
    // A malformed hop count counts as past the limit.
    const garbage = await discover(a.url, `capabilities=shared.cap&scope=${FEDERATED}`, { ...AUTH, "x-federation-hops": "lots" });
    expect((garbage.json.agents as any[]).map((x) => x.name)).toEqual(["alpha"]);
    expect(await count()).toBe(before);
  });

  it("a peer that stops answering costs at most the deadline, then its breaker opens and it costs nothing", async () => {
    cRelay.silent = true;
    const timings: number[] = [];
    const breakerOf = async () => (await listPeers(a.url)).find((p) => p.peerId === "c").breaker as string;
    // Earlier successes are still in the breaker's window: it opens once failures pass half of it.
    while (timings.length < 12 && (await breakerOf()) === "CIRCUIT_STATE_CLOSED") {
      const started = Date.now();
      const res = await discover(a.url, `capabilities=shared.cap&scope=${FEDERATED}`);
      timings.push(Date.now() - started);
      expect(res.status).toBe(200);
      // B still answers; C's silence only costs time, bounded.
      expect((res.json.agents as any[]).map((x) => x.name)).toEqual(["alpha", "bravo"]);
    }
    expect(timings.length).toBeGreaterThanOrEqual(3);
    for (const t of timings) expect(t).toBeLessThan(TIMEOUT_MS + 250);
    const c = (await listPeers(a.url)).find((p) => p.peerId === "c");
    expect(c.breaker).toBe("CIRCUIT_STATE_OPEN");
    expect(Number(c.failures)).toBeGreaterThanOrEqual(3);
    expect(c.reputation).toBeLessThan(1);
    expect(c.lastError).not.toBe("");

    const started = Date.now();
    const res = await discover(a.url, `capabilities=shared.cap&scope=${FEDERATED}`);
    expect(Date.now() - started).toBeLessThan(150);
    expect((res.json.agents as any[]).map((x) => x.name)).toEqual(["alpha", "bravo"]);
  });

  it("removes a peer at run time; a removed peer is not asked and is NOT_FOUND the second time", async () => {
    const del = await fetch(`${a.url}/federation/peers/b`, { method: "DELETE", headers: AUTH });
    expect(del.status).toBe(200);
    expect((await listPeers(a.url)).map((p) => p.peerId)).toEqual(["c"]);
    const again = await fetch(`${a.url}/federation/peers/b`, { method: "DELETE", headers: AUTH });
    expect(again.status).toBe(404);
    expect(((await again.json()) as any).message).toContain('peer "b" not found');
    const res = await discover(a.url, `capabilities=bravo.only&scope=${FEDERATED}`);
    expect(res.json.agents).toEqual([]);
  });

  it("refuses the peer RPCs without the admin scope", async () => {
    const reader = await mintToken(a.url, "default", ["agents:read"]);
    const res = await getJson(`${a.url}/federation/peers`, { headers: { authorization: `Bearer ${reader}` } });
    expect(res.status).toBe(403);
  });
});
