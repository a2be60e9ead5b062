import { create, equals, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AgentSchema, CapabilitySchema, EndpointSchema, ToolSchema } from "../gen/federation/v1/agent_pb.js";
import { DiscoverResponseSchema, GetManifestResponseSchema, ManifestSchema } from "../gen/federation/v1/directory_service_pb.js";
import { HeartbeatResponseSchema } from "../gen/federation/v1/registry_service_pb.js";
import { RouteResponseSchema } from "../gen/federation/v1/router_service_pb.js";
import { AgentStatus } from "../src/registry/agent-record.js";
import { baseOf, markImmutable, withBase } from "../src/message-hints.js";
import { agentMessageOnce, toAgentMessage } from "../src/registry/agent-message.js";
import { JsonEncoder, MessageEncoder, SHARED_TEXT, joinParts } from "../src/transport/message-encoding.js";
import { agent } from "./contracts/agent-store.contract.js";

const records = [
  agent("a1", {
    labels: { zone: "z1" },
    tools: [{ name: "search", description: "web search", inputSchema: { type: "object", properties: { q: { type: "string" } } } }],
  }),
  agent("a2", { caps: [["code", ["py", "go"]], ["review", []]] }),
  // A long one: lengths above 127 need multi-byte varints.
  agent("a3", { tools: Array.from({ length: 40 }, (_, i) => ({ name: `t${i}`, description: "x".repeat(50), inputSchema: undefined })) }),
];

describe("MessageEncoder", () => {
  const encoder = new MessageEncoder();

  it("encodes repeated immutable messages to bytes that decode to the same message", () => {
    const msg = create(DiscoverResponseSchema, { agents: records.map(toAgentMessage) });
    const bytes = encoder.encode(DiscoverResponseSchema, msg);
    expect(equals(DiscoverResponseSchema, fromBinary(DiscoverResponseSchema, bytes), msg)).toBe(true);
  });

  it("caches nothing for a message nobody marked, whatever its type, so a mutation always shows", () => {
    const plain = create(AgentSchema, { id: "p", endpoint: create(EndpointSchema, { url: "https://a" }), tools: [create(ToolSchema, { name: "t" })] });
    const first = encoder.encodeParts(AgentSchema, plain);
    expect(first).toHaveLength(1);
    expect(Buffer.from(first[0] as Uint8Array).equals(Buffer.from(toBinary(AgentSchema, plain)))).toBe(true);
    plain.endpoint!.url = "https://b";
    plain.tools[0]!.name = "u";
    const again = fromBinary(AgentSchema, encoder.encode(AgentSchema, plain));
    expect(again.endpoint!.url).toBe("https://b");
    expect(again.tools[0]!.name).toBe("u");
    // A list is taken from caches only when every item is marked.
    const mixed = create(DiscoverResponseSchema, { agents: [toAgentMessage(records[0]!), create(AgentSchema, { id: "unmarked" })] });
    expect(equals(DiscoverResponseSchema, fromBinary(DiscoverResponseSchema, encoder.encode(DiscoverResponseSchema, mixed)), mixed)).toBe(true);
  });

  it("handles a singular immutable field beside ordinary ones", () => {
    const agents = records.map(toAgentMessage);
    const msg = create(RouteResponseSchema, {
      agent: agents[1],
      candidates: agents.map((a, i) => ({ agentId: a.id, score: 1 - i / 10 })),
      reason: "best of 3",
      routeId: "r-1",
    });
    const bytes = encoder.encode(RouteResponseSchema, msg);
    expect(equals(RouteResponseSchema, fromBinary(RouteResponseSchema, bytes), msg)).toBe(true);
  });

  it("writes immutable fields first when they are not the lowest-numbered, which decodes the same", () => {
    const msg = create(GetManifestResponseSchema, {
      manifest: { name: "fed", agents: records.map(toAgentMessage) },
      signature: "sig",
    });
    const manifest = msg.manifest!;
    const bytes = encoder.encode(ManifestSchema, manifest);
    expect(equals(ManifestSchema, fromBinary(ManifestSchema, bytes), manifest)).toBe(true);
    expect(fromBinary(ManifestSchema, bytes).agents.map((a) => a.id)).toEqual(["a1", "a2", "a3"]);
  });

  it("frames an answer marked immutable once and writes those bytes again; others are framed per call", () => {
    /** A frame: flag 0, a length that matches, and a message equal to `m`. */
    const framesOf = (frame: Buffer, m: ReturnType<typeof create<typeof DiscoverResponseSchema>>) =>
      frame[0] === 0 && frame.readUInt32BE(1) === frame.length - 5 && equals(DiscoverResponseSchema, fromBinary(DiscoverResponseSchema, frame.subarray(5)), m);
    const plain = create(DiscoverResponseSchema, { agents: records.map(toAgentMessage) });
    const a = encoder.frame(DiscoverResponseSchema, plain);
    const b = encoder.frame(DiscoverResponseSchema, plain);
    expect(a).not.toBe(b);
    expect(framesOf(a, plain)).toBe(true);
    const marked = markImmutable(create(DiscoverResponseSchema, { agents: records.map(toAgentMessage) }));
    const c = encoder.frame(DiscoverResponseSchema, marked);
    expect(encoder.frame(DiscoverResponseSchema, marked)).toBe(c);
    expect(c.equals(a)).toBe(true);
    expect(framesOf(c, plain)).toBe(true);
    // The mark is invisible to the message's own encodings.
    expect(equals(DiscoverResponseSchema, marked, plain)).toBe(true);
    expect(toJson(DiscoverResponseSchema, marked)).toEqual(toJson(DiscoverResponseSchema, plain));
  });

  it("caches the encoding of a top-level immutable message", () => {
    const m = toAgentMessage(records[2]!);
    expect(encoder.encodeParts(AgentSchema, m)[0]).toBe(encoder.encodeParts(AgentSchema, m)[0]);
    expect(equals(AgentSchema, fromBinary(AgentSchema, encoder.encode(AgentSchema, m)), m)).toBe(true);
  });

  it("encodes each immutable message once and reuses its bytes", () => {
    const msg = create(DiscoverResponseSchema, { agents: [toAgentMessage(records[0]!)] });
    const first = encoder.encodeParts(DiscoverResponseSchema, msg);
    const second = encoder.encodeParts(DiscoverResponseSchema, msg);
    // [tag, length, agent bytes, rest]: the agent's kept bytes (a string of them).
    expect(typeof second[2]).toBe("string");
    expect(second[2]).toBe(first[2]);
    // A new record (new revision) is a new message with its own encoding.
    const changed = toAgentMessage({ ...records[0]!, load: 0.5, revision: 2 });
    const third = encoder.encodeParts(DiscoverResponseSchema, create(DiscoverResponseSchema, { agents: [changed] }));
    expect(third[2]).not.toBe(first[2]);
    expect(fromBinary(DiscoverResponseSchema, joinParts(third)).agents[0]!.load).toBe(0.5);
  });

  it("leaves messages without immutable fields to toBinary", () => {
    const msg = create(AgentSchema, { id: "x" });
    expect(encoder.encodeParts(DiscoverResponseSchema, create(DiscoverResponseSchema))).toHaveLength(1);
    expect(Buffer.from(encoder.encode(RouteResponseSchema, create(RouteResponseSchema, { reason: "r" }))).length).toBeGreaterThan(0);
    expect(msg.id).toBe("x");
  });

  describe("with an agent's parts immutable too (as the gRPC path uses it)", () => {
    const full = new MessageEncoder();

    it("encodes agents that decode to the same message", () => {
      for (const r of records) {
        const m = toAgentMessage(r);
        expect(equals(AgentSchema, fromBinary(AgentSchema, full.encode(AgentSchema, m)), m)).toBe(true);
      }
    });

    it("reuses a heartbeat's unchanged endpoint, capabilities and tools, messages and bytes", () => {
      const before = toAgentMessage(records[0]!);
      const after = toAgentMessage({ ...records[0]!, load: 0.7, revision: 9 });
      expect(after).not.toBe(before);
      expect(after.tools[0]).toBe(before.tools[0]);
      expect(after.capabilities[0]).toBe(before.capabilities[0]);
      expect(after.endpoint).toBe(before.endpoint);
      const bytesBefore = full.encode(AgentSchema, before);
      const bytesAfter = full.encode(AgentSchema, after);
      const tool = full.encodeParts(ToolSchema, after.tools[0]!)[0]!;
      expect(full.encodeParts(ToolSchema, before.tools[0]!)[0]).toBe(tool);
      const decoded = fromBinary(AgentSchema, bytesAfter);
      expect(decoded.load).toBe(0.7);
      expect(decoded.revision).toBe(9n);
      expect(equals(AgentSchema, decoded, after)).toBe(true);
      expect(Buffer.from(bytesAfter).equals(Buffer.from(bytesBefore))).toBe(false);
      // A re-registration (new tools) gets new messages.
      const reRegistered = toAgentMessage({ ...records[0]!, tools: records[0]!.tools.map((t) => ({ ...t })), revision: 10 });
      expect(reRegistered.tools[0]).not.toBe(before.tools[0]);
    });
  });
});

describe("MessageEncoder with agent bases (as the gRPC path uses it)", () => {
  const encoder = new MessageEncoder(baseOf);
  const reference = new MessageEncoder();

  it("writes an agent as its registration's bytes plus the fields a heartbeat changes, decoding to the same message", () => {
    const first = agent("hb1", { labels: { zone: "z1" }, tools: records[0]!.tools });
    const beat = { ...first, status: AgentStatus.DEGRADED, load: 0.25, lastHeartbeatAt: first.lastHeartbeatAt + 5, leaseExpiresAt: 777_000, revision: 12 };
    const a = agentMessageOnce(first);
    const b = agentMessageOnce(beat);
    expect(baseOf(b)).toBe(baseOf(a));
    const base = encoder.encode(AgentSchema, baseOf(a)!);
    for (const [record, message] of [[first, a], [beat, b]] as const) {
      const bytes = Buffer.from(encoder.encode(AgentSchema, message));
      expect(bytes.subarray(0, base.length).equals(Buffer.from(base))).toBe(true);
      const decoded = fromBinary(AgentSchema, bytes);
      expect(equals(AgentSchema, decoded, message)).toBe(true);
      expect(equals(AgentSchema, decoded, fromBinary(AgentSchema, reference.encode(AgentSchema, message)))).toBe(true);
      expect(decoded.revision).toBe(BigInt(record.revision));
      expect(decoded.status).toBe(record.status);
      expect(decoded.load).toBe(record.load);
    }
    // Inside an answer: the same, and the answer's own fields too.
    const answer = create(HeartbeatResponseSchema, { agent: b, passport: "p.a.ss", leaseTtl: { seconds: 30n } });
    const decoded = fromBinary(HeartbeatResponseSchema, encoder.frame(HeartbeatResponseSchema, answer).subarray(5));
    expect(equals(HeartbeatResponseSchema, decoded, answer)).toBe(true);
  });

  it("keeps encodings as strings of their bytes (no Buffer, nothing of node's pool) and frames in buffers of their own", () => {
    // A slice of Buffer.allocUnsafe's 8 KiB pool keeps its whole chunk alive for as long as the
    // agent lives; between short-lived answers' bytes that was ~6 KiB of RSS per agent. A kept
    // Buffer of its own still cost ~200 bytes besides its bytes; a string costs 16.
    const record = agent("own-bytes", { labels: { zone: "z2" }, tools: records[1]!.tools });
    const message = agentMessageOnce(record);
    for (const m of [baseOf(message) as typeof message, message]) {
      const kept = encoder.encodeParts(AgentSchema, m);
      for (const part of kept) expect(typeof part === "string" || typeof part === "number").toBe(true);
      expect(equals(AgentSchema, fromBinary(AgentSchema, joinParts(kept)), m)).toBe(true);
    }
    const owns = (bytes: Uint8Array) => bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    const answer = markImmutable(create(DiscoverResponseSchema, { agents: [message] }));
    const frame = encoder.frame(DiscoverResponseSchema, answer);
    expect(frame.length).toBeLessThan(4096); // small enough that allocUnsafe would have pooled it
    expect(owns(frame)).toBe(true);
    expect(encoder.frame(DiscoverResponseSchema, answer)).toBe(frame);
    expect(equals(DiscoverResponseSchema, fromBinary(DiscoverResponseSchema, frame.subarray(5)), answer)).toBe(true);
    // Per-call answers still use the pool (cheaper, and gone with the call).
    expect(owns(encoder.frame(DiscoverResponseSchema, create(DiscoverResponseSchema, { agents: [message] })))).toBe(false);
  });

  it("keeps a revision's encoding as its base's kept text plus its own fields, not a copy of the base", () => {
    // A long agent: its base's kept encoding is SHARED_TEXT chars or more, so it is referred to.
    const first = agent("ref-base", { tools: records[2]!.tools });
    const beat = { ...first, load: 0.5, lastHeartbeatAt: first.lastHeartbeatAt + 1, revision: first.revision + 1 };
    const base = encoder.encodeParts(AgentSchema, baseOf(agentMessageOnce(first))!);
    expect(base).toHaveLength(1);
    expect((base[0] as string).length).toBeGreaterThanOrEqual(SHARED_TEXT);
    for (const record of [first, beat]) {
      const message = agentMessageOnce(record);
      const kept = encoder.encodeParts(AgentSchema, message);
      expect(kept).toHaveLength(2);
      expect(kept[0]).toBe(base[0]);
      expect(kept[1]).toBe(Buffer.from(toBinary(AgentSchema, Object.assign(create(AgentSchema), { status: message.status, lastHeartbeatAt: message.lastHeartbeatAt, leaseExpiresAt: message.leaseExpiresAt, load: message.load, revision: message.revision }))).toString("latin1"));
      const decoded = fromBinary(AgentSchema, joinParts(kept));
      expect(equals(AgentSchema, decoded, message)).toBe(true);
      expect(decoded.load).toBe(record.load);
    }
  });

  it("copies a kept encoding's immutable parts into it without keeping theirs, and keeps those encoded on their own", () => {
    const kept = (m: object) => Object.getOwnPropertySymbols(m).some((k) => k.description === "encoding");
    const record = agent("nested-kept", { tools: [{ name: "nk", description: "nested", inputSchema: { type: "object" } }] });
    const message = agentMessageOnce(record);
    const base = baseOf(message)!;
    const tool = message.tools[0]!;
    encoder.encodeParts(AgentSchema, message); // the revision's kept encoding, on its base's
    expect(kept(message)).toBe(true);
    expect(kept(base)).toBe(true);
    expect(kept(tool)).toBe(false); // its bytes are in the base's, only there
    expect(equals(AgentSchema, fromBinary(AgentSchema, encoder.encode(AgentSchema, message)), message)).toBe(true);
    // Encoded on its own (or in an answer that is not kept), a tool keeps its encoding.
    const alone = encoder.encode(ToolSchema, tool);
    expect(kept(tool)).toBe(true);
    expect(equals(ToolSchema, fromBinary(ToolSchema, alone), tool)).toBe(true);
  });

  it("keeps a shared part's encoding once a second kept encoding holds it, and every base holding it decodes right", () => {
    const kept = (m: object) => Object.getOwnPropertySymbols(m).some((k) => k.description === "encoding");
    // Two agents registered alike: one capability list (as SharedValues shares it), so one list of messages.
    const caps = [{ name: "shared.cap", tags: Object.freeze(["t1", "t2"]) }];
    const [first, second, third] = ["sh1", "sh2", "sh3"].map((id) => ({ ...agent(id), capabilities: caps }));
    const [m1, m2, m3] = [first!, second!, third!].map(agentMessageOnce);
    const cap = m1!.capabilities[0]!;
    expect(m2!.capabilities[0]).toBe(cap);
    encoder.encodeParts(AgentSchema, m1!);
    expect(kept(cap)).toBe(false); // the first base copies its bytes without keeping them
    encoder.encodeParts(AgentSchema, m2!);
    expect(kept(cap)).toBe(true); // met again: shared, so kept
    // Every base holding it (the third too) decodes to its message, and the kept bytes are the capability's own.
    for (const m of [m1!, m2!, m3!]) {
      const decoded = fromBinary(AgentSchema, encoder.encode(AgentSchema, m));
      expect(equals(AgentSchema, decoded, m)).toBe(true);
      expect(equals(AgentSchema, decoded, fromBinary(AgentSchema, reference.encode(AgentSchema, m)))).toBe(true);
    }
    const slot = Object.getOwnPropertySymbols(cap).find((k) => k.description === "encoding")!;
    const keptBytes = (cap as unknown as Record<symbol, string>)[slot]!;
    expect(Buffer.from(keptBytes, "latin1").equals(Buffer.from(toBinary(CapabilitySchema, cap)))).toBe(true);
  });

  it("refers to a long ASCII text (a passport) from a kept encoding instead of copying it; other texts are copied", () => {
    const token = `${"h".repeat(40)}.${"c".repeat(400)}.${"s".repeat(86)}`;
    const base = withBase(create(HeartbeatResponseSchema), create(HeartbeatResponseSchema, { passport: token, leaseTtl: { seconds: 30n }, passportExpiresAt: { seconds: 1_800_000_000n } }));
    const kept = encoder.encodeParts(HeartbeatResponseSchema, baseOf(base)!);
    // [tag, length, the token itself, the other fields' bytes]
    expect(kept.slice(0, 2)).toEqual([(3 * 8) | 2, token.length]);
    expect(kept[2]).toBe(token);
    expect(kept).toHaveLength(4);
    const decoded = fromBinary(HeartbeatResponseSchema, joinParts(kept));
    expect(equals(HeartbeatResponseSchema, decoded, baseOf(base) as typeof base)).toBe(true);
    expect((baseOf(base) as typeof base).passport).toBe(token); // put back after the encoding
    // Short, or not ASCII (its UTF-8 bytes are not its chars): copied, and still right.
    for (const passport of ["p.a.ss", "é".repeat(SHARED_TEXT), "x".repeat(SHARED_TEXT - 1)]) {
      const other = markImmutable(create(HeartbeatResponseSchema, { passport, leaseTtl: { seconds: 5n } }));
      const parts = encoder.encodeParts(HeartbeatResponseSchema, other);
      expect(parts).toHaveLength(1);
      expect(equals(HeartbeatResponseSchema, fromBinary(HeartbeatResponseSchema, joinParts(parts)), other)).toBe(true);
    }
  });

  it("writes a heartbeat answer as its passport base's bytes plus its agent, for every agent built on that base", () => {
    const base = create(HeartbeatResponseSchema, { passport: "h.e.ader-claims-signature", leaseTtl: { seconds: 30n }, passportExpiresAt: { seconds: 1_800_000_000n } });
    const baseBytes = Buffer.from(encoder.encode(HeartbeatResponseSchema, base));
    const first = agent("hb3", { tools: records[1]!.tools });
    for (const record of [first, { ...first, load: 0.75, revision: first.revision + 1 }, agent("hb4")]) {
      const answer = withBase(Object.assign(create(HeartbeatResponseSchema), base, { agent: agentMessageOnce(record) }), base);
      const body = encoder.frame(HeartbeatResponseSchema, answer).subarray(5);
      expect(body.subarray(0, baseBytes.length).equals(baseBytes)).toBe(true);
      const decoded = fromBinary(HeartbeatResponseSchema, body);
      expect(equals(HeartbeatResponseSchema, decoded, answer)).toBe(true);
      expect(equals(HeartbeatResponseSchema, decoded, fromBinary(HeartbeatResponseSchema, reference.encode(HeartbeatResponseSchema, answer)))).toBe(true);
      expect(decoded.agent?.id).toBe(record.id);
      expect(decoded.agent?.revision).toBe(BigInt(record.revision));
    }
  });

  it("builds a new base when anything of the registration changes, so no answer shows a stale field", () => {
    const first = agent("hb2", { caps: [["code", ["py"]]] });
    const before = agentMessageOnce(first);
    const changes = [
      { name: "renamed" },
      { version: "2" },
      { tenant: "t9" },
      { shared: true },
      { labels: { zone: "z9" } },
      { endpoint: { ...first.endpoint, url: "grpc://elsewhere:1" } },
      { capabilities: [{ name: "other", tags: ["x"] }] },
      { tools: [] },
      { registeredAt: first.registeredAt + 1 },
      { leaseTtlMs: first.leaseTtlMs + 1000 },
    ];
    for (const change of changes) {
      const next = { ...first, ...change, revision: first.revision + 1 };
      const message = agentMessageOnce(next);
      expect(baseOf(message)).not.toBe(baseOf(before));
      const decoded = fromBinary(AgentSchema, encoder.encode(AgentSchema, message));
      expect(equals(AgentSchema, decoded, toAgentMessage(next))).toBe(true);
    }
  });
});

describe("JsonEncoder", () => {
  const opts = { alwaysEmitImplicit: true };
  const json = new JsonEncoder(opts);
  const same = (schema: Parameters<typeof toJson>[0], msg: Parameters<typeof toJson>[1]) =>
    expect(JSON.parse(json.stringify(schema, msg))).toEqual(toJson(schema, msg, opts));

  it("writes the same JSON as toJson for lists, singular fields and empty answers", () => {
    const agents = records.map(toAgentMessage);
    same(DiscoverResponseSchema, create(DiscoverResponseSchema, { agents }));
    same(DiscoverResponseSchema, create(DiscoverResponseSchema));
    same(RouteResponseSchema, create(RouteResponseSchema, { agent: agents[0], candidates: [{ agentId: "a1", score: 0.5 }], reason: "r" }));
    same(RouteResponseSchema, create(RouteResponseSchema, { reason: "no agent" }));
    same(AgentSchema, agents[2]!);
  });

  it("reuses an agent's text and stays right for the next revision", () => {
    const first = json.stringify(AgentSchema, toAgentMessage(records[0]!));
    expect(json.stringify(AgentSchema, toAgentMessage(records[0]!))).toBe(first);
    const next = toAgentMessage({ ...records[0]!, load: 0.25, revision: 7 });
    same(AgentSchema, next);
    expect(JSON.parse(json.stringify(AgentSchema, next)).load).toBe(0.25);
  });
});
