import { MongoClient } from "mongodb";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentStatus, routeTier, type AgentRecord } from "../src/registry/agent-record.js";
import { MongoAgentStore } from "../src/registry/mongo-agent-store.js";
import { agent } from "./contracts/agent-store.contract.js";
import { startFerret, type ManagedServer } from "./support/servers.js";

/** An agent document as versions before route tiers wrote it: a routeCeiling, no routeTier. */
function oldFormat(a: AgentRecord) {
  const factor = a.status === AgentStatus.DEGRADED ? 0.5 : 1;
  return {
    _id: a.id,
    tenant: a.tenant,
    shared: a.shared,
    name: a.name,
    version: a.version,
    status: a.status,
    endpoint: { url: a.endpoint.url, transport: a.endpoint.transport },
    capabilities: a.capabilities.map((c) => ({ name: c.name, tags: [...c.tags] })),
    capNames: a.capabilities.map((c) => c.name),
    tags: [],
    tools: [],
    labels: [],
    load: a.load,
    routeCeiling: Math.round((0.8 * (1 - a.load) + 0.2) * factor * 10_000) / 10_000,
    leaseTtlMs: a.leaseTtlMs,
    registeredAt: a.registeredAt,
    lastHeartbeatAt: a.lastHeartbeatAt,
    leaseExpiresAt: a.leaseExpiresAt,
    revision: a.revision,
  };
}

describe("MongoAgentStore route tiers on FerretDB (documents written by older versions)", () => {
  let ferret: ManagedServer & { dispose(): Promise<void> };
  let raw: MongoClient;
  const stores: MongoAgentStore[] = [];
  let n = 0;

  beforeAll(async () => {
    ferret = await startFerret();
    raw = new MongoClient(ferret.url);
  }, 120_000);
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await raw?.close();
    await ferret?.dispose();
  });

  async function open(database: string): Promise<MongoAgentStore> {
    const store = new MongoAgentStore({ uri: ferret.url, database, timeoutMs: 2_000, log: pino({ level: "silent" }) });
    stores.push(store);
    await store.start();
    return store;
  }

  async function routable(store: MongoAgentStore, caps: string[]): Promise<string[]> {
    const out: string[] = [];
    for await (const a of store.routable("t1", caps)) out.push(a.id);
    return out;
  }

  it("hands an old-format document over where its computed tier places it, and gives it a routeTier on its next heartbeat", async () => {
    const database = `tiers_${process.pid}_${n++}`;
    const store = await open(database);
    await store.put(agent("new-idle", { load: 0 }), 0);
    await store.put(agent("new-busy", { load: 0.9 }), 0);
    await store.put(agent("new-half", { load: 0.5 }), 0);
    // Written by an older replica meanwhile (a rolling upgrade): no routeTier, so it sorts before everything.
    const agents = raw.db(database).collection<{ _id: string; routeTier?: number }>("agents");
    await agents.insertOne(oldFormat(agent("old-mid", { load: 0.3 })));
    await agents.insertOne(oldFormat(agent("old-busy", { load: 0.95 })));
    await agents.insertOne(oldFormat(agent("old-sick", { load: 0, status: AgentStatus.UNHEALTHY })));
    expect(await routable(store, ["code"])).toEqual(["new-idle", "old-mid", "new-half", "new-busy", "old-busy"]);
    expect((await store.get("old-mid"))?.load).toBe(0.3);

    const old = (await store.get("old-busy"))!;
    expect(await store.update(old, { load: 0.01, revision: old.revision + 1 })).toBe(true);
    expect((await agents.findOne({ _id: "old-busy" }))?.routeTier).toBe(routeTier({ status: AgentStatus.HEALTHY, load: 0.01 }));
    // "new-idle" and "old-busy" now share tier 0: by id.
    expect(await routable(store, ["code"])).toEqual(["new-idle", "old-busy", "old-mid", "new-half", "new-busy"]);
  });

  it("backfills routeTier on start (and drops the old routeCeiling indexes); the order stays right", async () => {
    const database = `tiers_${process.pid}_${n++}`;
    const db = raw.db(database);
    const agents = db.collection<{ _id: string }>("agents");
    // A database as an older version left it: its indexes and documents.
    await agents.createIndex({ tenant: 1, capNames: 1, routeCeiling: -1, _id: 1 }, { name: "tenant_capabilities_ceiling" });
    await agents.createIndex({ shared: 1, capNames: 1, routeCeiling: -1, _id: 1 }, { name: "shared_capabilities_ceiling" });
    const loads = [0.7, 0.02, 0.33, 0.5, 0.04, 0.98];
    await agents.insertMany(loads.map((load, i) => oldFormat(agent(`o${i}`, { load }))));
    await agents.insertOne(oldFormat(agent("deg", { load: 0, status: AgentStatus.DEGRADED })));

    const store = await open(database);
    // Whatever the background backfill did by now, one more pass finishes it.
    await store.backfillRouteTiers();
    expect(await agents.countDocuments({ routeTier: { $exists: false } })).toBe(0);
    expect(await agents.countDocuments({ routeCeiling: { $exists: true } })).toBe(0);
    const names = (await agents.listIndexes().toArray()).map((i) => String(i.name));
    expect(names).toEqual(expect.arrayContaining(["tenant_capabilities_tier", "shared_capabilities_tier"]));
    expect(names.filter((name) => name.endsWith("_ceiling"))).toEqual([]);
    // Tiers: o1, o4 (bucket 0), o2 (6), o3 (10), o0 (14), deg (idle DEGRADED: after 12, before 13), o5 (19).
    expect(await routable(store, ["code"])).toEqual(["o1", "o4", "o2", "o3", "deg", "o0", "o5"]);
    // Nothing left to do: a second pass writes nothing.
    expect(await store.backfillRouteTiers()).toBe(0);
  });
});
