import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { EventSchema } from "../../gen/federation/v1/event_pb.js";
import type { Clock } from "../clock.js";
import type { Logger } from "../logger.js";
import {
  buildEvent,
  PublishedEvent,
  type ComponentStatus,
  type EventBus,
  type EventFilter,
  type EventInput,
  type HistoryGap,
  type Subscription,
} from "./event-bus.js";

export interface RedisBusOptions {
  readonly url: string;
  /** Stream key prefix; replicas that share it share one event stream. */
  readonly prefix: string;
  /** Events kept in the stream (approximately) for resuming clients. */
  readonly retention: number;
  /** Events queued while Redis is unreachable before the oldest are dropped. */
  readonly maxPending: number;
  readonly log: Logger;
}

interface Subscriber {
  readonly filter: EventFilter;
  readonly deliver: (event: PublishedEvent) => void;
  /** Live events that arrived while the replay was still being read. */
  buffer: PublishedEvent[] | undefined;
  lastId: bigint;
  /** Told when the history it resumes from is not all held (then it is dropped). */
  readonly gap: ((gap: HistoryGap) => void) | undefined;
}

/** Redis stream ids are `<ms>-<seq>`; event ids are ms·10⁶ + seq, so they stay monotonic. */
const SEQ_PER_MS = 1_000_000n;

/**
 * Events shared by every replica through one Redis stream.
 *
 * Why a stream and not plain pub/sub: XADD gives one global order and ids
 * every replica agrees on, and the stream itself is the retention window a
 * client resumes from (XRANGE after its last id), even on a replica that
 * just restarted. Ids derive from Redis's time-based stream ids, so they
 * keep growing across a Redis restart that lost the stream.
 *
 * Each replica reads the stream with one blocking XREAD loop and fans each
 * event out to its local subscribers, decoded once. Publishing never waits
 * for Redis: while it is down, ioredis queues the XADDs (bounded here) and
 * sends them in order when it returns.
 */
export class RedisEventBus implements EventBus {
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly key: string;
  private readonly telemetryChannel: string;
  private readonly subscribers = new Set<Subscriber>();
  private lastStreamId = "$";
  private pending = 0;
  private dropped = 0;
  private closed = false;
  /** Shutdown started: the stream reader stops, nothing new is read. */
  private stopping = false;
  private wakeReader: () => void = () => undefined;
  private readonly readerStopped: Promise<undefined>;
  private reading: Promise<void> | undefined;
  /** Events still queued when the publisher was disconnected at close. */
  private unpublishedAtClose = 0;
  /** The last connection error, for /health and the state log line. */
  private lastError = "not connected yet";
  /** The state last logged (undefined: nothing logged yet), so each change is logged once. */
  private reportedUp: boolean | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly opts: RedisBusOptions,
  ) {
    this.key = `${opts.prefix}:events`;
    this.telemetryChannel = `${opts.prefix}:telemetry`;
    const common = {
      lazyConnect: true,
      maxRetriesPerRequest: null,
      retryStrategy: (times: number) => Math.min(2_000, 50 * 2 ** Math.min(times, 6)),
    };
    this.pub = new Redis(opts.url, { ...common, connectionName: "fc-publish" });
    this.sub = new Redis(opts.url, { ...common, connectionName: "fc-stream-reader" });
    this.readerStopped = new Promise((resolve) => (this.wakeReader = () => resolve(undefined)));
    for (const [name, conn] of [["publisher", this.pub], ["reader", this.sub]] as const) {
      conn.on("error", (err: Error) => {
        this.lastError = err.message || err.name;
        opts.log.debug({ err: err.message, conn: name }, "redis error");
      });
      conn.on("ready", () => this.report());
      conn.on("reconnecting", () => {
        opts.log.debug({ conn: name }, "redis reconnecting");
        this.report();
      });
    }
  }

  /** Logs the bus's state once per change (both connections ready, or not), never once per retry. */
  private report(): void {
    if (this.closed) return;
    const up = this.pub.status === "ready" && this.sub.status === "ready";
    if (up === this.reportedUp) return;
    // Before the first connect, "not up yet" is not news until an attempt has failed.
    if (!up && this.reportedUp === undefined && this.pub.status !== "reconnecting" && this.sub.status !== "reconnecting") return;
    this.reportedUp = up;
    if (up) this.opts.log.info({ queued: this.pending }, "Redis available");
    else this.opts.log.warn({ reason: this.lastError, queued: this.pending }, "Redis unreachable; events are queued and retried in the background");
  }

  /** Connects (retrying in the background) and starts the stream reader. */
  start(): void {
    void this.pub.connect().catch(() => undefined);
    void this.sub.connect().catch(() => undefined);
    this.reading ??= this.readLoop();
  }

  async publish(input: EventInput): Promise<void> {
    if (this.pending >= this.opts.maxPending) {
      this.dropped++;
      this.opts.log.error({ type: input.type, dropped: this.dropped }, "event queue full while Redis is down; event dropped");
      return;
    }
    const event = buildEvent(0n, this.clock.now(), input).message;
    this.pending++;
    this.pub
      .xadd(this.key, "MAXLEN", "~", String(this.opts.retention), "*", "e", Buffer.from(toBinary(EventSchema, event)))
      // After close the queue is flushed with errors: those events are counted (unpublishedEvents), not logged one by one.
      .catch((err: unknown) => this.closed || this.opts.log.error({ err: String(err), type: input.type }, "event publish failed"))
      .finally(() => this.pending--);
  }

  publishTelemetry(json: string): void {
    if (this.pub.status !== "ready") return;
    this.pub.publish(this.telemetryChannel, json).catch(() => undefined);
  }

  subscribe(
    filter: EventFilter,
    afterId: bigint | undefined,
    deliver: (event: PublishedEvent) => void,
    gap?: (gap: HistoryGap) => void,
  ): Subscription {
    const s: Subscriber = { filter, deliver, buffer: afterId !== undefined ? [] : undefined, lastId: afterId ?? 0n, gap };
    this.subscribers.add(s);
    if (afterId !== undefined) void this.replay(s, afterId);
    return { close: () => void this.subscribers.delete(s) };
  }

  health(): ComponentStatus {
    const ok = this.pub.status === "ready" && this.sub.status === "ready";
    return ok
      ? { ok: true, message: "connected" }
      : { ok: false, message: `Redis unreachable: ${this.lastError} (${this.pending} event(s) queued)` };
  }

  /**
   * Events accepted but not (yet) in Redis; after close, those that never
   * got there. Plus those dropped because the queue was full.
   */
  unpublishedEvents(): { queued: number; dropped: number } {
    return { queued: this.closed ? this.unpublishedAtClose : this.pending, dropped: this.dropped };
  }

  /**
   * Shutdown started: the stream reader stops (its blocking read and its
   * reconnect loop end now). The publisher stays, so events of requests
   * still draining are queued in order, until close.
   */
  beginShutdown(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.subscribers.clear();
    this.wakeReader();
    this.sub.disconnect();
  }

  /**
   * Waits until `until` (epoch ms) at most for queued events to reach Redis
   * — which may come back meanwhile — then disconnects. Never waits longer:
   * whatever is still queued then is lost with the process and counted in
   * unpublishedEvents().
   */
  async close(until: number = Date.now() + 1_000): Promise<void> {
    this.beginShutdown();
    await Promise.race([this.reading, new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())).unref())]);
    while (this.pending > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, Math.min(20, Math.max(1, until - Date.now()))));
    }
    this.unpublishedAtClose = this.pending;
    this.closed = true;
    this.pub.disconnect();
  }

  /**
   * Replays what the stream still holds after `afterId`, then switches the
   * subscriber to live. Each page is read in one MULTI with XINFO STREAM, so
   * the page and the stream's state are one snapshot: a gap (historyGap) is
   * reported to the subscriber, which then leaves, instead of replaying
   * part of what it asked for.
   */
  private async replay(s: Subscriber, afterId: bigint): Promise<void> {
    let gap: HistoryGap | undefined;
    try {
      for (let from = afterId, first = true; ; first = false) {
        const [info, entries] = await this.replayPage(from);
        // After id 0 ("from the oldest held") the first page is never a gap;
        // later pages are checked for trimming under the read.
        if (!first || afterId > 0n) gap = historyGap(info, afterId, from, first);
        if (gap) break;
        for (const entry of entries) this.deliverTo(s, decode(entry));
        if (entries.length < REPLAY_PAGE) break;
        from = eventId(entries[entries.length - 1]![0].toString());
      }
    } catch (err) {
      gap = { reason: "unreadable", afterId, detail: `the event history could not be read (${String(err)})` };
    }
    if (!this.subscribers.has(s)) return; // closed meanwhile
    if (gap && s.gap) {
      this.subscribers.delete(s);
      s.buffer = undefined;
      s.gap(gap);
      return;
    }
    if (gap) this.opts.log.warn({ afterId: String(afterId), reason: gap.reason, detail: gap.detail }, "event replay incomplete; continuing live");
    const buffered = s.buffer ?? [];
    s.buffer = undefined;
    for (const event of buffered) this.deliverTo(s, event);
  }

  /** XINFO STREAM (undefined: no stream) and the next page after `after`, atomically. */
  private async replayPage(after: bigint): Promise<[StreamInfo | undefined, StreamEntry[]]> {
    const res = await this.pub
      .multi()
      .call("XINFO", "STREAM", this.key)
      .callBuffer("XRANGE", this.key, `(${streamId(after)}`, "+", "COUNT", REPLAY_PAGE)
      .exec();
    if (!res) throw new Error("replay transaction aborted");
    const [[infoErr, info], [rangeErr, entries]] = res as [[Error | null, unknown], [Error | null, unknown]];
    if (rangeErr) throw rangeErr;
    if (infoErr) {
      if (/no such key/i.test(infoErr.message)) return [undefined, []];
      throw infoErr;
    }
    return [streamInfo(info as unknown[]), entries as StreamEntry[]];
  }

  private deliverTo(s: Subscriber, event: PublishedEvent): void {
    if (event.id <= s.lastId || !event.matches(s.filter) || !this.subscribers.has(s)) return;
    s.lastId = event.id;
    s.deliver(event);
  }

  /**
   * A command of the reader, or undefined once shutdown starts: ioredis never
   * settles a command queued on a connection disconnected while it was
   * reconnecting, so the loop must not wait on it alone.
   */
  private readerCall<T>(command: string, args: (string | number)[]): Promise<T | undefined> {
    return Promise.race([this.sub.callBuffer(command, args) as Promise<T>, this.readerStopped]);
  }

  private async readLoop(): Promise<void> {
    while (!this.stopping) {
      try {
        if (this.lastStreamId === "$") {
          // Start after the newest entry that exists now.
          const last = await this.readerCall<StreamEntry[]>("XREVRANGE", [this.key, "+", "-", "COUNT", 1]);
          if (!last) return;
          this.lastStreamId = last.length > 0 ? last[0]![0].toString() : "0-0";
        }
        const res = await this.readerCall<unknown[] | null>("XREAD", [
          "COUNT",
          1000,
          "BLOCK",
          2000,
          "STREAMS",
          this.key,
          this.lastStreamId,
        ]);
        if (this.stopping) return;
        if (!res) continue;
        for (const entry of streamEntries(res)) {
          this.lastStreamId = entry[0].toString();
          const event = decode(entry);
          for (const s of this.subscribers) {
            if (s.buffer) s.buffer.push(event);
            else this.deliverTo(s, event);
          }
        }
      } catch (err) {
        if (this.stopping) return;
        this.opts.log.debug({ err: String(err) }, "stream read failed; retrying");
        await Promise.race([new Promise((r) => setTimeout(r, 250).unref()), this.readerStopped]);
      }
    }
  }
}

type StreamEntry = [Buffer, Buffer[]];

const REPLAY_PAGE = 1000;

/** What XINFO STREAM tells about the history, as event ids. */
interface StreamInfo {
  readonly lastGenerated: bigint;
  /** Entries ever added to this stream (Redis ≥ 7.0); with `length`, whether any were trimmed. */
  readonly entriesAdded: number | undefined;
  readonly length: number;
  /** The oldest entry held; undefined when the stream is empty. */
  readonly firstEntry: bigint | undefined;
}

function streamInfo(reply: unknown[]): StreamInfo {
  const field = new Map<string, unknown>();
  for (let i = 0; i + 1 < reply.length; i += 2) field.set(String(reply[i]), reply[i + 1]);
  const id = (v: unknown) => (typeof v === "string" && v.includes("-") ? eventId(v) : undefined);
  const first = field.get("first-entry");
  const added = field.get("entries-added");
  return {
    lastGenerated: id(field.get("last-generated-id")) ?? 0n,
    entriesAdded: added === undefined ? undefined : Number(added),
    length: Number(field.get("length") ?? 0),
    firstEntry: Array.isArray(first) ? id(String(first[0])) : undefined,
  };
}

/**
 * Whether the events after `from` (the position a replay has reached;
 * `afterId` on the first page) are all still in the stream. Trimming
 * removes the oldest entries, so they are while the oldest entry held is
 * at most `from` (or, the stream being empty, nothing was added after
 * `from`). Stream ids are time-based, not consecutive: when exactly `from`
 * was the last entry trimmed, nothing may be missing, but Redis cannot tell
 * that from a loss and it counts as a gap. The oldest entry being newer
 * than after_id in a stream that never lost an entry (entries-added =
 * length, Redis ≥ 7.0) means the stream began again after it (Redis
 * restarted empty): "reset"; no stream at all, the same.
 */
function historyGap(info: StreamInfo | undefined, afterId: bigint, from: bigint, first: boolean): HistoryGap | undefined {
  if (!info) return { reason: "reset", afterId, detail: "the event history it belongs to is gone (Redis lost the stream: restarted empty?)" };
  if (first && afterId > info.lastGenerated) {
    return { reason: "ahead", afterId, detail: `no event with this id was issued yet (the newest is ${info.lastGenerated})` };
  }
  const lost = info.firstEntry === undefined ? info.lastGenerated > from : info.firstEntry > from;
  if (!lost) return undefined;
  const oldest = info.firstEntry === undefined ? "none" : String(info.firstEntry);
  if (first && info.entriesAdded !== undefined && info.entriesAdded === info.length) {
    return { reason: "reset", afterId, detail: `the event history it belongs to is gone (the stream began again at ${oldest}: Redis restarted empty?)` };
  }
  return { reason: "trimmed", afterId, detail: `it is older than what is held (the oldest held event is ${oldest}; EVENT_RETENTION)` };
}

/**
 * XREAD answers [[key, entries]] per stream in RESP2; ioredis 6 flattens a
 * single stream's reply to [key, entries]. Accept both.
 */
function streamEntries(reply: unknown[]): StreamEntry[] {
  if (Buffer.isBuffer(reply[0])) return reply[1] as StreamEntry[];
  return (reply[0] as [Buffer, StreamEntry[]])[1];
}

function decode([id, fields]: StreamEntry): PublishedEvent {
  const message = fromBinary(EventSchema, fields[1]!);
  message.id = eventId(id.toString());
  return new PublishedEvent(message);
}

function eventId(streamId: string): bigint {
  const [ms, seq] = streamId.split("-");
  return BigInt(ms!) * SEQ_PER_MS + BigInt(seq!);
}

function streamId(eventId: bigint): string {
  return `${eventId / SEQ_PER_MS}-${eventId % SEQ_PER_MS}`;
}
