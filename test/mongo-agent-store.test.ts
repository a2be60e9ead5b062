import { MongoClient } from "mongodb";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { MongoAgentStore } from "../src/registry/mongo-agent-store.js";
import { AgentStatus } from "../src/registry/agent-record.js";
import { Directory } from "../src/directory/directory.js";
import { ManifestSigner } from "../src/security/manifest-signer.js";
import type { KeyStore } from "../src/security/key-store.js";
import { ManifestCatalog } from "../src/transport/services/manifest-catalog.js";
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

    async function freshStore(timeoutMs = 2_000, database = `contract_${process.pid}_${n++}`): Promise<MongoAgentStore> {
      const store = new MongoAgentStore({
        uri: ferret.url,
        database,
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

      describe("catalog version: what the manifest shows, the same on every replica", () => {
        /** A scope's version once read from the database (the first ask starts its reads). */
        async function version(store: MongoAgentStore, tenant: string | undefined): Promise<string> {
          store.catalogVersion(tenant);
          await store.refreshCatalogVersions();
          return store.catalogVersion(tenant);
        }
        /** Two stores on one database: two replicas. */
        async function replicas(): Promise<[MongoAgentStore, MongoAgentStore]> {
          const database = `replicas_${process.pid}_${n++}`;
          return [await freshStore(2_000, database), await freshStore(2_000, database)];
        }

        it("changes on register, update and remove, not on a heartbeat; a shared agent changes every tenant's", async () => {
          const [store] = await replicas();
          const t1 = await version(store, "t1");
          const t2 = await version(store, "t2");
          const anon = await version(store, undefined);

          const a = agent("cv-a", { tenant: "t1" });
          expect(await store.put(a, 0)).toBe(true);
          const registered = store.catalogVersion("t1");
          expect(registered).not.toBe(t1);
          // Another tenant's view and the anonymous one show nothing of t1's own agents.
          expect(await version(store, "t2")).toBe(t2);
          expect(await version(store, undefined)).toBe(anon);

          // Heartbeats: load and lease times only, the same status.
          expect(await store.update(a, { load: 0.7, lastHeartbeatAt: 5, leaseExpiresAt: 40_000, revision: 2 })).toBe(true);
          const a2 = (await store.get("cv-a"))!;
          expect(await store.update(a2, { status: AgentStatus.HEALTHY, load: 0.2, lastHeartbeatAt: 6, revision: 3 })).toBe(true);
          expect(store.catalogVersion("t1")).toBe(registered);
          expect(await version(store, "t1")).toBe(registered);

          // A status change, a new registration of the same id, and removal each change it.
          const a3 = (await store.get("cv-a"))!;
          expect(await store.update(a3, { status: AgentStatus.DEGRADED, revision: 4 })).toBe(true);
          const degraded = store.catalogVersion("t1");
          expect(degraded).not.toBe(registered);
          expect(await store.put({ ...agent("cv-a", { tenant: "t1" }), name: "renamed", revision: 5 }, 4)).toBe(true);
          const updated = store.catalogVersion("t1");
          expect(updated).not.toBe(degraded);
          expect(await store.delete("cv-a", 5)).toBe(true);
          const removed = store.catalogVersion("t1");
          expect(removed).not.toBe(updated);
          // A write that lost (stale revision) changes nothing.
          expect(await store.delete("cv-a", 5)).toBe(false);
          expect(store.catalogVersion("t1")).toBe(removed);

          // A shared agent of t1 is in every view: t2's and the anonymous one change too, on each of its changes.
          const s = agent("cv-s", { tenant: "t1", shared: true });
          expect(await store.put(s, 0)).toBe(true);
          const t2Shared = await version(store, "t2");
          const anonShared = await version(store, undefined);
          expect(t2Shared).not.toBe(t2);
          expect(anonShared).not.toBe(anon);
          expect(await store.update(s, { shared: false, revision: 2 })).toBe(true);
          expect(await version(store, "t2")).not.toBe(t2Shared);
          expect(await version(store, undefined)).not.toBe(anonShared);
          const unshared = await version(store, "t2");
          const s2 = (await store.get("cv-s"))!;
          expect(await store.update(s2, { status: AgentStatus.DEGRADED, revision: 3 })).toBe(true);
          expect(await version(store, "t2")).toBe(unshared); // no longer shared: t2 does not see it
        });

        it("two replicas report the same version, and a write on one is seen by the other within a poll", async () => {
          const [a, b] = await replicas();
          expect(await version(b, "t1")).toBe(await version(a, "t1"));
          const x = agent("cv-x", { tenant: "t1" });
          expect(await a.put(x, 0)).toBe(true);
          const after = a.catalogVersion("t1");
          // Replica b reads it on its own (every 250 ms while asked), not only when told to.
          await vi.waitFor(() => expect(b.catalogVersion("t1")).toBe(after), { timeout: 1_500, interval: 50 });
          // A heartbeat on b changes neither replica's version.
          expect(await b.update(x, { load: 0.9, lastHeartbeatAt: 9, revision: 2 })).toBe(true);
          expect(await version(b, "t1")).toBe(after);
          expect(await version(a, "t1")).toBe(after);
          // A shared agent registered on b changes a's view of another tenant.
          const before = await version(a, "t9");
          expect(await b.put(agent("cv-y", { tenant: "t1", shared: true }), 0)).toBe(true);
          await vi.waitFor(() => expect(a.catalogVersion("t9")).not.toBe(before), { timeout: 1_500, interval: 50 });
          expect(await version(a, "t9")).toBe(await version(b, "t9"));
        });

        it("the manifest on a second replica keeps its view while nothing changes and changes its etag after a write on the first", async () => {
          const [a, b] = await replicas();
          const signer = new ManifestSigner({ mode: "hmac", secret: "s" }, undefined as unknown as KeyStore);
          const directoryB = new Directory(b, { now: () => 1_000 }, "fed");
          const manifestB = new ManifestCatalog(directoryB, signer);
          const x = agent("cv-m1", { tenant: "t1" });
          expect(await a.put(x, 0)).toBe(true);
          await version(b, "t1");
          const first = await manifestB.view("t1");
          expect(first.agents.map((g) => g.id)).toEqual(["cv-m1"]);
          // Past the 2 s a store without versions is re-read after, with heartbeats
          // on a: b answers from the same view, without reading the agents again.
          const reads = vi.spyOn(directoryB, "manifest");
          for (let i = 0; i < 6; i++) {
            const current = (await a.get("cv-m1"))!;
            expect(await a.update(current, { load: i / 10, lastHeartbeatAt: 10 + i, revision: current.revision + 1 })).toBe(true);
            await new Promise((r) => setTimeout(r, 450));
            expect(await manifestB.view("t1")).toBe(first);
          }
          expect(reads).not.toHaveBeenCalled();
          // A registration on a: b's etag changes within a poll or two, not after 2 s.
          expect(await a.put(agent("cv-m2", { tenant: "t1" }), 0)).toBe(true);
          const seen = Date.now();
          await vi.waitFor(async () => expect((await manifestB.view("t1")).etag).not.toBe(first.etag), { timeout: 1_200, interval: 50 });
          expect(Date.now() - seen).toBeLessThan(1_200);
          const changed = await manifestB.view("t1");
          expect(changed.agents.map((g) => g.id)).toEqual(["cv-m1", "cv-m2"]);
          expect(reads).toHaveBeenCalled();
          // Replica a's own manifest agrees.
          const manifestA = new ManifestCatalog(new Directory(a, { now: () => 1_000 }, "fed"), signer);
          expect((await manifestA.view("t1")).etag).toBe(changed.etag);
        }, 20_000);
      });

      it("reports healthy once connected", async () => {
        const store = await freshStore();
        expect(store.health()).toEqual({ ok: true, message: "connected" });
      });
    });
  });
}
