import http from "node:http";
import type net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson } from "./support/app.js";
import { startProcess, type ServiceProcess } from "./support/process.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

/**
 * Two replicas sharing a Redis: what one fetched from a peer (an MCP
 * registry served by the test, which counts the questions it is asked), the
 * other serves from the shared cache — the peer is not asked again.
 */
let redis: ManagedServer & { dispose(): Promise<void> };
let registry: http.Server;
let registryUrl = "";
let asked = 0;
let r1: ServiceProcess, r2: ServiceProcess;

const discover = (url: string) => getJson(`${url}/agents/discover?capabilities=weather&scope=FEDERATION_SCOPE_FEDERATED`);

beforeAll(async () => {
  registry = http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    if (u.searchParams.get("search")) asked++;
    const server = { name: "io.example/weather", version: "1.0.0", tools: [{ name: "get_forecast", description: "forecast" }] };
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ servers: [{ server }], metadata: {} }));
  });
  await new Promise<void>((r) => registry.listen(0, "127.0.0.1", r));
  registryUrl = `http://127.0.0.1:${(registry.address() as net.AddressInfo).port}`;
  redis = await startRedis();
  const env = {
    REDIS_URL: redis.url,
    REDIS_PREFIX: `fedcache-${process.pid}`,
    FEDERATION_CACHE_TTL: "30s",
    FEDERATION_PEERS: JSON.stringify([{ id: "mcp", url: registryUrl, kind: "mcp-registry", tenants: ["*"] }]),
  };
  [r1, r2] = await Promise.all([startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-x" }), startProcess({ ...env, FEDERATION_INSTANCE_ID: "fed-x" })]);
  await Promise.all([r1, r2].map((p) => p.waitForLine((l) => l.msg === "federation cache shared through redis", 10_000)));
}, 50_000);

afterAll(async () => {
  await Promise.all([r1, r2].map((p) => p?.dispose()));
  await redis?.dispose();
  registry?.closeAllConnections();
  await new Promise<void>((r) => (registry ? registry.close(() => r()) : r()));
});

describe("the remote cache shared through Redis", () => {
  it("replica B serves from the cache replica A filled: the peer sees no new request", async () => {
    const fromA = await discover(r1.url);
    expect(fromA.status, JSON.stringify(fromA.json)).toBe(200);
    expect((fromA.json.agents as any[]).map((x) => [x.name, x.origin?.peerId])).toEqual([["io.example/weather", "mcp"]]);
    expect(asked).toBe(1);
    // The write to Redis is not awaited by A's read: give it a moment.
    await new Promise((r) => setTimeout(r, 200));
    const fromB = await discover(r2.url);
    expect(fromB.json.agents).toEqual(fromA.json.agents);
    expect(asked).toBe(1);
    const metrics = await fetch(`${r2.url}/metrics`, { headers: { authorization: "Bearer test-bootstrap-token" } }).then((r) => r.text());
    expect(metrics).toMatch(/federation_remote_cache_total\{event="shared_hit"\} 1\b/);
    expect(metrics).toMatch(/federation_remote_cache_total\{event="miss"\} 0\b/);
  });
});
