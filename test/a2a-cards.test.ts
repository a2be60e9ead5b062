import http from "node:http";
import type { AddressInfo } from "node:net";
import { AGENT_CARD_PATH, AgentCard } from "@a2a-js/sdk";
import { DefaultAgentCardResolver } from "@a2a-js/sdk/client";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { systemLookup, type Lookup } from "../src/dispatch/address-guard.js";
import { ADMIN_TOKEN, AUTH, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

/**
 * A2A agent cards (issue 18, item 5): the federation's own card at
 * /.well-known/agent-card.json, registered agents exported as cards
 * (GetAgentCard), and agents registered from a card URL (RegisterFromCard)
 * fetched through the dispatch SSRF guard. Cards are served by a tiny HTTP
 * server on loopback; host names resolve through the injected lookup, so
 * "metadata.test" is 169.254.169.254 without touching DNS.
 */

const lookup: Lookup = async (host) => {
  if (host === "card.test") return [{ address: "127.0.0.1", family: 4 }];
  if (host === "metadata.test") return [{ address: "169.254.169.254", family: 4 }];
  // One good answer and one forbidden: every answer is checked, so this is refused.
  if (host === "rebind.test") return [{ address: "127.0.0.1", family: 4 }, { address: "169.254.169.254", family: 4 }];
  return systemLookup(host);
};

/** The card server: what each path answers, and every request it received. */
const served = new Map<string, (res: http.ServerResponse) => void>();
const received: string[] = [];
let cardServer: http.Server;
let cardPort = 0;
let t: TestApp;
/** Loopback not allowed, a fixed public URL. */
let strict: TestApp;

const cardUrl = (path: string, host = "card.test") => `http://${host}:${cardPort}${path}`;

function serveJson(path: string, body: unknown): void {
  served.set(path, (res) => {
    res.setHeader("content-type", "application/json");
    res.end(typeof body === "string" ? body : JSON.stringify(body));
  });
}

/** The spec's required fields (A2A 1.0 a2a.proto, field_behavior REQUIRED), checked on the JSON form. */
function requiredFieldProblems(card: any): string[] {
  const problems: string[] = [];
  const need = (cond: boolean, what: string) => cond || problems.push(what);
  for (const f of ["name", "description", "version"]) need(typeof card[f] === "string" && card[f] !== "", f);
  need(Array.isArray(card.supportedInterfaces) && card.supportedInterfaces.length > 0, "supportedInterfaces");
  (card.supportedInterfaces ?? []).forEach((i: any, n: number) => {
    for (const f of ["url", "protocolBinding", "protocolVersion"]) need(typeof i[f] === "string" && i[f] !== "", `supportedInterfaces[${n}].${f}`);
  });
  need(typeof card.capabilities === "object" && card.capabilities !== null, "capabilities");
  for (const f of ["defaultInputModes", "defaultOutputModes", "skills"]) need(Array.isArray(card[f]), f);
  (card.skills ?? []).forEach((s: any, n: number) => {
    for (const f of ["id", "name", "description"]) need(typeof s[f] === "string" && s[f] !== "", `skills[${n}].${f}`);
    need(Array.isArray(s.tags), `skills[${n}].tags`);
  });
  return problems;
}

async function registerFromCard(body: Record<string, unknown>, app = t) {
  return postJson(`${app.url}/agents/register-from-card`, body);
}

beforeAll(async () => {
  cardServer = http.createServer((req, res) => {
    received.push(req.url ?? "");
    const handler = served.get(req.url ?? "");
    if (handler) handler(res);
    else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => cardServer.listen(0, "127.0.0.1", r));
  cardPort = (cardServer.address() as AddressInfo).port;
  t = await startApp({ DISPATCH_ALLOW_LOOPBACK: "true", FEDERATION_NAME: "fed-test", A2A_CARD_FETCH_TIMEOUT: "1s" }, { dispatchLookup: lookup });
  strict = await startApp({ FEDERATION_PUBLIC_URL: "https://fed.example.com/" }, { dispatchLookup: lookup });
});

afterAll(async () => {
  await Promise.all([t?.close(), strict?.close()]);
  cardServer?.closeAllConnections();
  await new Promise((r) => cardServer?.close(r));
});

describe("the federation's own card", () => {
  it("is served publicly at the well-known path, with cache headers, in the SDK's AgentCard shape", async () => {
    const res = await fetch(`${t.url}/${AGENT_CARD_PATH}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(res.headers.get("cache-control")).toMatch(/max-age=\d+/);
    const etag = res.headers.get("etag");
    expect(etag).toMatch(/^"/);
    const json = (await res.json()) as Record<string, any>;
    expect(requiredFieldProblems(json)).toEqual([]);
    // The SDK reads it back to the same JSON: nothing outside the AgentCard type, nothing lost.
    const card: AgentCard = AgentCard.fromJSON(json);
    expect(AgentCard.toJSON(card)).toEqual(json);

    expect(card.name).toBe("fed-test");
    expect(card.supportedInterfaces.map((i) => [i.url, i.protocolBinding])).toEqual([
      [t.url, "GRPC"],
      [t.url, "HTTP+JSON"],
    ]);
    expect(card.capabilities?.streaming).toBe(true);
    expect(card.securitySchemes.bearer?.scheme).toEqual({
      $case: "httpAuthSecurityScheme",
      value: expect.objectContaining({ scheme: "Bearer", bearerFormat: "JWT" }),
    });
    expect(card.securityRequirements[0]?.schemes.bearer).toBeDefined();
    expect(card.skills.map((s) => s.id)).toEqual(expect.arrayContaining(["discover", "route", "search-tools", "register", "watch-events"]));
    expect(card.skills.find((s) => s.id === "route")?.securityRequirements[0]?.schemes.bearer?.list).toEqual(["route"]);

    const again = await fetch(`${t.url}/${AGENT_CARD_PATH}`, { headers: { "if-none-match": etag! } });
    expect(again.status).toBe(304);
  });

  it("is what the SDK's own card resolver reads from the service", async () => {
    const card = await new DefaultAgentCardResolver().resolve(t.url);
    expect(card.name).toBe("fed-test");
    expect(card.supportedInterfaces[0]?.url).toBe(t.url);
  });

  it("names FEDERATION_PUBLIC_URL when set, whatever the Host, and is then publicly cacheable", async () => {
    const res = await fetch(`${strict.url}/${AGENT_CARD_PATH}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toMatch(/^public, max-age=\d+$/);
    const card = AgentCard.fromJSON(await res.json());
    expect(card.supportedInterfaces.map((i) => i.url)).toEqual(["https://fed.example.com", "https://fed.example.com"]);
  });

  it("answers only GET and HEAD", async () => {
    const res = await fetch(`${t.url}/${AGENT_CARD_PATH}`, { method: "POST", body: "{}" });
    expect(res.status).toBe(405);
    const head = await fetch(`${t.url}/${AGENT_CARD_PATH}`, { method: "HEAD" });
    expect(head.status).toBe(200);
  });
});

describe("registered agents as cards", () => {
  it("round-trips: export a card, serve it, register from it, Discover finds an equivalent agent", async () => {
    const original = registerBody({
      name: "card-coder",
      version: "2.1.0",
      endpoint: { url: "http://127.0.0.1:50999/tasks", transport: "TRANSPORT_HTTP_JSON" },
      capabilities: [
        { name: "card.roundtrip", tags: ["python", "fast"] },
        { name: "card.review", tags: [] },
      ],
      tools: [{ name: "write_code", description: "Writes code", inputSchema: { type: "object" } }],
    });
    const reg = await postJson(`${t.url}/agents/register`, original);
    expect(reg.status, JSON.stringify(reg.json)).toBe(200);
    const id = reg.json.agent.id as string;

    // REST export.
    const rest = await getJson(`${t.url}/agents/${id}/card`);
    expect(rest.status, JSON.stringify(rest.json)).toBe(200);
    const exported = rest.json.card;
    expect(requiredFieldProblems(exported)).toEqual([]);
    expect(AgentCard.toJSON(AgentCard.fromJSON(exported))).toEqual(exported);
    expect(exported.supportedInterfaces[0]).toMatchObject({ url: "http://127.0.0.1:50999/tasks", protocolBinding: "HTTP+JSON" });
    expect(exported.skills).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: "card.roundtrip", tags: ["python", "fast"] }),
        // No tags of its own: its name (the spec requires tags; read back as none).
        expect.objectContaining({ id: "card.review", tags: ["card.review"] }),
        expect.objectContaining({ id: "tool:write_code", name: "write_code", description: "Writes code" }),
      ]),
    );

    // gRPC export (our generated client over the gRPC protocol): the same card.
    const grpc = createClient(RegistryService, createGrpcTransport({ baseUrl: t.url, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${ADMIN_TOKEN}`), next(req))] }));
    const viaGrpc = await grpc.getAgentCard({ agentId: id });
    expect(viaGrpc.card).toEqual(exported);

    // The original leaves; the card brings back an equivalent agent under a new id.
    const gone = await fetch(`${t.url}/agents/${id}`, { method: "DELETE", headers: AUTH });
    expect(gone.status).toBe(200);
    serveJson("/roundtrip/agent-card.json", exported);
    const before = received.length;
    const fromCard = await registerFromCard({ cardUrl: cardUrl("/roundtrip/agent-card.json"), leaseTtl: "45s" });
    expect(fromCard.status, JSON.stringify(fromCard.json)).toBe(200);
    expect(received.slice(before)).toEqual(["/roundtrip/agent-card.json"]);
    expect(fromCard.json.passport).toMatch(/^ey/);
    expect(fromCard.json.leaseTtl).toBe("45s");
    const newId = fromCard.json.agent.id as string;
    expect(newId).not.toBe(id);

    const found = await getJson(`${t.url}/agents/discover?capabilities=card.roundtrip`);
    expect(found.status).toBe(200);
    expect(found.json.agents).toHaveLength(1);
    const agent = found.json.agents[0];
    expect(agent.id).toBe(newId);
    expect(agent).toMatchObject({
      name: "card-coder",
      version: "2.1.0",
      endpoint: { url: "http://127.0.0.1:50999/tasks", transport: "TRANSPORT_HTTP_JSON" },
      capabilities: [
        { name: "card.roundtrip", tags: ["python", "fast"] },
        { name: "card.review", tags: [] },
      ],
      labels: { "a2a.card_url": cardUrl("/roundtrip/agent-card.json") },
    });
    expect(agent.tools.map((x: any) => [x.name, x.description])).toEqual([["write_code", "Writes code"]]);

    // Register again over gRPC with the id: the same agent, updated, and a name override.
    const again = await grpc.registerFromCard({ cardUrl: cardUrl("/roundtrip/agent-card.json"), agentId: newId, name: "card-coder-2" });
    expect(again.agent?.id).toBe(newId);
    expect(again.agent?.name).toBe("card-coder-2");
    expect(again.passport).not.toBe("");
  });

  it("reads a v0.3 card (url + preferredTransport)", async () => {
    serveJson("/v03.json", {
      protocolVersion: "0.3.0",
      name: "legacy",
      description: "A v0.3 agent",
      url: "grpc://127.0.0.1:50998",
      preferredTransport: "GRPC",
      version: "0.3.1",
      capabilities: {},
      defaultInputModes: ["text/plain"],
      defaultOutputModes: ["text/plain"],
      skills: [{ id: "legacy.echo", name: "Echo", description: "Echoes", tags: ["echo"] }],
    });
    const r = await registerFromCard({ cardUrl: cardUrl("/v03.json") });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.agent.endpoint).toEqual({ url: "grpc://127.0.0.1:50998", transport: "TRANSPORT_GRPC" });
    expect(r.json.agent.capabilities).toEqual([{ name: "legacy.echo", tags: ["echo"] }]);
  });

  it("exports NOT_FOUND for an unknown agent, and needs agents:read", async () => {
    expect((await getJson(`${t.url}/agents/nope/card`)).status).toBe(404);
    const id = (await postJson(`${t.url}/agents/register`, registerBody({ name: "private-one" }))).json.agent.id;
    expect((await fetch(`${t.url}/agents/${id}/card`)).status).toBe(401);
  });
});

describe("RegisterFromCard refuses", () => {
  it("a card URL at the cloud metadata address, before sending anything (FAILED_PRECONDITION)", async () => {
    for (const url of ["http://169.254.169.254/latest/meta-data/agent-card.json", cardUrl("/x", "metadata.test"), cardUrl("/x", "rebind.test")]) {
      const before = received.length;
      const r = await registerFromCard({ cardUrl: url });
      expect(r.status, url).toBe(400);
      expect(r.json.code, url).toBe(Code.FailedPrecondition);
      expect(r.json.message, url).toMatch(/^card_url: .*cloud metadata/);
      expect(received.length, url).toBe(before);
    }
  });

  it("a loopback card URL unless DISPATCH_ALLOW_LOOPBACK=true", async () => {
    serveJson("/ok.json", { unused: true });
    const before = received.length;
    const r = await registerFromCard({ cardUrl: cardUrl("/ok.json") }, strict);
    expect(r.json.code).toBe(Code.FailedPrecondition);
    expect(r.json.message).toContain("DISPATCH_ALLOW_LOOPBACK");
    expect(received.length).toBe(before);
  });

  it("a redirect, without following it", async () => {
    served.set("/moved", (res) => {
      res.statusCode = 302;
      res.setHeader("location", "/target.json");
      res.end();
    });
    serveJson("/target.json", { unused: true });
    const before = received.length;
    const r = await registerFromCard({ cardUrl: cardUrl("/moved") });
    expect(r.json.code).toBe(Code.FailedPrecondition);
    expect(r.json.message).toMatch(/^card_url: .*302/);
    expect(received.slice(before)).toEqual(["/moved"]);
  });

  it("without credentials, before fetching", async () => {
    const before = received.length;
    const res = await fetch(`${t.url}/agents/register-from-card`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ cardUrl: cardUrl("/ok.json") }),
    });
    expect(res.status).toBe(401);
    expect(received.length).toBe(before);
  });

  it("a card too large, too slow, or not there", async () => {
    served.set("/huge.json", (res) => res.end(JSON.stringify({ name: "x".repeat(300 * 1024) })));
    const huge = await registerFromCard({ cardUrl: cardUrl("/huge.json") });
    expect(huge.json.code).toBe(Code.FailedPrecondition);
    expect(huge.json.message).toContain("A2A_CARD_MAX_BYTES");

    served.set("/slow.json", () => {}); // never answers
    const started = Date.now();
    const slow = await registerFromCard({ cardUrl: cardUrl("/slow.json") });
    expect(slow.json.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(5_000);

    const missing = await registerFromCard({ cardUrl: cardUrl("/missing.json") });
    expect(missing.json.code).toBe(Code.FailedPrecondition);
    expect(missing.json.message).toContain("HTTP 404");
  });

  it("a card_url that is not http(s), before fetching", async () => {
    const r = await registerFromCard({ cardUrl: "grpc://card.test/agent-card.json" });
    expect(r.json.code).toBe(Code.InvalidArgument);
    expect(r.json.message).toMatch(/^card_url: /);
  });

  const good = () => ({
    name: "shaped",
    description: "A well-formed card",
    supportedInterfaces: [{ url: "http://127.0.0.1:50997", protocolBinding: "HTTP+JSON", protocolVersion: "1.0" }],
    version: "1.0.0",
    capabilities: {},
    defaultInputModes: ["application/json"],
    defaultOutputModes: ["application/json"],
    skills: [{ id: "shape.check", name: "Check", description: "Checks", tags: ["x"] }],
  });
  const malformed: Array<[string, (c: any) => unknown, RegExp]> = [
    ["missing skills", (c) => (delete c.skills, c), /^card\.skills: is required/],
    ["a skill without an id", (c) => (delete c.skills[0].id, c), /^card\.skills\[0\]\.id: is required/],
    ["a skill id that is no capability name", (c) => ((c.skills[0].id = "has space"), c), /^card\.skills\[0\]\.id: /],
    ["a tag that is not a string", (c) => ((c.skills[0].tags = ["ok", 7]), c), /^card\.skills\[0\]\.tags\[1\]: must be a string/],
    ["only a JSONRPC interface", (c) => ((c.supportedInterfaces[0].protocolBinding = "JSONRPC"), c), /^card\.supportedInterfaces: no interface .*JSONRPC/],
    ["an interface URL of another scheme", (c) => ((c.supportedInterfaces[0].url = "ftp://x"), c), /^card\.supportedInterfaces\[0\]\.url: scheme/],
    ["a version that is a number", (c) => ((c.version = 1), c), /^card\.version: must be a string/],
    ["a human name the registry cannot take", (c) => ((c.name = "Recipe Agent"), c), /^card\.name: .*set name/],
    ["missing description", (c) => (delete c.description, c), /^card\.description: is required/],
    ["no card object at all", () => [1, 2], /^card: must be an object/],
    ["not JSON", () => "<html>", /^card: is not JSON/],
  ];
  for (const [what, mutate, expected] of malformed) {
    it(`a malformed card (${what}) with INVALID_ARGUMENT naming the field`, async () => {
      const path = `/bad/${encodeURIComponent(what)}.json`;
      serveJson(path, mutate(good()));
      const r = await registerFromCard({ cardUrl: cardUrl(path) });
      expect(r.status, JSON.stringify(r.json)).toBe(400);
      expect(r.json.code).toBe(Code.InvalidArgument);
      expect(r.json.message).toMatch(expected);
    });
  }

  it("the well-formed card those are made from (so each refusal is the mutation's)", async () => {
    serveJson("/good.json", good());
    const r = await registerFromCard({ cardUrl: cardUrl("/good.json") });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    // A card's name is kept unless overridden; an override that is not a valid name is the request's fault.
    const bad = await registerFromCard({ cardUrl: cardUrl("/good.json"), name: "no spaces allowed" });
    expect(bad.json.message).toMatch(/^name: /);
  });

  it("over gRPC with the same codes", async () => {
    const grpc = createClient(RegistryService, createGrpcTransport({ baseUrl: t.url, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${ADMIN_TOKEN}`), next(req))] }));
    const err = await grpc.registerFromCard({ cardUrl: cardUrl("/x", "metadata.test") }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
  });
});
