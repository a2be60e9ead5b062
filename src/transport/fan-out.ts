import type { Writable } from "node:stream";
import type { EventBus, EventFilter, PublishedEvent, Subscription } from "../events/event-bus.js";

/** One client of the event feed, as the fan-out sees it. */
export interface Subscriber {
  /** The stream or socket its frames are written to. */
  readonly out: Writable;
  /** Whether frames may still be written (a WebSocket that sent its close frame may not). */
  readonly open?: () => boolean;
  /** All its unsent bytes, `out`'s included (a WebSocket's bufferedAmount); `out.writableLength` when not given. */
  readonly buffered?: () => number;
  /** It would pass the bound on unsent bytes: it is out of the feed and must be cut off. */
  readonly tooSlow: () => void;
  /** Bytes written to it so far (the fan-out counts them, for the call's outcome record). */
  sent: number;
}

export interface Membership {
  /**
   * Leaves the feed. With `drain`, what it is owed of the current loop turn
   * is written first (call it before writing trailers or a close frame).
   */
  leave(drain: boolean): void;
}

interface Group {
  /** Its key among the shared groups; undefined for a resuming subscriber's own group. */
  readonly key: string | undefined;
  subscription: Subscription | undefined;
  /** Each member, with the index of the first pending frame it is owed (it may join mid-turn). */
  readonly members: Map<Subscriber, number>;
  frames: Buffer[];
  bytes: number;
}

/**
 * Writes the event feed to its subscribers. Subscribers with the same
 * filter form one group with one bus subscription: an event is matched and
 * framed once per group, and the frames of one loop turn are joined once
 * and that same buffer is written to every member — a burst of events
 * costs each subscriber one write, and nothing per event. (Matching,
 * queueing and joining per subscriber per event were half the CPU of a
 * 1,000-subscriber burst.) A subscriber resuming after an event id gets a
 * group of its own, for its replay.
 *
 * Backpressure: before a write, a member whose unsent bytes would pass
 * `maxBufferedBytes` leaves the feed and is told it is too slow; the others
 * never wait for it.
 */
export class FanOut {
  private readonly groups = new Map<string, Group>();
  private dirty: Group[] = [];

  constructor(
    private readonly bus: EventBus,
    private readonly frameOf: (event: PublishedEvent) => Buffer,
    private readonly maxBufferedBytes: number,
  ) {}

  join(filter: EventFilter, afterId: bigint | undefined, subscriber: Subscriber): Membership {
    let group: Group;
    if (afterId !== undefined) {
      // Member first: the replay is delivered during subscribe().
      group = { key: undefined, subscription: undefined, members: new Map([[subscriber, 0]]), frames: [], bytes: 0 };
      group.subscription = this.bus.subscribe(filter, afterId, (event) => this.deliver(group, event));
    } else {
      const key = keyOf(filter);
      const known = this.groups.get(key);
      if (known) group = known;
      else {
        group = { key, subscription: undefined, members: new Map(), frames: [], bytes: 0 };
        const created = group;
        group.subscription = this.bus.subscribe(filter, undefined, (event) => this.deliver(created, event));
        this.groups.set(key, group);
      }
      // Owed only what is published from now on.
      group.members.set(subscriber, group.frames.length);
    }
    const joined = group;
    return { leave: (drain) => this.leave(joined, subscriber, drain) };
  }

  /** Writes everything pending now (before the server closes its clients). */
  flushNow(): void {
    this.flush();
  }

  private deliver(group: Group, event: PublishedEvent): void {
    if (group.members.size === 0) return;
    if (group.frames.length === 0) {
      this.dirty.push(group);
      if (this.dirty.length === 1) setImmediate(this.flush);
    }
    const frame = this.frameOf(event);
    group.frames.push(frame);
    group.bytes += frame.length;
  }

  private readonly flush = (): void => {
    const dirty = this.dirty;
    this.dirty = [];
    for (const group of dirty) this.send(group);
  };

  private send(group: Group): void {
    const { frames, bytes } = group;
    group.frames = [];
    group.bytes = 0;
    if (frames.length === 0) return;
    const all = frames.length === 1 ? frames[0]! : Buffer.concat(frames, bytes);
    // forEach, not for-of: no [key, value] array per member (10k subscribers × every event).
    group.members.forEach((from, subscriber) => {
      if (from === 0) this.write(group, subscriber, all);
      else {
        group.members.set(subscriber, 0);
        if (from < frames.length) this.write(group, subscriber, Buffer.concat(frames.slice(from)));
      }
    });
  }

  private write(group: Group, subscriber: Subscriber, chunk: Buffer): void {
    const out = subscriber.out;
    if (out.destroyed || out.writableEnded || subscriber.open?.() === false) return;
    const unsent = subscriber.buffered ? subscriber.buffered() : out.writableLength;
    if (unsent + chunk.length > this.maxBufferedBytes) {
      this.remove(group, subscriber);
      subscriber.tooSlow();
      return;
    }
    subscriber.sent += chunk.length;
    out.write(chunk);
  }

  private leave(group: Group, subscriber: Subscriber, drain: boolean): void {
    const from = group.members.get(subscriber);
    if (from === undefined) return;
    this.remove(group, subscriber);
    const out = subscriber.out;
    if (drain && from < group.frames.length && !out.destroyed && !out.writableEnded && subscriber.open?.() !== false) {
      const rest = Buffer.concat(group.frames.slice(from));
      subscriber.sent += rest.length;
      out.write(rest);
    }
  }

  private remove(group: Group, subscriber: Subscriber): void {
    group.members.delete(subscriber);
    if (group.members.size > 0) return;
    group.subscription?.close();
    if (group.key !== undefined && this.groups.get(group.key) === group) this.groups.delete(group.key);
  }
}

function keyOf(filter: EventFilter): string {
  return `${filter.tenant}\u0000${[...filter.types].sort().join(",")}\u0000${filter.agentId}`;
}
