import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ToolCatalog, type CatalogSearch } from "../src/directory/tool-catalog.js";
import type { AgentRecord, ToolRecord } from "../src/registry/agent-record.js";
import { agent } from "./contracts/agent-store.contract.js";

/**
 * A word in more entries than the catalog's posting cap is only counted, and
 * a search it drives scans the scope's entries instead (tool-catalog.ts
 * POSTING_CAP): every answer must be the one a catalog that lists every
 * posting gives.
 */
const search = (c: ToolCatalog, tenant: string, text: string, more: Partial<CatalogSearch> = {}) =>
  c.search({ tenant, text, capabilities: [], tags: [], labels: [], healthyOnly: false, after: undefined, limit: 1000, ...more });

// Few words, so most are in many entries (over a cap of 0 or 2); some one edit apart, some prefixes of others.
const WORDS = ["tool", "tools", "tol", "of", "agent", "agents", "alpha", "alps", "beta", "k1", "k12"];
const word = fc.constantFrom(...WORDS);
const toolArb = fc.record({
  name: fc.tuple(word, word).map(([a, b]) => `${a}_${b}`),
  description: fc.array(word, { minLength: 1, maxLength: 4 }).map((w) => w.join(" ")),
});
const op = fc.record({
  agent: fc.integer({ min: 0, max: 7 }),
  tenant: fc.constantFrom("t1", "t2"),
  shared: fc.boolean(),
  caps: fc.subarray(["alpha", "beta", "code.review"], { minLength: 1 }),
  tools: fc.uniqueArray(toolArb, { minLength: 1, maxLength: 3, selector: (t) => t.name }),
  remove: fc.boolean(),
});
// Whole words, prefixes, typos, several words, a whole name.
const queries = [...WORDS, "to", "a", "ag", "k", "tooll", "agnt", "alpah", "tool of", "agent k1", "of tol", "tool_agent", "alpha tool", "code"];

describe("tool catalog postings past their cap", () => {
  it("property: searches and per-agent pages are the same whether a common word's posting lists its entries or only counts them", () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 30 }), (ops) => {
        const full = new ToolCatalog({ pageCache: 0, postingCap: Number.MAX_SAFE_INTEGER });
        const capped = [new ToolCatalog({ pageCache: 0, postingCap: 0 }), new ToolCatalog({ pageCache: 0, postingCap: 2 })];
        const live = new Map<string, AgentRecord>();
        let rev = 0;
        for (const o of ops) {
          const id = `a${o.agent}`;
          const before = live.get(id);
          let after: AgentRecord | undefined;
          if (!o.remove) {
            const tools: ToolRecord[] = o.tools.map((t) => ({ name: t.name, description: t.description, inputSchema: undefined }));
            after = { ...agent(id, { tenant: before?.tenant ?? o.tenant, shared: o.shared, tools, caps: o.caps.map((c) => [c, []]) }), revision: ++rev };
          }
          if (!before && !after) continue;
          for (const c of [full, ...capped]) c.apply(before, after);
          if (after) live.set(id, after);
          else live.delete(id);
        }
        for (const tenant of ["t1", "t2"]) {
          for (const text of queries) {
            const expected = search(full, tenant, text);
            const rows = full.perAgent({ tenant, text, name: "", after: undefined, limit: 1000 });
            for (const c of capped) {
              expect(search(c, tenant, text)).toEqual(expected);
              expect(c.perAgent({ tenant, text, name: "", after: undefined, limit: 1000 })).toEqual(rows);
            }
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  it("lists a word's entries again once the scope has grown so that few hold it, with the same answers", () => {
    const capped = new ToolCatalog({ pageCache: 0, postingCap: 2 });
    const full = new ToolCatalog({ pageCache: 0, postingCap: Number.MAX_SAFE_INTEGER });
    const add = (id: string, description: string) => {
      const a = agent(id, { tools: [{ name: `t_${id}`, description, inputSchema: undefined }] });
      for (const c of [capped, full]) c.apply(undefined, a);
    };
    // "alpha" in every entry: past the cap and over a quarter of the scope, so only counted.
    for (let i = 0; i < 4; i++) add(`a${i}`, "alpha first");
    const index = (c: ToolCatalog) =>
      (c as unknown as { scopes: Map<string, { index: { postings: Map<string, { entries: Set<unknown> | undefined; own: number }> } }> }).scopes.get("t1")!.index;
    expect(index(capped).postings.get("alpha")!.entries).toBeUndefined();
    // 40 entries without it: "alpha" is in 4 of 44 now.
    for (let i = 0; i < 40; i++) add(`b${i}`, "beta later");
    expect(search(capped, "t1", "alpha")).toEqual(search(full, "t1", "alpha"));
    const alpha = index(capped).postings.get("alpha")!;
    expect(alpha.entries?.size).toBe(4);
    expect(alpha.own).toBe(4);
    // Listed again, it keeps up with changes like any posting.
    add("c0", "alpha again");
    expect(index(capped).postings.get("alpha")!.entries?.size).toBe(5);
    expect(search(capped, "t1", "alpha")).toEqual(search(full, "t1", "alpha"));
  });
});
