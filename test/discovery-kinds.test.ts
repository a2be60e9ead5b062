import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AgentStatus, patched, type AgentRecord, type CapabilityRecord } from "../src/registry/agent-record.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { agent } from "./contracts/agent-store.contract.js";

/**
 * The memory store indexes discovery by kind — agents sharing one
 * capabilities array (memory-agent-store.ts Scope.kinds) — so a kind's
 * entries in the capability and tag indexes must come and go with its last
 * agent. Random registrations (arrays shared by several agents, or each
 * agent's own of the same content), re-registrations with other
 * capabilities, status and sharing changes and removals, checked against a
 * brute-force scan of the records after every step.
 */
const CAPS = ["a", "b", "c", "d"];
const TAGS = ["x", "y", "z"];
/** A few capability lists, each one array shared by every agent given it (as SharedValues pools them). */
const POOLED: readonly (readonly CapabilityRecord[])[] = [
  [{ name: "a", tags: ["x"] }],
  [{ name: "a", tags: ["x", "y"] }, { name: "b", tags: [] }],
  [{ name: "b", tags: ["y"] }, { name: "c", tags: ["x", "z"] }],
  [{ name: "c", tags: [] }, { name: "d", tags: ["z", "z"] }],
  [{ name: "a", tags: ["z"] }, { name: "c", tags: ["z"] }, { name: "d", tags: ["y"] }],
];
const STATUSES = [AgentStatus.HEALTHY, AgentStatus.DEGRADED, AgentStatus.DRAINING, AgentStatus.UNHEALTHY];

type Op =
  | { op: "put"; id: number; tenant: number; shared: boolean; kind: number; own: boolean }
  | { op: "status"; id: number; status: number }
  | { op: "share"; id: number }
  | { op: "delete"; id: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("put" as const), id: fc.nat(11), tenant: fc.nat(2), shared: fc.boolean(), kind: fc.nat(POOLED.length - 1), own: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("status" as const), id: fc.nat(11), status: fc.nat(STATUSES.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("share" as const), id: fc.nat(11) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("delete" as const), id: fc.nat(11) }) },
);

const query = fc.record({
  tenant: fc.constantFrom("t0", "t1", "t2"),
  capabilities: fc.subarray(CAPS, { maxLength: 2 }),
  tags: fc.subarray(TAGS, { maxLength: 2 }),
  statuses: fc.subarray(STATUSES, { maxLength: 2 }),
  limit: fc.integer({ min: 1, max: 15 }),
});

function expected(records: Iterable<AgentRecord>, q: QueryShape): string[] {
  return [...records]
    .filter((a) => a.tenant === q.tenant || a.shared)
    .filter((a) => q.capabilities.every((c) => a.capabilities.some((k) => k.name === c)))
    .filter((a) => q.tags.every((t) => a.capabilities.some((k) => k.tags.includes(t))))
    .filter((a) => q.statuses.length === 0 || q.statuses.includes(a.status))
    .map((a) => a.id)
    .sort();
}
type QueryShape = { tenant: string; capabilities: string[]; tags: string[]; statuses: AgentStatus[]; limit: number };

describe("memory store discovery by kind", () => {
  it("answers every query as a scan of the records would, through registrations, reshaping, status and sharing changes and removals", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), fc.array(query, { minLength: 1, maxLength: 8 }), async (ops, queries) => {
        const store = new MemoryAgentStore();
        const current = new Map<string, AgentRecord>();
        const check = async () => {
          for (const q of queries) {
            const want = expected(current.values(), q);
            const got = (await store.query(q)).map((a) => a.id);
            // Up to the limit, each a match, none twice; all of them when they fit.
            expect(new Set(got).size).toBe(got.length);
            expect(got.length).toBe(Math.min(q.limit, want.length));
            for (const id of got) expect(want).toContain(id);
          }
          const counts = await store.counts("t1");
          const mine = [...current.values()].filter((a) => a.tenant === "t1");
          expect(counts.total).toBe(mine.length);
          expect(counts.capabilities).toBe(new Set(mine.flatMap((a) => a.capabilities.map((c) => c.name))).size);
        };
        for (const o of ops) {
          const id = `g${o.id}`;
          const known = current.get(id);
          if (o.op === "put") {
            const caps = o.own ? POOLED[o.kind]!.map((c) => ({ name: c.name, tags: [...c.tags] })) : POOLED[o.kind]!;
            const base = agent(id, { tenant: known?.tenant ?? `t${o.tenant}`, shared: known?.shared ?? o.shared, revision: (known?.revision ?? 0) + 1 });
            const record = { ...base, capabilities: caps };
            expect(await store.put(record, known?.revision ?? 0)).toBe(true);
            current.set(id, record);
          } else if (!known) {
            continue;
          } else if (o.op === "delete") {
            expect(await store.delete(id, known.revision)).toBe(true);
            current.delete(id);
          } else {
            const patch = o.op === "status" ? { status: STATUSES[o.status]!, revision: known.revision + 1 } : { shared: !known.shared, revision: known.revision + 1 };
            expect(await store.update(known, patch)).toBe(true);
            current.set(id, patched(known, patch));
          }
          await check();
        }
      }),
      { numRuns: 150 },
    );
  });

  it("forgets a kind with its last agent: a capability no agent has any more is not counted nor found", async () => {
    const store = new MemoryAgentStore();
    const kind = POOLED[3]!; // c, d (tag z twice)
    const one = { ...agent("k1"), capabilities: kind };
    const two = { ...agent("k2"), capabilities: kind };
    await store.put(one, 0);
    await store.put(two, 0);
    const q = { tenant: "t1", capabilities: ["d"], tags: ["z"], statuses: [], limit: 10 };
    expect((await store.query(q)).map((a) => a.id)).toEqual(["k1", "k2"]);
    expect((await store.counts("t1")).capabilities).toBe(2);
    await store.delete("k1", 1);
    expect((await store.query(q)).map((a) => a.id)).toEqual(["k2"]);
    // Re-registered with other capabilities: the kind's last agent left it.
    await store.put({ ...agent("k2", { revision: 2 }), capabilities: POOLED[0]! }, 1);
    expect(await store.query(q)).toEqual([]);
    expect(await store.query({ ...q, capabilities: ["c"], tags: [] })).toEqual([]);
    expect((await store.counts("t1")).capabilities).toBe(1);
    expect((await store.query({ ...q, capabilities: ["a"], tags: ["x"] })).map((a) => a.id)).toEqual(["k2"]);
  });
});
