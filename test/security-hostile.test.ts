import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { openWs } from "./support/feeds.js";
import { bearer, grpc, grpcClients, unary, type GrpcClients } from "./support/grpc-client.js";
import { ALL_SCOPES, tamper, TestIdp } from "./support/idp.js";

/**
 * Hostile requests on every protocol: each gets its expected code, and
 * nothing in the store changes.
 */
interface World {
  url: string;
  port: number;
  c: GrpcClients;
  tokenA: string;
  tokenB: string;
  idp: TestIdp;
  agentA1: string;
  agentA2: string;
  passportA1: string;
  revokedPassport: string;
  revokedAgent: string;
}

type Protocol = "rest" | "connect" | "grpc" | "websocket";
interface Case {
  readonly protocol: Protocol;
  readonly name: string;
  readonly code: number;
  readonly call: (w: World) => Promise<number>;
}

const connectCodes: Record<string, number> = {
  unauthenticated: 16,
  permission_denied: 7,
  not_found: 5,
  failed_precondition: 9,
  invalid_argument: 3,
  resource_exhausted: 8,
};

const auth = (token: string | undefined): Record<string, string> =>
  token === undefined ? {} : { authorization: `Bearer ${token}` };

function rest(method: string, path: (w: World) => string, token: (w: World) => Promise<string | undefined> | string | undefined, body?: unknown) {
  return async (w: World) => {
    const headers = { authorization: "", ...auth(await token(w)) };
    const res =
      method === "GET" || method === "DELETE"
        ? await getJson(`${w.url}${path(w)}`, { method, headers })
        : await postJson(`${w.url}${path(w)}`, body ?? {}, { method, headers });
    if (res.status === 401) expect(res.headers.get("www-authenticate")).toMatch(/^Bearer /);
    return res.status === 200 ? 0 : res.json.code;
  };
}

function connect(procedure: string, token: (w: World) => Promise<string | undefined> | string | undefined, body: (w: World) => unknown) {
  return async (w: World) => {
    const res = await postJson(`${w.url}/federation.v1.${procedure}`, body(w), {
      headers: { authorization: "", ...auth(await token(w)) },
    });
    return res.status === 200 ? 0 : connectCodes[res.json.code]!;
  };
}

function grpcCall(client: keyof Omit<GrpcClients, "close">, method: string, token: (w: World) => Promise<string | undefined> | string | undefined, body: (w: World) => unknown) {
  return async (w: World) => {
    const t = await token(w);
    const md = t === undefined ? new grpc.Metadata() : bearer(t);
    return unary(w.c[client], method, body(w), md).then(
      () => 0,
      (e: grpc.ServiceError) => e.code,
    );
  };
}

function ws(query: string, how: (w: World) => Promise<{ headers?: Record<string, string>; protocols?: string[] }>) {
  return async (w: World) => {
    const o = await how(w);
    const socket = new WebSocket(`ws://127.0.0.1:${w.port}/ws${query}`, o.protocols ?? [], { headers: o.headers });
    return new Promise<number>((resolve) => {
      socket.on("open", () => {
        socket.close();
        resolve(0);
      });
      socket.on("error", () => undefined);
      socket.on("unexpected-response", (_req, res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d));
        res.on("end", () => resolve(JSON.parse(text).code));
      });
    });
  };
}

const B = (w: World) => w.tokenB;
const none = () => undefined;
const expired = (w: World) => w.idp.token("tenant-a", ALL_SCOPES, { expSec: -120 });
const notYet = (w: World) => w.idp.token("tenant-a", ALL_SCOPES, { nbfSec: 600 });
const wrongAud = (w: World) => w.idp.token("tenant-a", ALL_SCOPES, { claims: { aud: "someone-else" } });
const wrongIss = (w: World) => w.idp.token("tenant-a", ALL_SCOPES, { claims: { iss: "https://evil.test" } });
const algNone = (w: World) => w.idp.unsigned("tenant-a", ALL_SCOPES);
const hs256 = (w: World) => w.idp.hs256WithPublicKey("tenant-a", ALL_SCOPES);
const unknownKid = (w: World) => w.idp.token("tenant-a", ALL_SCOPES, { kid: "idp-key-9", key: "other" });
const tampered = async (w: World) => tamper(await w.idp.token("tenant-b", ALL_SCOPES), { tenant: "tenant-a" });
const readOnly = (w: World) => w.idp.token("tenant-a", ["agents:read"]);
const routeOnly = (w: World) => w.idp.token("tenant-a", ["route"]);
const oversized = (w: World) => w.idp.token("tenant-a", ALL_SCOPES, { claims: { pad: "x".repeat(9_000) } });
const noTenant = (w: World) => w.idp.token("", ALL_SCOPES);

const cases: Case[] = [
  { protocol: "rest", name: "no token", code: 16, call: rest("GET", () => "/agents", none) },
  { protocol: "rest", name: "expired token", code: 16, call: rest("GET", () => "/agents", expired) },
  { protocol: "rest", name: "not-yet-valid token", code: 16, call: rest("GET", () => "/agents", notYet) },
  { protocol: "rest", name: "wrong audience", code: 16, call: rest("GET", () => "/agents", wrongAud) },
  { protocol: "rest", name: "untrusted issuer", code: 16, call: rest("GET", () => "/agents", wrongIss) },
  { protocol: "rest", name: "alg none", code: 16, call: rest("GET", () => "/agents", algNone) },
  { protocol: "rest", name: "HS256 signed with the public key", code: 16, call: rest("GET", () => "/agents", hs256) },
  { protocol: "rest", name: "unknown kid", code: 16, call: rest("GET", () => "/agents", unknownKid) },
  { protocol: "rest", name: "tampered payload (tenant swapped)", code: 16, call: rest("GET", (w) => `/agents/${w.agentA1}`, tampered) },
  { protocol: "rest", name: "oversized token", code: 16, call: rest("GET", () => "/agents", oversized) },
  { protocol: "rest", name: "token without a tenant", code: 16, call: rest("GET", () => "/agents", noTenant) },
  { protocol: "rest", name: "register without agents:write", code: 7, call: rest("POST", () => "/agents/register", readOnly, registerBody()) },
  { protocol: "rest", name: "mint tokens without admin", code: 7, call: rest("POST", () => "/admin/tokens", routeOnly, { tenant: "tenant-a", scopes: ["admin"] }) },
  { protocol: "rest", name: "another tenant's agent: get", code: 5, call: rest("GET", (w) => `/agents/${w.agentA1}`, B) },
  { protocol: "rest", name: "another tenant's agent: heartbeat", code: 5, call: rest("POST", (w) => `/agents/${w.agentA1}/heartbeat`, B, {}) },
  { protocol: "rest", name: "another tenant's agent: unregister", code: 5, call: rest("DELETE", (w) => `/agents/${w.agentA1}`, B) },
  { protocol: "rest", name: "another tenant's agent: route", code: 9, call: rest("POST", () => "/route", B, { capabilities: ["secret.a"] }) },
  { protocol: "rest", name: "passport of agent A1 for agent A2", code: 7, call: rest("POST", (w) => `/agents/${w.agentA2}/heartbeat`, (w) => w.passportA1, {}) },
  { protocol: "rest", name: "replayed passport after unregister", code: 5, call: rest("POST", (w) => `/agents/${w.revokedAgent}/heartbeat`, (w) => w.revokedPassport, {}) },
  { protocol: "rest", name: "passport used to register", code: 7, call: rest("POST", () => "/agents/register", (w) => w.passportA1, registerBody()) },
  { protocol: "connect", name: "no token", code: 16, call: connect("RegistryService/Register", none, () => registerBody()) },
  { protocol: "connect", name: "expired token", code: 16, call: connect("RegistryService/ListAgents", expired, () => ({})) },
  { protocol: "connect", name: "alg none", code: 16, call: connect("RegistryService/ListAgents", algNone, () => ({})) },
  { protocol: "connect", name: "another tenant's agent: get", code: 5, call: connect("RegistryService/GetAgent", B, (w) => ({ agentId: w.agentA1 })) },
  { protocol: "connect", name: "route without the route scope", code: 7, call: connect("RouterService/Route", readOnly, () => ({ capabilities: ["secret.a"] })) },
  { protocol: "grpc", name: "no token", code: 16, call: grpcCall("registry", "ListAgents", none, () => ({})) },
  { protocol: "grpc", name: "wrong audience", code: 16, call: grpcCall("registry", "ListAgents", wrongAud, () => ({})) },
  { protocol: "grpc", name: "tampered payload", code: 16, call: grpcCall("registry", "GetAgent", tampered, (w) => ({ agent_id: w.agentA1 })) },
  { protocol: "grpc", name: "another tenant's agent: unregister", code: 5, call: grpcCall("registry", "Unregister", B, (w) => ({ agent_id: w.agentA1 })) },
  { protocol: "grpc", name: "another tenant's agent: heartbeat", code: 5, call: grpcCall("registry", "Heartbeat", B, (w) => ({ agent_id: w.agentA1 })) },
  { protocol: "grpc", name: "passport of agent A1 to unregister A2", code: 7, call: grpcCall("registry", "Unregister", (w) => w.passportA1, (w) => ({ agent_id: w.agentA2 })) },
  { protocol: "grpc", name: "fleet health without agents:read", code: 7, call: grpcCall("health", "GetFleetHealth", routeOnly, () => ({})) },
  { protocol: "websocket", name: "no token", code: 16, call: ws("", async () => ({})) },
  { protocol: "websocket", name: "expired token as a subprotocol", code: 16, call: ws("", async (w) => ({ protocols: ["bearer", await expired(w)] })) },
  { protocol: "websocket", name: "token without events:read", code: 7, call: ws("", async (w) => ({ headers: auth(await routeOnly(w)) })) },
  { protocol: "websocket", name: "HS256 key confusion", code: 16, call: ws("", async (w) => ({ headers: auth(await hs256(w)) })) },
];

describe("hostile requests", () => {
  let t: TestApp;
  let w: World;
  let before: unknown;

  const snapshot = async () => {
    const a = await getJson(`${t.url}/agents?page_size=1000`, { headers: auth(w.tokenA) });
    const b = await getJson(`${t.url}/agents?page_size=1000`, { headers: auth(w.tokenB) });
    return { a: a.json.agents, b: b.json.agents };
  };

  beforeAll(async () => {
    const idp = await TestIdp.create();
    t = await startApp(idp.env());
    const tokenA = await idp.token("tenant-a", ALL_SCOPES);
    const tokenB = await idp.token("tenant-b", ALL_SCOPES);
    const reg = async (name: string, cap: string) =>
      (await postJson(`${t.url}/agents/register`, registerBody({ name, capabilities: [{ name: cap }] }), { headers: auth(tokenA) })).json;
    const a1 = await reg("a1", "secret.a");
    const a2 = await reg("a2", "secret.a");
    const gone = await reg("gone", "secret.a");
    await getJson(`${t.url}/agents/${gone.agent.id}`, { method: "DELETE", headers: auth(tokenA) });
    w = {
      url: t.url,
      port: t.port,
      c: grpcClients(t.port),
      tokenA,
      tokenB,
      idp,
      agentA1: a1.agent.id,
      agentA2: a2.agent.id,
      passportA1: a1.passport,
      revokedAgent: gone.agent.id,
      revokedPassport: gone.passport,
    };
    before = await snapshot();
  });
  afterAll(async () => {
    w.c.close();
    await t.close();
  });

  it("covers at least 25 cases over gRPC, Connect, REST and WebSocket", () => {
    expect(cases.length).toBeGreaterThanOrEqual(25);
    expect(new Set(cases.map((c) => c.protocol))).toEqual(new Set(["rest", "connect", "grpc", "websocket"]));
  });

  it.each(cases)("$protocol: $name → code $code", async ({ call, code }) => {
    expect(await call(w)).toBe(code);
  });

  it("changed nothing in the store", async () => {
    expect(await snapshot()).toEqual(before);
  });

  it("shows another tenant nothing in discovery, the tool catalog or the event feed", async () => {
    const found = await getJson(`${t.url}/agents/discover?capabilities=secret.a`, { headers: auth(w.tokenB) });
    expect(found.json.agents).toEqual([]);
    const tools = await getJson(`${t.url}/tools`, { headers: auth(w.tokenB) });
    expect(tools.json.tools).toEqual([]);
    const feedB = await openWs(w.port, "", w.tokenB);
    const feedA = await openWs(w.port, "", w.tokenA);
    await postJson(`${t.url}/agents/${w.agentA1}/heartbeat`, { status: "AGENT_STATUS_DEGRADED" }, { headers: auth(w.tokenA) });
    await feedA.events.waitFor(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(feedB.events.items).toEqual([]);
    feedA.close();
    feedB.close();
  });

  it("lets a passport heartbeat its own agent, and answers with a fresh one", async () => {
    const hb = await postJson(`${t.url}/agents/${w.agentA2}/heartbeat`, {}, { headers: { authorization: "", ...auth((await snapshotPassport(w, t))) } });
    expect(hb.status).toBe(200);
    expect(hb.json.passport).not.toBe("");
  });
});

async function snapshotPassport(w: World, t: TestApp): Promise<string> {
  // Re-registering with the same id keeps the registration, so its passport acts for A2.
  const again = await postJson(
    `${t.url}/agents/register`,
    registerBody({ agentId: w.agentA2, name: "a2", capabilities: [{ name: "secret.a" }] }),
    { headers: auth(w.tokenA) },
  );
  return again.json.passport;
}
