import { describe, expect, it } from "vitest";
import { AgentStatus, patched, ROUTABLE_STATUSES, routeTier, type AgentPatch, type AgentRecord } from "../src/registry/agent-record.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { agent, agentStoreContract } from "./contracts/agent-store.contract.js";

agentStoreContract("memory", async () => new MemoryAgentStore());

describe("patched", () => {
  it("is the record with the patch applied: every field kept, every patched field replaced", () => {
    const a = agent("p1", { caps: [["code", ["py"]]] });
    const patches: AgentPatch[] = [
      { revision: 2 },
      { revision: 3, status: AgentStatus.DEGRADED, load: 0.4, lastHeartbeatAt: 10, leaseExpiresAt: 20 },
      { revision: 4, shared: !a.shared },
      { revision: 5, load: 0 },
    ];
    for (const p of patches) {
      const next = patched(a, p);
      expect(next).toEqual({ ...a, ...p });
      expect(Object.keys(next).sort()).toEqual(Object.keys(a).sort());
    }
  });
});

describe("MemoryAgentStore route index", () => {
  it("pages every agent in id order through interleaved registrations, removals and reads", async () => {
    const store = new MemoryAgentStore();
    const live = new Map<string, AgentRecord>();
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let step = 0; step < 2000; step++) {
      const r = rand();
      if (r < 0.6 || live.size === 0) {
        const id = `a${Math.floor(rand() * 100_000).toString(36)}`;
        const before = live.get(id);
        // New agents and re-registrations that change capabilities (re-indexed).
        const a = agent(id, { caps: [[`c${Math.floor(rand() * 3)}`, []]], revision: (before?.revision ?? 0) + 1 });
        expect(await store.put(a, before?.revision ?? 0)).toBe(true);
        live.set(id, a);
      } else if (r < 0.8) {
        const ids = [...live.keys()];
        const gone = live.get(ids[Math.floor(rand() * ids.length)]!)!;
        expect(await store.delete(gone.id, gone.revision)).toBe(true);
        live.delete(gone.id);
      } else {
        const expected = [...live.keys()].sort();
        const seen: string[] = [];
        for (let after = ""; ; ) {
          const page = await store.list("t1", after, 37);
          if (page.length === 0) break;
          seen.push(...page.map((a) => a.id));
          after = page.at(-1)!.id;
        }
        expect(seen).toEqual(expected);
        expect((await store.counts("t1")).total).toBe(live.size);
      }
    }
    expect((await store.counts("t1")).total).toBe(live.size);
  });

  it("keeps every capability's routable list in exact order through thousands of heartbeats", async () => {
    const store = new MemoryAgentStore();
    const caps = ["a", "b", "c", "d"];
    const current = new Map<string, AgentRecord>();
    // A small deterministic generator, so a failure replays.
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 200; i++) {
      const own = caps.filter((_, k) => (i >> k) & 1 || k === i % 4);
      const a = agent(`x${String(i).padStart(3, "0")}`, { caps: own.map((c) => [c, []]), load: Math.round(rand() * 10) / 10 });
      await store.put(a, 0);
      current.set(a.id, a);
    }
    const statuses = [AgentStatus.HEALTHY, AgentStatus.DEGRADED, AgentStatus.DRAINING, AgentStatus.UNHEALTHY];
    for (let step = 0; step < 3000; step++) {
      const ids = [...current.keys()];
      const before = current.get(ids[Math.floor(rand() * ids.length)]!)!;
      const patch = {
        // Often the same load (a move to the same place), sometimes a status change.
        load: rand() < 0.3 ? before.load : Math.round(rand() * 10) / 10,
        status: rand() < 0.1 ? statuses[Math.floor(rand() * statuses.length)]! : before.status,
        revision: before.revision + 1,
      };
      expect(await store.update(before, patch)).toBe(true);
      current.set(before.id, { ...before, ...patch });
    }
    for (const cap of caps) {
      const expected = [...current.values()]
        .filter((a) => ROUTABLE_STATUSES.includes(a.status) && a.capabilities.some((c) => c.name === cap))
        .sort((x, y) => routeTier(x) - routeTier(y) || (x.id < y.id ? -1 : 1))
        .map((a) => a.id);
      const got: string[] = [];
      for (const a of store.routable("t1", [cap])) got.push(a.id);
      expect(got, cap).toEqual(expected);
    }
    const counts = await store.counts("t1");
    for (const s of statuses) {
      expect(counts.byStatus.get(s) ?? 0).toBe([...current.values()].filter((a) => a.status === s).length);
    }
  });

  it("answers a repeated discovery with current records, and follows membership and status changes", async () => {
    const store = new MemoryAgentStore();
    const q = { tenant: "t1", capabilities: ["code"], tags: [], statuses: [AgentStatus.HEALTHY], limit: 10 };
    const a = agent("a1");
    await store.put(a, 0);
    const first = await store.query(q);
    expect(first.map((r) => r.id)).toEqual(["a1"]);
    // Nothing changed: the very same answer (callers cache by its identity).
    expect(await store.query(q)).toBe(first);
    // A heartbeat keeps the answer but the record read is the new one, in a new array.
    await store.update(a, { load: 0.7, revision: 2 });
    const second = await store.query(q);
    expect(second).not.toBe(first);
    expect(second[0]).toMatchObject({ id: "a1", load: 0.7, revision: 2 });
    expect(first[0]).toMatchObject({ load: 0, revision: 1 });
    expect(await store.query(q)).toBe(second);
    // A new agent, a status change and a removal each show up at once.
    await store.put(agent("a2"), 0);
    expect((await store.query(q)).map((r) => r.id).sort()).toEqual(["a1", "a2"]);
    const a1 = (await store.get("a1"))!;
    await store.update(a1, { status: AgentStatus.DRAINING, revision: 3 });
    expect((await store.query(q)).map((r) => r.id)).toEqual(["a2"]);
    expect((await store.query({ ...q, statuses: [AgentStatus.DRAINING] })).map((r) => r.id)).toEqual(["a1"]);
    await store.delete("a2", 1);
    expect(await store.query(q)).toEqual([]);
    // Another tenant's identical query is its own.
    expect(await store.query({ ...q, tenant: "t2", statuses: [] })).toEqual([]);
  });
});
