import http from "node:http";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetJwksResponseSchema } from "../gen/federation/v1/directory_service_pb.js";
import { getJson, postJson } from "./support/app.js";
import { h2Front, listPeers, mintToken, registerAgent } from "./support/federation-peers.js";
import { startProcess, type ServiceProcess } from "./support/process.js";

/**
 * Peers that are not a plain Federation Core: an MCP registry (a small
 * server speaking GET /v0.1/servers from fixture records, two pages and a
 * malformed record), and a Federation Core behind a front whose JWKS does
 * not match the key that signs its manifest.
 */
const servers = [
  {
    server: {
      name: "io.example/weather",
      description: "Forecasts",
      version: "1.0.0",
      remotes: [
        { type: "sse", url: "https://weather.example/sse" },
        { type: "streamable-http", url: "https://weather.example/mcp" },
      ],
      tools: [{ name: "get_forecast", description: "Forecast for a city", inputSchema: { type: "object" } }],
    },
    _meta: { "io.modelcontextprotocol.registry/official": { status: "active" } },
  },
  { server: { name: 42, description: "malformed: the name is not a string" } },
  {
    server: {
      name: "io.example/weather-alerts",
      version: "0.3.0",
      remotes: [{ type: "streamable-http", url: "https://alerts.example/mcp" }],
      tools: [{ name: "list_alerts", description: "Severe weather alerts" }],
    },
  },
  { server: { name: "io.example/gone-weather", remotes: [] }, _meta: { "io.modelcontextprotocol.registry/official": { status: "deleted" } } },
  { server: { name: "io.example/calendar", tools: [{ name: "add_event" }] } },
];

let a: ServiceProcess, b: ServiceProcess;
let registry: http.Server;
let registryUrl = "";
const asked: string[] = [];

beforeAll(async () => {
  // Two records per page; the cursor is the next index.
  registry = http.createServer((req, res) => {
    const u = new URL(req.url!, "http://x");
    asked.push(u.pathname + u.search);
    if (u.pathname !== "/v0.1/servers") return void res.writeHead(404).end();
    const search = (u.searchParams.get("search") ?? "").toLowerCase();
    const matching = servers.filter((s) => typeof s.server.name !== "string" || s.server.name.toLowerCase().includes(search));
    const from = Number(u.searchParams.get("cursor") ?? "0");
    const page = matching.slice(from, from + 2);
    const next = from + 2 < matching.length ? String(from + 2) : undefined;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ servers: page, metadata: { count: page.length, ...(next ? { nextCursor: next } : {}) } }));
  });
  await new Promise<void>((r) => registry.listen(0, "127.0.0.1", r));
  registryUrl = `http://127.0.0.1:${(registry.address() as net.AddressInfo).port}`;
  // Every federated read must reach the registry here (pages, updated_since): no remote cache.
  a = await startProcess({ LOG_LEVEL: "debug", FEDERATION_CACHE_TTL: "0", FEDERATION_INSTANCE_ID: "fed-a" });
  b = await startProcess({ FEDERATION_INSTANCE_ID: "fed-b" });
  await registerAgent(b.url, "bravo", "shared.cap", "bravo_tool");
}, 60_000);

afterAll(async () => {
  await new Promise<void>((r) => (registry ? registry.close(() => r()) : r()));
  await Promise.all([a, b].map((p) => p?.dispose()));
});

describe("an MCP registry peer", () => {
  it("is added once it answers the registry API", async () => {
    const res = await postJson(`${a.url}/federation/peers`, { peerId: "mcp", url: registryUrl, kind: "PEER_KIND_MCP_REGISTRY", tenants: ["*"] });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect(res.json.peer).toMatchObject({ peerId: "mcp", kind: "PEER_KIND_MCP_REGISTRY", status: "PEER_STATUS_ACTIVE" });
  });

  it("maps server.json records onto agents in a federated Discover, following pages and skipping the malformed one", async () => {
    const res = await getJson(`${a.url}/agents/discover?capabilities=weather&scope=FEDERATED`);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    const agents = res.json.agents as any[];
    expect(agents.map((x) => x.name)).toEqual(["io.example/weather", "io.example/weather-alerts"]);
    expect(agents[0]).toMatchObject({
      id: "io_example_weather",
      version: "1.0.0",
      status: "AGENT_STATUS_HEALTHY",
      endpoint: { url: "https://weather.example/mcp", transport: "TRANSPORT_MCP_STREAMABLE_HTTP" },
      origin: { peerId: "mcp", remoteId: "io.example/weather", peerUrl: registryUrl },
    });
    expect(agents[0].tools.map((t: any) => t.name)).toEqual(["get_forecast"]);
    expect(agents[0].capabilities.map((c: any) => c.name).sort()).toEqual(["get_forecast", "weather"]);
    // Two pages were read (the second through the cursor), searched by the capability.
    expect(asked.filter((q) => q.includes("search=weather")).some((q) => q.includes("cursor=2"))).toBe(true);
    await a.waitForLine((l) => l.msg === "skipped a malformed registry record" && l.peer === "mcp", 5_000);
  });

  it("maps the registry's tools onto catalog entries in a federated SearchTools", async () => {
    const res = await getJson(`${a.url}/tools/search?query=weather&scope=FEDERATION_SCOPE_FEDERATED&provider_page_size=3`);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    const tools = res.json.tools as any[];
    expect(tools.map((t) => t.name).sort()).toEqual(["get_forecast", "list_alerts"]);
    const forecast = tools.find((t) => t.name === "get_forecast");
    expect(forecast).toMatchObject({ providerCount: 1, healthyProviderCount: 1, providerAgentIds: ["io_example_weather"] });
    expect(forecast.origin).toMatchObject({ peerId: "mcp", remoteId: forecast.toolId });
    expect(forecast.toolId).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });
});

describe("checking a Federation Core peer's signature", () => {
  it("refuses a peer whose manifest signature does not verify against its JWKS, with a clear error", async () => {
    // B's real JWKS names the key id; the front serves another key under that id.
    const real = await getJson(`${b.url}/.well-known/jwks.json`);
    const kid = real.json.keys[0].kid as string;
    const { publicKey } = await generateKeyPair("EdDSA", { extractable: true });
    const impostor = { ...(await exportJWK(publicKey)), kid, alg: "EdDSA", use: "sig" };
    const front = await h2Front(
      b.url,
      "/federation.v1.DirectoryService/GetJwks",
      toBinary(GetJwksResponseSchema, create(GetJwksResponseSchema, { keys: [impostor] })),
    );
    try {
      const token = await mintToken(b.url, "default", ["agents:read"]);
      const refused = await postJson(`${a.url}/federation/peers`, { peerId: "forged", url: front.url, token, tenants: ["*"] });
      expect(refused.status).toBe(400);
      expect(refused.json.code).toBe(9); // FAILED_PRECONDITION
      expect(refused.json.message).toContain('peer "forged" refused');
      expect(refused.json.message).toContain("does not verify against its JWKS");
      expect((await listPeers(a.url)).map((p) => p.peerId)).not.toContain("forged");

      // The same peer, reached directly, verifies: the refusal was the signature's.
      const direct = await postJson(`${a.url}/federation/peers`, { peerId: "b", url: b.url, token, tenants: ["*"] });
      expect(direct.status, JSON.stringify(direct.json)).toBe(200);
      const found = await getJson(`${a.url}/agents/discover?capabilities=shared.cap&scope=FEDERATION_SCOPE_FEDERATED`);
      expect((found.json.agents as any[]).map((x) => [x.name, x.origin?.peerId])).toEqual([["bravo", "b"]]);
    } finally {
      await front.close();
    }
  });

  it("answers UNAVAILABLE for a peer that cannot be reached, and names the field of a bad request", async () => {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const down = await postJson(`${a.url}/federation/peers`, { url: `http://127.0.0.1:${port}`, token: "t" });
    expect(down.status).toBe(503);
    expect(down.json.message).toContain("could not be checked");

    const noToken = await postJson(`${a.url}/federation/peers`, { url: "http://127.0.0.1:1" });
    expect(noToken.status).toBe(400);
    expect(noToken.json.message).toMatch(/^token: is required/);
    const badUrl = await postJson(`${a.url}/federation/peers`, { url: "ftp://x", token: "t" });
    expect(badUrl.json.message).toMatch(/^url: must be an http or https URL/);
    const badTenant = await postJson(`${a.url}/federation/peers`, { url: "http://x", token: "t", tenants: ["ok", "no way"] });
    expect(badTenant.json.message).toMatch(/^tenants: \[1\]/);
    const badId = await postJson(`${a.url}/federation/peers`, { peerId: "a/b", url: "http://x", token: "t" });
    expect(badId.json.message).toMatch(/^peer_id: must match/);
  });
});
