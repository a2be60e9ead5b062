import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EventBus, EventInput, HistoryGap, PublishedEvent } from "../../src/events/event-bus.js";
import { Collected } from "../support/feeds.js";

/** The behaviour every EventBus adapter must have; each adapter's test file calls this. */
export interface ContractBusOptions {
  /** Events held for resuming subscribers (EVENT_RETENTION); the adapter's default when absent. */
  readonly retention?: number;
}

/**
 * The behaviour every EventBus adapter must have; each adapter's test file calls this.
 * `burst` is how many events to publish so that a bus made with retention 10 has
 * surely dropped its oldest (a Redis stream trims ~approximately, whole nodes).
 */
export function eventBusContract(name: string, makeBus: (opts?: ContractBusOptions) => Promise<EventBus>, burst = 40): void {
  describe(`EventBus contract: ${name}`, () => {
    let bus: EventBus;
    beforeEach(async () => {
      bus = await makeBus();
    });
    afterEach(() => bus.close());

    const all = { tenant: "t1", types: new Set<string>(), agentId: "" };
    const event = (type: EventInput["type"], agentId: string, tenant = "t1"): EventInput => ({
      type,
      tenant,
      agentId,
      payload: { case: "healthAlert", value: { component: "test", message: agentId } },
    });
    const collect = (filter = all, after: bigint | undefined = undefined) => {
      const got = new Collected<PublishedEvent>();
      const sub = bus.subscribe(filter, after, (e) => got.push(e));
      return { got, sub };
    };

    it("delivers every event to every subscriber once, in publish order, with increasing ids", async () => {
      const a = collect();
      const b = collect();
      await settle();
      for (let i = 0; i < 20; i++) await bus.publish(event("health.alert", `agent-${i}`));
      for (const { got } of [a, b]) {
        const events = await got.waitFor(20);
        expect(events.map((e) => e.message.agentId)).toEqual(Array.from({ length: 20 }, (_, i) => `agent-${i}`));
        for (let i = 1; i < events.length; i++) expect(events[i]!.id > events[i - 1]!.id).toBe(true);
        expect(events[0]!.message.time).toBeDefined();
      }
      await settle();
      expect(a.got.items).toHaveLength(20);
    });

    it("filters by type and agent", async () => {
      const { got } = collect({ tenant: "t1", types: new Set(["agent.expired"]), agentId: "x" });
      await settle();
      await bus.publish(event("agent.expired", "y"));
      await bus.publish(event("health.alert", "x"));
      await bus.publish(event("agent.expired", "x"));
      const [e] = await got.waitFor(1);
      expect(e!.message.type).toBe("agent.expired");
      expect(e!.message.agentId).toBe("x");
      await settle();
      expect(got.items).toHaveLength(1);
    });

    it("replays held events after a given id, then continues live without gaps or repeats", async () => {
      const first = collect();
      await settle();
      for (let i = 0; i < 5; i++) await bus.publish(event("health.alert", `e${i}`));
      const seen = await first.got.waitFor(5);
      first.sub.close();
      const resumed = collect(all, seen[1]!.id);
      await bus.publish(event("health.alert", "e5"));
      const events = await resumed.got.waitFor(4);
      expect(events.map((e) => e.message.agentId)).toEqual(["e2", "e3", "e4", "e5"]);
      await settle();
      expect(resumed.got.items).toHaveLength(4);
    });

    it("replays from the oldest held event, the first one included, for after id 0; none when absent", async () => {
      await bus.publish(event("health.alert", "first"));
      await bus.publish(event("health.alert", "second"));
      await settle();
      const fromStart = collect(all, 0n);
      const live = collect(all, undefined);
      await settle();
      await bus.publish(event("health.alert", "third"));
      const events = await fromStart.got.waitFor(3);
      expect(events.map((e) => e.message.agentId)).toEqual(["first", "second", "third"]);
      const [l] = await live.got.waitFor(1);
      expect(l!.message.agentId).toBe("third");
      await settle();
      expect(live.got.items).toHaveLength(1);
    });

    it("delivers a tenant's events to that tenant only", async () => {
      const { got } = collect();
      await settle();
      await bus.publish(event("health.alert", "other", "t2"));
      await bus.publish(event("health.alert", "own", "t1"));
      const [e] = await got.waitFor(1);
      expect(e!.message.agentId).toBe("own");
      await settle();
      expect(got.items).toHaveLength(1);
    });

    it("stops delivering to a closed subscription", async () => {
      const { got, sub } = collect();
      await settle();
      sub.close();
      await bus.publish(event("health.alert", "late"));
      await settle();
      expect(got.items).toEqual([]);
    });

    describe("a resume whose history is not all held", () => {
      let small: EventBus;
      beforeEach(async () => {
        small = await makeBus({ retention: 10 });
      });
      afterEach(() => small.close());

      const resume = (after: bigint) => {
        const got = new Collected<PublishedEvent>();
        const gaps = new Collected<HistoryGap>();
        small.subscribe(all, after, (e) => got.push(e), (g) => gaps.push(g));
        return { got, gaps };
      };
      /** Publishes `n` events; resolves with every id, in order, as a live subscriber saw them. */
      const publishMany = async (n: number, prefix = "e") => {
        const live = new Collected<PublishedEvent>();
        const sub = small.subscribe(all, undefined, (e) => live.push(e));
        await settle();
        for (let i = 0; i < n; i++) {
          await small.publish(event("health.alert", `${prefix}${i}`));
          // Keeps a shared bus's reader within the tiny retention window.
          if (i % 5 === 4) await live.waitFor(i + 1);
        }
        const ids = (await live.waitFor(n)).map((e) => e.id);
        sub.close();
        return ids;
      };

      it("reports a gap (trimmed) for an id older than what is held, and delivers nothing, not even live events", async () => {
        const ids = await publishMany(burst);
        const { got, gaps } = resume(ids[0]!);
        const [gap] = await gaps.waitFor(1);
        expect(gap!.reason).toBe("trimmed");
        expect(gap!.afterId).toBe(ids[0]);
        expect(gap!.detail).toMatch(/older than what is held/);
        await small.publish(event("health.alert", "after-the-gap"));
        await settle();
        expect(got.items).toEqual([]);
        expect(gaps.items).toHaveLength(1);
      });

      it("resumes without a gap from any held id, the oldest included", async () => {
        const ids = await publishMany(burst);
        const oldest = (await resume(0n).got.waitFor(1))[0]!.id;
        const k = ids.indexOf(oldest);
        expect(k).toBeGreaterThan(1);
        for (const from of [k, ids.length - 3]) {
          const { got, gaps } = resume(ids[from]!);
          const events = await got.waitFor(ids.length - 1 - from);
          expect(events.map((e) => e.id)).toEqual(ids.slice(from + 1));
          await settle();
          expect(gaps.items).toEqual([]);
        }
        const { gaps } = resume(ids[k - 2]!);
        expect((await gaps.waitFor(1))[0]!.reason).toBe("trimmed");
      });

      it("never reports a gap for after id 0: it replays from the oldest held event", async () => {
        const ids = await publishMany(burst);
        const { got, gaps } = resume(0n);
        await got.waitFor(1);
        await settle();
        expect(gaps.items).toEqual([]);
        expect(got.items.map((e) => e.id)).toEqual(ids.slice(ids.indexOf(got.items[0]!.id)));
        const replayed = got.items.length;
        await small.publish(event("health.alert", "live"));
        expect((await got.waitFor(replayed + 1)).at(-1)!.message.agentId).toBe("live");
      });

      it("reports a gap (ahead) for an id the bus has not issued", async () => {
        const ids = await publishMany(3);
        const { got, gaps } = resume(ids[2]! + 1_000_000_000n);
        // The newest id itself is a complete (empty) replay.
        const fromNewest = resume(ids[2]!);
        expect((await gaps.waitFor(1))[0]!.reason).toBe("ahead");
        await small.publish(event("health.alert", "later"));
        expect((await fromNewest.got.waitFor(1))[0]!.message.agentId).toBe("later");
        await settle();
        expect(got.items).toEqual([]);
        expect(fromNewest.gaps.items).toEqual([]);
      });
    });

    it("encodes each event once for all subscribers", async () => {
      const a = collect();
      const b = collect();
      await settle();
      await bus.publish(event("health.alert", "shared"));
      const [ea] = await a.got.waitFor(1);
      const [eb] = await b.got.waitFor(1);
      expect(ea).toBe(eb);
      expect(ea!.json()).toBe(eb!.json());
    });
  });
}

/** Lets a shared bus's reader pick up what was just subscribed or published. */
export function settle(ms = 60): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
