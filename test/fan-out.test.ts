import { setImmediate as nextTurn } from "node:timers/promises";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { EventInput, PublishedEvent } from "../src/events/event-bus.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { FanOut } from "../src/transport/fan-out.js";
import { ManualClock } from "./support/manual-clock.js";

/** A real Writable that keeps every chunk written to it (or never finishes a write, when stalled). */
function sink(stalled = false) {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      if (!stalled) done();
    },
  });
  return { out, chunks, text: () => Buffer.concat(chunks).toString() };
}

const event = (type: EventInput["type"], agentId: string, tenant = "t1"): EventInput => ({
  type,
  tenant,
  agentId,
  payload: { case: "healthAlert", value: { component: "test", message: agentId } },
});
const all = { tenant: "t1", types: new Set<string>(), agentId: "" };
/** The frame is the event id, so what a subscriber got reads as a list of ids. */
const frameOf = (e: PublishedEvent) => Buffer.from(`${e.id};`);

describe("FanOut", () => {
  it("writes a loop turn's events once per subscriber, the same buffer to every subscriber of a filter", async () => {
    const bus = new MemoryEventBus(new ManualClock(), 100);
    const feed = new FanOut(bus, frameOf, 1 << 20);
    const a = sink();
    const b = sink();
    feed.join(all, undefined, { sent: 0, out: a.out, tooSlow: () => expect.fail("not slow") });
    feed.join(all, undefined, { sent: 0, out: b.out, tooSlow: () => expect.fail("not slow") });
    // Two subscribers, one filter: one bus subscription.
    expect(bus.subscriberCount).toBe(1);
    for (let i = 0; i < 5; i++) await bus.publish(event("health.alert", `x${i}`));
    expect(a.chunks).toEqual([]);
    await nextTurn();
    expect(a.chunks).toHaveLength(1);
    expect(a.text()).toBe("1;2;3;4;5;");
    expect(b.chunks[0]).toBe(a.chunks[0]);
    await bus.publish(event("health.alert", "x5"));
    await nextTurn();
    expect(a.text()).toBe("1;2;3;4;5;6;");
    expect(b.text()).toBe("1;2;3;4;5;6;");
  });

  it("keeps filters apart, and a subscriber joining mid-turn gets only what follows", async () => {
    const bus = new MemoryEventBus(new ManualClock(), 100);
    const feed = new FanOut(bus, frameOf, 1 << 20);
    const alerts = sink();
    const expired = sink();
    const late = sink();
    const otherTenant = sink();
    feed.join({ ...all, types: new Set(["health.alert"]) }, undefined, { sent: 0, out: alerts.out, tooSlow: () => undefined });
    feed.join({ ...all, types: new Set(["agent.expired"]) }, undefined, { sent: 0, out: expired.out, tooSlow: () => undefined });
    feed.join({ ...all, tenant: "t2" }, undefined, { sent: 0, out: otherTenant.out, tooSlow: () => undefined });
    await bus.publish(event("health.alert", "a")); // 1
    await bus.publish(event("agent.expired", "b")); // 2
    feed.join({ ...all, types: new Set(["health.alert"]) }, undefined, { sent: 0, out: late.out, tooSlow: () => undefined });
    await bus.publish(event("health.alert", "c")); // 3
    await nextTurn();
    expect(alerts.text()).toBe("1;3;");
    expect(expired.text()).toBe("2;");
    expect(late.text()).toBe("3;");
    expect(otherTenant.chunks).toEqual([]);
  });

  it("replays to a resuming subscriber in its own group, then follows live events", async () => {
    const bus = new MemoryEventBus(new ManualClock(), 100);
    const feed = new FanOut(bus, frameOf, 1 << 20);
    const live = sink();
    feed.join(all, undefined, { sent: 0, out: live.out, tooSlow: () => undefined });
    for (let i = 0; i < 4; i++) await bus.publish(event("health.alert", `x${i}`));
    await nextTurn();
    const resumed = sink();
    feed.join(all, 2n, { sent: 0, out: resumed.out, tooSlow: () => undefined });
    await bus.publish(event("health.alert", "x4"));
    await nextTurn();
    expect(resumed.text()).toBe("3;4;5;");
    expect(live.text()).toBe("1;2;3;4;5;");
  });

  it("drains what a leaving subscriber is owed before its end, or drops it; the last one out closes the subscription", async () => {
    const bus = new MemoryEventBus(new ManualClock(), 100);
    const feed = new FanOut(bus, frameOf, 1 << 20);
    const drained = sink();
    const dropped = sink();
    const stays = sink();
    const d = feed.join(all, undefined, { sent: 0, out: drained.out, tooSlow: () => undefined });
    const x = feed.join(all, undefined, { sent: 0, out: dropped.out, tooSlow: () => undefined });
    const s = feed.join(all, undefined, { sent: 0, out: stays.out, tooSlow: () => undefined });
    await bus.publish(event("health.alert", "a"));
    await bus.publish(event("health.alert", "b"));
    d.leave(true);
    // Written at once, so trailers or a close frame written next come after it.
    expect(drained.text()).toBe("1;2;");
    x.leave(false);
    await nextTurn();
    expect(dropped.chunks).toEqual([]);
    expect(stays.text()).toBe("1;2;");
    expect(drained.text()).toBe("1;2;");
    s.leave(false);
    expect(bus.subscriberCount).toBe(0);
    await bus.publish(event("health.alert", "c"));
    await nextTurn();
    expect(stays.text()).toBe("1;2;");
  });

  it("cuts off a subscriber that stops reading, once, while the others get every event", async () => {
    const bus = new MemoryEventBus(new ManualClock(), 10_000);
    const feed = new FanOut(bus, frameOf, 256);
    const healthy = sink();
    const stuck = sink(true);
    let cutOff = 0;
    feed.join(all, undefined, { sent: 0, out: healthy.out, tooSlow: () => expect.fail("healthy is not slow") });
    feed.join(all, undefined, { sent: 0, out: stuck.out, tooSlow: () => cutOff++ });
    const expected: string[] = [];
    for (let turn = 0; turn < 50; turn++) {
      for (let i = 0; i < 3; i++) {
        await bus.publish(event("health.alert", `x${turn}-${i}`));
        expected.push(`${turn * 3 + i + 1};`);
      }
      await nextTurn();
    }
    expect(healthy.text()).toBe(expected.join(""));
    expect(cutOff).toBe(1);
    // It got whole turns until its backlog would have passed the bound, then nothing more.
    const got = Buffer.concat(stuck.chunks).length;
    expect(got).toBeGreaterThan(0);
    expect(got).toBeLessThanOrEqual(256);
    expect(expected.join("").startsWith(stuck.text())).toBe(true);
  });
});
