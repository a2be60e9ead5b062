import { create, equals, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema, durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { AgentSchema, CapabilitySchema, EndpointSchema, ToolSchema } from "../gen/federation/v1/agent_pb.js";
import { baseOf, isImmutable } from "../src/message-hints.js";
import { agentMessageOnce, duration, timestamp, toAgentMessage, toCatalogAgentMessage } from "../src/registry/agent-message.js";
import { AgentStatus, type AgentRecord } from "../src/registry/agent-record.js";
import { MessageEncoder } from "../src/transport/message-encoding.js";
import { agent } from "./contracts/agent-store.contract.js";

/** The agent's message as create() builds it, field by field from the record: what the cached ones must equal. */
function reference(a: AgentRecord) {
  return create(AgentSchema, {
    id: a.id,
    tenant: a.tenant,
    shared: a.shared,
    name: a.name,
    version: a.version,
    status: a.status,
    endpoint: create(EndpointSchema, { url: a.endpoint.url, transport: a.endpoint.transport }),
    capabilities: a.capabilities.map((c) => create(CapabilitySchema, { name: c.name, tags: [...c.tags] })),
    tools: a.tools.map((t) => create(ToolSchema, { name: t.name, description: t.description, inputSchema: t.inputSchema })),
    labels: { ...a.labels },
    registeredAt: timestampFromMs(a.registeredAt),
    lastHeartbeatAt: timestampFromMs(a.lastHeartbeatAt),
    leaseExpiresAt: timestampFromMs(a.leaseExpiresAt),
    leaseTtl: durationFromMs(a.leaseTtlMs),
    load: a.load,
    revision: BigInt(a.revision),
  });
}

describe("agent messages", () => {
  const times = [0, 1, 999, 1_000, 1_001, -1, -999, -1_000, -1_001, 1_764_547_200_123, 1.5, 30_000, -30_500];

  it("writes timestamps and durations as timestampFromMs and durationFromMs do", () => {
    for (const ms of times) {
      expect(timestamp(ms)).toEqual(timestampFromMs(ms));
      expect(equals(TimestampSchema, timestamp(ms), timestampFromMs(ms))).toBe(true);
      expect(duration(ms)).toEqual(durationFromMs(ms));
      expect(Buffer.from(toBinary(DurationSchema, duration(ms))).equals(Buffer.from(toBinary(DurationSchema, durationFromMs(ms))))).toBe(true);
    }
  });

  it("equals, encodes and prints as create()'s message, for the base, each revision and the catalog view", () => {
    const first = agent("m1", {
      labels: { zone: "z1" },
      caps: [["code", ["py", "go"]], ["review", []]],
      tools: [{ name: "search", description: "web search", inputSchema: { type: "object", properties: { q: { type: "string" } } } }, { name: "bare", description: "", inputSchema: undefined }],
    });
    const beat = { ...first, status: AgentStatus.DEGRADED, load: 0.25, lastHeartbeatAt: first.lastHeartbeatAt + 5, leaseExpiresAt: first.leaseExpiresAt + 5, revision: 7 };
    const encoder = new MessageEncoder(baseOf);
    for (const record of [first, beat]) {
      const want = reference(record);
      for (const got of [agentMessageOnce(record), toAgentMessage(record)]) {
        expect(Object.getPrototypeOf(got)).toBe(Object.prototype);
        expect(equals(AgentSchema, got, want)).toBe(true);
        expect(toJson(AgentSchema, got)).toEqual(toJson(AgentSchema, want));
        expect(Buffer.from(toBinary(AgentSchema, got)).equals(Buffer.from(toBinary(AgentSchema, want)))).toBe(true);
        expect(equals(AgentSchema, create(AgentSchema, got), want)).toBe(true);
        expect(isImmutable(got)).toBe(true);
        // Its base, made by `new`: a plain message all the same, immutable, tools too.
        const base = baseOf(got) as typeof got;
        expect(Object.getPrototypeOf(base)).toBe(Object.prototype);
        expect(Object.keys(base)).toEqual(Object.keys(got));
        expect(isImmutable(base)).toBe(true);
        for (const t of base.tools) {
          expect(Object.getPrototypeOf(t)).toBe(Object.prototype);
          expect(isImmutable(t)).toBe(true);
          expect(JSON.stringify(t)).toBe(JSON.stringify(create(ToolSchema, { name: t.name, description: t.description, inputSchema: t.inputSchema })));
        }
        // The transport's bytes (kept parts on the base's) decode to it too.
        expect(equals(AgentSchema, fromBinary(AgentSchema, encoder.frame(AgentSchema, got).subarray(5)), want)).toBe(true);
      }
      const view = toCatalogAgentMessage(record);
      const viewWant = create(AgentSchema, { ...want, lastHeartbeatAt: undefined, leaseExpiresAt: undefined, load: 0, revision: 0n });
      expect(equals(AgentSchema, view, viewWant)).toBe(true);
      expect(toJson(AgentSchema, view)).toEqual(toJson(AgentSchema, viewWant));
    }
  });

  it("shares one lease TTL message between agents registered with the same TTL, and builds a base again when anything static changes", () => {
    const a = agentMessageOnce(agent("s1"));
    const b = agentMessageOnce(agent("s2"));
    expect(a.leaseTtl).toBe(b.leaseTtl);
    const c = agentMessageOnce({ ...agent("s3"), leaseTtlMs: 45_000 });
    expect(c.leaseTtl).not.toBe(a.leaseTtl);
    expect(Number(c.leaseTtl!.seconds)).toBe(45);
    // The base is compared with the record by value where it holds values (endpoint, registration time).
    const r = agent("s4");
    const before = baseOf(agentMessageOnce(r));
    expect(baseOf(agentMessageOnce({ ...r, endpoint: { ...r.endpoint }, revision: r.revision + 1 }))).toBe(before);
    expect(baseOf(agentMessageOnce({ ...r, endpoint: { ...r.endpoint, transport: r.endpoint.transport + 1 }, revision: r.revision + 2 }))).not.toBe(before);
    const moved = agentMessageOnce({ ...r, registeredAt: r.registeredAt + 1, revision: r.revision + 3 });
    expect(baseOf(moved)).not.toBe(before);
    expect(equals(AgentSchema, moved, reference({ ...r, registeredAt: r.registeredAt + 1, revision: r.revision + 3 }))).toBe(true);
  });
});
