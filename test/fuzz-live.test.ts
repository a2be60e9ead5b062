import http from "node:http";
import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { fromJson, getOption, toBinary, type DescMethod, type JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/federation/v1/admin_service_pb.js";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { HealthService } from "../gen/federation/v1/health_service_pb.js";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { RouterService } from "../gen/federation/v1/router_service_pb.js";
import { http as httpRule } from "../gen/google/api/annotations_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ADMIN_TOKEN, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { CONNECT_CODE, fcParams, fuzzSeed, SERVER_ERROR_CODES, Violations } from "./support/fuzz.js";

/**
 * Against a live server (startApp), on every protocol: valid requests of
 * each unary RPC, mutated (bytes flipped, truncated, extended; JSON
 * fields of the wrong type, huge and deep values, unicode; odd headers),
 * and arbitrary gRPC frames on the lean path. Every answer is a client
 * error or a success — never UNKNOWN / INTERNAL / DATA_LOSS, never a 5xx
 * (UNAVAILABLE only as the router's "no healthy agent"), never silence;
 * a refused Register writes nothing; /health answers afterwards.
 */

const seed = fuzzSeed("fuzz-live");
const RUNS_PER_PROTOCOL = 250;
const MAX_BODY_BYTES = 256 * 1024;
const ANSWER_TIMEOUT_MS = 5_000;

let t: TestApp;
let agentId: string;
let session: http2.ClientHttp2Session;
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

beforeAll(async () => {
  t = await startApp({ RATE_LIMIT_TENANT: "10000000", RATE_LIMIT_HEARTBEAT: "10000", MAX_BODY_BYTES: String(MAX_BODY_BYTES) });
  const r = await postJson(`${t.url}/agents/register`, registerBody({ name: "fuzz-base", capabilities: [{ name: "fuzz.cap" }] }));
  expect(r.status).toBe(200);
  agentId = r.json.agent.id;
  session = http2.connect(t.url);
  session.on("error", () => {});
});
afterAll(async () => {
  session?.destroy();
  agent.destroy();
  await t?.close();
});

function h2(): http2.ClientHttp2Session {
  if (session.destroyed || session.closed) {
    session = http2.connect(t.url);
    session.on("error", () => {});
  }
  return session;
}

// --- the RPCs and their valid requests ---------------------------------------------

interface Rpc {
  readonly method: DescMethod;
  readonly request: () => JsonObject;
}

const RPCS: Rpc[] = [
  { method: RegistryService.method.register, request: () => registerBody({ name: "fuzz-agent" }) as JsonObject },
  { method: RegistryService.method.heartbeat, request: () => ({ agentId, load: 0.25 }) },
  { method: RegistryService.method.getAgent, request: () => ({ agentId }) },
  { method: RegistryService.method.listAgents, request: () => ({ pageSize: 5 }) },
  // A valid id that names no agent: a mutation must never remove the fixtures.
  { method: RegistryService.method.unregister, request: () => ({ agentId: "no-such-agent" }) },
  { method: DirectoryService.method.discover, request: () => ({ capabilities: ["fuzz.cap"] }) },
  { method: DirectoryService.method.listTools, request: () => ({ pageSize: 5 }) },
  { method: DirectoryService.method.getJwks, request: () => ({}) },
  { method: DirectoryService.method.getManifest, request: () => ({ pageSize: 2 }) },
  { method: RouterService.method.route, request: () => ({ capabilities: ["fuzz.cap"], task: { prompt: "hi" } }) },
  { method: HealthService.method.check, request: () => ({}) },
  { method: HealthService.method.getFleetHealth, request: () => ({}) },
  { method: AdminService.method.mintToken, request: () => ({ tenant: "fuzz", scopes: ["agents:read"], subject: "fuzz" }) },
  { method: AdminService.method.shareAgent, request: () => ({ agentId, shared: false }) },
  { method: Health.method.check, request: () => ({ service: "" }) },
];

const pathOf = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;

// --- mutations ---------------------------------------------------------------------

/**
 * google.protobuf.Struct nested `depth` levels in the binary form (Struct →
 * fields entry → Value.struct_value → Struct …), written in one pass.
 */
function deepStructBytes(depth: number): Buffer {
  // Sizes inside out: struct[d] is the encoded Struct of depth d.
  const struct = [0];
  const value: number[] = [0];
  const entry: number[] = [0];
  for (let d = 1; d <= depth; d++) {
    value[d] = 1 + varintLength(struct[d - 1]!) + struct[d - 1]!;
    entry[d] = 3 + 1 + varintLength(value[d]!) + value[d]!;
    struct[d] = 1 + varintLength(entry[d]!) + entry[d]!;
  }
  const out = Buffer.alloc(struct[depth]!);
  let at = 0;
  const byte = (b: number) => (out[at++] = b);
  const varint = (n: number) => {
    while (n > 127) {
      byte((n & 127) | 128);
      n = Math.floor(n / 128);
    }
    byte(n);
  };
  for (let d = depth; d >= 1; d--) {
    byte(0x0a); // Struct.fields = 1
    varint(entry[d]!);
    byte(0x0a); // entry.key = 1
    byte(1);
    byte(0x6b); // "k"
    byte(0x12); // entry.value = 2
    varint(value[d]!);
    byte(0x2a); // Value.struct_value = 5
    varint(struct[d - 1]!);
  }
  return out;
}

function varintLength(n: number): number {
  let len = 1;
  while (n > 127) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

type ByteMutation =
  | { kind: "flip"; at: number[]; xor: number }
  | { kind: "truncate"; keep: number }
  | { kind: "extend"; extra: Uint8Array }
  | { kind: "random"; bytes: Uint8Array }
  | { kind: "deepStruct"; depth: number }
  | { kind: "none" };

const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("flip" as const), at: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), xor: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("truncate" as const), keep: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("extend" as const), extra: fc.uint8Array({ minLength: 1, maxLength: 32 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("random" as const), bytes: fc.uint8Array({ maxLength: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("deepStruct" as const), depth: fc.oneof(fc.integer({ min: 50, max: 3000 }), fc.integer({ min: 3000, max: 15_000 })) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "none" as const }) },
);

function mutateBytes(valid: Uint8Array, m: ByteMutation): Buffer {
  const b = Buffer.from(valid);
  switch (m.kind) {
    case "flip":
      if (b.length === 0) return Buffer.from([m.xor]);
      for (const i of m.at) b[i % b.length]! ^= m.xor;
      return b;
    case "truncate":
      return b.subarray(0, b.length === 0 ? 0 : m.keep % b.length);
    case "extend":
      return Buffer.concat([b, m.extra]);
    case "random":
      return Buffer.from(m.bytes);
    case "deepStruct": {
      // Appended as the message's Struct field (RouteRequest.task = 2) or as an unknown field 2 elsewhere.
      const s = deepStructBytes(m.depth);
      return Buffer.concat([b, Buffer.from([0x12]), encodeVarint(s.length), s]);
    }
    case "none":
      return b;
  }
}

function encodeVarint(n: number): Buffer {
  const out: number[] = [];
  while (n > 127) {
    out.push((n & 127) | 128);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

type JsonMutation =
  | { kind: "field"; pick: number; value: unknown }
  | { kind: "drop"; pick: number }
  | { kind: "deep"; pick: number; depth: number }
  | { kind: "huge"; pick: number; size: number }
  | { kind: "text"; cut: number; junk: string }
  | { kind: "none" };

const jsonMutation: fc.Arbitrary<JsonMutation> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("field" as const),
      pick: fc.nat(),
      value: fc.oneof(
        fc.jsonValue({ maxDepth: 3 }),
        fc.string({ unit: "binary", maxLength: 20 }),
        fc.constantFrom(null, -1, 1e308, "NaN", "Infinity", "-0", "9223372036854775808", "30s", "-5s", "1.5s", "x".repeat(300), "\ud800", [], {}, [null], "AGENT_STATUS_HEALTHY", 99, true),
      ),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("drop" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("deep" as const), pick: fc.nat(), depth: fc.integer({ min: 15, max: 4000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("huge" as const), pick: fc.nat(), size: fc.integer({ min: 1000, max: 300_000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("text" as const), cut: fc.nat(), junk: fc.string({ unit: "binary", maxLength: 8 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "none" as const }) },
);

/** Keys a mutation may pick: the request's own, and every field name of the input (json and proto names). */
function pickKey(method: DescMethod, obj: JsonObject, pick: number): string {
  const keys = [...Object.keys(obj), ...method.input.fields.flatMap((f) => [f.jsonName, f.name])];
  return keys.length === 0 ? "x" : keys[pick % keys.length]!;
}

function mutateJson(method: DescMethod, valid: JsonObject, m: JsonMutation): string {
  const obj: Record<string, unknown> = structuredClone(valid);
  switch (m.kind) {
    case "field":
      obj[pickKey(method, valid, m.pick)] = m.value;
      return JSON.stringify(obj);
    case "drop":
      delete obj[pickKey(method, valid, m.pick)];
      return JSON.stringify(obj);
    case "deep": {
      let v: unknown = 1;
      for (let i = 0; i < m.depth; i++) v = i % 3 === 2 ? [v] : { n: v };
      // Into a Struct field where the RPC has one (Register's tool input_schema, Route's task), else any field.
      if (method === RegistryService.method.register) (obj.tools as JsonObject[])[0]!.inputSchema = { deep: v } as JsonObject;
      else if (method === RouterService.method.route) obj.task = { deep: v };
      else obj[pickKey(method, valid, m.pick)] = v;
      return JSON.stringify(obj);
    }
    case "huge":
      obj[pickKey(method, valid, m.pick)] = "é".repeat(m.size);
      return JSON.stringify(obj);
    case "text": {
      const s = JSON.stringify(obj);
      return s.slice(0, m.cut % (s.length + 1)) + m.junk;
    }
    case "none":
      return JSON.stringify(obj);
  }
}

/** Odd headers, each optional: timeouts, content types, versions, encodings, ids. */
const oddHeaders = fc.record(
  {
    "grpc-timeout": fc.constantFrom("1x", "-1S", "99999999999H", "0n", "1m", "", "2592000S"),
    "connect-timeout-ms": fc.constantFrom("abc", "-1", "1e99", "0", "99999999999999", "1"),
    "connect-protocol-version": fc.constantFrom("2", "", "1 "),
    "grpc-accept-encoding": fc.constantFrom("br", "gzip, x", ",,"),
    "x-request-id": fc.stringMatching(/^[ -~]{0,300}$/),
    authorization: fc.constantFrom("Bearer", "Bearer ", "Basic abc", `Bearer ${ADMIN_TOKEN}x`, `bearer ${ADMIN_TOKEN}`, "Bearer a.b.c"),
    "content-encoding": fc.constantFrom("gzip", "identity", "br"),
  },
  { requiredKeys: [] },
).map((h) => Object.fromEntries(Object.entries(h).filter(() => true)) as Record<string, string>);

const withOddHeaders = fc.oneof({ weight: 5, arbitrary: fc.constant({} as Record<string, string>) }, { weight: 1, arbitrary: oddHeaders });

// --- raw clients ------------------------------------------------------------------

interface Answer {
  readonly kind: "grpc" | "connect" | "rest";
  readonly httpStatus: number;
  /** The gRPC/Connect code, or the REST body's code; undefined when the answer has none. */
  readonly code: number | undefined;
  readonly message: string;
}

function frame(flag: number, payload: Uint8Array, declared = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(declared >>> 0, 1);
  return Buffer.concat([head, payload]);
}

function h2Call(headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<Answer | string> {
  return new Promise((resolve) => {
    let req: http2.ClientHttp2Stream;
    try {
      req = h2().request({ ":method": "POST", te: "trailers", ...headers });
    } catch (err) {
      return resolve(`request not sent: ${(err as Error).message}`);
    }
    let status = 0;
    let grpc: { code?: string; message?: string } = {};
    const timer = setTimeout(() => {
      req.close(http2.constants.NGHTTP2_CANCEL);
      resolve("no answer within the bound");
    }, ANSWER_TIMEOUT_MS);
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined) grpc = { code: String(h["grpc-status"]), message: decodeURIComponent(String(h["grpc-message"] ?? "")) };
    };
    req.on("response", (h) => {
      status = Number(h[":status"]);
      take(h);
    });
    req.on("trailers", take);
    req.on("data", () => {});
    req.on("error", () => {});
    req.on("close", () => {
      clearTimeout(timer);
      if (status === 0) return resolve(`stream reset (${req.rstCode}) without an answer`);
      resolve({ kind: "grpc", httpStatus: status, code: grpc.code === undefined ? undefined : Number(grpc.code), message: grpc.message ?? "" });
    });
    req.end(body);
  });
}

function h1Call(method: string, path: string, headers: Record<string, string>, body: Buffer | undefined, kind: Answer["kind"]): Promise<Answer | string> {
  return new Promise((resolve) => {
    let req: http.ClientRequest;
    try {
      req = http.request({ host: "127.0.0.1", port: t.port, method, path, headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", () => resolve("response aborted"));
        res.on("end", () => {
          clearTimeout(timer);
          const buf = Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          if (kind === "grpc") {
            // gRPC-Web: status in the headers, or in the trailer frame (flag 0x80) at the end of the body.
            let code = res.headers["grpc-status"] as string | undefined;
            let message = (res.headers["grpc-message"] as string | undefined) ?? "";
            for (let i = 0; i + 5 <= buf.length; ) {
              const len = buf.readUInt32BE(i + 1);
              if (buf[i]! & 0x80) {
                const text = buf.toString("utf8", i + 5, i + 5 + len);
                code = /grpc-status:\s*(\d+)/i.exec(text)?.[1] ?? code;
                message = /grpc-message:\s*(.*)/i.exec(text)?.[1]?.trim() ?? message;
              }
              i += 5 + len;
            }
            return resolve({ kind, httpStatus: status, code: code === undefined ? undefined : Number(code), message: safeDecode(message) });
          }
          let parsed: { code?: string | number; message?: string } = {};
          try {
            parsed = JSON.parse(buf.toString("utf8")) as typeof parsed;
          } catch {
            /* a success body in binary, or a non-JSON refusal */
          }
          const code = status === 200 ? 0 : typeof parsed.code === "number" ? parsed.code : parsed.code !== undefined ? CONNECT_CODE[parsed.code] : undefined;
          resolve({ kind, httpStatus: status, code, message: String(parsed.message ?? "") });
        });
      });
    } catch (err) {
      return resolve(`request not sent: ${(err as Error).message}`);
    }
    const timer = setTimeout(() => {
      req.destroy();
      resolve("no answer within the bound");
    }, ANSWER_TIMEOUT_MS);
    req.on("error", (err) => {
      clearTimeout(timer);
      resolve(`connection error: ${err.message}`);
    });
    req.end(body);
  });
}

/** encodeURIComponent that takes lone surrogates too (as U+FFFD, what a client's UTF-8 encoder sends). */
function enc(s: string): string {
  return encodeURIComponent(Buffer.from(s, "utf8").toString("utf8"));
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A server error for client input, or undefined when the answer is a success or a client error. */
function serverError(a: Answer | string): string | undefined {
  if (typeof a === "string") return a;
  const domainUnavailable = a.code === 14 && /no healthy agent/.test(a.message);
  if (a.code !== undefined && SERVER_ERROR_CODES.has(a.code)) return `code ${a.code} (${a.message.slice(0, 100)})`;
  if (a.code === 14 && !domainUnavailable) return `UNAVAILABLE (${a.message.slice(0, 100)})`;
  if (a.kind === "grpc" && a.code === undefined) return `HTTP ${a.httpStatus} without grpc-status`;
  if (a.httpStatus >= 500 && !domainUnavailable && a.code !== 4) return `HTTP ${a.httpStatus} code ${a.code} (${a.message.slice(0, 100)})`;
  return undefined;
}

// --- protocols --------------------------------------------------------------------

type Protocol = "grpc fast path" | "grpc gzip" | "grpc-web" | "connect binary" | "connect json" | "rest";

interface Case {
  readonly rpc: number;
  readonly bytes: ByteMutation;
  readonly json: JsonMutation;
  readonly headers: Record<string, string>;
}

const caseArb: fc.Arbitrary<Case> = fc.record({ rpc: fc.nat(RPCS.length - 1), bytes: byteMutation, json: jsonMutation, headers: withOddHeaders });

const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

/** RPCs with a google.api.http annotation (grpc.health.v1 has none). */
const REST_RPCS = RPCS.filter((r) => getOption(r.method, httpRule).pattern.case !== undefined);

async function send(p: Protocol, c: Case): Promise<{ answer: Answer | string; input: unknown }> {
  const { method, request } = p === "rest" ? REST_RPCS[c.rpc % REST_RPCS.length]! : RPCS[c.rpc]!;
  const valid = request();
  const path = pathOf(method);
  const grpcHeaders: Record<string, string> = { ...auth, ...c.headers };
  // Headers that would make it another protocol are kept only where they belong.
  delete grpcHeaders["content-encoding"];
  if (p === "rest" || p === "connect json") {
    const body = mutateJson(method, valid, c.json);
    const input = { rpc: method.name, json: c.json.kind, body: body.slice(0, 300), headers: c.headers };
    if (p === "connect json") {
      const h = { "content-type": "application/json", "connect-protocol-version": "1", ...grpcHeaders };
      return { answer: await h1Call("POST", path, h, Buffer.from(body), "connect"), input };
    }
    const rule = getOption(method, httpRule);
    const verb = rule.pattern.case === "custom" ? rule.pattern.value.kind : rule.pattern.case!;
    let template = (rule.pattern.case === "custom" ? rule.pattern.value.path : rule.pattern.value) as string;
    const obj = (() => {
      try {
        return JSON.parse(body) as Record<string, unknown>;
      } catch {
        return {} as Record<string, unknown>;
      }
    })();
    template = template.replace(/\{([a-z_]+)\}/g, (_m, f: string) => enc(String(obj[f] ?? obj[f.replace(/_([a-z])/g, (_x, ch: string) => ch.toUpperCase())] ?? "")).slice(0, 2000) || "x");
    const restHeaders: Record<string, string> = { "content-type": "application/json", ...auth, ...c.headers };
    delete restHeaders["content-encoding"];
    if (rule.body === "") {
      const q = Object.entries(obj)
        .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${enc(k)}=${enc(typeof x === "string" ? x : JSON.stringify(x) ?? "")}`))
        .join("&")
        .slice(0, 9000);
      return { answer: await h1Call(verb.toUpperCase(), `${template}${q ? `?${q}` : ""}`, restHeaders, undefined, "rest"), input };
    }
    return { answer: await h1Call(verb.toUpperCase(), template, restHeaders, Buffer.from(body), "rest"), input };
  }
  const msg = mutateBytes(toBinary(method.input, fromJson(method.input, valid)), c.bytes);
  const input = { rpc: method.name, bytes: c.bytes.kind === "deepStruct" ? `deepStruct ${c.bytes.depth}` : c.bytes, hex: msg.subarray(0, 80).toString("hex"), length: msg.length, headers: c.headers };
  switch (p) {
    case "grpc fast path":
      return { answer: await h2Call({ ":path": path, "content-type": "application/grpc", ...grpcHeaders }, frame(0, msg)), input };
    case "grpc gzip":
      return { answer: await h2Call({ ":path": path, "content-type": "application/grpc", "grpc-encoding": "gzip", ...grpcHeaders }, frame(1, gzipSync(msg))), input };
    case "grpc-web":
      return { answer: await h1Call("POST", path, { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...grpcHeaders }, frame(0, msg), "grpc"), input };
    case "connect binary":
      return { answer: await h1Call("POST", path, { "content-type": "application/proto", "connect-protocol-version": "1", ...grpcHeaders }, msg, "connect"), input };
  }
  throw new Error(p);
}

async function agentCount(): Promise<number> {
  return (await t.app.store.counts("default")).total;
}

const PROTOCOLS: Protocol[] = ["grpc fast path", "grpc gzip", "grpc-web", "connect binary", "connect json", "rest"];

describe("fuzz: mutated requests against a live server, every protocol", () => {
  for (const p of PROTOCOLS) {
    it(`${p}: ${RUNS_PER_PROTOCOL} mutated requests, every answer a success or a client error, refused writes write nothing`, async () => {
      const violations = new Violations();
      const codes = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(caseArb, async (c) => {
          const rpc = p === "rest" ? REST_RPCS[c.rpc % REST_RPCS.length]! : RPCS[c.rpc]!;
          const isRegister = rpc.method === RegistryService.method.register;
          const before = isRegister ? await agentCount() : 0;
          const { answer, input } = await send(p, c);
          const label = typeof answer === "string" ? "none" : String(answer.code ?? `http ${answer.httpStatus}`);
          codes.set(label, (codes.get(label) ?? 0) + 1);
          const bad = serverError(answer);
          if (bad) violations.add(`${p} ${rpc.method.name}: ${bad.replace(/\d{3,}/g, "N")}`, input);
          if (isRegister && typeof answer !== "string") {
            const after = await agentCount();
            const wrote = after - before;
            if (answer.code !== 0 && wrote !== 0) violations.add(`${p} Register: refused (${answer.code}) but the agent count changed by ${wrote}`, input);
            if (answer.code === 0 && wrote !== 1) violations.add(`${p} Register: OK but the agent count changed by ${wrote}`, input);
          }
        }),
        fcParams(seed, RUNS_PER_PROTOCOL),
      );
      console.log(`[fuzz] ${p}: answers by code ${JSON.stringify(Object.fromEntries(codes))}`);
      const health = await getJson(`${t.url}/health`);
      expect(health.json?.status).toBe("SERVING_STATUS_SERVING");
      expect(violations.size, `\n${violations.report()}`).toBe(0);
    }, 60_000);
  }
});

// --- gRPC framing on the lean path ---------------------------------------------------

interface FrameCase {
  readonly rpc: number;
  readonly flag: number;
  readonly declared: "exact" | "shorter" | "longer" | "zero" | "huge" | "random";
  readonly random: number;
  readonly payload: "valid" | "random" | "oversized" | "empty-body";
  readonly bytes: Uint8Array;
  readonly extraFrame: boolean;
}

const frameCase: fc.Arbitrary<FrameCase> = fc.record({
  rpc: fc.nat(RPCS.length - 1),
  flag: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 2, max: 255 }) }),
  declared: fc.constantFrom("exact", "exact", "exact", "shorter", "longer", "zero", "huge", "random"),
  random: fc.nat(),
  payload: fc.constantFrom("valid", "valid", "random", "oversized", "empty-body"),
  bytes: fc.uint8Array({ maxLength: 48 }),
  extraFrame: fc.boolean(),
});

function frameBody(c: FrameCase): Buffer {
  const { method, request } = RPCS[c.rpc]!;
  if (c.payload === "empty-body") return Buffer.alloc(0);
  const payload =
    c.payload === "valid"
      ? toBinary(method.input, fromJson(method.input, request()))
      : c.payload === "random"
        ? c.bytes
        : Buffer.alloc(MAX_BODY_BYTES + 1 + (c.random % 1000), 0x0a);
  const declared = {
    exact: payload.length,
    shorter: Math.max(0, payload.length - 1 - (c.random % 8)),
    longer: payload.length + 1 + (c.random % 8),
    zero: 0,
    huge: 0xffffffff,
    random: c.random,
  }[c.declared];
  const f = frame(c.flag, payload, declared);
  return c.extraFrame ? Buffer.concat([f, frame(0, Buffer.alloc(0))]) : f;
}

describe("fuzz: gRPC framing on the lean path (arbitrary frames)", () => {
  it("answers every frame with a success or a client error, on the fast path", async () => {
    const violations = new Violations();
    const fast = t.app.server.fastPath!;
    const codes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(frameCase, async (c) => {
        const method = RPCS[c.rpc]!.method;
        const servedBefore = fast.served;
        const answer = await h2Call({ ":path": pathOf(method), "content-type": "application/grpc", ...auth }, frameBody(c));
        const label = typeof answer === "string" ? "none" : String(answer.code);
        codes.set(label, (codes.get(label) ?? 0) + 1);
        const input = { rpc: method.name, flag: c.flag, declared: c.declared, payload: c.payload, extraFrame: c.extraFrame };
        if (fast.served === servedBefore) violations.add(`${method.name}: not served by the fast path`, input);
        const bad = serverError(answer);
        const kind = c.flag !== 0 ? "compressed flag" : c.payload === "random" && c.declared === "exact" && !c.extraFrame ? "malformed protobuf" : c.payload;
        if (bad) violations.add(`fast path, ${kind}: ${bad.replace(/\d{3,}/g, "N")}`, input);
      }),
      fcParams(seed, 300),
    );
    console.log(`[fuzz] grpc framing: answers by code ${JSON.stringify(Object.fromEntries(codes))}`);
    const health = await getJson(`${t.url}/health`);
    expect(health.json?.status).toBe("SERVING_STATUS_SERVING");
    expect(violations.size, `\n${violations.report()}`).toBe(0);
  }, 60_000);
});
