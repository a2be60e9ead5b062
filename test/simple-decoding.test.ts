import { create, fromBinary, toBinary, type DescMessage, type JsonObject } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Transport } from "../gen/federation/v1/agent_pb.js";
import { DiscoverRequestSchema } from "../gen/federation/v1/directory_service_pb.js";
import { HeartbeatRequestSchema, RegisterRequestSchema } from "../gen/federation/v1/registry_service_pb.js";
import { jsonFacts } from "../src/message-hints.js";
import { decodeSimple } from "../src/transport/simple-decoding.js";
import { AdminService } from "../gen/federation/v1/admin_service_pb.js";
import { AgentService } from "../gen/federation/v1/agent_service_pb.js";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { FederationService } from "../gen/federation/v1/federation_service_pb.js";
import { HealthService } from "../gen/federation/v1/health_service_pb.js";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { RouterService } from "../gen/federation/v1/router_service_pb.js";
import { parseRegister } from "../src/validation/requests.js";

const text = fc.string({ unit: "binary", maxLength: 30 });
// Map and Struct keys: any text but the two decodeSimple declines (it leaves them to fromBinary,
// tested apart below) — fast-check's strings include "__proto__" and "constructor" on purpose.
const key = text.filter((k) => k !== "__proto__" && k !== "constructor");
const json = fc.letrec<{ value: unknown; object: JsonObject }>((tie) => ({
  value: fc.oneof({ depthSize: "small" }, fc.constant(null), fc.boolean(), fc.double(), text, tie("object"), fc.array(tie("value"), { maxLength: 3 })),
  // (Not "constructor": toStrictEqual compares objects' .constructor, which a key of that name replaces; tested apart below.)
  object: fc.dictionary(fc.oneof(key, fc.constantFrom("toString", "1", "")), tie("value"), { maxKeys: 4 }) as fc.Arbitrary<JsonObject>,
})).object;
const int32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const registerInit = fc.record(
  {
    name: text,
    version: text,
    endpoint: fc.record({ url: text, transport: int32 }, { requiredKeys: [] }),
    capabilities: fc.array(fc.record({ name: text, tags: fc.array(text, { maxLength: 3 }) }), { maxLength: 3 }),
    tools: fc.array(fc.record({ name: text, description: text, inputSchema: fc.option(json, { nil: undefined }) }), { maxLength: 3 }),
    labels: fc.dictionary(key, text, { maxKeys: 3 }),
    leaseTtl: fc.record({ seconds: fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n), nanos: int32 }),
    agentId: text,
    deferPassport: fc.boolean(),
  },
  { requiredKeys: [] },
);

/** decodeSimple's message is fromBinary's: same fields, values and defaults (toStrictEqual: own properties and types too). */
function same(schema: DescMessage, bytes: Uint8Array): void {
  const ours = decodeSimple(schema, bytes);
  expect(ours).toBeDefined();
  expect(ours).toStrictEqual(fromBinary(schema, bytes));
}

/** Either both refuse, or decodeSimple declines (undefined) or gives fromBinary's message. */
function agrees(schema: DescMessage, bytes: Uint8Array): void {
  let theirs: unknown;
  let failed = false;
  try {
    theirs = fromBinary(schema, bytes);
  } catch {
    failed = true;
  }
  const ours = decodeSimple(schema, bytes);
  if (ours === undefined) return;
  expect(failed).toBe(false);
  expect(ours).toStrictEqual(theirs);
}

describe("decodeSimple", () => {
  it("reads random Register requests as fromBinary does (every field kind, Structs of every JSON kind, any text)", () => {
    fc.assert(fc.property(registerInit, (init) => same(RegisterRequestSchema, toBinary(RegisterRequestSchema, create(RegisterRequestSchema, init as never)))), {
      numRuns: 400,
    });
    same(HeartbeatRequestSchema, toBinary(HeartbeatRequestSchema, create(HeartbeatRequestSchema, { agentId: "a", load: 0 })));
    same(HeartbeatRequestSchema, toBinary(HeartbeatRequestSchema, create(HeartbeatRequestSchema, { agentId: "a" })));
    same(DiscoverRequestSchema, toBinary(DiscoverRequestSchema, create(DiscoverRequestSchema, { capabilities: ["x"], limit: 5 })));
  });

  it("declines or agrees on damaged and unusual bytes: cut short, flipped, fields repeated, unknown fields", () => {
    const body = fc.tuple(registerInit, fc.nat(), fc.nat(255), fc.nat()).map(([init, at, byte, cut]) => {
      const bytes = Buffer.from(toBinary(RegisterRequestSchema, create(RegisterRequestSchema, init as never)));
      const flipped = Buffer.from(bytes);
      if (flipped.length > 0) flipped[at % flipped.length] = byte;
      return [bytes, flipped, bytes.subarray(0, cut % (bytes.length + 1)), Buffer.concat([bytes, bytes]), Buffer.concat([bytes, Buffer.from([0xf8, 0x3e, 0x01])])];
    });
    fc.assert(fc.property(body, (variants) => variants.forEach((b) => agrees(RegisterRequestSchema, b))), { numRuns: 400 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 60 }), (b) => agrees(RegisterRequestSchema, b)), { numRuns: 400 });
  });

  it("agrees with fromBinary on every request type of every service: empty, and random bytes", () => {
    const inputs = [AdminService, AgentService, DirectoryService, FederationService, HealthService, RegistryService, RouterService].flatMap((s) => s.methods.map((m) => m.input));
    expect(inputs.length).toBeGreaterThan(20);
    let simple = 0;
    for (const schema of inputs) {
      agrees(schema, toBinary(schema, create(schema)));
      if (decodeSimple(schema, new Uint8Array(0)) !== undefined) simple++;
      fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (b) => agrees(schema, b)), { numRuns: 60 });
    }
    // Most requests are plain messages (the rest have oneofs, bytes or the like).
    expect(simple).toBeGreaterThan(inputs.length / 2);
  });

  it("declines what fromBinary must judge: invalid UTF-8, a __proto__ key, deep nesting, unknown fields", () => {
    const name = Buffer.from([0x0a, 0x02, 0xc3, 0x28]); // name: invalid UTF-8
    expect(decodeSimple(RegisterRequestSchema, name)).toBeUndefined();
    expect(() => fromBinary(RegisterRequestSchema, name)).toThrow();
    const proto = toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { labels: JSON.parse('{"__proto__":"x"}') }));
    expect(decodeSimple(RegisterRequestSchema, proto)).toBeUndefined();
    let deep: JsonObject = {};
    for (let i = 0; i < 40; i++) deep = { d: deep };
    const nested = toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { tools: [{ name: "t", inputSchema: deep }] }));
    expect(decodeSimple(RegisterRequestSchema, nested)).toBeUndefined();
    expect(decodeSimple(RegisterRequestSchema, Buffer.from([0xf8, 0x3e, 0x01]))).toBeUndefined();
    const ctor = toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { tools: [{ name: "t", inputSchema: { constructor: [1] } }] }));
    expect(decodeSimple(RegisterRequestSchema, ctor)).toEqual(fromBinary(RegisterRequestSchema, ctor));
  });

  it("shares a Struct sent again as one frozen object whose noted depth and size are validation's", () => {
    const schema = { type: "object", properties: { q: { type: "string", enum: ["a", "b"] } }, n: [1, [true, null]] };
    const body = (i: number) =>
      toBinary(
        RegisterRequestSchema,
        create(RegisterRequestSchema, {
          name: `a${i}`,
          endpoint: { url: "grpc://h:1", transport: Transport.GRPC },
          capabilities: [{ name: "c" }],
          tools: [{ name: "t", description: `d${i}`, inputSchema: schema }],
        }),
      );
    const first = decodeSimple(RegisterRequestSchema, body(1))!;
    const second = decodeSimple(RegisterRequestSchema, body(2))!;
    expect(second.tools[0]!.inputSchema).toBe(first.tools[0]!.inputSchema);
    expect(Object.isFrozen(first.tools[0]!.inputSchema)).toBe(true);
    expect(first.tools[0]!.inputSchema).toEqual(schema);
    expect(jsonFacts(first.tools[0]!.inputSchema!)).toEqual({ depth: 5, bytes: Buffer.byteLength(JSON.stringify(schema)) });
    // A different schema is a different object.
    const other = toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { tools: [{ name: "t", inputSchema: { type: "string" } }] }));
    expect(decodeSimple(RegisterRequestSchema, other)!.tools[0]!.inputSchema).toEqual({ type: "string" });
    // Validation gives the same answer for the shared object as for a fresh one.
    const lease = { defaultTtlMs: 30_000, minTtlMs: 1_000, maxTtlMs: 600_000 } as never;
    expect(parseRegister(second, lease).tools).toEqual(parseRegister(fromBinary(RegisterRequestSchema, body(2)), lease).tools);
    // ...and refuses the same way: one level past the limit, shared or not.
    let deep: JsonObject = { type: "string" };
    for (let i = 0; i < 15; i++) deep = { d: deep };
    const tooDeep = toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { name: "a", endpoint: { url: "grpc://h:1" }, capabilities: [{ name: "c" }], tools: [{ name: "t", inputSchema: deep }] }));
    for (let i = 0; i < 2; i++) {
      const shared = decodeSimple(RegisterRequestSchema, tooDeep)!;
      expect(jsonFacts(shared.tools[0]!.inputSchema!)?.depth).toBe(17);
      expect(() => parseRegister(shared, lease)).toThrow(/tools\[0\]\.input_schema: nests deeper than 16 levels/);
      expect(() => parseRegister(fromBinary(RegisterRequestSchema, tooDeep), lease)).toThrow(/tools\[0\]\.input_schema: nests deeper than 16 levels/);
    }
  });
});

describe("parseRegister's one pass", () => {
  const lease = { defaultTtlMs: 30_000, minTtlMs: 1_000, maxTtlMs: 600_000 } as never;
  const req = (init: object) => create(RegisterRequestSchema, { name: "a", endpoint: { url: "grpc://h:1" }, capabilities: [{ name: "c" }], ...init });
  it("names the item that repeats or fails, in short and long lists", () => {
    for (const n of [3, 40]) {
      const tools = Array.from({ length: n }, (_, i) => ({ name: `t${i}` }));
      expect(parseRegister(req({ tools }), lease).tools).toHaveLength(n);
      tools[n - 1]!.name = "t1";
      expect(() => parseRegister(req({ tools }), lease)).toThrow(`tools[${n - 1}].name: duplicate tool "t1"`);
      const capabilities = Array.from({ length: Math.min(n, 64) }, (_, i) => ({ name: `c${i}`, tags: ["x", "x"] }));
      expect(parseRegister(req({ capabilities }), lease).capabilities[0]!.tags).toEqual(["x"]);
      capabilities[capabilities.length - 1]!.name = "c0";
      expect(() => parseRegister(req({ capabilities }), lease)).toThrow(`capabilities[${capabilities.length - 1}].name: duplicate capability "c0"`);
    }
    expect(() => parseRegister(req({ capabilities: [{ name: "c", tags: ["ok", "-bad"] }] }), lease)).toThrow(/capabilities\[0\]\.tags\[1\]: value "-bad" does not match/);
    expect(() => parseRegister(req({ tools: [{ name: "t", description: "x".repeat(4097) }] }), lease)).toThrow("tools[0].description: must be at most 4096 characters");
    expect(() => parseRegister(req({ labels: { "-k": "v" } }), lease)).toThrow(/labels\["-k"\]: key "-k" does not match/);
    expect(() => parseRegister(req({ labels: { k: "v".repeat(257) } }), lease)).toThrow('labels["k"]: must be at most 256 characters');
  });
});
