import fc from "fast-check";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolCatalog, toolWords, tokenizeQuery } from "../src/directory/tool-catalog.js";
import type { AgentRecord, ToolRecord } from "../src/registry/agent-record.js";
import type { AgentStore, CatalogEntry, ToolKey, ToolQuery } from "../src/registry/agent-store.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { MongoAgentStore } from "../src/registry/mongo-agent-store.js";
import { toolContentHash } from "../src/registry/shared-values.js";
import { agent } from "./contracts/agent-store.contract.js";
import { startFerret, type ManagedServer } from "./support/servers.js";

/**
 * The per-agent tool view (ListTools; AgentStore.tools) paged whole, page
 * by page with its cursor, against a straightforward reference: every
 * agent the tenant sees (its own, and shared ones), every tool of each,
 * filtered (exact name; each query word the start of a word of the name or
 * description) and sorted by (agent id, tool name). The memory store's
 * catalog walks agents in id order and, for a filter that leaves few rows,
 * merges the matching entries' provider lists from where the walk stopped:
 * a low walk budget makes small fleets take both ways, and switch mid-page.
 */

type Row = [agentId: string, toolName: string, toolId: string, agentName: string];

function reference(agents: Iterable<AgentRecord>, q: Omit<ToolQuery, "after" | "limit">): Row[] {
  const terms = tokenizeQuery(q.text);
  const rows: Row[] = [];
  for (const a of agents) {
    if (a.tenant !== q.tenant && !a.shared) continue;
    for (const t of a.tools) {
      if (q.name !== "" && t.name !== q.name) continue;
      const words = toolWords(t);
      if (!terms.every((term) => words.some((w) => w.startsWith(term)))) continue;
      rows.push([a.id, t.name, toolContentHash(t), a.name]);
    }
  }
  return rows.sort((x, y) => (x[0] !== y[0] ? (x[0] < y[0] ? -1 : 1) : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0));
}

/** Every page of the view, in order, with the cursor each page gives the next. */
async function pageAll(tools: (q: ToolQuery) => Promise<CatalogEntry[]> | CatalogEntry[], q: Omit<ToolQuery, "after" | "limit">, limit: number): Promise<Row[]> {
  const rows: Row[] = [];
  let after: ToolKey | undefined;
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await tools({ ...q, after, limit });
    expect(page.length).toBeLessThanOrEqual(limit);
    rows.push(...page.map((e): Row => [e.agentId, e.tool.name, e.toolId, e.agentName]));
    // A page that is not full is the last one (ListTools reads one ahead to say so).
    if (page.length < limit) return rows;
    const last = page.at(-1)!;
    after = { agentId: last.agentId, toolName: last.tool.name };
  }
  throw new Error("did not end");
}

// Ids that sort around each other ("a" < "a-b" < "a_b" < "ab"), tool names
// that share words, descriptions from a few words.
const IDS = ["a", "a-b", "a_b", "ab", "b", "b1", "b10", "b2", "c", "zz"];
const NAMES = ["search_web", "search_code", "fetch", "fs.readFile", "write_code", "run", "run_tests", "WebFetch"];
const WORDS = ["search", "the", "web", "code", "fetch", "file", "read", "tests", "quickly"];
const QUERY_WORDS = ["se", "search", "web", "code", "fi", "read", "run", "tests", "q", "WEB", "x", "the web", "search code", "!!"];

const toolArb = fc.record({
  name: fc.constantFrom(...NAMES),
  description: fc.array(fc.constantFrom(...WORDS), { maxLength: 4 }).map((ws) => ws.join(" ")),
});
const agentArb = fc.record({
  id: fc.constantFrom(...IDS),
  tenant: fc.constantFrom("t1", "t2"),
  shared: fc.boolean(),
  tools: fc.uniqueArray(toolArb, { maxLength: 4, selector: (t) => t.name }),
});
const queryArb = fc.record({
  tenant: fc.constantFrom("t1", "t2", "t3"),
  name: fc.oneof(fc.constant(""), fc.constantFrom(...NAMES)),
  text: fc.oneof(fc.constant(""), fc.constantFrom(...QUERY_WORDS)),
});

const toolRecords = (tools: { name: string; description: string }[]): ToolRecord[] => tools.map((t) => ({ ...t, inputSchema: undefined }));

describe("per-agent tool view (memory catalog)", () => {
  it("pages the whole view as the reference lists it, whichever way each page is found", async () => {
    await fc.assert(
      fc.asyncProperty(
        // Registrations in order: a later one with the same id replaces (or, with no tools, empties) the agent; some are then removed.
        fc.array(agentArb, { minLength: 1, maxLength: 30 }),
        fc.array(fc.constantFrom(...IDS), { maxLength: 3 }),
        fc.array(queryArb, { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 1, max: 7 }),
        fc.constantFrom(undefined, 0, 1, 3),
        async (puts, removed, queries, limit, walkBudget) => {
          const catalog = new ToolCatalog({ pageCache: 0, walkBudget });
          const fleet = new Map<string, AgentRecord>();
          for (const p of puts) {
            const next = agent(p.id, { tenant: p.tenant, shared: p.shared, tools: toolRecords(p.tools) });
            catalog.apply(fleet.get(p.id), next);
            fleet.set(p.id, next);
          }
          for (const id of removed) {
            catalog.apply(fleet.get(id), undefined);
            fleet.delete(id);
          }
          for (const q of queries) {
            expect(await pageAll((x) => catalog.perAgent(x), q, limit)).toEqual(reference(fleet.values(), q));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a selective filter over a large fleet merges the few matching entries, and pages as the reference does", async () => {
    // 3,000 agents of 3 distinct tools each (9,000 entries); one name in every 500th agent.
    const store = new MemoryAgentStore();
    const fleet: AgentRecord[] = [];
    for (let i = 0; i < 3_000; i++) {
      const id = `agent-${String(i).padStart(5, "0")}`;
      const tools = toolRecords([
        { name: `tool_${i % 3}`, description: `unique tool ${i}` },
        { name: i % 500 === 7 ? "rare_tool" : `other_${i % 7}`, description: `the rare one of ${i}` },
        { name: "zeta", description: `last of ${i}` },
      ]);
      const a = agent(id, { tenant: i % 10 === 0 ? "t2" : "t1", shared: i % 20 === 0, tools });
      fleet.push(a);
      await store.put(a, 0);
    }
    for (const q of [
      { tenant: "t1", name: "rare_tool", text: "" },
      { tenant: "t1", name: "", text: "rare one" },
      { tenant: "t1", name: "zeta", text: "last" },
      { tenant: "t2", name: "", text: "unique 29" },
      { tenant: "t1", name: "", text: "" },
    ]) {
      expect(await pageAll((x) => store.tools(x), q, 100)).toEqual(reference(fleet, q));
    }
  });
});

// The same fleets against the MongoDB store (FerretDB on SQLite): its rows,
// order and paging match the reference as the memory store's do. Ids here
// avoid one being another's prefix followed by "-": the MongoDB store keys
// rows "<agent id>/<tool name>", and "-" sorts before "/" (see the report).
describe("per-agent tool view (MongoDB store, FerretDB)", () => {
  let ferret: ManagedServer & { dispose(): Promise<void> };
  let mongo: MongoAgentStore;
  beforeAll(async () => {
    ferret = await startFerret({ backend: "sqlite" });
    mongo = new MongoAgentStore({ uri: ferret.url, database: `per_agent_${process.pid}`, timeoutMs: 5_000, log: pino({ level: "silent" }) });
    await mongo.start();
  }, 120_000);
  afterAll(async () => {
    await mongo?.close();
    await ferret?.dispose();
  });

  it("pages the whole view as the reference, and as the memory store, for the same fleet and queries", async () => {
    const memory = new MemoryAgentStore();
    const ids = ["a", "a_b", "ab", "b", "b1", "b10", "b2", "c", "zz"];
    const fleet: AgentRecord[] = [];
    const rng = fc.sample(fc.array(toolArb, { maxLength: 4 }), { numRuns: ids.length * 4, seed: 18 });
    for (let i = 0; i < ids.length * 4; i++) {
      const id = `${ids[i % ids.length]}${i >= ids.length ? `_${Math.floor(i / ids.length)}` : ""}`;
      const seen = new Set<string>();
      const tools = toolRecords(rng[i]!.filter((t) => !seen.has(t.name) && seen.add(t.name)));
      const a = agent(id, { tenant: i % 3 === 0 ? "t2" : "t1", shared: i % 4 === 0, tools });
      fleet.push(a);
      await memory.put(a, 0);
      await mongo.put(a, 0);
    }
    const queries = [
      { tenant: "t1", name: "", text: "" },
      { tenant: "t2", name: "", text: "" },
      { tenant: "t3", name: "", text: "" },
      { tenant: "t1", name: "search_web", text: "" },
      { tenant: "t1", name: "", text: "se" },
      { tenant: "t1", name: "", text: "the web" },
      { tenant: "t2", name: "run_tests", text: "tests" },
      { tenant: "t1", name: "", text: "!!" },
    ];
    for (const q of queries) {
      const want = reference(fleet, q);
      for (const store of [memory, mongo] as AgentStore[]) {
        for (const limit of [1, 4, 100]) expect(await pageAll((x) => store.tools(x), q, limit)).toEqual(want);
      }
    }
  }, 60_000);
});
