import { EventEmitter } from "node:events";
import { Readable } from "node:stream";
import fc from "fast-check";
import { create, fromJson, getOption, hasOption, isMessage, type DescMessage, type DescMethod, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { AdminService } from "../gen/federation/v1/admin_service_pb.js";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { HealthService } from "../gen/federation/v1/health_service_pb.js";
import { RegistryService, RegisterRequestSchema } from "../gen/federation/v1/registry_service_pb.js";
import { RouterService } from "../gen/federation/v1/router_service_pb.js";
import { http as httpRule } from "../gen/google/api/annotations_pb.js";
import { loadConfig } from "../src/config.js";
import { Pipeline, type Call } from "../src/transport/pipeline.js";
import { compareTemplates, matchPath, parsePathTemplate } from "../src/transport/rest/path-template.js";
import { createRestTranscoder } from "../src/transport/rest/rest-transcoder.js";
import { httpStatus } from "../src/transport/rest/http-status.js";
import {
  parseAgentId,
  parseDiscover,
  parseGetManifest,
  parseHeartbeat,
  parseListAgents,
  parseListTools,
  parseRegister,
  parseRoute,
  parseWatch,
} from "../src/validation/requests.js";
import { registerBody } from "./support/app.js";
import { anyString, fcParams, fuzzSeed, idLike, messageInitArb, safeStringify, SERVER_ERROR_CODES, Violations } from "./support/fuzz.js";

/**
 * Property tests, in process: path templates, the validators on arbitrary
 * messages of the generated schemas, and the REST transcoder's request
 * building against the real descriptors. Never a crash; every refusal is
 * a client error (INVALID_ARGUMENT naming the field, a 4xx); each input
 * is handled in bounded time.
 */

const seed = fuzzSeed("fuzz-pure");
const params = (numRuns: number) => fcParams(seed, numRuns);
/** Per-input time bound (generous: a 2-core CI box running two files at once). */
const MAX_MS_PER_INPUT = 250;

// --- path templates -------------------------------------------------------------

/** A template from the google.api.http grammar, with paths that match it and what they bind. */
const literal = fc.stringMatching(/^[a-z][a-z0-9._~-]{0,6}$/);
const field = fc.stringMatching(/^[a-z_][a-z0-9_]{0,6}(\.[a-z_][a-z0-9_]{0,4})?$/);
const segmentValue = fc.stringMatching(/^[A-Za-z0-9._~:@!$&'()*+,;=-]{1,8}$/);

type TemplatePart =
  | { kind: "literal"; value: string }
  | { kind: "one" }
  | { kind: "var"; field: string; inner: ("one" | string)[] };

const templateArb = fc
  .record({
    parts: fc.array(
      fc.oneof(
        literal.map((value) => ({ kind: "literal" as const, value })),
        fc.constant({ kind: "one" as const }),
        fc.record({ kind: fc.constant("var" as const), field, inner: fc.array(fc.oneof(fc.constant("one" as const), literal), { maxLength: 3 }) }),
      ),
      { minLength: 1, maxLength: 5 },
    ),
    rest: fc.boolean(),
    verb: fc.option(literal, { nil: undefined }),
  })
  .filter(({ parts }) => new Set(parts.flatMap((p) => (p.kind === "var" ? [p.field] : []))).size === parts.filter((p) => p.kind === "var").length);

function templateSource(t: { parts: TemplatePart[]; rest: boolean; verb?: string }): string {
  const segs = t.parts.map((p) =>
    p.kind === "literal" ? p.value : p.kind === "one" ? "*" : p.inner.length === 0 ? `{${p.field}}` : `{${p.field}=${p.inner.map((i) => (i === "one" ? "*" : i)).join("/")}}`,
  );
  if (t.rest) segs.push("**");
  return `/${segs.join("/")}${t.verb ? `:${t.verb}` : ""}`;
}

describe("fuzz: path templates", () => {
  it("parsePathTemplate never throws on a '/'-prefixed string and refuses others with an Error", () => {
    fc.assert(
      fc.property(anyString, fc.boolean(), (s, slash) => {
        const source = slash ? `/${s}` : s;
        const t0 = performance.now();
        try {
          const t = parsePathTemplate(source);
          expect(t.source).toBe(source);
          for (const r of t.rank) expect([0, 1, 2]).toContain(r);
        } catch (err) {
          expect(source.startsWith("/")).toBe(false);
          expect(err).toBeInstanceOf(Error);
        }
        expect(performance.now() - t0).toBeLessThan(MAX_MS_PER_INPUT);
      }),
      params(400),
    );
  });

  it("matchPath never throws and binds only the template's variables, on arbitrary segments and verbs", () => {
    fc.assert(
      fc.property(fc.oneof(templateArb.map(templateSource), anyString.map((s) => `/${s}`)), fc.array(anyString, { maxLength: 8 }), fc.oneof(fc.constant(""), anyString), (source, segs, verb) => {
        const t = parsePathTemplate(source);
        const t0 = performance.now();
        const vars = matchPath(t, segs, verb);
        expect(performance.now() - t0).toBeLessThan(MAX_MS_PER_INPUT);
        if (vars === undefined) return;
        expect(verb).toBe(t.verb);
        const fields = [...source.matchAll(/\{([A-Za-z_][A-Za-z0-9_.]*)/g)].map((m) => m[1]);
        for (const k of vars.keys()) expect(fields).toContain(k);
      }),
      params(400),
    );
  });

  it("a path built from a template matches it and binds each variable to what was put there", () => {
    fc.assert(
      fc.property(
        templateArb.chain((t) =>
          fc.tuple(
            fc.constant(t),
            fc.tuple(...t.parts.map((p) => (p.kind === "var" ? fc.array(segmentValue, { minLength: p.inner.length || 1, maxLength: p.inner.length || 1 }) : segmentValue))),
            fc.array(segmentValue, { maxLength: 3 }),
          ),
        ),
        ([t, fills, restSegs]) => {
          const segments: string[] = [];
          const expected = new Map<string, string>();
          t.parts.forEach((p, i) => {
            const fill = fills[i]!;
            if (p.kind === "literal") segments.push(p.value);
            else if (p.kind === "one") segments.push(fill as string);
            else {
              const values = (fill as string[]).map((v, j) => (p.inner[j] !== undefined && p.inner[j] !== "one" ? p.inner[j]! : v));
              const used = p.inner.length === 0 ? values.slice(0, 1) : values;
              segments.push(...used);
              expected.set(p.field, used.join("/"));
            }
          });
          if (t.rest) segments.push(...restSegs);
          const vars = matchPath(parsePathTemplate(templateSource(t)), segments, t.verb ?? "");
          expect(vars).toEqual(expected);
        },
      ),
      params(300),
    );
  });

  it("compareTemplates is antisymmetric and literal-first (the route order is well defined)", () => {
    fc.assert(
      fc.property(templateArb.map(templateSource), templateArb.map(templateSource), (a, b) => {
        const ta = parsePathTemplate(a);
        const tb = parsePathTemplate(b);
        expect(Math.sign(compareTemplates(ta, tb))).toBe(-Math.sign(compareTemplates(tb, ta)) || 0);
      }),
      params(300),
    );
  });
});

// --- validators -------------------------------------------------------------------

const lease = loadConfig({ FEDERATION_BOOTSTRAP_TOKEN: "x" }).lease;

interface ValidatorCase {
  readonly name: string;
  readonly schema: DescMessage;
  readonly base: () => Record<string, unknown>;
  readonly run: (m: Message) => unknown;
}

const schemaOf = (m: DescMethod) => m.input;
const VALIDATORS: ValidatorCase[] = [
  { name: "parseRegister", schema: RegisterRequestSchema, base: () => {
      // A plain init (no $typeName), so create() builds the overrides too.
      const { $typeName: _t, ...init } = fromJson(RegisterRequestSchema, registerBody() as never);
      return init;
    }, run: (m) => parseRegister(m as never, lease) },
  { name: "parseHeartbeat", schema: schemaOf(RegistryService.method.heartbeat), base: () => ({ agentId: "a-1", load: 0.5 }), run: (m) => parseHeartbeat(m as never) },
  { name: "parseAgentId", schema: schemaOf(RegistryService.method.getAgent), base: () => ({ agentId: "a-1" }), run: (m) => parseAgentId(m as never) },
  { name: "parseListAgents", schema: schemaOf(RegistryService.method.listAgents), base: () => ({ pageSize: 10 }), run: (m) => parseListAgents(m as never) },
  { name: "parseDiscover", schema: schemaOf(DirectoryService.method.discover), base: () => ({ capabilities: ["code.generate"] }), run: (m) => parseDiscover(m as never, "t") },
  { name: "parseGetManifest", schema: schemaOf(DirectoryService.method.getManifest), base: () => ({}), run: (m) => parseGetManifest(m as never) },
  { name: "parseListTools", schema: schemaOf(DirectoryService.method.listTools), base: () => ({ pageSize: 10 }), run: (m) => parseListTools(m as never, "t") },
  { name: "parseRoute", schema: schemaOf(RouterService.method.route), base: () => ({ capabilities: ["code.generate"], task: { a: 1 } }), run: (m) => parseRoute(m as never) },
  { name: "parseWatch", schema: schemaOf(HealthService.method.watchEvents), base: () => ({ types: ["agent.registered"] }), run: (m) => parseWatch(m as never, "t") },
];

/** Strings that look like page tokens: base64url of JSON shapes close to the issued ones. */
const tokenish = fc
  .oneof(fc.jsonValue({ maxDepth: 2 }), fc.tuple(fc.string(), fc.oneof(fc.integer(), fc.string(), fc.double())), fc.tuple(fc.stringMatching(/^[A-Za-z0-9_-]{43}$/), fc.integer()))
  .map((v) => Buffer.from(JSON.stringify(v) ?? "null").toString("base64url"));

/** The first path element of an INVALID_ARGUMENT message ("capabilities[2].name: …" → "capabilities"). */
function fieldHead(message: string): string {
  return /^([a-z_][a-z0-9_]*)/.exec(message)?.[1] ?? "";
}

describe("fuzz: validators (src/validation/requests.ts) on arbitrary messages of the generated schemas", () => {
  for (const v of VALIDATORS) {
    it(`${v.name}: accepts or refuses with INVALID_ARGUMENT naming a field of ${v.schema.name}, in bounded time`, () => {
      const protoNames = new Set(v.schema.fields.map((f) => f.name));
      const overrides = messageInitArb(v.schema) as fc.Arbitrary<Record<string, unknown>>;
      const tokenOverride = fc.record({ pageToken: tokenish });
      let accepted = 0;
      fc.assert(
        fc.property(fc.oneof({ weight: 5, arbitrary: overrides }, { weight: 1, arbitrary: tokenOverride }), fc.boolean(), (o, onBase) => {
          let msg: Message;
          try {
            msg = create(v.schema, { ...(onBase ? v.base() : {}), ...o } as never);
          } catch {
            return; // not a shape protobuf-es can hold: no client can send it
          }
          const t0 = performance.now();
          try {
            v.run(msg);
            accepted++;
          } catch (err) {
            expect(err, safeStringify(o)).toBeInstanceOf(ConnectError);
            const e = err as ConnectError;
            expect(e.code, e.rawMessage).toBe(Code.InvalidArgument);
            expect(protoNames, e.rawMessage).toContain(fieldHead(e.rawMessage));
          }
          expect(performance.now() - t0).toBeLessThan(MAX_MS_PER_INPUT);
        }),
        params(v.name === "parseRegister" ? 1500 : 500),
      );
      // The generators reach past the first check: some inputs are accepted.
      expect(accepted).toBeGreaterThan(0);
    });
  }
});

// --- the REST transcoder ----------------------------------------------------------

const SERVICES = [RegistryService, DirectoryService, RouterService, HealthService, AdminService];

/** The validator each RPC's real implementation runs first, so transcoded messages reach them too. */
const VALIDATE: Record<string, (m: Message) => unknown> = {
  Register: (m) => parseRegister(m as never, lease),
  Heartbeat: (m) => parseHeartbeat(m as never),
  GetAgent: (m) => parseAgentId(m as never),
  Unregister: (m) => parseAgentId(m as never),
  ShareAgent: (m) => parseAgentId(m as never),
  ListAgents: (m) => parseListAgents(m as never),
  Discover: (m) => parseDiscover(m as never, "t"),
  GetManifest: (m) => parseGetManifest(m as never),
  ListTools: (m) => parseListTools(m as never, "t"),
  Route: (m) => parseRoute(m as never),
  WatchEvents: (m) => parseWatch(m as never, "t"),
};

let received: { method: DescMethod; message: Message } | undefined;

/** Implementations of every annotated RPC: validate as the real one does, note the message, answer an empty response. */
function fakeImpl(service: (typeof SERVICES)[number]): object {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const check = (m: Message) => {
      received = { method, message: m };
      VALIDATE[method.name]?.(m);
    };
    impl[method.localName] =
      method.methodKind === "server_streaming"
        ? async function* (m: Message) {
            check(m);
          }
        : async (m: Message) => {
            check(m);
            return create(method.output);
          };
  }
  return impl;
}

const pipeline = new Pipeline([]);
const CALL = Symbol("call");
const transcode = createRestTranscoder(
  SERVICES.map((service) => ({ service, impl: fakeImpl(service) })),
  {
    maxBodyBytes: 64 * 1024,
    shutdownSignal: new AbortController().signal,
    contextValues: () => new (class {
      private m = new Map<symbol, unknown>();
      get(k: { id: symbol; defaultValue: unknown }) {
        return this.m.has(k.id) ? this.m.get(k.id) : k.defaultValue;
      }
      set(k: { id: symbol }, v: unknown) {
        this.m.set(k.id, v);
        return this;
      }
      delete(k: { id: symbol }) {
        this.m.delete(k.id);
        return this;
      }
    })() as never,
    pipeline,
    callOf: (req) => (req as unknown as { [CALL]: Call })[CALL],
  },
);

/** A response object with what the transcoder uses of node's ServerResponse. */
class FakeResponse extends EventEmitter {
  status = 0;
  headers: Record<string, unknown> = {};
  body = "";
  headersSent = false;
  ends = 0;
  destroyed = false;
  setHeader(k: string, v: unknown) {
    this.headers[k.toLowerCase()] = v;
  }
  writeHead(status: number, headers: Record<string, unknown> = {}) {
    if (this.headersSent) throw new Error("writeHead twice");
    this.status = status;
    Object.assign(this.headers, headers);
    this.headersSent = true;
    return this;
  }
  flushHeaders() {}
  write(chunk: string | Buffer) {
    if (!this.headersSent) this.writeHead(200);
    this.body += chunk.toString();
    return true;
  }
  end(chunk?: string | Buffer) {
    if (!this.headersSent) this.writeHead(200);
    if (chunk !== undefined) this.body += chunk.toString();
    this.ends++;
    return this;
  }
  destroy() {
    this.destroyed = true;
  }
}

interface RestInput {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly body: string | undefined;
  readonly contentLength?: string;
}

/** The real routes: HTTP method, template and body rule from the descriptors. */
const ROUTES = SERVICES.flatMap((s) =>
  s.methods.filter((m) => hasOption(m, httpRule)).map((m) => {
    const rule = getOption(m, httpRule);
    const c = rule.pattern.case!;
    const p = rule.pattern.value as string | { kind: string; path: string };
    return { rpc: m, httpMethod: c === "custom" ? (p as { kind: string }).kind.toUpperCase() : c.toUpperCase(), template: typeof p === "string" ? p : p.path, body: rule.body };
  }),
);

/** Field paths of a message, as query keys (nested dotted, snake and camel, maps as m[k]). */
function queryKeys(desc: DescMessage, prefix = "", depth = 0): string[] {
  const out: string[] = [];
  for (const f of desc.fields) {
    for (const name of new Set([f.name, f.jsonName])) {
      const key = `${prefix}${name}`;
      if (f.fieldKind === "map") out.push(`${key}[k]`, `${key}[]`, key);
      else out.push(key);
      if (f.fieldKind === "message" && depth < 2) out.push(...queryKeys(f.message, `${key}.`, depth + 1));
    }
  }
  return out;
}

/** Percent-encodes every byte of the UTF-8 form outside the unreserved set (lone surrogates become U+FFFD). */
const pct = (s: string) => [...Buffer.from(s, "utf8")].map((b) => (/[A-Za-z0-9._~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, "0").toUpperCase()}`)).join("");

const pathValue = fc.oneof(
  { weight: 3, arbitrary: idLike.map(pct) },
  { weight: 1, arbitrary: anyString.map((s) => pct(s).replace(/%2F/g, "/")) },
  { weight: 1, arbitrary: fc.constantFrom("%", "%zz", "%E0%A4%A", "%ff%fe", "a%2Fb", "..", ".", "", "a:b", "x:share") },
);

const queryValue = fc.oneof(idLike, anyString, fc.constantFrom("true", "false", "1", "0", "yes", "-1", "1e9", "NaN", "30s", "-5s", "1.5", "AGENT_STATUS_HEALTHY", "2", "99999999999999999999", "TRANSPORT_GRPC"));

function restInputArb(): fc.Arbitrary<RestInput> {
  return fc.constantFrom(...ROUTES).chain((route) => {
    const keys = [...queryKeys(route.rpc.input), "unknown_key"];
    const path = fc
      .tuple(fc.array(pathValue, { minLength: 3, maxLength: 3 }), rarely(fc.constantFrom("share", "rotate", "x", "")), fc.nat(7).map((n) => n === 0))
      .map(([vals, verb, extra]) => {
        let i = 0;
        let p = route.template.replace(/\{[^}]+\}/g, () => vals[i++]!);
        if (extra) p += `/${vals[2]}`;
        if (verb !== undefined) p = p.replace(/:[a-z]+$/, "") + `:${verb}`;
        return p;
      });
    const query = fc
      .array(fc.tuple(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...keys) }, { weight: 1, arbitrary: anyString }), queryValue), { maxLength: 6 })
      .map((pairs) => (pairs.length === 0 ? "" : `?${pairs.map(([k, v]) => `${pct(k)}=${pct(v)}`).join("&")}`));
    const rawQuery = fc.constantFrom("?", "?&&&", "?a", "?=x", "?%zz=1", "?page_size=%", `?${"k=v&".repeat(300)}`, `?x=${"a".repeat(9000)}`, "?labels[a]=1", "?capabilities[]=x");
    const bodyObj = fc.oneof(
      { weight: 3, arbitrary: messageInitArb(route.rpc.input).map((o) => safeStringify(toJsonish(o))) },
      { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...keys.filter((k) => !k.includes("[") && !k.includes("."))), fc.jsonValue({ maxDepth: 3 })).map(([k, v]) => JSON.stringify({ ...registerBody(), [k]: v })) },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)) },
      { weight: 1, arbitrary: fc.oneof(anyString, fc.constantFrom("{", "[]", "null", "1", '"x"', "{\"a\":}", "\ufeff{}", "{}".padEnd(70_000, " "), "[".repeat(5000) + "]".repeat(5000))) },
      { weight: 1, arbitrary: fc.integer({ min: 20, max: 3000 }).map((d) => JSON.stringify({ ...registerBody(), tools: [{ name: "t", inputSchema: deepJson(d) }] })) },
      { weight: 1, arbitrary: fc.integer({ min: 20, max: 3000 }).map((d) => JSON.stringify({ capabilities: ["x"], task: deepJson(d) })) },
    );
    return fc.record(
      {
        method: fc.oneof({ weight: 6, arbitrary: fc.constant(route.httpMethod) }, { weight: 1, arbitrary: fc.constantFrom("GET", "POST", "DELETE", "PUT", "HEAD", "PATCH", "OPTIONS", "get", "BREW") }),
        path,
        query: fc.oneof({ weight: 5, arbitrary: query }, { weight: 1, arbitrary: rawQuery }),
        body: fc.option(bodyObj, { nil: undefined, freq: 4 }),
        contentLength: rarely(fc.constantFrom("0", "-1", "abc", "1e12", "99999999999999999999", " 5")),
      },
      { requiredKeys: ["method", "path", "query", "body"] },
    );
  });
}

/** The value one time in eight, else undefined. */
function rarely<T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> {
  return fc.oneof({ weight: 7, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: a });
}

/** Object nested `depth` levels in arrays and objects, alternating. */
function deepJson(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { d: v };
  return v;
}

/** An init shape as a client would write it in JSON (bigints as strings, bytes as base64). */
function toJsonish(v: unknown): unknown {
  if (typeof v === "bigint") return v.toString();
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (Array.isArray(v)) return v.map(toJsonish);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJsonish(x)]));
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  return v;
}

async function transcodeOnce(input: RestInput): Promise<{ res: FakeResponse; ms: number; error?: unknown }> {
  const body = input.body === undefined ? [] : [Buffer.from(input.body)];
  const req = Object.assign(Readable.from(body), {
    url: `${input.path}${input.query}`,
    method: input.method,
    headers: {
      "content-type": "application/json",
      ...(input.contentLength !== undefined ? { "content-length": input.contentLength } : input.body !== undefined ? { "content-length": String(Buffer.byteLength(input.body)) } : {}),
    },
  });
  (req as unknown as { [CALL]: Call })[CALL] = pipeline.begin("fuzz", "rest", input.path);
  const res = new FakeResponse();
  received = undefined;
  const t0 = performance.now();
  try {
    await transcode(req as never, res as never);
  } catch (error) {
    return { res, ms: performance.now() - t0, error };
  }
  return { res, ms: performance.now() - t0 };
}

describe("fuzz: REST transcoder request building (real descriptors, arbitrary paths, queries and bodies)", () => {
  it("answers every request once, never 5xx; refusals are {code, message} with a client code; accepted messages are the route's input", async () => {
    const violations = new Violations();
    let ok = 0;
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(restInputArb(), async (input) => {
        const { res, ms, error } = await transcodeOnce(input);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const where = `${input.method} ${input.path.replace(/[^/]{20,}/g, "…")}`;
        if (error !== undefined) return violations.add(`${where}: handler rejected: ${String(error).slice(0, 120)}`, input);
        if (res.ends !== 1) return violations.add(`${where}: ended ${res.ends} times`, input);
        if (ms > MAX_MS_PER_INPUT) violations.add(`${where}: took ${Math.round(ms)} ms`, input);
        if (res.status === 200) {
          ok++;
          if (!received || !isMessage(received.message, received.method.input)) violations.add(`${where}: 200 without the route's input message`, input);
          return;
        }
        let payload: { code?: number; message?: string };
        try {
          payload = JSON.parse(res.body) as typeof payload;
        } catch {
          return violations.add(`${where}: ${res.status} with a non-JSON body`, input);
        }
        const code = payload.code ?? -1;
        if (res.status >= 500 || SERVER_ERROR_CODES.has(code)) {
          return violations.add(`${where}: ${res.status} code ${code} ${String(payload.message).slice(0, 100)}`, input);
        }
        if (!(res.status >= 400 && res.status < 500)) violations.add(`${where}: status ${res.status}`, input);
        if (![405, 413, 414].includes(res.status) && httpStatus(code as Code) !== res.status) violations.add(`${where}: status ${res.status} for code ${code}`, input);
        if (typeof payload.message !== "string" || payload.message === "") violations.add(`${where}: refusal without a message`, input);
      }),
      params(1500),
    );
    console.log(`[fuzz] transcoder: 1500 inputs, ${ok} accepted; statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    expect(violations.size, violations.report()).toBe(0);
  }, 60_000);
});
