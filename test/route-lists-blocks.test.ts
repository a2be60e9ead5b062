import { describe, expect, it } from "vitest";
import { AgentStatus, ROUTABLE_STATUSES, routeTier, type AgentRecord } from "../src/registry/agent-record.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { agent } from "./contracts/agent-store.contract.js";

/**
 * The memory store keeps each capability's routable agents as blocks of a
 * few hundred entries (memory-agent-store.ts RankedList): lists here grow
 * to several blocks, so inserts split blocks, removals empty them and
 * heartbeats move entries across block boundaries.
 */
describe("memory store route lists past one block", () => {
  it("routes in exact (tier, id) order, own and shared agents merged, through registrations, heartbeats, sharing and removals of 2,000 agents", async () => {
    const store = new MemoryAgentStore();
    const caps = ["a", "b", "c"];
    const current = new Map<string, AgentRecord>();
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const statuses = [AgentStatus.HEALTHY, AgentStatus.HEALTHY, AgentStatus.DEGRADED, AgentStatus.DRAINING, AgentStatus.UNHEALTHY];
    const check = () => {
      for (const tenant of ["t1", "t2"]) {
        for (const wanted of [["a"], ["b"], ["c"], ["a", "b"], ["c", "a"]]) {
          const expected = [...current.values()]
            .filter((a) => (a.tenant === tenant || a.shared) && ROUTABLE_STATUSES.includes(a.status))
            .filter((a) => wanted.every((w) => a.capabilities.some((c) => c.name === w)))
            .sort((x, y) => routeTier(x) - routeTier(y) || (x.id < y.id ? -1 : 1))
            .map((a) => a.id);
          const got: string[] = [];
          for (const a of store.routable(tenant, wanted)) got.push(a.id);
          expect(got, `${tenant} ${wanted.join("+")}`).toEqual(expected);
        }
      }
    };
    const register = async (i: number) => {
      const own = caps.filter((_, k) => (i >> k) & 1 || k === i % 3);
      const a = agent(`x${String(i).padStart(5, "0")}`, {
        tenant: i % 5 === 0 ? "t2" : "t1",
        shared: i % 7 === 0,
        caps: own.map((c) => [c, []]),
        load: Math.floor(rand() * 20) / 20,
        status: statuses[Math.floor(rand() * statuses.length)]!,
      });
      expect(await store.put(a, 0)).toBe(true);
      current.set(a.id, a);
    };
    // In random id order, so inserts land all over the lists.
    const order = Array.from({ length: 2_000 }, (_, i) => i).sort(() => rand() - 0.5);
    for (const i of order) await register(i);
    check();
    for (let step = 0; step < 6_000; step++) {
      const ids = [...current.keys()];
      const before = current.get(ids[Math.floor(rand() * ids.length)]!)!;
      const r = rand();
      if (r < 0.05) {
        expect(await store.delete(before.id, before.revision)).toBe(true);
        current.delete(before.id);
        continue;
      }
      const patch = {
        // Often within the same bucket or tier, sometimes a status change, now and then shared or withdrawn.
        load: rand() < 0.3 ? before.load : Math.floor(rand() * 20) / 20 + 0.01,
        status: rand() < 0.15 ? statuses[Math.floor(rand() * statuses.length)]! : before.status,
        shared: r > 0.97 ? !before.shared : before.shared,
        revision: before.revision + 1,
      };
      expect(await store.update(before, patch)).toBe(true);
      current.set(before.id, { ...before, ...patch });
      if (step % 2_000 === 1_999) check();
    }
    // Everything gone: every list is empty (and dropped).
    for (const a of [...current.values()]) expect(await store.delete(a.id, a.revision)).toBe(true);
    current.clear();
    check();
  });
});
