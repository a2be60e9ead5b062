import { MongoClient } from "mongodb";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MongoAgentStore } from "../src/registry/mongo-agent-store.js";
import { CatalogFeed } from "../src/directory/catalog-feed.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { systemClock } from "../src/clock.js";
import { toAgentMessage } from "../src/registry/agent-message.js";
import { agent, agentStoreContract } from "./contracts/agent-store.contract.js";
import { startFerret, type FerretBackend, type ManagedServer } from "./support/servers.js";

// The same contract and FerretDB-specific checks on both of FerretDB's
// backends: SQLite (a file per database) and PostgreSQL (a throw-away
// cluster on loopback). One backend's servers run at a time.
const backends: [FerretBackend, string][] = [
  ["sqlite", "mongodb (FerretDB)"],
  ["postgresql", "mongodb (FerretDB/PostgreSQL)"],
];

for (const [backend, label] of backends) {
  describe(`MongoAgentStore on FerretDB/${backend}`, () => {
    let ferret: ManagedServer & { dispose(): Promise<void> };
    const stores: MongoAgentStore[] = [];
    let n = 0;

    beforeAll(async () => {
      ferret = await startFerret({ backend });
    }, 120_000);
    afterAll(async () => {
      await Promise.all(stores.map((s) => s.close()));
      await ferret?.dispose();
    });

    async function freshStore(timeoutMs = 2_000): Promise<MongoAgentStore> {
      const store = new MongoAgentStore({
        uri: ferret.url,
        database: `contract_${process.pid}_${n++}`,
        timeoutMs,
        log: pino({ level: "silent" }),
      });
      stores.push(store);
      await store.start();
      return store;
    }

    agentStoreContract(label, () => freshStore());

    describe("MongoAgentStore", () => {
      it("keeps label keys and schema keys with $ and . as data, never as operators or paths", async () => {
        const store = await freshStore();
        const a = agent("inj", {
          labels: { "a.b": "1" },
          tools: [{ name: "t", description: "", inputSchema: { $where: "sleep(1000)", "x.y": { $gt: "" } } }],
        });
        await store.put(a, 0);
        expect(await store.get("inj")).toEqual(a);
        expect((await store.tools({ tenant: "t1", text: "", name: "t", after: undefined, limit: 5 }))[0]?.tool.inputSchema).toEqual(
          a.tools[0]!.inputSchema,
        );
      });

      it("a replica's distinct tool catalog is built from the store at start and kept current from the events (CatalogFeed)", async () => {
        const store = await freshStore();
        const shape = { tools: [{ name: "write_code", description: "Writes code", inputSchema: { type: "object" } }] };
        for (let i = 0; i < 5; i++) await store.put(agent(`k${i}`, shape), 0);
        const bus = new MemoryEventBus(systemClock, 100);
        const feed = new CatalogFeed(store, bus, pino({ level: "silent" }));
        await feed.start();
        const q = { tenant: "t1", text: "write", capabilities: [], tags: [], labels: [], healthyOnly: false, after: undefined, limit: 10 };
        expect(feed.catalog.search(q).entries.map((e) => e.providerCount)).toEqual([5]);
        const k1 = (await store.get("k1"))!;
        expect(await store.delete("k1", k1.revision)).toBe(true);
        await bus.publish({ type: "agent.unregistered", tenant: "t1", agentId: "k1", payload: { case: "agentChange", value: { agent: toAgentMessage(k1) } } });
        expect(feed.catalog.search(q).entries[0]!.providerCount).toBe(4);
        feed.stop();
      });

      it("searches tool text literally, so regex metacharacters match themselves", async () => {
        const store = await freshStore();
        await store.put(agent("r1", { tools: [{ name: "calc", description: "adds (a+b)*c", inputSchema: undefined }] }), 0);
        await store.put(agent("r2", { tools: [{ name: "other", description: "aab", inputSchema: undefined }] }), 0);
        const hits = await store.tools({ tenant: "t1", text: "(a+b)", name: "", after: undefined, limit: 10 });
        expect(hits.map((h) => h.agentId)).toEqual(["r1"]);
      });

      it("on FerretDB, a claim left by a writer that died blocks its transition until it goes stale", async () => {
        const store = await freshStore();
        const raw = new MongoClient(ferret.url);
        try {
          const a = agent("stuck", { revision: 1 });
          await store.put(a, 0);
          const dbName = `contract_${process.pid}_${n - 1}`; // freshStore's database
          const claims = raw.db(dbName).collection<{ _id: string; agentId: string; claimedAt: number }>("agent_claims");
          await claims.insertOne({ _id: `stuck#${a.registeredAt}#2`, agentId: "stuck", claimedAt: Date.now() });
          expect(await store.update(a, { load: 0.5, revision: 2 })).toBe(false);
          await claims.updateOne({ _id: `stuck#${a.registeredAt}#2` }, { $set: { claimedAt: 0 } });
          expect(await store.update(a, { load: 0.5, revision: 2 })).toBe(true);
          // Claims do not pile up: only the latest transition's is kept, none after delete.
          expect(await claims.find({ agentId: "stuck" }).map((c) => c._id).toArray()).toEqual([`stuck#${a.registeredAt}#2`]);
          expect(await store.delete("stuck", 2)).toBe(true);
          expect(await claims.countDocuments({ agentId: "stuck" })).toBe(0);
        } finally {
          await raw.close();
        }
      });

      it("on FerretDB, an agent registered again under its id never meets a claim of its previous life", async () => {
        const store = await freshStore();
        const raw = new MongoClient(ferret.url);
        try {
          const first = agent("again", { revision: 1 });
          await store.put(first, 0);
          const dbName = `contract_${process.pid}_${n - 1}`;
          const claims = raw.db(dbName).collection<{ _id: string; agentId: string; claimedAt: number }>("agent_claims");
          expect(await store.delete("again", 1)).toBe(true);
          // A writer of that life died holding the claim to revision 2 (fresh: not yet stale).
          await claims.insertOne({ _id: `again#${first.registeredAt}#2`, agentId: "again", claimedAt: Date.now() });
          const second = { ...agent("again", { revision: 1 }), registeredAt: first.registeredAt + 1 };
          expect(await store.put(second, 0)).toBe(true);
          expect(await store.update(second, { load: 0.3, revision: 2 })).toBe(true);
          expect((await store.get("again"))?.load).toBe(0.3);
        } finally {
          await raw.close();
        }
      });

      it("reports healthy once connected", async () => {
        const store = await freshStore();
        expect(store.health()).toEqual({ ok: true, message: "connected" });
      });
    });
  });
}
