import type { Writable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { errors } from "../errors.js";
import type { EventBus, EventFilter, PublishedEvent, Subscription } from "../events/event-bus.js";

/** One client of the event feed, as the fan-out sees it. */
export interface Subscriber {
  /**
   * The stream or socket its frames are written to (the lean gRPC path,
   * /ws), or a queue that takes the events themselves (`eventsOf`: the
   * feeds connect-node and REST frame per call).
   */
  readonly out: Pick<Writable, "write" | "destroyed" | "writableEnded" | "writableLength">;
  /** Takes a turn's events instead of their joined frames (a queue's subscriber). */
  readonly take?: (events: readonly PublishedEvent[], bytes: number) => void;
  /** Whether frames may still be written (a WebSocket that sent its close frame may not). */
  readonly open?: () => boolean;
  /** All its unsent bytes, `out`'s included (a WebSocket's bufferedAmount); `out.writableLength` when not given. */
  readonly buffered?: () => number;
  /**
   * It would pass the bound on unsent bytes: it is out of the feed and must
   * be cut off, with `errors.subscriberTooSlow(unsent, limit)` on every
   * protocol.
   */
  readonly tooSlow: (unsent: number, limit: number) => void;
  /**
   * Its resume (`after_id`) cannot be served in full (the bus reported a
   * HistoryGap): it is out of the feed, after what it was already owed, and
   * must be ended with `error` (errors.eventHistoryGap). Every transport
   * sets it; without it a resume carries on live past the gap.
   */
  readonly historyLost?: (error: ConnectError) => void;
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
  /** The events of `frames`, for members that take events. */
  events: PublishedEvent[];
  bytes: number;
  /** Its resume hit a gap: its members are ended with this after the turn's frames. */
  lost?: ConnectError | undefined;
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
  private members = 0;

  constructor(
    private readonly bus: EventBus,
    private readonly frameOf: (event: PublishedEvent) => Buffer,
    private readonly maxBufferedBytes: number,
  ) {}

  join(filter: EventFilter, afterId: bigint | undefined, subscriber: Subscriber): Membership {
    let group: Group;
    if (afterId !== undefined) {
      // Member first: the replay is delivered during subscribe().
      group = { key: undefined, subscription: undefined, members: new Map([[subscriber, 0]]), frames: [], events: [], bytes: 0 };
      group.subscription = this.bus.subscribe(
        filter,
        afterId,
        (event) => this.deliver(group, event),
        // Possibly called within subscribe(): it ends the member on the next flush, after join returned.
        subscriber.historyLost && ((gap) => this.lose(group, errors.eventHistoryGap(gap))),
      );
    } else {
      const key = keyOf(filter);
      const known = this.groups.get(key);
      if (known) group = known;
      else {
        group = { key, subscription: undefined, members: new Map(), frames: [], events: [], bytes: 0 };
        const created = group;
        group.subscription = this.bus.subscribe(filter, undefined, (event) => this.deliver(created, event));
        this.groups.set(key, group);
      }
      // Owed only what is published from now on.
      group.members.set(subscriber, group.frames.length);
    }
    const joined = group;
    this.members++;
    return { leave: (drain) => this.leave(joined, subscriber, drain) };
  }

  /** Subscribers on the feed now (for /metrics). */
  get subscriberCount(): number {
    return this.members;
  }

  /** The bytes one event counts for in the unsent-bytes rule (its frame in this feed's format). */
  sizeOf(event: PublishedEvent): number {
    return this.frameOf(event).length;
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
    group.events.push(event);
    group.bytes += frame.length;
  }

  private lose(group: Group, error: ConnectError): void {
    if (group.members.size === 0) return;
    group.lost = error;
    if (group.frames.length === 0) {
      this.dirty.push(group);
      if (this.dirty.length === 1) setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    const dirty = this.dirty;
    this.dirty = [];
    for (const group of dirty) {
      this.send(group);
      if (group.lost) this.end(group, group.lost);
    }
  };

  /** Ends every member of a resuming group whose history is not all held. */
  private end(group: Group, error: ConnectError): void {
    group.lost = undefined;
    for (const subscriber of [...group.members.keys()]) {
      this.remove(group, subscriber);
      subscriber.historyLost?.(error);
    }
  }

  private send(group: Group): void {
    const { frames, events, bytes } = group;
    group.frames = [];
    group.events = [];
    group.bytes = 0;
    if (frames.length === 0) return;
    let all: Buffer | undefined;
    // forEach, not for-of: no [key, value] array per member (10k subscribers × every event).
    group.members.forEach((from, subscriber) => {
      if (from !== 0) group.members.set(subscriber, 0);
      if (from >= frames.length) return;
      if (subscriber.take) {
        const owed = from === 0 ? events : events.slice(from);
        this.write(group, subscriber, from === 0 ? bytes : sum(frames, from), owed);
      } else if (from === 0) {
        all ??= frames.length === 1 ? frames[0]! : Buffer.concat(frames, bytes);
        this.write(group, subscriber, all.length, all);
      } else this.write(group, subscriber, sum(frames, from), Buffer.concat(frames.slice(from)));
    });
  }

  /** The one slow-subscriber rule: nobody gets more than `maxBufferedBytes` unsent. */
  private write(group: Group, subscriber: Subscriber, size: number, what: Buffer | readonly PublishedEvent[]): void {
    const out = subscriber.out;
    if (out.destroyed || out.writableEnded || subscriber.open?.() === false) return;
    const unsent = subscriber.buffered ? subscriber.buffered() : out.writableLength;
    if (unsent + size > this.maxBufferedBytes) {
      this.remove(group, subscriber);
      subscriber.tooSlow(unsent + size, this.maxBufferedBytes);
      return;
    }
    subscriber.sent += size;
    if (Buffer.isBuffer(what)) out.write(what);
    else subscriber.take!(what, size);
  }

  private leave(group: Group, subscriber: Subscriber, drain: boolean): void {
    const from = group.members.get(subscriber);
    if (from === undefined) return;
    this.remove(group, subscriber);
    const out = subscriber.out;
    if (drain && from < group.frames.length && !out.destroyed && !out.writableEnded && subscriber.open?.() !== false) {
      const size = sum(group.frames, from);
      subscriber.sent += size;
      if (subscriber.take) subscriber.take(group.events.slice(from), size);
      else out.write(Buffer.concat(group.frames.slice(from)));
    }
  }

  private remove(group: Group, subscriber: Subscriber): void {
    if (group.members.delete(subscriber)) this.members--;
    if (group.members.size > 0) return;
    group.subscription?.close();
    if (group.key !== undefined && this.groups.get(group.key) === group) this.groups.delete(group.key);
  }
}

function sum(frames: readonly Buffer[], from: number): number {
  let n = 0;
  for (let i = from; i < frames.length; i++) n += frames[i]!.length;
  return n;
}

/**
 * The feed as an async iterable of events, for transports that frame each
 * message themselves (connect-node's gRPC, gRPC-Web and Connect streams,
 * REST's NDJSON): a member of the same groups under the same rule, whose
 * unsent bytes are the events it has not yet pulled plus what its
 * transport still buffers. Cut off, it throws the same error every other
 * protocol gets.
 */
export async function* eventsOf(
  feed: FanOut,
  filter: EventFilter,
  afterId: bigint | undefined,
  signal: AbortSignal,
): AsyncGenerator<PublishedEvent> {
  const queue: PublishedEvent[] = [];
  let queuedBytes = 0;
  let cutOff: Error | undefined;
  let wake: (() => void) | undefined;
  const subscriber: Subscriber = {
    out: { write: () => true, destroyed: false, writableEnded: false, writableLength: 0 },
    sent: 0,
    open: () => !signal.aborted,
    buffered: () => queuedBytes,
    take: (events, bytes) => {
      queue.push(...events);
      queuedBytes += bytes;
      wake?.();
    },
    tooSlow: (unsent, limit) => {
      cutOff = errors.subscriberTooSlow(unsent, limit);
      wake?.();
    },
    historyLost: (error) => {
      cutOff = error;
      wake?.();
    },
  };
  const membership = feed.join(filter, afterId, subscriber);
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    for (;;) {
      const next = queue.shift();
      if (next) {
        queuedBytes -= feed.sizeOf(next);
        yield next;
        continue;
      }
      if (cutOff) throw cutOff;
      if (signal.aborted) break;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    // Shutdown aborts with UNAVAILABLE so clients reconnect to another
    // replica; a deadline ends with its own code. A client that went away
    // needs no status.
    if (signal.reason instanceof ConnectError && signal.reason.code !== Code.Canceled) throw signal.reason;
  } finally {
    membership.leave(false);
    signal.removeEventListener("abort", onAbort);
  }
}

function keyOf(filter: EventFilter): string {
  return `${filter.tenant}\u0000${[...filter.types].sort().join(",")}\u0000${filter.agentId}`;
}
