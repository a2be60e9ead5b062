import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { CatalogFeed } from "../src/directory/catalog-feed.js";
import { ToolCatalog, type CatalogSearch } from "../src/directory/tool-catalog.js";
import { buildEvent } from "../src/events/event-bus.js";
import { AgentStatus, type AgentRecord, type ToolRecord } from "../src/registry/agent-record.js";
import { toAgentMessage } from "../src/registry/agent-message.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { toolContentHash } from "../src/registry/shared-values.js";
import { AgentChangeSchema } from "../gen/federation/v1/event_pb.js";
import { agent } from "./contracts/agent-store.contract.js";

const search = (c: ToolCatalog, tenant: string, text: string, more: Partial<CatalogSearch> = {}) =>
  c.search({ tenant, text, capabilities: [], tags: [], labels: [], healthyOnly: false, after: undefined, limit: 1000, ...more });

function tool(name: string, description: string, schema?: Record<string, string>): ToolRecord {
  return { name, description, inputSchema: schema ? { type: "object", properties: { q: { type: schema.q ?? "string" } } } : undefined };
}

/** Every entry of a view, page by page. */
function pageAll(c: ToolCatalog, tenant: string, pageSize: number, text = "", between?: () => void): string[] {
  const out: string[] = [];
  let after: CatalogSearch["after"];
  for (;;) {
    const page = search(c, tenant, text, { after, limit: pageSize });
    out.push(...page.entries.map((e) => e.id));
    if (!page.next) return out;
    after = page.next;
    between?.();
  }
}

describe("tool catalog (issue 20)", () => {
  it("500 replicas of one agent kind are one entry with 500 providers; a changed schema under the same name is a second entry", async () => {
    const store = new MemoryAgentStore();
    const coder = [tool("write_code", "Write code in any language", { q: "string" }), tool("run_tests", "Run the test suite")];
    for (let i = 0; i < 500; i++) {
      await store.put(agent(`coder${String(i).padStart(3, "0")}`, { tools: coder, status: i % 5 === 0 ? AgentStatus.DEGRADED : AgentStatus.HEALTHY }), 0);
    }
    const catalog = store.toolCatalog();
    const hits = search(catalog, "t1", "write_code");
    expect(hits.total).toBe(1);
    expect(hits.entries[0]).toMatchObject({ id: toolContentHash(coder[0]!), providerCount: 500, healthyCount: 400 });
    expect(catalog.size("t1")).toBe(2);
    // Same name, different schema: a second, distinguishable entry.
    await store.put(agent("coder-v2", { tools: [tool("write_code", "Write code in any language", { q: "object" })] }), 0);
    const two = search(catalog, "t1", "write_code");
    expect(two.total).toBe(2);
    expect(new Set(two.entries.map((e) => e.id)).size).toBe(2);
    expect(two.entries.map((e) => e.providerCount).sort((a, b) => a - b)).toEqual([1, 500]);
    // Providers page in id order, keyset.
    const first = catalog.providers("t1", toolContentHash(coder[0]!), "", 200)!;
    expect(first.total).toBe(500);
    expect(first.ids).toEqual([...first.ids].sort());
    const second = catalog.providers("t1", toolContentHash(coder[0]!), first.ids.at(-1)!, 1000)!;
    expect(new Set([...first.ids, ...second.ids]).size).toBe(500);
    // The per-agent view still lists each (agent, tool).
    expect((await store.tools({ tenant: "t1", text: "", name: "write_code", after: undefined, limit: 1000 })).length).toBe(501);
  });

  it("searches with relevance: words of names (snake, dotted, camelCase), descriptions, capabilities and tags, with prefix and fuzzy matching", async () => {
    const store = new MemoryAgentStore();
    await store.put(agent("a", { tools: [tool("fs.readFile", "Read a file from disk")], caps: [["storage", ["posix"]]] }), 0);
    await store.put(agent("b", { tools: [tool("search_web", "Search the web for pages")], caps: [["browse", []]] }), 0);
    await store.put(agent("c", { tools: [tool("web_fetch", "Fetch a URL")], caps: [["browse", []]] }), 0);
    const c = store.toolCatalog();
    const names = (text: string, more: Partial<CatalogSearch> = {}) => search(c, "t1", text, more).entries.map((e) => e.tool.name);
    expect(names("file")).toEqual(["fs.readFile"]); // camelCase part
    expect(names("read")).toEqual(["fs.readFile"]);
    expect(names("fs")).toEqual(["fs.readFile"]); // dotted part
    expect(names("disk")).toEqual(["fs.readFile"]); // description
    expect(names("posix")).toEqual(["fs.readFile"]); // provider's tag
    expect(names("storage")).toEqual(["fs.readFile"]); // provider's capability
    expect(names("sear")).toEqual(["search_web"]); // prefix
    expect(names("serch")).toEqual(["search_web"]); // fuzzy
    // The name match ranks first; every word must match.
    expect(names("web").sort()).toEqual(["search_web", "web_fetch"]);
    expect(names("web_fetch")[0]).toBe("web_fetch");
    expect(names("web fetch")).toEqual(["web_fetch"]);
    expect(names("nothing here")).toEqual([]);
    // Filters.
    expect(names("web", { capabilities: ["browse"] }).sort()).toEqual(["search_web", "web_fetch"]);
    expect(names("", { capabilities: ["storage"] })).toEqual(["fs.readFile"]);
    expect(names("", { tags: ["posix"] })).toEqual(["fs.readFile"]);
    const b = (await store.get("b"))!;
    await store.update(b, { status: AgentStatus.UNHEALTHY, revision: 2 });
    expect(names("web", { healthyOnly: true })).toEqual(["web_fetch"]);
  });

  it("a repeated page is answered from the page cache until the catalog changes; a typo is fuzzy-matched without making the other words fuzzy", async () => {
    const store = new MemoryAgentStore();
    await store.put(agent("a", { tools: [tool("search_web", "Search the web for pages"), tool("search_code", "Search code")] }), 0);
    const c = store.toolCatalog();
    const first = search(c, "t1", "search", { limit: 1 });
    expect(search(c, "t1", "search", { limit: 1 })).toBe(first);
    expect(Object.isFrozen(first) && Object.isFrozen(first.entries)).toBe(true);
    const deeper = search(c, "t1", "search", { limit: 1, after: first.next });
    expect(deeper).not.toBe(first);
    expect(search(c, "t1", "search", { limit: 1, after: first.next })).toBe(deeper);
    await store.put(agent("b", { tools: [tool("search_aaa", "Search more")] }), 0);
    const changed = search(c, "t1", "search", { limit: 1 });
    expect(changed).not.toBe(first);
    expect(changed.total).toBe(3);
    // Fuzzy only when nothing matches, and only for the misspelled word: "serch" finds search_*, "web" stays exact.
    expect(search(c, "t1", "serch web").entries.map((e) => e.tool.name)).toEqual(["search_web"]);
    expect(search(c, "t1", "serch_code").entries[0]?.tool.name).toBe("search_code"); // (every test agent has a "code.*" capability)
    expect(search(c, "t1", "serch").total).toBe(3);
    // A second provider with other capabilities, then the first leaves: filters and text follow.
    await store.put(agent("p1", { tools: [tool("shared_tool", "one")], caps: [["alpha", ["red"]]] }), 0);
    await store.put(agent("p2", { tools: [tool("shared_tool", "one")], caps: [["beta", ["blue"]]] }), 0);
    expect(search(c, "t1", "alpha beta").entries.map((e) => e.tool.name)).toEqual(["shared_tool"]);
    expect(search(c, "t1", "", { tags: ["red"] }).total).toBe(1);
    await store.delete("p1", 1);
    expect(search(c, "t1", "alpha").total).toBe(0);
    expect(search(c, "t1", "", { tags: ["red"] }).total).toBe(0);
    expect(search(c, "t1", "blue", { capabilities: ["beta"] }).entries.map((e) => e.providerCount)).toEqual([1]);
  });

  it("property: a tool is found by each capability and tag word of its live providers, and by no other, while agents that share one capabilities list come and go", () => {
    // Words two edits apart and no one a prefix of another, so neither prefix nor typo matching can mix them up.
    const WORDS = ["alpha", "bravo", "charlie", "delta", "foxtrot", "golf"];
    // Capability lists are shared objects, as SharedValues hands them out: a list's words are indexed once for all its agents' tools.
    const lists = [
      [{ name: "alpha", tags: ["bravo"] }],
      [{ name: "charlie", tags: [] }, { name: "delta", tags: ["bravo", "foxtrot"] }],
      [{ name: "golf", tags: ["alpha"] }],
    ];
    const tools = Array.from({ length: 4 }, (_, i) => tool(`t_${i}`, `tool ${i}`));
    const op = fc.record({ agent: fc.integer({ min: 0, max: 5 }), list: fc.integer({ min: 0, max: 2 }), tools: fc.subarray([0, 1, 2, 3], { minLength: 1 }), remove: fc.boolean() });
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), (ops) => {
        const c = new ToolCatalog();
        const live = new Map<string, AgentRecord>();
        let rev = 0;
        for (const o of ops) {
          const id = `a${o.agent}`;
          const before = live.get(id);
          if (o.remove) {
            if (!before) continue;
            c.apply(before, undefined);
            live.delete(id);
            continue;
          }
          const after = { ...agent(id, { tools: o.tools.map((k) => tools[k]!) }), capabilities: lists[o.list]!, revision: ++rev };
          c.apply(before, after);
          live.set(id, after);
          for (const w of WORDS) {
            const expected = new Set<string>();
            for (const a of live.values()) {
              if (a.capabilities.some((cap) => cap.name === w || cap.tags.includes(w))) for (const t of a.tools) expected.add(t.name);
            }
            expect(new Set(search(c, "t1", w).entries.map((e) => e.tool.name))).toEqual(expected);
          }
        }
      }),
      { numRuns: 150 },
    );
  });

  it("property: every tool is findable by its exact name and each description word; removed agents' tools and tools without providers disappear; other tenants' tools never show, not even in counts", async () => {
    const word = fc.stringMatching(/^[a-z]{3,9}$/);
    const toolArb = fc.record({ name: fc.tuple(word, word).map(([a, b]) => `${a}_${b}`), description: fc.array(word, { minLength: 1, maxLength: 4 }).map((w) => w.join(" ")) });
    const agentArb = fc.record({ tenant: fc.constantFrom("t1", "t2", "t3"), shared: fc.boolean(), tools: fc.uniqueArray(toolArb, { minLength: 1, maxLength: 3, selector: (t) => t.name }) });
    await fc.assert(
      fc.asyncProperty(fc.array(agentArb, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 6 }), async (agents, removals) => {
        const store = new MemoryAgentStore();
        const live = new Map<string, AgentRecord>();
        for (const [i, a] of agents.entries()) {
          const r = agent(`g${i}`, { tenant: a.tenant, shared: a.shared, tools: a.tools.map((t) => tool(t.name, t.description)) });
          await store.put(r, 0);
          live.set(r.id, r);
        }
        for (const n of removals) {
          const ids = [...live.keys()];
          if (ids.length === 0) break;
          const gone = live.get(ids[n % ids.length]!)!;
          await store.delete(gone.id, gone.revision);
          live.delete(gone.id);
        }
        const c = store.toolCatalog();
        for (const tenant of ["t1", "t2", "t3"]) {
          const visible = [...live.values()].filter((a) => a.tenant === tenant || a.shared);
          const expected = new Map<string, Set<string>>();
          for (const a of visible) for (const t of a.tools) expected.set(toolContentHash(t), (expected.get(toolContentHash(t)) ?? new Set()).add(a.id));
          // The whole view, and its counts, are exactly the visible agents' tools.
          const all = search(c, tenant, "");
          expect(all.total).toBe(expected.size);
          expect(new Set(all.entries.map((e) => e.id))).toEqual(new Set(expected.keys()));
          for (const e of all.entries) expect(e.providerCount).toBe(expected.get(e.id)!.size);
          for (const a of visible) {
            for (const t of a.tools) {
              const id = toolContentHash(t);
              expect(search(c, tenant, t.name).entries.map((e) => e.id)).toContain(id);
              for (const w of t.description.split(" ")) expect(search(c, tenant, w).entries.map((e) => e.id)).toContain(id);
            }
          }
          // Nothing else ever matches, whatever the query.
          for (const a of agents) for (const t of a.tools) for (const e of search(c, tenant, t.name).entries) expect(expected.has(e.id)).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
  });

  it("pages through the whole catalog while agents register and leave: every unchanged entry exactly once, at the cost of the page", async () => {
    const store = new MemoryAgentStore();
    for (let i = 0; i < 300; i++) await store.put(agent(`s${String(i).padStart(3, "0")}`, { tools: [tool(`stable_${i % 150}`, "stays")] }), 0);
    const c = store.toolCatalog();
    const stable = new Set(pageAll(c, "t1", 1000));
    expect(stable.size).toBe(150);
    let n = 0;
    const churn = () => {
      // A new distinct tool arrives and an earlier churned one leaves, around every page boundary.
      const id = `x${n}`;
      void store.put(agent(id, { tools: [tool(`churn_${(n * 7919) % 1000}`, "comes and goes")] }), 0);
      if (n >= 2) void store.delete(`x${n - 2}`, 1);
      n++;
    };
    for (const text of ["", "stays"]) {
      const seen = pageAll(c, "t1", 7, text, churn);
      const ofStable = seen.filter((id) => stable.has(id));
      expect(ofStable.length).toBe(stable.size);
      expect(new Set(ofStable).size).toBe(stable.size);
      expect(new Set(seen).size).toBe(seen.length);
    }
  });

  it("a replica's catalog is built from the store and kept current from agent events (the feed of a shared store)", async () => {
    const source = new MemoryAgentStore();
    const a = agent("f1", { tools: [tool("alpha_tool", "first")] });
    await source.put(a, 0);
    const events: ((e: ReturnType<typeof buildEvent>) => void)[] = [];
    const bus = { subscribe: (_f: unknown, _a: unknown, d: (e: ReturnType<typeof buildEvent>) => void) => (events.push(d), { close() {} }) };
    const store = { all: (after: string, limit: number) => source.list("t1", after, limit), start: async () => undefined };
    const feed = new CatalogFeed(store as never, bus as never, { info() {}, warn() {} } as never);
    await feed.start();
    expect(feed.ready).toBe(true);
    expect(search(feed.catalog, "t1", "alpha").total).toBe(1);
    const emit = (type: string, r: AgentRecord) =>
      events.forEach((d) =>
        d(buildEvent(1n, Date.now(), { type: type as never, tenant: r.tenant, agentId: r.id, payload: { case: "agentChange", value: create(AgentChangeSchema, { agent: toAgentMessage(r) }) } })),
      );
    const b = agent("f2", { tools: [tool("beta_tool", "second")] });
    emit("agent.registered", b);
    expect(search(feed.catalog, "t1", "beta").entries[0]?.providerCount).toBe(1);
    // An older state arriving late is ignored; removal takes the tool away.
    emit("agent.updated", { ...b, revision: 0 });
    emit("agent.status_changed", { ...b, status: AgentStatus.UNHEALTHY, revision: 2 });
    expect(search(feed.catalog, "t1", "beta").entries[0]?.healthyCount).toBe(0);
    emit("agent.expired", { ...b, status: AgentStatus.UNHEALTHY, revision: 2 });
    expect(search(feed.catalog, "t1", "beta").total).toBe(0);
    expect(search(feed.catalog, "t2", "alpha").total).toBe(0);
  });

  it("a replica's catalog keeps an agent's indexed parts across events that repeat them, and shares facet groups between agents registered alike", async () => {
    const events: ((e: ReturnType<typeof buildEvent>) => void)[] = [];
    const bus = { subscribe: (_f: unknown, _a: unknown, d: (e: ReturnType<typeof buildEvent>) => void) => (events.push(d), { close() {} }) };
    const store = { all: async () => [], start: async () => undefined };
    const feed = new CatalogFeed(store as never, bus as never, { info() {}, warn() {} } as never);
    await feed.start();
    const emit = (type: string, r: AgentRecord) =>
      events.forEach((d) =>
        d(buildEvent(1n, Date.now(), { type: type as never, tenant: r.tenant, agentId: r.id, payload: { case: "agentChange", value: create(AgentChangeSchema, { agent: toAgentMessage(r) }) } })),
      );
    const caps: [string, string[]][] = [["code.review", ["python", "go"]], ["lint", []]];
    const a = agent("g1", { caps, labels: { zone: "a" }, tools: [{ name: "review_code", description: "Reviews code", inputSchema: { type: "object", title: "q" } }] });
    emit("agent.registered", a);
    const known = feed.catalog.agent("g1")!;
    // Each event is decoded into new objects: equal parts are the known state's own again, so only the healthy counts move.
    emit("agent.status_changed", { ...a, status: AgentStatus.UNHEALTHY, revision: 2 });
    const after = feed.catalog.agent("g1")!;
    expect(after.status).toBe(AgentStatus.UNHEALTHY);
    expect([after.tools, after.capabilities, after.labels]).toEqual([known.tools, known.capabilities, known.labels]);
    expect(after.tools).toBe(known.tools);
    expect(after.capabilities).toBe(known.capabilities);
    expect(after.labels).toBe(known.labels);
    expect(search(feed.catalog, "t1", "review").entries.map((e) => [e.providerCount, e.healthyCount])).toEqual([[1, 0]]);
    // A schema's keys in another order is the same tool (the content hash is of canonical JSON).
    emit("agent.updated", { ...a, tools: [{ name: "review_code", description: "Reviews code", inputSchema: { title: "q", type: "object" } }], revision: 3 });
    expect(feed.catalog.agent("g1")!.tools).toBe(known.tools);
    // Changed parts are taken: the old tool and label go, the new ones are found.
    emit("agent.updated", { ...a, tools: [tool("review_code", "Reviews pull requests")], labels: { zone: "b" }, revision: 4 });
    expect(feed.catalog.agent("g1")!.tools).not.toBe(known.tools);
    expect(search(feed.catalog, "t1", "pull").total).toBe(1);
    expect(search(feed.catalog, "t1", "code").entries.map((e) => e.tool.description)).toEqual(["Reviews pull requests"]);
    expect(search(feed.catalog, "t1", "", { labels: ["zone=b"] }).total).toBe(1);
    expect(search(feed.catalog, "t1", "", { labels: ["zone=a"] }).total).toBe(0);
    // Agents with equal capabilities, each decoded into its own lists: one facet group for all of them, found by each capability and tag word.
    for (let i = 0; i < 20; i++) emit("agent.registered", agent(`h${i}`, { caps, tools: [tool(`tool_${i}`, `tool ${i}`)] }));
    expect(feed.catalog.indexSize("t1").groups).toBe(1);
    for (const w of ["python", "go", "lint", "review"]) expect(search(feed.catalog, "t1", w).total).toBe(21);
    for (let i = 0; i < 20; i++) emit("agent.expired", { ...agent(`h${i}`, { caps, tools: [tool(`tool_${i}`, `tool ${i}`)] }), revision: 9 });
    emit("agent.expired", { ...a, revision: 9 });
    expect(feed.catalog.indexSize("t1")).toEqual({ words: 0, groups: 0 });
    expect(search(feed.catalog, "t1", "").total).toBe(0);
  });
});

describe("SearchTools and ListToolProviders over REST (google.api.http)", () => {
  it("GET /tools/search answers distinct entries with counts, a page of providers and a total; /tools/{tool_id}/providers pages on", async () => {
    const { startApp, postJson, getJson, AUTH } = await import("./support/app.js");
    const t = await startApp();
    try {
      const body = (i: number, schemaType = "object") => ({
        name: `replica-${i}`,
        endpoint: { url: "grpc://127.0.0.1:50051", transport: "TRANSPORT_GRPC" },
        capabilities: [{ name: "code.generate", tags: ["python"] }],
        tools: [{ name: "write_code", description: "Writes code", inputSchema: { type: schemaType } }],
        leaseTtl: "30s",
      });
      for (let i = 0; i < 5; i++) expect((await postJson(`${t.url}/agents/register`, body(i), { headers: AUTH })).status).toBe(200);
      expect((await postJson(`${t.url}/agents/register`, body(9, "string"), { headers: AUTH })).status).toBe(200);
      const r = await getJson(`${t.url}/tools/search?query=writ&provider_page_size=2&page_size=1`, { headers: AUTH });
      expect(r.status).toBe(200);
      expect(r.json.totalCount).toBe(2);
      expect(r.json.tools).toHaveLength(1);
      expect(r.json.nextPageToken).not.toBe("");
      const next = await getJson(`${t.url}/tools/search?query=writ&page_size=1&page_token=${encodeURIComponent(r.json.nextPageToken)}`, { headers: AUTH });
      const both = [r.json.tools[0], next.json.tools[0]];
      expect(both.map((e: any) => e.providerCount).sort()).toEqual([1, 5]);
      expect(next.json.nextPageToken).toBe("");
      const five = both.find((e: any) => e.providerCount === 5);
      const providers = await getJson(`${t.url}/tools/${five.toolId}/providers?page_size=3`, { headers: AUTH });
      expect(providers.status).toBe(200);
      expect(providers.json.totalCount).toBe(5);
      const rest = await getJson(`${t.url}/tools/${five.toolId}/providers?page_token=${encodeURIComponent(providers.json.nextPageToken)}`, { headers: AUTH });
      expect(new Set([...providers.json.agentIds, ...rest.json.agentIds]).size).toBe(5);
      // The per-agent view shows each row's catalog entry.
      const rows = await getJson(`${t.url}/tools?name=write_code`, { headers: AUTH });
      expect(rows.json.tools).toHaveLength(6);
      expect(rows.json.tools.filter((x: any) => x.toolId === five.toolId)).toHaveLength(5);
      expect((await getJson(`${t.url}/tools/${"A".repeat(43)}/providers`, { headers: AUTH })).status).toBe(404);
    } finally {
      await t.close();
    }
  });
});
