import { create, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import { RegisterRequestSchema } from "../gen/federation/v1/registry_service_pb.js";
import { loadConfig } from "../src/config.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { Registry } from "../src/registry/registry.js";
import { SharedValues, toolContentHash } from "../src/registry/shared-values.js";
import type { Principal } from "../src/security/principal.js";
import { decodeSimple } from "../src/transport/simple-decoding.js";
import { parseRegister } from "../src/validation/requests.js";
import { ManualClock } from "./support/manual-clock.js";

const lease = loadConfig({}).lease;
const t1: Principal = { subject: "test", tenant: "t1", scopes: new Set(["admin"]), via: "token" };
const t2: Principal = { ...t1, tenant: "t2" };

const schema = { type: "object", properties: { q: { type: "string" }, n: { type: "number" } } };
function replica(overrides: Record<string, unknown> = {}) {
  return parseRegister(
    create(RegisterRequestSchema, {
      name: "summarizer",
      version: "2.1.0",
      endpoint: { url: "http://127.0.0.1:1" },
      capabilities: [{ name: "summarize", tags: ["en", "fast"] }, { name: "translate", tags: ["en"] }],
      tools: [{ name: "summarize_text", description: "Summarizes text", inputSchema: structuredClone(schema) }],
      labels: { zone: "eu-1" },
      ...overrides,
    }),
    lease,
  );
}

describe("shared record values", () => {
  const newRegistry = () => {
    const clock = new ManualClock();
    return new Registry(new MemoryAgentStore(), new MemoryEventBus(clock, 100), clock, lease, pino({ level: "silent" }));
  };

  it("holds the capabilities, tools and labels that replicas register alike once, across tenants", async () => {
    const registry = newRegistry();
    const a = await registry.register(replica(), t1);
    const b = await registry.register(replica(), t2);
    expect(b.capabilities[0]).toBe(a.capabilities[0]);
    expect(b.capabilities[1]).toBe(a.capabilities[1]);
    expect(b.tools[0]).toBe(a.tools[0]);
    expect(b.labels).toBe(a.labels);
    // Shared, not changed: each record reads exactly what was registered.
    expect(b.capabilities).toEqual([
      { name: "summarize", tags: ["en", "fast"] },
      { name: "translate", tags: ["en"] },
    ]);
    expect(b.tools).toEqual([{ name: "summarize_text", description: "Summarizes text", inputSchema: schema }]);
    expect(b.labels).toEqual({ zone: "eu-1" });
  });

  it("shares whole lists too, so what is derived per list (passport capability hash, messages, catalog words) is computed once per kind", async () => {
    const registry = newRegistry();
    const a = await registry.register(replica(), t1);
    const b = await registry.register(replica(), t2);
    expect(b.capabilities).toBe(a.capabilities);
    expect(b.tools).toBe(a.tools);
    expect(Object.isFrozen(a.capabilities) && Object.isFrozen(a.tools)).toBe(true);
    // A list that differs in one item is another list, whose equal items are still shared.
    const c = await registry.register(replica({ capabilities: [{ name: "summarize", tags: ["en", "fast"] }] }), t1);
    expect(c.capabilities).not.toBe(a.capabilities);
    expect(c.capabilities[0]).toBe(a.capabilities[0]);
    // Schemas with their keys in another order: other values here, one tool to the catalog (canonical content hash).
    const shared = new SharedValues();
    const [x] = shared.tools([{ name: "t", description: "d", inputSchema: { type: "object", required: ["q"] } }]);
    const [y] = shared.tools([{ name: "t", description: "d", inputSchema: { required: ["q"], type: "object" } }]);
    expect(y).not.toBe(x);
    expect(toolContentHash(y!)).toBe(toolContentHash(x!));
    expect(toolContentHash(shared.tools([{ name: "t", description: "d2", inputSchema: x!.inputSchema }])[0]!)).not.toBe(toolContentHash(x!));
  });

  it("keeps different values apart and shares only what is equal", async () => {
    const registry = newRegistry();
    const a = await registry.register(replica(), t1);
    const other = await registry.register(
      replica({
        capabilities: [{ name: "summarize", tags: ["en"] }],
        tools: [{ name: "summarize_text", description: "Summarizes text, briefly", inputSchema: structuredClone(schema) }],
        labels: { zone: "eu-2" },
      }),
      t1,
    );
    expect(other.capabilities).toEqual([{ name: "summarize", tags: ["en"] }]);
    expect(other.capabilities[0]).not.toBe(a.capabilities[0]);
    expect(other.tools[0]!.description).toBe("Summarizes text, briefly");
    expect(other.tools[0]).not.toBe(a.tools[0]);
    // The schema is the same value, so both tools hold one copy of it.
    expect(other.tools[0]!.inputSchema).toBe(a.tools[0]!.inputSchema);
    expect(other.labels).toEqual({ zone: "eu-2" });
    // A schema differing in one leaf is not shared.
    const changed = await registry.register(
      replica({ tools: [{ name: "summarize_text", description: "Summarizes text", inputSchema: { ...schema, required: ["q"] } }] }),
      t1,
    );
    expect(changed.tools[0]!.inputSchema).toEqual({ ...schema, required: ["q"] });
    expect(changed.tools[0]!.inputSchema).not.toBe(a.tools[0]!.inputSchema);
  });

  it("freezes shared values, so no holder can change another agent's record", async () => {
    const a = await newRegistry().register(replica(), t1);
    expect(() => ((a.capabilities[0]!.tags as string[])[0] = "x")).toThrow(TypeError);
    expect(() => ((a.tools[0]!.inputSchema!.properties as Record<string, unknown>).q = {})).toThrow(TypeError);
    expect(() => ((a.labels as Record<string, string>).zone = "x")).toThrow(TypeError);
    expect(a.capabilities[0]!.tags).toEqual(["en", "fast"]);
  });

  it("never takes one value for another, whatever their text holds", () => {
    const shared = new SharedValues();
    // Keys made by joining the fields with a separator would make each pair one value.
    const [a] = shared.tools([{ name: "t", description: "x\u0000y", inputSchema: undefined }]);
    const [b] = shared.tools([{ name: "t\u0000x", description: "y", inputSchema: undefined }]);
    expect(a).toEqual({ name: "t", description: "x\u0000y", inputSchema: undefined });
    expect(b).toEqual({ name: "t\u0000x", description: "y", inputSchema: undefined });
    const [c] = shared.capabilities([{ name: "c", tags: ["x\u0000y"] }]);
    const [d] = shared.capabilities([{ name: "c", tags: ["x", "y"] }]);
    expect(c).toEqual({ name: "c", tags: ["x\u0000y"] });
    expect(d).toEqual({ name: "c", tags: ["x", "y"] });
  });

  it("knows the gRPC decoder's shared schema by the object itself, and tells other objects by content", () => {
    const shared = new SharedValues();
    // Two requests with the same schema bytes: the decoder hands both one deep-frozen object.
    const bytes = toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { tools: [{ name: "t", inputSchema: structuredClone(schema) }] }));
    const decoded = decodeSimple(RegisterRequestSchema, bytes)!.tools[0]!.inputSchema!;
    expect(decodeSimple(RegisterRequestSchema, bytes)!.tools[0]!.inputSchema).toBe(decoded);
    const tool = (inputSchema: JsonObject, description = "d") => ({ name: "t", description, inputSchema });
    const [first] = shared.tools([tool(decoded)]);
    expect(first!.inputSchema).toBe(decoded);
    const stringify = vi.spyOn(JSON, "stringify");
    try {
      // The same object again: its slot by identity, no JSON text of it.
      const [again] = shared.tools([tool(decoded, "other")]);
      expect(again!.inputSchema).toBe(decoded);
      expect(stringify.mock.calls.some(([v]) => v === decoded)).toBe(false);
      // A merely frozen object (it may hold mutable ones) is found by its content, every time.
      const frozen = Object.freeze(structuredClone(schema));
      expect(shared.tools([tool(frozen)])[0]!.inputSchema).toBe(decoded);
      expect(shared.tools([tool(frozen, "x")])[0]!.inputSchema).toBe(decoded);
      expect(stringify.mock.calls.filter(([v]) => v === frozen)).toHaveLength(2);
    } finally {
      stringify.mockRestore();
    }
    // Different content: its own.
    const other = structuredClone({ ...schema, required: ["q"] });
    expect(shared.tools([tool(other)])[0]!.inputSchema).toBe(other);
  });

  it("stays correct past its bounds: unique values are kept, only not shared", () => {
    const shared = new SharedValues();
    const caps = Array.from({ length: 60_000 }, (_, i) => ({ name: `cap.${i}`, tags: [`tag.${i % 7}`] }));
    const out = shared.capabilities(caps);
    expect(out).toEqual(caps);
    // The most recent are still shared; labels with a "__proto__" key stay plain data.
    expect(shared.capabilities([{ name: "cap.59999", tags: ["tag.2"] }])[0]).toBe(out[59_999]);
    const labels = shared.labels(JSON.parse('{"__proto__":"x","a":"b"}') as Record<string, string>);
    expect(Object.getPrototypeOf(labels)).toBe(Object.prototype);
    expect(Object.keys(labels)).toEqual(["__proto__", "a"]);
  });

  it("gives a pooled tool the content hash of the same tool as plain data, and shows it as plain data", () => {
    const shared = new SharedValues();
    const plain = { name: "t", description: "d \"quoted\"", inputSchema: { type: "object", properties: { q: { type: "string" } } } };
    const [pooled] = shared.tools([plain, { name: "u", description: "", inputSchema: undefined }]);
    const copy = JSON.parse(JSON.stringify(plain)) as typeof plain;
    // The plain copy's hash comes from the WeakMap path, computed independently of the pooled tool's.
    expect(toolContentHash(pooled!)).toBe(toolContentHash(copy));
    expect(toolContentHash(pooled!)).toBe(toolContentHash(pooled!));
    expect(toolContentHash(shared.tools([{ name: "u", description: "", inputSchema: undefined }])[0]!)).toBe(
      toolContentHash({ name: "u", description: "", inputSchema: undefined }),
    );
    expect(Object.isFrozen(pooled)).toBe(true);
    expect(Object.keys(pooled!)).toEqual(["name", "description", "inputSchema"]);
    // Every pooled value is frozen all the way down (each is frozen shallowly, built of frozen parts).
    const unfrozen = (v: unknown, at: string): string[] =>
      v === null || typeof v !== "object"
        ? []
        : [...(Object.isFrozen(v) ? [] : [at]), ...Object.entries(v).flatMap(([k, x]) => unfrozen(x, `${at}.${k}`))];
    const deep = { properties: { q: { type: "string", enum: ["a", "b"] } }, required: ["q"] };
    expect(unfrozen(shared.tools([{ name: "v", description: "e", inputSchema: deep }]), "tools")).toEqual([]);
    expect(unfrozen(shared.capabilities([{ name: "c", tags: ["x", "y"] }, { name: "d", tags: [] }]), "capabilities")).toEqual([]);
    expect(unfrozen(shared.labels({ a: "b" }), "labels")).toEqual([]);
    expect(JSON.parse(JSON.stringify(pooled))).toEqual(plain);
  });
});
