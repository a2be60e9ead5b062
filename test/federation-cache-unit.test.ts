import { describe, expect, it } from "vitest";
import { RemoteCache } from "../src/federation/remote-cache.js";
import { createLogger } from "../src/logger.js";
import { ManualClock } from "./support/manual-clock.js";

const log = createLogger("silent");
/** Decodes an answer as itself: the items are [bytes]. */
const raw = (b: Uint8Array) => [b];
const never = async (): Promise<Uint8Array> => {
  throw new Error("not asked");
};

describe("RemoteCache", () => {
  it("stays within its configured bytes with many entries, evicting the least recently used", async () => {
    const maxBytes = 1024 * 1024;
    const cache = new RemoteCache({ maxBytes, ttlMs: 60_000, staleMs: 0, hot: 0 }, new ClockOf(), log, () => 1);
    const answer = new Uint8Array(400).fill(7);
    for (let i = 0; i < 20_000; i++) {
      await cache.read(`key-${i}`, "p", async () => answer, never, raw);
      expect(cache.snapshot().bytes).toBeLessThanOrEqual(maxBytes);
    }
    const s = cache.snapshot();
    expect(s.misses).toBe(20_000);
    expect(s.entries).toBeGreaterThan(1_000);
    expect(s.entries).toBeLessThan(20_000);
    expect(s.evictions).toBe(20_000 - s.entries);
    // The newest is held, the oldest was evicted.
    await cache.read("key-19999", "p", never, never, raw);
    await expect(cache.read("key-0", "p", never, never, raw)).rejects.toThrow("not asked");
    // A read decodes the answer once and keeps it: counted too, still within the bytes.
    for (let i = 19_999; i > 19_899; i--) await cache.read(`key-${i}`, "p", never, never, raw);
    expect(cache.snapshot().bytes).toBeLessThanOrEqual(maxBytes);
    expect(cache.snapshot().evictions).toBeGreaterThan(s.evictions);
  });

  it("serves a stale entry at once and refreshes it once, however many read it meanwhile", async () => {
    const clock = new ClockOf();
    const cache = new RemoteCache({ maxBytes: 1 << 20, ttlMs: 1_000, staleMs: 10_000, hot: 0 }, clock, log, () => 1);
    await cache.read("k", "p", async () => Uint8Array.of(1), never, raw);
    clock.advance(1_500);
    let refreshes = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const refresh = async () => {
      refreshes++;
      await gate;
      return Uint8Array.of(2);
    };
    const stale = await Promise.all(Array.from({ length: 10 }, () => cache.read("k", "p", never, refresh, raw)));
    expect(stale.map((items) => items[0]![0])).toEqual(Array(10).fill(1));
    expect(refreshes).toBe(1);
    release();
    await new Promise((r) => setTimeout(r, 10));
    expect((await cache.read("k", "p", never, refresh, raw))[0]![0]).toBe(2);
    expect(cache.snapshot()).toMatchObject({ staleHits: 10, refreshes: 1, hits: 1, misses: 1 });
    // Past the stale window: a miss, asked again.
    clock.advance(20_000);
    expect((await cache.read("k", "p", async () => Uint8Array.of(3), never, raw))[0]![0]).toBe(3);
  });

  it("keeps the hottest entries fresh, by uses and the peer's reputation", async () => {
    const clock = new ClockOf();
    const reputation: Record<string, number> = { good: 1, bad: 0.01 };
    const cache = new RemoteCache({ maxBytes: 1 << 20, ttlMs: 1_000, staleMs: 10_000, hot: 1 }, clock, log, (p) => reputation[p] ?? 0);
    const refreshed: string[] = [];
    const from = (key: string) => async () => (refreshed.push(key), Uint8Array.of(9));
    for (const [key, peer, uses] of [["hot", "good", 5], ["warm", "good", 1], ["noisy", "bad", 50]] as const) {
      for (let i = 0; i < uses; i++) await cache.read(key, peer, async () => Uint8Array.of(0), from(key), raw);
    }
    clock.advance(900);
    cache.keepHot();
    await new Promise((r) => setTimeout(r, 10));
    expect(refreshed).toEqual(["hot"]);
  });
});

class ClockOf extends ManualClock {}

describe("federated Discover answers", () => {
  it("are built once while the local answer and the remote agents (from the cache) stay the same, and again when either changes", async () => {
    const { create } = await import("@bufbuild/protobuf");
    const { createContextValues } = await import("@connectrpc/connect");
    const { AgentSchema } = await import("../gen/federation/v1/agent_pb.js");
    const { DiscoverRequestSchema } = await import("../gen/federation/v1/directory_service_pb.js");
    const { FederationScope } = await import("../gen/federation/v1/origin_pb.js");
    const { directoryService } = await import("../src/transport/services/directory-service.js");
    const { principalKey } = await import("../src/security/principal.js");
    // The remote cache hands out the same decoded messages while its entry holds; a refresh, new ones.
    let remote = [create(AgentSchema, { id: "r1", name: "remote-1" })];
    // The store hands out the same (here: empty) answer while nothing changed here.
    let local: never[] = [];
    const directory = {
      discover: async () => local,
      federation: { instanceId: "fed-x", remoteWanted: () => 10, discover: async () => [...remote], searchTools: async () => [] },
    };
    const service = directoryService(directory as never, {} as never, {} as never, {} as never);
    const values = createContextValues().set(principalKey, { tenant: "default" } as never);
    const ctx = { values, requestHeader: new Headers(), signal: new AbortController().signal, timeoutMs: () => undefined } as never;
    const ask = () => service.discover!(create(DiscoverRequestSchema, { capabilities: ["x"], scope: FederationScope.FEDERATED }), ctx) as Promise<any>;
    const first = await ask();
    expect(first.agents.map((a: any) => a.id)).toEqual(["r1"]);
    expect(await ask()).toBe(first);
    remote = [create(AgentSchema, { id: "r2", name: "remote-2" })];
    const changed = await ask();
    expect(changed).not.toBe(first);
    expect(changed.agents.map((a: any) => a.id)).toEqual(["r2"]);
    expect(await ask()).toBe(changed);
    local = [];
    expect(await ask()).not.toBe(changed);
  });
});
