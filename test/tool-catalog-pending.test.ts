import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ToolCatalog, type CatalogSearch } from "../src/directory/tool-catalog.js";
import { idOrder } from "../src/id-order.js";
import type { AgentRecord, ToolRecord } from "../src/registry/agent-record.js";
import { toolContentHash } from "../src/registry/shared-values.js";
import { agent } from "./contracts/agent-store.contract.js";

/**
 * New catalog entries and agent ids wait unsorted until a batch is full or
 * something reads the order (ToolCatalog's `pending`): every read must see
 * what a plain sorted array of the live entries (rows) answers.
 */
const NAMES = ["alpha", "beta", "beta_x", "gamma"];
/** 4 names × 100 contents: scopes of several blocks (64 entries) once a bulk op ran. */
const TOOLS: ToolRecord[] = NAMES.flatMap((name) => Array.from({ length: 100 }, (_, d) => ({ name, description: `does ${d}`, inputSchema: undefined })));
const AGENTS = 300;

const op = fc.oneof(
  fc.record({ kind: fc.constant("put" as const), agent: fc.nat(AGENTS - 1), tools: fc.uniqueArray(fc.nat(TOOLS.length - 1), { maxLength: 4 }), shared: fc.boolean(), other: fc.boolean() }),
  // Many agents at once (3 tools each, some shared with others): several blocks of entries and of ids.
  fc.record({ kind: fc.constant("bulk" as const), from: fc.nat(AGENTS - 1), count: fc.integer({ min: 20, max: 200 }), seed: fc.integer({ min: 1, max: 97 }) }),
  fc.record({ kind: fc.constant("remove" as const), agent: fc.nat(AGENTS - 1) }),
  // A browse page: from the live cursor (the last page's next), or from a key of the model or one between keys.
  fc.record({ kind: fc.constant("page" as const), limit: fc.integer({ min: 1, max: 5 }), from: fc.option(fc.tuple(fc.constantFrom(...NAMES, "", "beta_"), fc.constantFrom("", "0", "m", "z"))) }),
  fc.record({ kind: fc.constant("rows" as const), limit: fc.integer({ min: 1, max: 6 }), name: fc.constantFrom("", ...NAMES), after: fc.option(fc.tuple(fc.nat(AGENTS - 1), fc.constantFrom("", ...NAMES))) }),
);

const id = (n: number) => `g${(n * 7919) % AGENTS}`;
const key = (t: ToolRecord) => `${t.name}\u0000${toolContentHash(t)}`;

describe("tool catalog: pending inserts (issue 14)", () => {
  it("property: any interleaving of registrations, removals, browse pages (cursors) and per-agent pages answers as a sorted array of the live entries, whatever the batch", () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 3, 5, 17, 100, 1000), fc.array(op, { minLength: 1, maxLength: 40 }), (pending, ops) => {
        const c = new ToolCatalog({ pageCache: 0, pending, walkBudget: 3 });
        const agents = new Map<string, AgentRecord>();
        let cursor: CatalogSearch["after"];
        let revision = 1;
        const visible = () => [...agents.values()].filter((a) => a.tenant === "t1" || a.shared);
        const put = (n: number, tools: readonly number[], tenant: string, shared: boolean) => {
          const before = agents.get(id(n));
          const after = agent(id(n), {
            tenant,
            shared,
            // One tool of a name per agent.
            tools: tools.map((i) => TOOLS[i]!).filter((t, i, all) => all.findIndex((u) => u.name === t.name) === i),
            revision: revision++,
          });
          c.apply(before, after);
          agents.set(after.id, after);
        };
        for (const o of ops) {
          if (o.kind === "put") put(o.agent, o.tools, o.other ? "t2" : "t1", o.shared);
          else if (o.kind === "bulk") {
            for (let k = 0; k < o.count; k++) {
              const n = (o.from + k) % AGENTS;
              put(n, [0, 1, 2].map((j) => (n * o.seed + j * 41) % TOOLS.length), n % 7 === 0 ? "t2" : "t1", n % 5 === 0);
            }
          } else if (o.kind === "remove") {
            const before = agents.get(id(o.agent));
            c.apply(before, undefined);
            agents.delete(id(o.agent));
          } else if (o.kind === "page") {
            const after = o.from ? { score: 0, key: `${o.from[0]}\u0000${o.from[1]}` } : cursor;
            const keys = [...new Set(visible().flatMap((a) => a.tools.map(key)))].sort();
            const rest = after ? keys.filter((k) => k > after.key) : keys;
            const page = c.search({ tenant: "t1", text: "", capabilities: [], tags: [], labels: [], healthyOnly: false, after, limit: o.limit });
            expect(page.entries.map((e) => e.key)).toEqual(rest.slice(0, o.limit));
            expect(page.total).toBe(keys.length);
            expect(page.next !== undefined).toBe(rest.length > o.limit);
            cursor = page.next;
          } else {
            const after = o.after ? { agentId: id(o.after[0]), toolName: o.after[1] } : undefined;
            const rows = visible()
              .flatMap((a) => a.tools.map((t) => ({ agentId: a.id, toolName: t.name })))
              .filter((r) => (o.name === "" || r.toolName === o.name) && (!after || r.agentId > after.agentId || (r.agentId === after.agentId && r.toolName > after.toolName)))
              .sort((x, y) => (x.agentId !== y.agentId ? (x.agentId < y.agentId ? -1 : 1) : x.toolName < y.toolName ? -1 : 1));
            const got = c.perAgent({ tenant: "t1", text: "", name: o.name, after, limit: o.limit });
            expect(got.map((r) => ({ agentId: r.agentId, toolName: r.tool.name }))).toEqual(rows.slice(0, o.limit));
          }
        }
      }),
      { numRuns: 150 },
    );
  });

  it("property: idOrder never contradicts the order of the texts (a search of the sorted blocks compares it before the ids)", () => {
    // Few chars, short texts: many ties and shared prefixes; chars at and past 127 (clamped), and NUL.
    const text = fc.string({ unit: fc.constantFrom("\u0000", "-", "0", "A", "_", "a", "~", "\u007f", "\u0080", "\u00ff", "\u0100", "\uffff"), maxLength: 6 });
    fc.assert(
      fc.property(text, text, (a, b) => {
        const [x, y] = [idOrder(a), idOrder(b)];
        expect(Number.isSafeInteger(x) && x >= 0 && x < 2 ** 28).toBe(true);
        if (x < y) expect(a < b).toBe(true);
        if (a === b) expect(x).toBe(y);
      }),
      { numRuns: 2000 },
    );
    // Base64url ids of equal first four chars tie, and are told apart by the rest.
    expect(idOrder("abcdZ")).toBe(idOrder("abcdA"));
    expect(idOrder("abcc_")).toBeLessThan(idOrder("abcdA"));
  });

  it("a full batch is placed without a read; entries removed while pending never show; a re-registered agent's id is one row", () => {
    const c = new ToolCatalog({ pageCache: 0, pending: 4 });
    const tools = (i: number) => [{ name: `t${i % 3}`, description: `tool ${i}`, inputSchema: undefined }];
    const records = Array.from({ length: 10 }, (_, i) => agent(`a${(i * 7) % 10}`, { tools: tools(i) }));
    for (const r of records) c.apply(undefined, r);
    // Two of the last, unplaced batch go again before any read.
    c.apply(records[9], undefined);
    c.apply(records[8], undefined);
    c.apply(records[1], { ...records[1]!, revision: 2, tools: tools(1).map((t) => ({ ...t })) });
    const live = records.filter((_, i) => i !== 8 && i !== 9);
    const page = c.search({ tenant: "t1", text: "", capabilities: [], tags: [], labels: [], healthyOnly: false, after: undefined, limit: 100 });
    expect(page.entries.map((e) => e.key)).toEqual(live.map((r) => key(r.tools[0]!)).sort());
    const rows = c.perAgent({ tenant: "t1", text: "", name: "", after: undefined, limit: 100 });
    expect(rows.map((r) => r.agentId)).toEqual(live.map((r) => r.id).sort());
  });
});
