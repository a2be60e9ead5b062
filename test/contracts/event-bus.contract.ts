import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EventBus, EventInput, PublishedEvent } from "../../src/events/event-bus.js";
import { Collected } from "../support/feeds.js";

/** The behaviour every EventBus adapter must have; each adapter's test file calls this. */
export function eventBusContract(name: string, makeBus: () => Promise<EventBus>): void {
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
