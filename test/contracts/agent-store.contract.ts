import { beforeEach, describe, expect, it } from "vitest";
import { AgentStatus, Transport, type AgentRecord } from "../../src/registry/agent-record.js";
import type { AgentStore } from "../../src/registry/agent-store.js";
import { toolContentHash } from "../../src/registry/shared-values.js";

/**
 * The behaviour every AgentStore adapter must have. Each adapter's test file
 * calls this with a factory that returns an empty store.
 */
export function agentStoreContract(name: string, makeStore: () => Promise<AgentStore>): void {
  describe(`AgentStore contract: ${name}`, () => {
    let store: AgentStore;
    beforeEach(async () => {
      store = await makeStore();
    });

    it("inserts only when the id is new, and updates only on the expected revision", async () => {
      const a = agent("a1", { revision: 1 });
      expect(await store.put(a, 0)).toBe(true);
      expect(await store.put(a, 0)).toBe(false);
      expect(await store.put({ ...a, name: "renamed", revision: 2 }, 5)).toBe(false);
      expect(await store.put({ ...a, name: "renamed", revision: 2 }, 1)).toBe(true);
      expect((await store.get("a1"))?.name).toBe("renamed");
    });

    it("updates lease fields only on the expected revision, keeping indexes right", async () => {
      const u1 = agent("u1", { revision: 4 });
      await store.put(u1, 0);
      expect(await store.update({ ...u1, revision: 3 }, { status: AgentStatus.DRAINING, revision: 5 })).toBe(false);
      expect(await store.update(u1, { status: AgentStatus.DRAINING, load: 0.5, leaseExpiresAt: 99, revision: 5 })).toBe(true);
      const got = await store.get("u1");
      expect(got).toMatchObject({ status: AgentStatus.DRAINING, load: 0.5, leaseExpiresAt: 99, revision: 5, name: "agent-u1" });
      const q = { tenant: "t1", capabilities: ["code"], tags: [], limit: 10 };
      expect(await store.query({ ...q, statuses: [AgentStatus.HEALTHY] })).toEqual([]);
      expect((await store.query({ ...q, statuses: [AgentStatus.DRAINING] })).map((a) => a.id)).toEqual(["u1"]);
      expect((await store.counts("t1")).byStatus.get(AgentStatus.DRAINING)).toBe(1);
      expect(await store.update(agent("missing"), { revision: 2 })).toBe(false);
    });

    it("deletes only on the expected revision", async () => {
      await store.put(agent("a1", { revision: 3 }), 0);
      expect(await store.delete("a1", 2)).toBe(false);
      expect(await store.delete("a1", 3)).toBe(true);
      expect(await store.get("a1")).toBeUndefined();
      expect(await store.delete("a1", 3)).toBe(false);
    });

    it("lets exactly one of racing writers make each transition, and a racing delete excludes updates", async () => {
      let current = agent("race", { revision: 1 });
      await store.put(current, 0);
      for (let round = 0; round < 12; round++) {
        const next = current.revision + 1;
        const wins = await Promise.all([
          store.update(current, { status: AgentStatus.UNHEALTHY, revision: next }),
          store.update(current, { status: AgentStatus.DRAINING, revision: next }),
          store.put({ ...current, name: `replaced-${round}`, revision: next }, current.revision),
        ]);
        expect(wins.filter(Boolean), `round ${round}: ${wins}`).toHaveLength(1);
        const stored = (await store.get("race"))!;
        expect(stored.revision).toBe(next);
        const winner = wins.indexOf(true);
        expect(winner === 0 ? stored.status === AgentStatus.UNHEALTHY : winner === 1 ? stored.status === AgentStatus.DRAINING : stored.name === `replaced-${round}`).toBe(true);
        current = stored;
      }
      const [updated, deleted] = await Promise.all([
        store.update(current, { load: 0.9, revision: current.revision + 1 }),
        store.delete("race", current.revision),
      ]);
      expect([updated, deleted].filter(Boolean)).toHaveLength(1);
      expect((await store.get("race"))?.load).toBe(updated ? 0.9 : undefined);
      // A new registration under the same id starts over and can be written again.
      if (deleted) {
        const reborn = agent("race", { revision: 1 });
        expect(await store.put(reborn, 0)).toBe(true);
        expect(await store.update(reborn, { load: 0.1, revision: 2 })).toBe(true);
      }
    });

    it("round-trips every field", async () => {
      const a = agent("a1", {
        labels: { "app.kubernetes.io/name": "x", team: "core" },
        tools: [{ name: "t", description: "d", inputSchema: { $schema: "x", properties: { "a.b": { type: "string" } } } }],
      });
      await store.put(a, 0);
      expect(await store.get("a1")).toEqual(a);
    });

    it("finds agents that have all capabilities and tags, filtered by status", async () => {
      await store.put(agent("a1", { caps: [["code", ["py"]], ["review", []]] }), 0);
      await store.put(agent("a2", { caps: [["code", ["go"]]] }), 0);
      await store.put(agent("a3", { caps: [["code", ["py"]], ["review", []]], status: AgentStatus.DRAINING }), 0);
      const ids = async (q: Partial<Parameters<AgentStore["query"]>[0]>) =>
        (await store.query({ tenant: "t1", capabilities: [], tags: [], statuses: [], limit: 100, ...q }))
          .map((a) => a.id)
          .sort();
      expect(await ids({ capabilities: ["code"] })).toEqual(["a1", "a2", "a3"]);
      expect(await ids({ capabilities: ["code", "review"] })).toEqual(["a1", "a3"]);
      expect(await ids({ capabilities: ["code"], tags: ["py"] })).toEqual(["a1", "a3"]);
      expect(await ids({ capabilities: ["code", "review"], statuses: [AgentStatus.HEALTHY] })).toEqual(["a1"]);
      expect(await ids({ capabilities: ["nothing"] })).toEqual([]);
      expect((await store.query({ tenant: "t1", capabilities: ["code"], tags: [], statuses: [], limit: 2 })).length).toBe(2);
    });

    it("updates its indexes when an agent changes capabilities", async () => {
      await store.put(agent("a1", { caps: [["old", []]] }), 0);
      await store.put(agent("a1", { caps: [["new", []]], revision: 2 }), 1);
      const q = { tenant: "t1", tags: [], statuses: [], limit: 10 };
      expect(await store.query({ ...q, capabilities: ["old"] })).toEqual([]);
      expect((await store.query({ ...q, capabilities: ["new"] })).length).toBe(1);
    });

    it("pages through agents in id order", async () => {
      for (const id of ["c", "a", "e", "b", "d"]) await store.put(agent(id), 0);
      expect((await store.list("t1", "", 2)).map((a) => a.id)).toEqual(["a", "b"]);
      expect((await store.list("t1", "b", 2)).map((a) => a.id)).toEqual(["c", "d"]);
      expect((await store.list("t1", "d", 2)).map((a) => a.id)).toEqual(["e"]);
    });

    it("lists agents whose lease ended", async () => {
      await store.put(agent("old", { leaseExpiresAt: 1_000 }), 0);
      await store.put(agent("new", { leaseExpiresAt: 5_000 }), 0);
      expect((await store.expired(2_000, 10)).map((a) => a.id)).toEqual(["old"]);
    });

    it("searches and pages the tool catalog", async () => {
      await store.put(agent("a1", { tools: [tool("search_web", "Search the web"), tool("fetch", "Fetch a URL")] }), 0);
      await store.put(agent("a2", { tools: [tool("search_code", "Search code")] }), 0);
      const all = async (text: string, name = "") => {
        const out: string[] = [];
        let after: { agentId: string; toolName: string } | undefined;
        for (;;) {
          const page = await store.tools({ tenant: "t1", text, name, after, limit: 1 });
          if (page.length === 0) return out;
          out.push(...page.map((e) => `${e.agentId}/${e.tool.name}`));
          after = { agentId: page[0]!.agentId, toolName: page[0]!.tool.name };
        }
      };
      expect(await all("SEARCH")).toEqual(["a1/search_web", "a2/search_code"]);
      expect(await all("url")).toEqual(["a1/fetch"]);
      expect(await all("", "search_code")).toEqual(["a2/search_code"]);
      expect((await all("")).length).toBe(3);
    });

    it("pages the per-agent tool view in (agent id, tool name) order when one id is another's prefix", async () => {
      // "-" sorts below "/" and "_": a key joining id and name with "/" put "ab-c" before "ab".
      await store.put(agent("ab-c", { tools: [tool("zeta", "Z"), tool("alpha", "A")] }), 0);
      await store.put(agent("ab", { tools: [tool("omega", "O"), tool("beta", "B")] }), 0);
      await store.put(agent("ab_d", { tools: [tool("gamma", "G")] }), 0);
      const out: string[] = [];
      let after: { agentId: string; toolName: string } | undefined;
      for (;;) {
        const page = await store.tools({ tenant: "t1", text: "", name: "", after, limit: 2 });
        if (page.length === 0) break;
        out.push(...page.map((e) => `${e.agentId}:${e.tool.name}`));
        const last = page[page.length - 1]!;
        after = { agentId: last.agentId, toolName: last.tool.name };
      }
      expect(out).toEqual(["ab:beta", "ab:omega", "ab-c:alpha", "ab-c:zeta", "ab_d:gamma"]);
    });

    it("per-agent tool view: each query word is the start of a word of the name (split on _ . - and camelCase) or description; rows name their catalog entry", async () => {
      const web = tool("search_web", "Search the web");
      await store.put(agent("a1", { tools: [web, tool("fs.readFile", "Read a file")] }), 0);
      await store.put(agent("a2", { tools: [tool("search_code", "Search code")] }), 0);
      const names = async (text: string) =>
        (await store.tools({ tenant: "t1", text, name: "", after: undefined, limit: 10 })).map((e) => `${e.agentId}/${e.tool.name}`);
      expect(await names("sea")).toEqual(["a1/search_web", "a2/search_code"]);
      expect(await names("search web")).toEqual(["a1/search_web"]);
      expect(await names("file")).toEqual(["a1/fs.readFile"]);
      expect(await names("fs")).toEqual(["a1/fs.readFile"]);
      expect(await names("eb")).toEqual([]);
      const [row] = await store.tools({ tenant: "t1", text: "", name: "search_web", after: undefined, limit: 10 });
      expect(row?.toolId).toBe(toolContentHash(web));
    });

    it("keeps tenants apart, and shows shared agents to every tenant", async () => {
      await store.put(agent("mine", { tenant: "t1", tools: [tool("t_mine", "")] }), 0);
      await store.put(agent("theirs", { tenant: "t2", tools: [tool("t_theirs", "")] }), 0);
      await store.put(agent("public", { tenant: "t2", shared: true, tools: [tool("t_public", "")] }), 0);
      const q = { capabilities: ["code"], tags: [], statuses: [], limit: 10 };
      expect((await store.query({ ...q, tenant: "t1" })).map((a) => a.id).sort()).toEqual(["mine", "public"]);
      expect((await store.query({ ...q, tenant: "t2" })).map((a) => a.id).sort()).toEqual(["public", "theirs"]);
      expect((await store.query({ ...q, tenant: "t3" })).map((a) => a.id)).toEqual(["public"]);
      expect((await store.list("t1", "", 10)).map((a) => a.id)).toEqual(["mine"]);
      expect((await store.listShared("", 10)).map((a) => a.id)).toEqual(["public"]);
      const tools = await store.tools({ tenant: "t1", text: "", name: "", after: undefined, limit: 10 });
      expect(tools.map((t) => t.tool.name).sort()).toEqual(["t_mine", "t_public"]);
      expect((await store.counts("t1")).total).toBe(1);
      expect((await store.counts("t2")).total).toBe(2);
      // Withdrawing the share hides it again.
      await store.put({ ...agent("public", { tenant: "t2", revision: 2 }), shared: false }, 1);
      expect((await store.query({ ...q, tenant: "t3" })).map((a) => a.id)).toEqual([]);
    });

    it("hands routable agents over best route ceiling first, following load and status changes", async () => {
      const routable = async (tenant: string, caps: string[]) => {
        const out: string[] = [];
        for await (const a of store.routable(tenant, caps)) out.push(a.id);
        return out;
      };
      await store.put(agent("busy", { load: 0.9, caps: [["code", []], ["review", []]] }), 0);
      await store.put(agent("idle", { load: 0.1 }), 0);
      await store.put(agent("half", { load: 0.5, caps: [["code", []], ["review", []]] }), 0);
      await store.put(agent("twin", { load: 0.5 }), 0);
      await store.put(agent("sick", { load: 0, status: AgentStatus.UNHEALTHY }), 0);
      // DEGRADED scores half: idle but degraded ranks below a half-loaded healthy one.
      await store.put(agent("degraded", { load: 0, status: AgentStatus.DEGRADED }), 0);
      await store.put(agent("other", { tenant: "t2", load: 0 }), 0);
      await store.put(agent("public", { tenant: "t2", shared: true, load: 0.3 }), 0);
      expect(await routable("t1", ["code"])).toEqual(["idle", "public", "half", "twin", "degraded", "busy"]);
      expect(await routable("t1", ["code", "review"])).toEqual(["half", "busy"]);
      expect(await routable("t1", ["review", "code"])).toEqual(["half", "busy"]);
      expect(await routable("t1", ["nobody"])).toEqual([]);
      expect(await routable("t2", ["code"])).toEqual(["other", "public"]);

      const busy = (await store.get("busy"))!;
      expect(await store.update(busy, { load: 0, revision: busy.revision + 1 })).toBe(true);
      const idle = (await store.get("idle"))!;
      expect(await store.update(idle, { status: AgentStatus.DRAINING, revision: idle.revision + 1 })).toBe(true);
      const sick = (await store.get("sick"))!;
      expect(await store.update(sick, { status: AgentStatus.HEALTHY, load: 0.95, revision: sick.revision + 1 })).toBe(true);
      expect(await routable("t1", ["code"])).toEqual(["busy", "public", "half", "twin", "degraded", "sick"]);
      await store.delete("half", (await store.get("half"))!.revision);
      expect(await routable("t1", ["code", "review"])).toEqual(["busy"]);
    });

    it("orders routable agents by route tier (status × load bucket), then id — not by exact load — and moves one only when its tier changes", async () => {
      const routable = async (caps: string[]) => {
        const out: string[] = [];
        for await (const a of store.routable("t1", caps)) out.push(a.id);
        return out;
      };
      // Buckets of 1/20: "b" (0.04) and "c" (0.01) share bucket 0 and go by id; "a" (0.05) is bucket 1.
      await store.put(agent("c", { load: 0.01 }), 0);
      await store.put(agent("b", { load: 0.04 }), 0);
      await store.put(agent("a", { load: 0.05 }), 0);
      // An idle DEGRADED agent ranks among healthy ones at 62.5% load: after "m" (0.6), before "n" (0.65).
      await store.put(agent("d", { load: 0, status: AgentStatus.DEGRADED }), 0);
      await store.put(agent("m", { load: 0.6 }), 0);
      await store.put(agent("n", { load: 0.65 }), 0);
      await store.put(agent("z", { load: 1 }), 0);
      expect(await routable(["code"])).toEqual(["b", "c", "a", "m", "d", "n", "z"]);
      // A heartbeat within its bucket leaves the order as it was; one into another bucket moves it.
      const c = (await store.get("c"))!;
      expect(await store.update(c, { load: 0.049, revision: c.revision + 1 })).toBe(true);
      expect(await routable(["code"])).toEqual(["b", "c", "a", "m", "d", "n", "z"]);
      const z = (await store.get("z"))!;
      expect(await store.update(z, { load: 0.02, revision: z.revision + 1 })).toBe(true);
      const d = (await store.get("d"))!;
      expect(await store.update(d, { status: AgentStatus.HEALTHY, revision: d.revision + 1 })).toBe(true);
      expect(await routable(["code"])).toEqual(["b", "c", "d", "z", "a", "m", "n"]);
    });

    it("counts agents by status, capabilities and tools", async () => {
      await store.put(agent("a1", { caps: [["x", []], ["y", []]], tools: [tool("t", "")] }), 0);
      await store.put(agent("a2", { caps: [["x", []]], status: AgentStatus.DEGRADED }), 0);
      const c = await store.counts("t1");
      expect(c.total).toBe(2);
      expect(c.byStatus.get(AgentStatus.HEALTHY)).toBe(1);
      expect(c.byStatus.get(AgentStatus.DEGRADED)).toBe(1);
      expect(c.capabilities).toBe(2);
      expect(c.tools).toBe(1);
    });
  });
}

interface Overrides {
  tenant?: string;
  shared?: boolean;
  caps?: [string, string[]][];
  status?: AgentStatus;
  revision?: number;
  leaseExpiresAt?: number;
  load?: number;
  labels?: Record<string, string>;
  tools?: AgentRecord["tools"];
}

function tool(name: string, description: string) {
  return { name, description, inputSchema: undefined };
}

export function agent(id: string, o: Overrides = {}): AgentRecord {
  return {
    id,
    tenant: o.tenant ?? "t1",
    shared: o.shared ?? false,
    name: `agent-${id}`,
    version: "1",
    status: o.status ?? AgentStatus.HEALTHY,
    endpoint: { url: "grpc://127.0.0.1:1", transport: Transport.GRPC },
    capabilities: (o.caps ?? [["code", []]]).map(([name, tags]) => ({ name, tags })),
    tools: o.tools ?? [],
    labels: o.labels ?? {},
    load: o.load ?? 0,
    leaseTtlMs: 30_000,
    registeredAt: 1,
    lastHeartbeatAt: 1,
    leaseExpiresAt: o.leaseExpiresAt ?? 31_000,
    revision: o.revision ?? 1,
  };
}
