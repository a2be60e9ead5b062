import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { AgentSchema } from "../gen/federation/v1/agent_pb.js";
import { tokenize } from "../src/directory/tool-catalog.js";
import { agentMessageOnce } from "../src/registry/agent-message.js";
import { AgentStatus, Transport, type AgentRecord } from "../src/registry/agent-record.js";
import { SharedValues } from "../src/registry/shared-values.js";
import { baseOf } from "../src/message-hints.js";
import { MessageEncoder } from "../src/transport/message-encoding.js";

/** tokenize() as it was written before its ASCII fast path (Unicode property regexes). */
function reference(text: string): string[] {
  const out: string[] = [];
  for (const word of text.split(/[^\p{L}\p{N}_.-]+/u)) {
    for (const piece of word.split(/[_.-]+/)) {
      if (piece === "") continue;
      for (const part of piece.split(/(?<=[\p{Ll}\p{N}])(?=\p{Lu})|(?<=\p{Lu})(?=\p{Lu}\p{Ll})/u)) if (part !== "") out.push(part);
    }
  }
  return out;
}

const caps = (i: number) => [
  { name: `cap.${i % 7}`, tags: [`t${i % 3}`] },
  { name: "search", tags: [] },
];
const uniqueTools = (i: number) => [
  { name: "lookup", description: `Looks up for agent ${i}`, inputSchema: { type: "object" } },
  { name: "fetch", description: `Fetches for agent ${i}`, inputSchema: undefined },
];

describe("the register path's shared work", () => {
  it("tokenizes ASCII text exactly as the Unicode regexes do", () => {
    const ascii = fc.string({ unit: fc.constantFrom(..."aZbY09_.- /:ABCxyzQ\t!é".split("").filter((c) => c.charCodeAt(0) < 128)), maxLength: 40 });
    fc.assert(fc.property(ascii, (text) => JSON.stringify(tokenize(text)) === JSON.stringify(reference(text))), { numRuns: 3000 });
    for (const text of ["getHTTPResponse", "XMLHttpRequest2Go", "tool_0_12 of agent 1234", "a.b-c_d", "ABc", "aB", "9Lives", "HTTP", "é", "naïveCase ok"]) {
      expect(tokenize(text)).toEqual(reference(text));
    }
  });

  it("keeps one capabilities list per kind while tools unique to each agent churn through their pool", () => {
    const shared = new SharedValues();
    const kinds = (i: number) => [{ name: `cap.${i % 6_000}`, tags: ["t"] }, { name: "search", tags: [] }];
    const first = shared.capabilities(kinds(0));
    // 6,000 kinds of capabilities, each agent with tools of its own (4 pooled values per agent): between two
    // agents of one kind, 24k unique tool values pass through the pools, more than a pool holds.
    for (let i = 1; i <= 6_000; i++) {
      shared.tools(uniqueTools(i));
      expect(shared.capabilities(kinds(i))).toBe(i === 6_000 ? first : shared.capabilities(kinds(i)));
    }
    // Equal tools are still one value.
    expect(shared.tools(uniqueTools(25_000))).toBe(shared.tools(uniqueTools(25_000)));
    expect(shared.tools(uniqueTools(1))[0]!.inputSchema).toBe(shared.tools(uniqueTools(2))[0]!.inputSchema);
  });

  it("encodes an agent as protobuf does, its endpoint inside its base's bytes and its labels held, not copied", () => {
    const shared = new SharedValues();
    const record = (i: number, tools: AgentRecord["tools"]): AgentRecord => ({
      id: `agent-${i}`, tenant: "t", shared: false, name: "a", version: "1", status: AgentStatus.HEALTHY,
      endpoint: { url: `grpc://10.0.0.${i}:1`, transport: Transport.GRPC },
      capabilities: shared.capabilities(caps(i)), tools, labels: shared.labels({ zone: "z1" }),
      load: 0.5, leaseTtlMs: 30_000, registeredAt: 1_000, lastHeartbeatAt: 2_000, leaseExpiresAt: 32_000, revision: 3,
    });
    const kind = shared.tools(uniqueTools(0));
    const encoder = new MessageEncoder(baseOf);
    const decoded = (a: AgentRecord) => fromBinary(AgentSchema, encoder.encode(AgentSchema, agentMessageOnce(a)));
    const own = record(1, shared.tools(uniqueTools(1)));
    const one = record(2, kind);
    const two = record(3, kind);
    for (const a of [own, one, two, { ...one, id: "agent-4", revision: 4 }]) {
      const message = agentMessageOnce(a);
      expect(message.labels).toBe(a.labels);
      const back = decoded(a);
      expect(back).toEqual(fromBinary(AgentSchema, toBinary(AgentSchema, message)));
      expect(back.endpoint?.url).toBe(a.endpoint.url);
      expect(back.labels).toEqual({ zone: "z1" });
      expect(back.tools.map((t) => [t.name, t.description, t.inputSchema])).toEqual(a.tools.map((t) => [t.name, t.description, t.inputSchema]));
      expect(back.capabilities.map((c) => [c.name, c.tags])).toEqual(a.capabilities.map((c) => [c.name, c.tags]));
      expect(back.revision).toBe(BigInt(a.revision));
    }
  });
});
