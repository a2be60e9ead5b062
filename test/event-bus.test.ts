import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemClock } from "../src/clock.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { RedisEventBus } from "../src/events/redis-event-bus.js";
import { Redis } from "ioredis";
import type { HistoryGap, PublishedEvent } from "../src/events/event-bus.js";
import { eventBusContract, settle } from "./contracts/event-bus.contract.js";
import { Collected } from "./support/feeds.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

let redis: ManagedServer & { dispose(): Promise<void> };
let n = 0;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis.dispose());

eventBusContract("memory", async (opts) => new MemoryEventBus(systemClock, opts?.retention ?? 1_000));

const makeRedisBus = (retention = 1_000, prefix = `contract-${n++}`) => {
  const bus = new RedisEventBus(systemClock, {
    url: redis.url,
    prefix,
    retention,
    maxPending: 1_000,
    log: pino({ level: "silent" }),
  });
  bus.start();
  return bus;
};

// MAXLEN ~ trims whole stream nodes (100 entries by default): 350 events surely drop the oldest.
eventBusContract("redis", async (opts) => makeRedisBus(opts?.retention), 350);

describe("MemoryEventBus: ids are consecutive", () => {
  it("resumes from the id just before the oldest held without a gap, one before that with one", async () => {
    const bus = new MemoryEventBus(systemClock, 3);
    for (let i = 0; i < 6; i++) await bus.publish({ type: "health.alert", tenant: "t1", agentId: `e${i}` });
    const all = { tenant: "t1", types: new Set<string>(), agentId: "" };
    const got: bigint[] = [];
    const gaps: string[] = [];
    bus.subscribe(all, 3n, (e) => got.push(e.id), (g) => gaps.push(g.reason));
    expect(got).toEqual([4n, 5n, 6n]);
    bus.subscribe(all, 2n, (e) => got.push(e.id), (g) => gaps.push(g.reason));
    expect(gaps).toEqual(["trimmed"]);
    expect(got).toEqual([4n, 5n, 6n]);
  });
});

describe("MemoryEventBus: what the ring holds", () => {
  it("replays each held event, lazy or not, with the id and time it was published with, across the ring's growth and wrap", async () => {
    let now = 1_700_000_000_123;
    const bus = new MemoryEventBus({ now: () => now }, 100);
    const all = { tenant: "t1", types: new Set<string>(), agentId: "" };
    const made: number[] = [];
    for (let i = 0; i < 250; i++) {
      now += 7 + (i % 3);
      const lazy = i % 2 === 0;
      await bus.publish(
        lazy
          ? { type: "health.alert", tenant: "t1", agentId: `e${i}`, lazyPayload: { shared: false, make: () => (made.push(i), { case: undefined }) } }
          : { type: "health.alert", tenant: "t1", agentId: `e${i}` },
      );
    }
    const got: PublishedEvent[] = [];
    bus.subscribe(all, 0n, (e) => got.push(e));
    expect(got.map((e) => e.id)).toEqual(Array.from({ length: 100 }, (_, k) => BigInt(151 + k)));
    // Times as published: event k (1-based) at 1_700_000_000_123 + the steps up to it.
    let t = 1_700_000_000_123;
    const times: number[] = [];
    for (let i = 0; i < 250; i++) times.push((t += 7 + (i % 3)));
    expect(got.map((e) => Number(e.message.time!.seconds) * 1000 + e.message.time!.nanos / 1e6)).toEqual(times.slice(150));
    expect(got.map((e) => e.message.agentId)).toEqual(Array.from({ length: 100 }, (_, k) => `e${150 + k}`));
    // From the middle: only later ones; the lazy payloads are made again for the replay.
    made.length = 0;
    const later: bigint[] = [];
    bus.subscribe(all, 240n, (e) => later.push(e.message.id));
    expect(later).toEqual(Array.from({ length: 10 }, (_, k) => BigInt(241 + k)));
    expect(made).toEqual([240, 242, 244, 246, 248]);
  });
});

describe("RedisEventBus: history Redis no longer has", () => {
  const all = { tenant: "t1", types: new Set<string>(), agentId: "" };
  const alert = (agentId: string) => ({ type: "health.alert" as const, tenant: "t1", agentId });
  const resume = (bus: RedisEventBus, after: bigint) => {
    const got = new Collected<PublishedEvent>();
    const gaps = new Collected<HistoryGap>();
    bus.subscribe(all, after, (e) => got.push(e), (g) => gaps.push(g));
    return { got, gaps };
  };
  const up = async (bus: RedisEventBus) => {
    for (let i = 0; i < 200 && !bus.health().ok; i++) await settle(50);
    expect(bus.health().ok).toBe(true);
  };

  it("tells a subscriber resuming across a restart that lost the stream, with or without events since", async () => {
    const bus = makeRedisBus();
    try {
      await up(bus);
      const live = new Collected<PublishedEvent>();
      const sub = bus.subscribe(all, undefined, (e) => live.push(e));
      await settle(100);
      for (const id of ["a", "b", "c"]) await bus.publish(alert(id));
      const seen = await live.waitFor(3);
      await redis.stop(); // no persistence: it comes back empty
      await redis.start();
      await up(bus);
      const early = resume(bus, seen[1]!.id);
      expect((await early.gaps.waitFor(1))[0]!.reason).toBe("reset");
      await bus.publish(alert("after-restart"));
      await live.waitFor(4, 5_000);
      sub.close();
      const late = resume(bus, seen[2]!.id);
      const [gap] = await late.gaps.waitFor(1);
      expect(gap!.reason).toBe("reset");
      expect(gap!.detail).toMatch(/restarted empty/);
      await bus.publish(alert("later"));
      await settle(150);
      expect(late.got.items).toEqual([]);
      expect(early.got.items).toEqual([]);
      // A resume from an id of the new stream is whole.
      const fresh = resume(bus, live.items[3]!.id);
      await bus.publish(alert("next"));
      expect((await fresh.got.waitFor(2)).map((e) => e.message.agentId)).toEqual(["later", "next"]);
      expect(fresh.gaps.items).toEqual([]);
    } finally {
      await bus.close();
    }
  });

  it("reports a replay it could not read as unreadable, not as a whole feed", async () => {
    const prefix = `unreadable-${n++}`;
    const bus = makeRedisBus(1_000, prefix);
    const raw = new Redis(redis.url);
    try {
      await up(bus);
      await raw.set(`${prefix}:events`, "not a stream");
      const { got, gaps } = resume(bus, 5n);
      const [gap] = await gaps.waitFor(1);
      expect(gap!.reason).toBe("unreadable");
      expect(gap!.detail).toMatch(/WRONGTYPE/);
      expect(got.items).toEqual([]);
    } finally {
      raw.disconnect();
      await bus.close();
    }
  });
});
