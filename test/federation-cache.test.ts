import http from "node:http";
import type net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson } from "./support/app.js";
import { listPeers } from "./support/federation-peers.js";
import { startProcess, type ServiceProcess } from "./support/process.js";

/**
 * The remote cache against real processes: an MCP registry served by the
 * test (it counts the questions it is asked, and its data can change) and
 * Federation Cores peering with it — one with stale-while-revalidate only
 * (no hot refresh), one whose hot refresh keeps a hot answer fresh.
 */
const TTL_MS = 1_000;
let version = "1.0.0";
/** Questions asked by federated reads (the peer check asks with no `search`). */
let asked = 0;
let registry: http.Server;
let registryUrl = "";
let swr: ServiceProcess, hot: ServiceProcess;

function serve(): http.Server {
  return http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    if (u.pathname !== "/v0.1/servers") return void res.writeHead(404).end();
    if (u.searchParams.get("search")) asked++;
    const servers = [
      {
        server: {
          name: "io.example/weather",
          description: "Forecasts",
          version,
          remotes: [{ type: "streamable-http", url: "https://weather.example/mcp" }],
          tools: [{ name: "get_forecast", description: "forecast for a city" }],
        },
      },
    ];
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ servers, metadata: { count: 1 } }));
  });
}

const discover = (url: string) => getJson(`${url}/agents/discover?capabilities=weather&scope=FEDERATION_SCOPE_FEDERATED`);
const versionsOf = (res: { json: any }) => (res.json.agents as any[]).map((a) => [a.name, a.version]);

async function addRegistry(p: ServiceProcess): Promise<void> {
  const res = await postJson(`${p.url}/federation/peers`, { peerId: "mcp", url: registryUrl, kind: "PEER_KIND_MCP_REGISTRY", tenants: ["*"] });
  if (res.status !== 200) throw new Error(`AddPeer: ${res.status} ${JSON.stringify(res.json)}`);
}

async function until(pred: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  registry = serve();
  await new Promise<void>((r) => registry.listen(0, "127.0.0.1", r));
  registryUrl = `http://127.0.0.1:${(registry.address() as net.AddressInfo).port}`;
  const env = { FEDERATION_CACHE_TTL: `${TTL_MS}ms`, FEDERATION_CACHE_STALE: "60s", FEDERATION_TIMEOUT: "2s" };
  swr = await startProcess({ ...env, FEDERATION_CACHE_HOT: "0", FEDERATION_INSTANCE_ID: "fed-swr" });
  hot = await startProcess({ ...env, FEDERATION_CACHE_HOT: "10", FEDERATION_INSTANCE_ID: "fed-hot" });
  await addRegistry(swr);
}, 50_000);

afterAll(async () => {
  await Promise.all([swr, hot].map((p) => p?.dispose()));
  registry?.closeAllConnections();
  await new Promise<void>((r) => (registry ? registry.close(() => r()) : r()));
});

describe("the remote cache", () => {
  it("serves a remote capability asked repeatedly from the cache: the peer sees one request per TTL", async () => {
    asked = 0;
    const started = Date.now();
    const first = await discover(swr.url);
    expect(first.status, JSON.stringify(first.json)).toBe(200);
    expect(versionsOf(first)).toEqual([["io.example/weather", "1.0.0"]]);
    expect(first.json.agents[0].origin).toMatchObject({ peerId: "mcp", remoteId: "io.example/weather" });
    for (let i = 0; i < 20; i++) {
      const again = await discover(swr.url);
      expect(versionsOf(again)).toEqual([["io.example/weather", "1.0.0"]]);
      // The origin is stamped on what the cache holds, as on a fresh answer.
      expect(again.json.agents[0].origin).toMatchObject({ peerId: "mcp", remoteId: "io.example/weather", peerUrl: registryUrl });
    }
    // All within one TTL (on a slow machine the last ones may not be: allow one more request per TTL elapsed).
    expect(asked).toBeLessThanOrEqual(1 + Math.floor((Date.now() - started) / TTL_MS));
    expect(asked).toBeGreaterThanOrEqual(1);
    const metrics = await fetch(`${swr.url}/metrics`, { headers: { authorization: "Bearer test-bootstrap-token" } }).then((r) => r.text());
    expect(Number(/federation_remote_cache_total\{event="hit"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(20 - asked);
    expect(Number(/federation_remote_cache_total\{event="miss"\} (\d+)/.exec(metrics)?.[1])).toBe(1);
    expect(Number(/federation_remote_cache_bytes (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
  });

  it("stays correct after the TTL: the first read serves the stale answer at once and refreshes it, a later one the new", async () => {
    await new Promise((r) => setTimeout(r, TTL_MS + 100));
    version = "2.0.0";
    const before = asked;
    const stale = await discover(swr.url);
    expect(versionsOf(stale)).toEqual([["io.example/weather", "1.0.0"]]);
    // One background refresh, however many reads arrive meanwhile.
    await Promise.all([discover(swr.url), discover(swr.url), discover(swr.url)]);
    await until(() => asked > before, 5_000);
    let fresh = await discover(swr.url);
    await until(async () => {
      fresh = await discover(swr.url);
      return versionsOf(fresh)[0]?.[1] === "2.0.0";
    }, 3_000);
    expect(versionsOf(fresh)).toEqual([["io.example/weather", "2.0.0"]]);
    expect(asked - before).toBe(1);
    const metrics = await fetch(`${swr.url}/metrics`, { headers: { authorization: "Bearer test-bootstrap-token" } }).then((r) => r.text());
    expect(Number(/federation_remote_cache_total\{event="stale_hit"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
    expect(Number(/federation_remote_cache_total\{event="refresh"\} (\d+)/.exec(metrics)?.[1])).toBe(1);
    expect(Number((await listPeers(swr.url))[0].failures ?? 0)).toBe(0);
  });

  it("keeps a hot answer fresh in the background: after the TTL the new answer is served, though nobody asked meanwhile", async () => {
    version = "3.0.0";
    await addRegistry(hot);
    const before = asked;
    for (let i = 0; i < 5; i++) expect(versionsOf(await discover(hot.url))).toEqual([["io.example/weather", "3.0.0"]]);
    expect(asked - before).toBe(1);
    version = "4.0.0";
    // Nobody reads for a TTL and a half: the hot refresh asks the peer before the entry goes stale.
    await new Promise((r) => setTimeout(r, TTL_MS * 1.5));
    expect(asked - before).toBeGreaterThanOrEqual(2);
    const res = await discover(hot.url);
    expect(versionsOf(res)).toEqual([["io.example/weather", "4.0.0"]]);
    // About one request per TTL, not one per tick.
    expect(asked - before).toBeLessThanOrEqual(4);
  });
});
