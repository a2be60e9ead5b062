import type { Clock } from "../clock.js";
import {
  PublishedEvent,
  buildEvent,
  eventMatches,
  type ComponentStatus,
  type EventBus,
  type EventFilter,
  type EventInput,
  type HistoryGap,
  type Subscription,
} from "./event-bus.js";

interface Subscriber {
  readonly filter: EventFilter;
  readonly deliver: (event: PublishedEvent) => void;
}

/**
 * An event as the ring holds it: what it is made from, not the message.
 * An input with a lazy payload (the registry's agent events) then holds
 * only its immutable record, and the message is made when a subscriber
 * first reads it — once for all live subscribers, and again for a replay.
 * Any other event is held as the message made at publish (its input is
 * not kept). Its id is its place in the ring (ids are consecutive) and its
 * time is in the ring's `times`: a wrapper object holding both was ~70
 * bytes per held event (the object, a bigint, a boxed number).
 */
type Held = EventInput | PublishedEvent;

/** Whether a subscriber with `filter` sees the held event. */
function heldMatches(h: Held, filter: EventFilter): boolean {
  if (h instanceof PublishedEvent) return h.matches(filter);
  return eventMatches(filter, h.tenant, h.type, h.agentId ?? "", h.lazyPayload?.shared === true);
}

function heldEvent(h: Held, id: bigint, time: number): PublishedEvent {
  return h instanceof PublishedEvent ? h : buildEvent(id, time, h);
}

/**
 * The embedded event bus: one process, ids from a counter, the last
 * `retention` events in a ring for resuming clients.
 */
export class MemoryEventBus implements EventBus {
  private readonly ring: (Held | undefined)[];
  /** Publish time of the event in each slot of the ring (epoch ms), grown as the ring fills. */
  private times = new Float64Array(0);
  private head = 0;
  private size = 0;
  private nextId = 1n;
  private readonly subscribers = new Set<Subscriber>();

  constructor(
    private readonly clock: Clock,
    retention: number,
  ) {
    this.ring = new Array<Held | undefined>(retention);
  }

  async publish(input: EventInput): Promise<void> {
    const id = this.nextId++;
    const time = this.clock.now();
    // Made now unless the payload is lazy; a lazy one only for the subscribers that see it.
    let event = input.lazyPayload ? undefined : buildEvent(id, time, input);
    const held: Held = event ?? input;
    if (this.ring.length > 0) {
      const slot = (this.head + this.size) % this.ring.length;
      if (slot >= this.times.length) this.grow();
      this.ring[slot] = held;
      this.times[slot] = time;
      if (this.size < this.ring.length) this.size++;
      else this.head = (this.head + 1) % this.ring.length;
    }
    for (const s of this.subscribers) {
      if (heldMatches(held, s.filter)) s.deliver((event ??= buildEvent(id, time, input)));
    }
  }

  /** In one process the counters are read from /health/fleet; nobody subscribes. */
  publishTelemetry(): void {}

  subscribe(
    filter: EventFilter,
    afterId: bigint | undefined,
    deliver: (event: PublishedEvent) => void,
    gap?: (gap: HistoryGap) => void,
  ): Subscription {
    if (afterId !== undefined) {
      const missing = gap && this.gapAfter(afterId);
      if (missing) {
        gap(missing);
        return { close: () => undefined };
      }
      // The oldest held event's id: the ids that follow are consecutive.
      const oldest = this.nextId - BigInt(this.size);
      for (let i = afterId < oldest ? 0 : Number(afterId - oldest) + 1; i < this.size; i++) {
        const id = oldest + BigInt(i);
        const slot = (this.head + i) % this.ring.length;
        const held = this.ring[slot]!;
        if (heldMatches(held, filter)) deliver(heldEvent(held, id, this.times[slot]!));
      }
    }
    const subscriber: Subscriber = { filter, deliver };
    this.subscribers.add(subscriber);
    return { close: () => void this.subscribers.delete(subscriber) };
  }

  /** Room for the times of twice as many slots (up to the ring's), so an idle bus does not reserve its whole ring. */
  private grow(): void {
    const times = new Float64Array(Math.min(this.ring.length, Math.max(64, this.times.length * 2)));
    times.set(this.times);
    this.times = times;
  }

  /**
   * Ids are consecutive here: the events after `afterId` are all held when
   * the ring still holds `afterId + 1` (or nothing was published after it).
   */
  private gapAfter(afterId: bigint): HistoryGap | undefined {
    if (afterId === 0n) return undefined;
    const newest = this.nextId - 1n;
    const oldest = this.nextId - BigInt(this.size);
    if (afterId > newest) {
      return { reason: "ahead", afterId, detail: `no event with this id was issued yet (the newest is ${newest}; the server restarted?)` };
    }
    if (afterId + 1n < oldest) {
      return { reason: "trimmed", afterId, detail: `it is older than what is held (the oldest held event is ${oldest}; EVENT_RETENTION)` };
    }
    return undefined;
  }

  /** Number of live subscribers (for fleet health and tests). */
  get subscriberCount(): number {
    return this.subscribers.size;
  }

  health(): ComponentStatus {
    return { ok: true, message: "in-memory" };
  }

  async close(): Promise<void> {
    this.subscribers.clear();
  }
}
