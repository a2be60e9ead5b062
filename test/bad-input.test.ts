import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody, startApp, waitServing, type TestApp } from "./support/app.js";
import { backends } from "./support/backends.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { grpcClients, unary, type GrpcClients } from "./support/grpc-client.js";

/**
 * Malformed requests across REST, Connect and gRPC: each gets
 * INVALID_ARGUMENT (REST 400) with a message that starts with the field,
 * and nothing is stored or published.
 */
type Protocol = "rest" | "connect" | "grpc";

interface Case {
  readonly name: string;
  readonly protocol: Protocol;
  /** REST: [method, path, body]; Connect: [service/method, body]; gRPC: [client, method, body]. */
  readonly call: (ctx: { url: string; c: GrpcClients; agentId: string }) => Promise<{ code: number; message: string }>;
  readonly field: string;
}

const nested = (depth: number): Record<string, unknown> => (depth === 0 ? { type: "string" } : { properties: nested(depth - 1) });
const longText = "x".repeat(5000);

const rest = (method: string, path: string | ((id: string) => string), body?: unknown) =>
  async ({ url, agentId }: { url: string; agentId: string }) => {
    const p = typeof path === "function" ? path(agentId) : path;
    const res =
      method === "GET" ? await getJson(`${url}${p}`) : await postJson(`${url}${p}`, body ?? {}, { method });
    expect(res.status).toBe(400);
    return { code: res.json.code, message: res.json.message };
  };

const connect = (procedure: string, body: unknown) => async ({ url }: { url: string }) => {
  const res = await postJson(`${url}/federation.v1.${procedure}`, body);
  expect(res.status).toBe(400);
  expect(res.json.code).toBe("invalid_argument");
  return { code: 3, message: res.json.message };
};

const grpcCall = (client: keyof Omit<GrpcClients, "close">, method: string, body: (id: string) => unknown) =>
  async ({ c, agentId }: { c: GrpcClients; agentId: string }) => {
    const err = await unary(c[client], method, body(agentId)).then(
      () => ({ code: 0, details: "unexpectedly succeeded" }),
      (e) => e,
    );
    return { code: err.code, message: err.details };
  };

const cases: Case[] = [
  { protocol: "rest", name: "register without a name", field: "name", call: rest("POST", "/agents/register", registerBody({ name: "" })) },
  { protocol: "rest", name: "endpoint with an ftp URL", field: "endpoint.url", call: rest("POST", "/agents/register", registerBody({ endpoint: { url: "ftp://x/y" } })) },
  { protocol: "rest", name: "endpoint URL with credentials", field: "endpoint.url", call: rest("POST", "/agents/register", registerBody({ endpoint: { url: "https://u:p@x" } })) },
  { protocol: "rest", name: "no capabilities", field: "capabilities", call: rest("POST", "/agents/register", registerBody({ capabilities: [] })) },
  { protocol: "rest", name: "operator injection in a capability", field: "capabilities[0].name", call: rest("POST", "/agents/register", registerBody({ capabilities: [{ name: "$where" }] })) },
  { protocol: "rest", name: "too many tags", field: "capabilities[0].tags", call: rest("POST", "/agents/register", registerBody({ capabilities: [{ name: "a", tags: Array.from({ length: 40 }, (_, i) => `t${i}`) }] })) },
  { protocol: "rest", name: "dollar in a label key", field: "labels[", call: rest("POST", "/agents/register", registerBody({ labels: { $set: "x" } })) },
  { protocol: "rest", name: "lease below the minimum", field: "lease_ttl", call: rest("POST", "/agents/register", registerBody({ leaseTtl: "0.001s" })) },
  { protocol: "rest", name: "lease that is not a duration", field: "lease_ttl", call: rest("POST", "/agents/register", registerBody({ leaseTtl: "abc" })) },
  { protocol: "rest", name: "agent id with $ and .", field: "agent_id", call: rest("POST", "/agents/register", registerBody({ agentId: "a.b$c" })) },
  { protocol: "rest", name: "deeply nested tool schema", field: "tools[0].input_schema", call: rest("POST", "/agents/register", registerBody({ tools: [{ name: "t", inputSchema: nested(40) }] })) },
  { protocol: "rest", name: "heartbeat load above 1", field: "load", call: rest("POST", (id) => `/agents/${id}/heartbeat`, { load: 2 }) },
  { protocol: "rest", name: "heartbeat reporting UNHEALTHY", field: "status", call: rest("POST", (id) => `/agents/${id}/heartbeat`, { status: "AGENT_STATUS_UNHEALTHY" }) },
  { protocol: "rest", name: "discover limit too large", field: "limit", call: rest("GET", "/agents/discover?capabilities=a&limit=5000") },
  { protocol: "rest", name: "discover with a malformed capability", field: "capabilities[0]", call: rest("GET", "/agents/discover?capabilities=bad%20cap") },
  { protocol: "rest", name: "list with a forged page token", field: "page_token", call: rest("GET", "/agents?page_token=garbage") },
  { protocol: "rest", name: "route without capabilities", field: "capabilities", call: rest("POST", "/route", { capabilities: [] }) },
  { protocol: "rest", name: "route excluding an operator", field: "exclude_agent_ids[0]", call: rest("POST", "/route", { capabilities: ["a"], excludeAgentIds: ["$ne"] }) },
  { protocol: "connect", name: "register without an endpoint", field: "endpoint", call: connect("RegistryService/Register", registerBody({ endpoint: undefined })) },
  { protocol: "connect", name: "duplicate capability", field: "capabilities[1].name", call: connect("RegistryService/Register", registerBody({ capabilities: [{ name: "a" }, { name: "a" }] })) },
  { protocol: "connect", name: "too many labels", field: "labels", call: connect("RegistryService/Register", registerBody({ labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])) })) },
  { protocol: "connect", name: "heartbeat without an agent id", field: "agent_id", call: connect("RegistryService/Heartbeat", {}) },
  { protocol: "connect", name: "negative page size", field: "page_size", call: connect("DirectoryService/ListTools", { pageSize: -1 }) },
  { protocol: "connect", name: "route with a malformed second capability", field: "capabilities[1]", call: connect("RouterService/Route", { capabilities: ["ok", "not ok"] }) },
  { protocol: "grpc", name: "name with spaces", field: "name", call: grpcCall("registry", "Register", () => ({ ...grpcRegister(), name: "has spaces" })) },
  { protocol: "grpc", name: "endpoint that is not a URL", field: "endpoint.url", call: grpcCall("registry", "Register", () => ({ ...grpcRegister(), endpoint: { url: "not a url" } })) },
  { protocol: "grpc", name: "tool description too long", field: "tools[0].description", call: grpcCall("registry", "Register", () => ({ ...grpcRegister(), tools: [{ name: "t", description: longText }] })) },
  { protocol: "grpc", name: "unknown status enum value", field: "status", call: grpcCall("registry", "Heartbeat", (id) => ({ agent_id: id, status: 42 })) },
  { protocol: "grpc", name: "route with an empty capability", field: "capabilities[0]", call: grpcCall("router", "Route", () => ({ capabilities: [""] })) },
  { protocol: "grpc", name: "get with an injected id", field: "agent_id", call: grpcCall("registry", "GetAgent", () => ({ agent_id: '{"$gt":""}' })) },
];

function grpcRegister() {
  return { name: "g", endpoint: { url: "grpc://127.0.0.1:1" }, capabilities: [{ name: "a" }] };
}

describe.each(backends())("bad input ($name)", (backend) => {
  let t: TestApp;
  let c: GrpcClients;
  let agentId: string;
  let feed: WsFeed;
  let before: unknown;

  const snapshot = async () => {
    const agents = await getJson(`${t.url}/agents?page_size=1000`);
    const fleet = await getJson(`${t.url}/health/fleet`);
    return { agents: agents.json.agents, fleet: fleet.json };
  };

  beforeAll(async () => {
    t = await startApp(await backend.env());
    await waitServing(t);
    c = grpcClients(t.port);
    agentId = (await postJson(`${t.url}/agents/register`, registerBody())).json.agent.id;
    before = await snapshot();
    feed = await openWs(t.port);
  });
  afterAll(async () => {
    feed.close();
    c.close();
    await t.close();
  });

  it(`covers at least 20 cases over all three protocols`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(20);
    expect(new Set(cases.map((x) => x.protocol))).toEqual(new Set(["rest", "connect", "grpc"]));
  });

  it.each(cases)("$protocol: $name → INVALID_ARGUMENT naming $field", async ({ call, field }) => {
    const { code, message } = await call({ url: t.url, c, agentId });
    expect(code).toBe(3);
    expect(message.startsWith(field)).toBe(true);
  });

  it("left the store unchanged and published nothing", async () => {
    expect(await snapshot()).toEqual(before);
    await new Promise((r) => setTimeout(r, 50));
    expect(feed.events.items).toEqual([]);
  });

  it("survives a request body that is not JSON at all on every protocol", async () => {
    const restRes = await postJson(`${t.url}/agents/register`, "\u0000\u0001garbage");
    expect(restRes.status).toBe(400);
    const connectRes = await postJson(`${t.url}/federation.v1.RegistryService/Register`, "{not json");
    expect(connectRes.status).toBe(400);
    expect(connectRes.json.code).toBe("invalid_argument");
    expect((await getJson(`${t.url}/health`)).status).toBe(200);
  });
});
