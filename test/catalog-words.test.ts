import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ToolCatalog, tokenize, words, type CatalogSearch } from "../src/directory/tool-catalog.js";
import { AgentStatus, type AgentRecord, type ToolRecord } from "../src/registry/agent-record.js";
import { agent } from "./contracts/agent-store.contract.js";

/**
 * The catalog's words of a text (tool-catalog.ts words()) and its index's
 * word walks (CatalogIndex.add/discard) are written for few allocations: a
 * plain text is lowercased whole, a name's words are listed once, a
 * description's are sliced one by one. Their answers must be the ones of the
 * straightforward forms: words() of the reference below, and a catalog
 * changed agent by agent must answer as one built from its final agents.
 */

/** words() as it was: tokenize, lowercase, keep the first of equal words. */
function referenceWords(text: string): string {
  const ws = [...new Set(tokenize(text).map((w) => w.toLowerCase()))];
  return ws.length === 0 ? "" : ` ${ws.join(" ")} `;
}

const search = (c: ToolCatalog, tenant: string, text: string, more: Partial<CatalogSearch> = {}) =>
  c.search({ tenant, text, capabilities: [], tags: [], labels: [], healthyOnly: false, after: undefined, limit: 1000, ...more });

// Pieces that take each of words()' ways: plain words, case that splits (camelCase, ACRONYMWord, digit then upper), words equal but for
// case, separators other than one space, non-ASCII letters, digits.
const piece = fc.constantFrom(
  "tool", "Tool", "TOOL", "of", "agent", "Agent", "12", "7", "getUser", "HTTPServer", "a1B", "x9", "ÄrgerNis", "façade", "İstanbul", "ß", "日本",
);
const separator = fc.constantFrom(" ", " ", " ", "  ", "_", "-", ".", ", ", "\t", "/", "");
const text = fc.oneof(
  fc.array(fc.tuple(piece, separator), { maxLength: 40 }).map((ps) => ps.map(([p, s]) => p + s).join("")),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.array(fc.constantFrom("a", "b", "Ab", "c1", "Z"), { maxLength: 60 }).map((ws) => ws.join(" ")),
);

describe("catalog words", () => {
  it("property: words() is the tokenized, lowercased, first-occurrence distinct words of any text", () => {
    fc.assert(
      fc.property(text, (t) => {
        expect(words(t)).toBe(referenceWords(t));
      }),
      { numRuns: 3000 },
    );
    // Each way once, spelled out.
    expect(words("Tool 0 of agent 12")).toBe(" tool 0 of agent 12 ");
    expect(words("Tool of tool")).toBe(" tool of ");
    expect(words("getUser by id")).toBe(" get user by id ");
    expect(words(" lead")).toBe(" lead ");
    expect(words("a  b")).toBe(" a b ");
    expect(words("")).toBe("");
    expect(words("   ")).toBe("");
    expect(words(`${"w ".repeat(200)}end`)).toBe(" w end ");
  });

  it("property: a catalog changed agent by agent answers as one built from its final agents (every word an entry joined is left when it goes)", () => {
    const WORDS = ["tool", "tools", "of", "agent", "alpha", "beta", "k1", "k12", "Tool", "getUser"];
    const word = fc.constantFrom(...WORDS);
    const toolArb = fc.record({
      name: fc.tuple(word, word).map(([a, b]) => `${a}_${b}`),
      // Descriptions repeat words, and share words with the name (held once).
      description: fc.array(word, { minLength: 0, maxLength: 5 }).map((w) => w.join(" ")),
    });
    const op = fc.record({
      agent: fc.integer({ min: 0, max: 6 }),
      tenant: fc.constantFrom("t1", "t2"),
      shared: fc.boolean(),
      healthy: fc.boolean(),
      caps: fc.subarray(["alpha", "beta", "code.review"], { minLength: 1 }),
      tools: fc.uniqueArray(toolArb, { minLength: 0, maxLength: 3, selector: (t) => t.name }),
      remove: fc.boolean(),
    });
    const queries = [...WORDS.map((w) => w.toLowerCase()), "to", "a", "k", "tooll", "get user", "tool of", "agent k1", "code", "review"];
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 4 }), (ops, cap) => {
        const changed = new ToolCatalog({ pageCache: 0, postingCap: cap });
        const live = new Map<string, AgentRecord>();
        let rev = 0;
        for (const o of ops) {
          const id = `a${o.agent}`;
          const before = live.get(id);
          let after: AgentRecord | undefined;
          if (!o.remove) {
            const tools: ToolRecord[] = o.tools.map((t) => ({ name: t.name, description: t.description, inputSchema: undefined }));
            after = {
              ...agent(id, { tenant: before?.tenant ?? o.tenant, shared: o.shared, tools, caps: o.caps.map((c) => [c, []]) }),
              status: o.healthy ? AgentStatus.HEALTHY : AgentStatus.UNHEALTHY,
              revision: ++rev,
            };
          }
          if (!before && !after) continue;
          changed.apply(before, after);
          if (after) live.set(id, after);
          else live.delete(id);
        }
        const fresh = new ToolCatalog({ pageCache: 0, postingCap: cap });
        for (const a of live.values()) fresh.apply(undefined, a);
        for (const tenant of ["t1", "t2"]) {
          expect(search(changed, tenant, "")).toEqual(search(fresh, tenant, ""));
          for (const q of queries) {
            expect(search(changed, tenant, q)).toEqual(search(fresh, tenant, q));
            const rows = { tenant, text: q, name: "", after: undefined, limit: 1000 };
            expect(changed.perAgent(rows)).toEqual(fresh.perAgent(rows));
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});
