import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import {
  fromBinary,
  fromJson,
  getOption,
  toBinary,
  toJson,
  type DescMethod,
  type DescService,
  type JsonObject,
  type JsonValue,
} from "@bufbuild/protobuf";
import { ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/federation/v1/admin_service_pb.js";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { HealthService } from "../gen/federation/v1/health_service_pb.js";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { RouterService } from "../gen/federation/v1/router_service_pb.js";
import { http as httpRule } from "../gen/google/api/annotations_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ADMIN_TOKEN, registerBody, startApp, type TestApp } from "./support/app.js";

/**
 * Every RPC over every protocol through the one call pipeline: the same
 * answer (proto3 JSON, field by field, volatile fields set aside by name),
 * the same auth decisions, and exactly one outcome record per call with
 * the status in the protocol's own terms.
 */

type Protocol = "grpc fast path" | "grpc gzip" | "grpc-web" | "connect json" | "connect binary" | "rest";
const PROTOCOLS: Protocol[] = ["grpc fast path", "grpc gzip", "grpc-web", "connect json", "connect binary", "rest"];

/** What the outcome record should say for a code, per protocol. */
const connectName: Record<number, string> = { 0: "ok", 5: "not_found", 7: "permission_denied", 16: "unauthenticated" };
const restStatus: Record<number, number> = { 0: 200, 5: 404, 7: 403, 16: 401 };
const recordProtocol: Record<Protocol, string> = {
  "grpc fast path": "grpc",
  "grpc gzip": "grpc",
  "grpc-web": "grpc-web",
  "connect json": "connect",
  "connect binary": "connect",
  rest: "rest",
};
function expectedStatus(p: Protocol, code: number): number | string {
  if (p === "rest") return restStatus[code]!;
  if (p === "connect json" || p === "connect binary") return connectName[code]!;
  return code;
}

type Outcome = { ok: true; json: JsonValue } | { ok: false; code: number };
type Requirement = "public" | "agents:read" | "agents:write" | "agent" | "route" | "admin";

interface World {
  agentId: string;
  /** A task the admin's tenant routed (GetTask). */
  taskId: string;
  capability: string;
  /** Tenant "writes" (every scope): the mutating cases register and change their agents there. */
  writer: string;
  other: string;
  scoped: Record<string, string>;
}

interface RpcCase {
  readonly service: DescService;
  readonly method: string;
  readonly requirement: Requirement;
  /** The request; `fresh` is a new agent of tenant "writes" for mutating cases. */
  readonly request: (w: World, fresh: () => Promise<string>) => Promise<JsonObject> | JsonObject;
  /** Token for the call (admin by default). */
  readonly token?: (w: World) => string;
  /** Volatile fields: set aside before comparing answers. */
  readonly volatile?: readonly string[];
  /** An agent of the admin's tenant that another tenant must not see (code 5). */
  readonly otherTenantAgent?: boolean;
}

const CASES: RpcCase[] = [
  { service: RegistryService, method: "GetAgent", requirement: "agents:read", request: (w) => ({ agentId: w.agentId }), otherTenantAgent: true },
  { service: RegistryService, method: "ListAgents", requirement: "agents:read", request: () => ({ pageSize: 50 }) },
  { service: DirectoryService, method: "Discover", requirement: "agents:read", request: (w) => ({ capabilities: [w.capability] }) },
  { service: DirectoryService, method: "ListTools", requirement: "agents:read", request: () => ({ pageSize: 10 }) },
  { service: DirectoryService, method: "GetJwks", requirement: "public", request: () => ({}) },
  { service: DirectoryService, method: "GetManifest", requirement: "public", request: () => ({}), volatile: ["generatedAt", "signature"] },
  { service: RouterService, method: "Route", requirement: "route", request: (w) => ({ capabilities: [w.capability] }), volatile: ["routeId", "score", "capacity", "freshness", "reason", "taskId", "ticket"] },
  { service: RouterService, method: "GetTask", requirement: "route", request: (w) => ({ taskId: w.taskId }), otherTenantAgent: true },
  { service: HealthService, method: "Check", requirement: "public", request: () => ({}), volatile: ["uptime"] },
  { service: HealthService, method: "GetFleetHealth", requirement: "agents:read", request: () => ({}) },
  {
    service: RegistryService,
    method: "Register",
    requirement: "agents:write",
    request: () => registerBody({ name: "table-agent", capabilities: [{ name: "table.write" }] }) as JsonObject,
    token: (w) => w.writer,
    volatile: ["id", "passport", "passportExpiresAt", "registeredAt", "lastHeartbeatAt", "leaseExpiresAt", "revision"],
  },
  {
    service: RegistryService,
    method: "Heartbeat",
    requirement: "agent",
    request: async (_w, fresh) => ({ agentId: await fresh(), load: 0.25 }),
    token: (w) => w.writer,
    volatile: ["id", "passport", "passportExpiresAt", "registeredAt", "lastHeartbeatAt", "leaseExpiresAt"],
    otherTenantAgent: true,
  },
  {
    service: RegistryService,
    method: "Unregister",
    requirement: "agent",
    request: async (_w, fresh) => ({ agentId: await fresh() }),
    token: (w) => w.writer,
    otherTenantAgent: true,
  },
  {
    service: AdminService,
    method: "MintToken",
    requirement: "admin",
    request: () => ({ tenant: "minted", scopes: ["agents:read"], subject: "table" }),
    volatile: ["token", "expiresAt"],
  },
  {
    service: AdminService,
    method: "ShareAgent",
    requirement: "admin",
    request: async (_w, fresh) => ({ agentId: await fresh(), shared: false }),
    volatile: ["id", "registeredAt", "lastHeartbeatAt", "leaseExpiresAt", "revision"],
  },
  { service: Health, method: "Check", requirement: "public", request: () => ({ service: "" }) },
  // Last: it changes what GetJwks answers.
  { service: AdminService, method: "RotateSigningKey", requirement: "admin", request: () => ({}), volatile: ["keyId", "activeKeyIds"] },
];

/** The token that lacks what each requirement needs. */
const WRONG_SCOPE: Record<Exclude<Requirement, "public">, string> = {
  "agents:read": "route",
  "agents:write": "agents:read",
  agent: "agents:read",
  route: "agents:read",
  admin: "agents:read",
};

let requestSeq = 0;

/** One call over one protocol, with an x-request-id to find its outcome record by. */
async function callOver(t: TestApp, p: Protocol, method: DescMethod, request: JsonObject, token: string | undefined): Promise<{ outcome: Outcome; requestId: string }> {
  const requestId = `table-${process.pid}-${++requestSeq}`;
  const headers: Record<string, string> = { "x-request-id": requestId };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const input = fromJson(method.input, request);
  let outcome: Outcome;
  if (p === "grpc fast path") outcome = await grpcJs(t, method, toBinary(method.input, input), headers);
  else if (p === "rest") outcome = await rest(t, method, request, headers);
  else {
    const transport = transportFor(t, p);
    try {
      const res = await transport.unary(method as DescMethod & { methodKind: "unary" }, undefined, undefined, headers, input, undefined);
      outcome = { ok: true, json: toJson(method.output, res.message) };
    } catch (err) {
      outcome = { ok: false, code: ConnectError.from(err).code };
    }
  }
  return { outcome, requestId };
}

const transports = new Map<string, Transport>();
function transportFor(t: TestApp, p: Protocol): Transport {
  const key = `${t.url} ${p}`;
  let tr = transports.get(key);
  if (!tr) {
    if (p === "grpc gzip") {
      // Compressed gRPC is not the lean path: connect-node serves it.
      tr = createGrpcTransport({ baseUrl: t.url, sendCompression: compressionGzip, acceptCompression: [compressionGzip], compressMinBytes: 0 });
    } else if (p === "grpc-web") tr = createGrpcWebTransport({ baseUrl: t.url, httpVersion: "1.1" });
    else tr = createConnectTransport({ baseUrl: t.url, httpVersion: p === "connect json" ? "1.1" : "2", useBinaryFormat: p === "connect binary" });
    transports.set(key, tr);
  }
  return tr;
}

const grpcClients = new Map<string, grpc.Client>();
function grpcJs(t: TestApp, method: DescMethod, body: Uint8Array, headers: Record<string, string>): Promise<Outcome> {
  let client = grpcClients.get(t.url);
  if (!client) grpcClients.set(t.url, (client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure())));
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return new Promise((resolve) => {
    client!.makeUnaryRequest(
      `/${method.parent.typeName}/${method.name}`,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => fromBinary(method.output, b),
      body,
      md,
      (err, res) => resolve(err ? { ok: false, code: err.code } : { ok: true, json: toJson(method.output, res!) }),
    );
  });
}

/** A call through the method's google.api.http annotation, as curl would make it. */
async function rest(t: TestApp, method: DescMethod, request: JsonObject, headers: Record<string, string>): Promise<Outcome> {
  const rule = getOption(method, httpRule);
  const pattern = rule.pattern;
  if (pattern.case === undefined || pattern.case === "custom") throw new Error(`${method.name}: no REST binding`);
  const json = toJson(method.input, fromJson(method.input, request), { useProtoFieldName: true }) as JsonObject;
  const path = pattern.value.replace(/\{([\w.]+)(=[^}]*)?\}/g, (_, field: string) => {
    const v = String(json[field]);
    delete json[field];
    return encodeURIComponent(v);
  });
  let url = `${t.url}${path}`;
  let body: string | undefined;
  if (rule.body === "*") body = JSON.stringify(json);
  else {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(json)) for (const x of Array.isArray(v) ? v : [v]) q.append(k, String(x));
    if ([...q].length > 0) url += `?${q}`;
  }
  const res = await fetch(url, { method: pattern.case.toUpperCase(), body, headers: { ...headers, "content-type": "application/json" } });
  const parsed = (await res.json()) as JsonObject;
  if (res.status !== 200) return { ok: false, code: parsed.code as number };
  return { ok: true, json: toJson(method.output, fromJson(method.output, parsed)) };
}

/** The answer with volatile fields (by name, at any depth) replaced by their presence. */
function stable(json: JsonValue, volatile: readonly string[]): JsonValue {
  if (Array.isArray(json)) return json.map((v) => stable(v, volatile));
  if (json === null || typeof json !== "object") return json;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(json)) out[k] = volatile.includes(k) ? "<volatile>" : stable(v, volatile);
  return out;
}

/** Captures the service's one-line-per-call outcome records. */
function recorder() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: "info" },
    new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    }),
  );
  const recordsOf = async (requestId: string) => {
    // The record is written when the response has closed, which can be just after the client saw it.
    for (let i = 0; i < 50; i++) {
      const found = lines.filter((l) => l.msg === "request" && l.reqId === requestId);
      if (found.length > 0) {
        await new Promise((r) => setTimeout(r, 20));
        return lines.filter((l) => l.msg === "request" && l.reqId === requestId);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return [];
  };
  return { logger, recordsOf };
}

for (const fastPath of ["on", "off"] as const) {
  describe(`every RPC on every protocol, one pipeline (GRPC_FAST_PATH=${fastPath})`, () => {
    let t: TestApp;
    let w: World;
    const rec = recorder();

    beforeAll(async () => {
      // Heartbeats for one agent on six protocols within a second: above the default per-agent quota.
      t = await startApp({ GRPC_FAST_PATH: fastPath, RATE_LIMIT_HEARTBEAT: "1000" }, { logger: rec.logger });
      const admin = createClient(AdminService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
      const mint = async (tenant: string, scopes: string[]) =>
        (await admin.mintToken({ tenant, scopes, subject: `table-${tenant}` }, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).token;
      const registry = createClient(RegistryService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
      const capability = `table.cap.${fastPath}`;
      const { agent } = await registry.register(
        fromJson(RegistryService.method.register.input, registerBody({ capabilities: [{ name: capability }] }) as JsonObject),
        { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
      );
      const router = createClient(RouterService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
      const routed = await router.route({ capabilities: [capability] }, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      w = {
        agentId: agent!.id,
        taskId: routed.taskId,
        capability,
        writer: await mint("writes", ["agents:read", "agents:write", "route", "events:read"]),
        other: await mint("other", ["agents:read", "agents:write", "route", "events:read"]),
        scoped: {
          route: await mint("default", ["route"]),
          "agents:read": await mint("default", ["agents:read"]),
        },
      };
    });
    afterAll(async () => {
      for (const c of grpcClients.values()) c.close();
      grpcClients.clear();
      transports.clear();
      await t.close();
    });

    it(`takes ${fastPath === "on" ? "plain gRPC on the lean path" : "every call through connect-node"}`, () => {
      expect(t.app.server.fastPath === undefined).toBe(fastPath === "off");
    });

    for (const c of CASES) {
      const method = c.service.methods.find((m) => m.name === c.method)!;
      const hasRest = method.proto.options !== undefined && getOption(method, httpRule).pattern.case !== undefined;
      const protocols = PROTOCOLS.filter((p) => p !== "rest" || hasRest);
      const procedure = `${c.service.typeName}/${c.method}`;

      it(`${procedure}: the same answer on ${protocols.length} protocols, one outcome record each`, async () => {
        const fresh = async () => {
          const owner = c.token?.(w) ?? ADMIN_TOKEN;
          const res = await callOver(t, "connect json", RegistryService.method.register, registerBody({ capabilities: [{ name: "table.fresh" }] }) as JsonObject, owner);
          if (!res.outcome.ok) throw new Error(`register failed: ${res.outcome.code}`);
          return (res.outcome.json as { agent: { id: string } }).agent.id;
        };
        const answers: JsonValue[] = [];
        for (const p of protocols) {
          const token = c.token?.(w) ?? ADMIN_TOKEN;
          const { outcome, requestId } = await callOver(t, p, method, await c.request(w, fresh), token);
          expect(outcome, `${procedure} over ${p}`).toMatchObject({ ok: true });
          answers.push(stable((outcome as { json: JsonValue }).json, c.volatile ?? []));
          const records = await rec.recordsOf(requestId);
          expect(records, `${procedure} over ${p}: one record`).toHaveLength(1);
          expect(records[0], `${procedure} over ${p}`).toMatchObject({
            protocol: recordProtocol[p],
            method: procedure,
            status: expectedStatus(p, 0),
            tenant: c.token ? "writes" : "default",
          });
        }
        for (let i = 1; i < answers.length; i++) expect(answers[i], `${protocols[i]} vs ${protocols[0]}`).toEqual(answers[0]);
      });

      it(`${procedure}: the same auth decisions on every protocol`, async () => {
        const fresh = async () => w.agentId;
        const decisions: { name: string; token: string | undefined; code: number }[] = [];
        if (c.requirement === "public") decisions.push({ name: "no token", token: undefined, code: 0 });
        else {
          decisions.push({ name: "no token", token: undefined, code: 16 });
          decisions.push({ name: "wrong scope", token: w.scoped[WRONG_SCOPE[c.requirement]] ?? (await mintScoped(t, WRONG_SCOPE[c.requirement])), code: 7 });
        }
        if (c.otherTenantAgent) decisions.push({ name: "another tenant's agent", token: w.other, code: 5 });
        for (const d of decisions) {
          for (const p of protocols) {
            // Read-only requests for the refusals: the writes must never happen.
            const request = await c.request(w, fresh);
            const { outcome, requestId } = await callOver(t, p, method, request, d.token);
            const code = outcome.ok ? 0 : outcome.code;
            expect(code, `${procedure} over ${p}: ${d.name}`).toBe(d.code);
            const records = await rec.recordsOf(requestId);
            expect(records, `${procedure} over ${p}: ${d.name}: one record`).toHaveLength(1);
            expect(records[0]!.status, `${procedure} over ${p}: ${d.name}`).toBe(expectedStatus(p, d.code));
          }
        }
        // The admin's agent is still there, unchanged by the refused calls.
        const still = await callOver(t, "connect json", RegistryService.method.getAgent, { agentId: w.agentId }, ADMIN_TOKEN);
        expect(still.outcome.ok).toBe(true);
      });
    }
  });
}

async function mintScoped(t: TestApp, scope: string): Promise<string> {
  const admin = createClient(AdminService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
  return (await admin.mintToken({ tenant: "default", scopes: [scope], subject: "scoped" }, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).token;
}


for (const fastPath of ["on", "off"] as const) {
  describe(`the pipeline at the edges: streams, unknown RPCs, the route table (GRPC_FAST_PATH=${fastPath})`, () => {
    let t: TestApp;
    const rec = recorder();
    let agentId = "";
    beforeAll(async () => {
      t = await startApp({ GRPC_FAST_PATH: fastPath }, { logger: rec.logger });
      const registry = createClient(RegistryService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
      const res = await registry.register(fromJson(RegistryService.method.register.input, registerBody() as JsonObject), {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      agentId = res.agent!.id;
    });
    afterAll(async () => {
      for (const c of grpcClients.values()) c.close();
      grpcClients.clear();
      transports.clear();
      await t.close();
    });

    /** The first event of WatchEvents(after_id 0, this agent) over one protocol, then the client goes away. */
    async function firstEvent(p: Protocol, requestId: string): Promise<JsonValue> {
      const method = HealthService.method.watchEvents;
      const request = { types: ["agent.registered"], agentId, afterId: "0" };
      const headers = { authorization: `Bearer ${ADMIN_TOKEN}`, "x-request-id": requestId };
      if (p === "grpc fast path") {
        let client = grpcClients.get(t.url);
        if (!client) grpcClients.set(t.url, (client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure())));
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(headers)) md.set(k, v);
        const call = client.makeServerStreamRequest(
          `/${HealthService.typeName}/WatchEvents`,
          (b: Uint8Array) => Buffer.from(b),
          (b: Buffer) => fromBinary(method.output, b),
          toBinary(method.input, fromJson(method.input, request)),
          md,
        );
        call.on("error", () => undefined);
        const first = await new Promise<JsonValue>((resolve) => call.once("data", (m) => resolve(toJson(method.output, m))));
        call.cancel();
        return first;
      }
      if (p === "rest") {
        const abort = new AbortController();
        const res = await fetch(`${t.url}/events?types=agent.registered&agent_id=${agentId}&after_id=0`, { headers, signal: abort.signal });
        const reader = res.body!.getReader();
        let text = "";
        while (!text.includes("\n")) text += new TextDecoder().decode((await reader.read()).value);
        abort.abort();
        return toJson(method.output, fromJson(method.output, (JSON.parse(text.split("\n")[0]!) as { result: JsonObject }).result));
      }
      const abort = new AbortController();
      const health = createClient(HealthService, transportFor(t, p));
      for await (const m of health.watchEvents(fromJson(method.input, request), { headers, signal: abort.signal })) {
        abort.abort();
        return toJson(method.output, m);
      }
      throw new Error("stream ended without an event");
    }

    it("WatchEvents replays the same first event on every protocol, one outcome record each", async () => {
      const events: JsonValue[] = [];
      for (const p of PROTOCOLS) {
        const requestId = `watch-${p.replace(/\W/g, "")}-${++requestSeq}`;
        events.push(await firstEvent(p, requestId));
        const records = await rec.recordsOf(requestId);
        expect(records, p).toHaveLength(1);
        expect(records[0], p).toMatchObject({ protocol: recordProtocol[p], method: "federation.v1.HealthService/WatchEvents", tenant: "default" });
      }
      expect((events[0] as { event: { agentId: string; type: string } }).event).toMatchObject({ agentId, type: "agent.registered" });
      for (let i = 1; i < events.length; i++) expect(events[i], PROTOCOLS[i]).toEqual(events[0]);
    });

    it("answers an unknown RPC with UNIMPLEMENTED in the caller's own protocol, and records it", async () => {
      const path = "/federation.v1.RegistryService/NoSuchMethod";
      const post = (contentType: string, requestId: string, body: Uint8Array = new Uint8Array(5)) =>
        fetch(`${t.url}${path}`, { method: "POST", body, headers: { "content-type": contentType, "x-request-id": requestId, "connect-protocol-version": "1" } });

      const connect = await post("application/json", "unknown-connect", new TextEncoder().encode("{}"));
      expect(connect.status).toBe(404);
      expect(await connect.json()).toEqual({ code: "unimplemented", message: "unknown method federation.v1.RegistryService/NoSuchMethod" });
      expect((await rec.recordsOf("unknown-connect"))[0]).toMatchObject({ protocol: "connect", status: "unimplemented" });

      const stream = await post("application/connect+json", "unknown-connect-stream");
      expect(stream.status).toBe(200);
      const bytes = Buffer.from(await stream.arrayBuffer());
      expect(bytes[0]).toBe(2); // end-stream flag
      expect(JSON.parse(bytes.subarray(5).toString())).toEqual({ error: { code: "unimplemented", message: "unknown method federation.v1.RegistryService/NoSuchMethod" } });

      const web = await post("application/grpc-web+proto", "unknown-grpc-web");
      expect(web.status).toBe(200);
      expect(web.headers.get("grpc-status")).toBe("12");
      expect((await rec.recordsOf("unknown-grpc-web"))[0]).toMatchObject({ protocol: "grpc-web", status: 12 });

      // REST paths keep REST's answers.
      const rest = await fetch(`${t.url}/no/such/route`, { headers: { "x-request-id": "unknown-rest" } });
      expect(rest.status).toBe(404);
      expect((await rec.recordsOf("unknown-rest"))[0]).toMatchObject({ protocol: "rest", status: 404 });
    });

    it("answers unknown RPCs with grpc-status 12 to grpc-js, on the lean path or not", async () => {
      const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
      const md = new grpc.Metadata();
      md.set("x-request-id", "unknown-grpc");
      const err = await new Promise<grpc.ServiceError>((resolve) =>
        client.makeUnaryRequest("/federation.v1.NoSuchService/Call", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), md, (e) => resolve(e!)),
      );
      client.close();
      expect(err.code).toBe(grpc.status.UNIMPLEMENTED);
      expect(err.details).toBe("unknown method federation.v1.NoSuchService/Call");
      expect((await rec.recordsOf("unknown-grpc"))[0]).toMatchObject({ protocol: "grpc", status: 12 });
    });

    it("runs /ws through the pipeline: one record per connection, its status the handshake's", async () => {
      const { default: WebSocket } = await import("ws");
      const ok = new WebSocket(`ws://127.0.0.1:${t.port}/ws`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "x-request-id": "ws-ok" } });
      await new Promise((r, j) => (ok.once("open", r), ok.once("error", j)));
      ok.close();
      expect((await rec.recordsOf("ws-ok"))[0]).toMatchObject({ protocol: "ws", method: "/ws", status: 101, tenant: "default" });

      const refused = new WebSocket(`ws://127.0.0.1:${t.port}/ws`, { headers: { "x-request-id": "ws-refused" } });
      const status = await new Promise<number>((resolve) => refused.once("unexpected-response", (_req, res) => resolve(res.statusCode!)));
      expect(status).toBe(401);
      expect((await rec.recordsOf("ws-refused"))[0]).toMatchObject({ protocol: "ws", method: "/ws", status: 401 });

      // The same route without an upgrade: admitted like any call, then told what it is.
      const plain = await fetch(`${t.url}/ws`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "x-request-id": "ws-plain" } });
      expect(plain.status).toBe(400);
      expect(((await plain.json()) as { message: string }).message).toMatch(/WebSocket/);
      expect((await rec.recordsOf("ws-plain"))[0]).toMatchObject({ protocol: "http", method: "/ws", status: 400 });
      const anonymous = await fetch(`${t.url}/ws`);
      expect(anonymous.status).toBe(401);
    });
  });
}
