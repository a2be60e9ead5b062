import type { Clock } from "../clock.js";
import {
  buildEvent,
  eventMatches,
  type ComponentStatus,
  type EventBus,
  type EventFilter,
  type EventInput,
  type HistoryGap,
  type PublishedEvent,
  type Subscription,
} from "./event-bus.js";

interface Subscriber {
  readonly filter: EventFilter;
  readonly deliver: (event: PublishedEvent) => void;
}

/**
 * An event as the ring holds it: what it is made from, not the message.
 * An input with a lazy payload (the registry's agent events) then holds
 * only its immutable record, and the message is made when the event is
 * read — by live subscribers once, at publish, and again by a replay.
 * Any other event is held as the message made at publish (its input is
 * not kept).
 */
type Held =
  | { readonly id: bigint; readonly time: number; readonly input: EventInput; readonly event: undefined }
  | { readonly id: bigint; readonly time: number; readonly input: undefined; readonly event: PublishedEvent };

/** Whether a subscriber with `filter` sees the held event. */
function heldMatches(h: Held, filter: EventFilter): boolean {
  if (h.event) return h.event.matches(filter);
  const input = h.input;
  return eventMatches(filter, input.tenant, input.type, input.agentId ?? "", input.lazyPayload?.shared === true);
}

/**
 * The embedded event bus: one process, ids from a counter, the last
 * `retention` events in a ring for resuming clients.
 */
export class MemoryEventBus implements EventBus {
  private readonly ring: (Held | undefined)[];
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
    const held: Held = event ? { id, time, input: undefined, event } : { id, time, input, event };
    if (this.ring.length > 0) {
      this.ring[(this.head + this.size) % this.ring.length] = held;
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
      for (let i = 0; i < this.size; i++) {
        const held = this.ring[(this.head + i) % this.ring.length]!;
        if (held.id > afterId && heldMatches(held, filter)) deliver(held.event ?? buildEvent(held.id, held.time, held.input));
      }
    }
    const subscriber: Subscriber = { filter, deliver };
    this.subscribers.add(subscriber);
    return { close: () => void this.subscribers.delete(subscriber) };
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
