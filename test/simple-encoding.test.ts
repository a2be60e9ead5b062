import { create, equals, fromBinary, toBinary, type DescMessage, type JsonObject, type Message } from "@bufbuild/protobuf";
import { StructSchema } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AgentSchema, ToolSchema } from "../gen/federation/v1/agent_pb.js";
import { DiscoverResponseSchema } from "../gen/federation/v1/directory_service_pb.js";
import { HeartbeatRequestSchema, HeartbeatResponseSchema, RegisterRequestSchema, RegisterResponseSchema } from "../gen/federation/v1/registry_service_pb.js";
import { agentMessageOnce } from "../src/registry/agent-message.js";
import { baseOf } from "../src/message-hints.js";
import { MessageEncoder } from "../src/transport/message-encoding.js";
import { encodeSimple } from "../src/transport/simple-encoding.js";
import { structBytes } from "../src/transport/struct-encoding.js";
import { agent } from "./contracts/agent-store.contract.js";

// Strings with anything in them: multi-byte characters and lone surrogates (both encoders write U+FFFD for those).
const text = fc.string({ unit: "binary", maxLength: 40 });
const json = fc.letrec<{ value: unknown; object: JsonObject }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.constant(null),
    fc.boolean(),
    fc.double(),
    fc.integer(),
    text,
    tie("object"),
    fc.array(tie("value"), { maxLength: 4 }),
  ),
  object: fc.dictionary(fc.oneof(text, fc.constantFrom("__proto__", "constructor", "1", "")), tie("value"), { maxKeys: 5 }) as fc.Arbitrary<JsonObject>,
})).object;
const int32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const timestamp = fc.record({ seconds: fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n), nanos: int32 });
const tool = fc.record({ name: text, description: text, inputSchema: fc.option(json, { nil: undefined }) });
const capability = fc.record({ name: text, tags: fc.array(text, { maxLength: 3 }) });
const agentInit = fc.record(
  {
    id: text,
    name: text,
    version: text,
    status: int32,
    endpoint: fc.record({ url: text, transport: int32 }),
    capabilities: fc.array(capability, { maxLength: 3 }),
    tools: fc.array(tool, { maxLength: 3 }),
    labels: fc.dictionary(text, text, { maxKeys: 3 }),
    registeredAt: timestamp,
    lastHeartbeatAt: timestamp,
    leaseTtl: timestamp,
    load: fc.double(),
    revision: fc.bigInt(0n, 2n ** 64n - 1n),
    tenant: text,
    shared: fc.boolean(),
    origin: fc.record({ peerId: text, remoteId: text, peerUrl: text }),
  },
  { requiredKeys: [] },
);

/** encodeSimple writes exactly toBinary's bytes (it handles the type), and they decode to the message. */
function same(schema: DescMessage, m: Message): void {
  const ours = encodeSimple(schema, m);
  expect(ours).toBeDefined();
  expect(Buffer.from(ours!).equals(Buffer.from(toBinary(schema, m)))).toBe(true);
}

describe("encodeSimple", () => {
  it("writes toBinary's bytes for random agents (every field kind it handles, edge values included)", () => {
    fc.assert(fc.property(agentInit, (init) => same(AgentSchema, create(AgentSchema, init as never))), { numRuns: 400 });
  });

  it("writes toBinary's bytes for the answers and requests that carry agents", () => {
    fc.assert(
      fc.property(agentInit, fc.option(timestamp, { nil: undefined }), text, (init, ts, passport) => {
        const a = create(AgentSchema, init as never);
        same(RegisterResponseSchema, create(RegisterResponseSchema, { agent: a, leaseTtl: ts, passport, passportExpiresAt: ts }));
        same(HeartbeatResponseSchema, create(HeartbeatResponseSchema, { agent: a, passport }));
        same(DiscoverResponseSchema, create(DiscoverResponseSchema, { agents: [a, a] }));
      }),
      { numRuns: 150 },
    );
    // proto3 `optional`: written when set, zero included.
    same(HeartbeatRequestSchema, create(HeartbeatRequestSchema, { agentId: "a", load: 0 }));
    same(HeartbeatRequestSchema, create(HeartbeatRequestSchema, { agentId: "a" }));
  });

  it("writes a Struct's bytes as toBinary does, cached only for a deep-frozen object", () => {
    fc.assert(
      fc.property(json, (schema) => {
        same(ToolSchema, create(ToolSchema, { name: "t", inputSchema: schema }));
      }),
      { numRuns: 300 },
    );
    const open = { type: "object", properties: { q: { type: "string" } } } as JsonObject;
    const first = structBytes(open)!;
    (open.properties as JsonObject).q = { type: "number" };
    const changed = structBytes(open)!;
    expect(Buffer.from(changed).equals(Buffer.from(first))).toBe(false);
    expect(Buffer.from(changed).equals(Buffer.from(toBinary(ToolSchema, create(ToolSchema, { inputSchema: open })).subarray(2)))).toBe(true);
    // Frozen only at the top: its insides may still change, so nothing is kept.
    const shallow = Object.freeze({ p: { type: "string" } }) as JsonObject;
    expect(structBytes(shallow)).not.toBe(structBytes(shallow));
    const deep = Object.freeze({ p: Object.freeze({ type: "string" }) }) as JsonObject;
    expect(structBytes(deep)).toBe(structBytes(deep));
  });

  it("leaves what it does not handle to toBinary: oneofs, Value, wrong types, unknown fields", () => {
    // google.protobuf.Struct itself: a map of Value messages (a oneof each).
    expect(encodeSimple(StructSchema, create(StructSchema))).toBeUndefined();
    const m = create(AgentSchema, { id: "x" });
    (m as unknown as { load: unknown }).load = "not a number";
    expect(encodeSimple(AgentSchema, m)).toBeUndefined();
    const withUnknown = fromBinary(AgentSchema, Buffer.concat([toBinary(AgentSchema, create(AgentSchema, { id: "x" })), Buffer.from([0xf8, 0x3e, 0x01])]));
    expect(withUnknown.$unknown).toBeDefined();
    expect(encodeSimple(AgentSchema, withUnknown)).toBeUndefined();
    const schema = { bad: undefined } as unknown as JsonObject;
    expect(structBytes(schema)).toBeUndefined();
    expect(encodeSimple(ToolSchema, create(ToolSchema, { inputSchema: schema }))).toBeUndefined();
  });
});

describe("MessageEncoder on encodeSimple", () => {
  it("frames Register answers that decode to the answer, for random agents and the cached parts of real ones", () => {
    const encoder = new MessageEncoder(baseOf);
    fc.assert(
      fc.property(agentInit, text, (init, passport) => {
        const answer = create(RegisterResponseSchema, { agent: create(AgentSchema, init as never), passport });
        const frame = encoder.frame(RegisterResponseSchema, answer);
        expect(frame.readUInt32BE(1)).toBe(frame.length - 5);
        // Compared by toBinary's bytes of both (equals() holds NaN unequal to itself: a load of NaN failed it).
        expect(toBinary(RegisterResponseSchema, fromBinary(RegisterResponseSchema, frame.subarray(5)))).toEqual(toBinary(RegisterResponseSchema, answer));
      }),
      { numRuns: 100 },
    );
    const schema = Object.freeze({ type: "object", properties: Object.freeze({ q: Object.freeze({ type: "string" }) }) }) as JsonObject;
    for (let i = 0; i < 3; i++) {
      const record = agent(`a${i}`, { tools: [{ name: `t${i}`, description: `tool ${i}`, inputSchema: schema }], labels: { zone: "z" } });
      const answer = create(RegisterResponseSchema, { agent: agentMessageOnce(record), passport: "p" });
      const frame = encoder.frame(RegisterResponseSchema, answer);
      expect(equals(RegisterResponseSchema, fromBinary(RegisterResponseSchema, frame.subarray(5)), answer)).toBe(true);
      expect(toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { tools: answer.agent!.tools })).length).toBeGreaterThan(0);
    }
  });
});
