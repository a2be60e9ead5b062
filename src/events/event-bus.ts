import { create, isMessage, toBinary, toJsonString, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, type Event } from "../../gen/federation/v1/event_pb.js";

export const EVENT_TYPES = [
  "agent.registered",
  "agent.updated",
  "agent.status_changed",
  "agent.unregistered",
  "agent.expired",
  "task.routed",
  "task.dispatched",
  "task.completed",
  "task.failed",
  "health.alert",
  "agent.circuit_opened",
  "agent.circuit_half_open",
  "agent.circuit_closed",
  "agent.probe_failed",
  "agent.probe_recovered",
  "health.remediation_dispatched",
  "health.remediation_escalated",
  "federation.peer_added",
  "federation.peer_removed",
  "federation.peer_degraded",
  "federation.peer_isolated",
  "federation.peer_recovered",
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

/** What a publisher provides; the bus assigns `id` and `time`. */
export type EventInput = Omit<MessageInitShape<typeof EventSchema>, "id" | "time" | "$typeName"> & {
  type: EventType;
  tenant: string;
  /** Instead of `payload`: the payload made when the event is read (see LazyPayload). */
  lazyPayload?: LazyPayload;
};

/**
 * An event's payload, made on demand. A bus that keeps history (the memory
 * bus's ring) holds this — and the immutable values it makes the payload
 * from — instead of the message: the registry's agent events held each a
 * whole Agent message (~1 KB) for EVENT_RETENTION events, most of them
 * never read again. make() must return an equal payload every time it is
 * called (a resuming subscriber's replay makes it again).
 */
export interface LazyPayload {
  /** The payload's agent is shared: tenants other than the event's see it (EventFilter). */
  readonly shared: boolean;
  /** The status of the payload's agent (an agent change), read without making the payload. */
  readonly agentStatus?: number;
  make(): Event["payload"];
}

/**
 * Subscribers see their tenant's events (and agent events about shared
 * agents) of these types (all when empty) about this agent (any when "").
 */
export interface EventFilter {
  readonly tenant: string;
  /** Every tenant's events (in-process consumers such as the tool catalog's feed; never a client's filter). */
  readonly allTenants?: boolean;
  readonly types: ReadonlySet<string>;
  readonly agentId: string;
}

/**
 * An event as it leaves the bus. Each wire format is encoded once, on first
 * use, and the same bytes are written to every subscriber.
 *
 * Made from a lazy payload's input (buildEvent), the message itself is
 * made on first use too: an in-process subscriber that reads only what the
 * input says (type, tenant, agent id, agent status — the router's uptime
 * history, which sees every registration) costs no Event, and no Agent
 * message where nothing else built one (a reaper's expiry; a Register's
 * answer builds it anyway).
 */
export class PublishedEvent {
  private jsonText: string | undefined;
  private binary: Uint8Array | undefined;
  private frame: Buffer | undefined;
  private textFrame: Buffer | undefined;
  private built: Event | undefined;
  private readonly input: EventInput | undefined;
  private readonly time: number;

  constructor(message: Event);
  constructor(message: undefined, id: bigint, time: number, input: EventInput);
  constructor(message: Event | undefined, readonly id: bigint = message!.id, time = 0, input?: EventInput) {
    this.built = message;
    this.time = time;
    this.input = input;
  }

  get message(): Event {
    return (this.built ??= eventMessage(this.id, this.time, this.input!));
  }

  get type(): string {
    return this.input ? this.input.type : this.message.type;
  }

  get tenant(): string {
    return this.input ? this.input.tenant : this.message.tenant;
  }

  get agentId(): string {
    return this.input ? (this.input.agentId ?? "") : this.message.agentId;
  }

  /** The status of the agent an agent change is about (undefined for other events). */
  get agentStatus(): number | undefined {
    if (this.input?.lazyPayload) return this.input.lazyPayload.agentStatus;
    const p = this.message.payload;
    return p.case === "agentChange" ? p.value.agent?.status : undefined;
  }

  /** The event is about a shared agent (seen by every tenant's subscribers, EventFilter). */
  get aboutShared(): boolean {
    if (this.input?.lazyPayload) return this.input.lazyPayload.shared;
    const p = this.message.payload;
    return p.case === "agentChange" && p.value.agent?.shared === true;
  }

  /** proto3 JSON of the Event. */
  json(): string {
    return (this.jsonText ??= toJsonString(EventSchema, this.message));
  }

  bytes(): Uint8Array {
    return (this.binary ??= toBinary(EventSchema, this.message));
  }

  /**
   * The gRPC frame of `WatchEventsResponse{event: this}`: the 5-byte
   * envelope, then field 1 (tag 0x0a) as a length-delimited copy of
   * bytes() — the wrapper is written by hand so the event is encoded once.
   */
  grpcFrame(): Buffer {
    if (this.frame) return this.frame;
    const event = this.bytes();
    const len: number[] = [];
    for (let n = event.length; ; n >>>= 7) {
      if (n < 0x80) {
        len.push(n);
        break;
      }
      len.push((n & 0x7f) | 0x80);
    }
    const body = 1 + len.length + event.length;
    const frame = Buffer.allocUnsafe(5 + body);
    frame[0] = 0;
    frame.writeUInt32BE(body, 1);
    frame[5] = 0x0a;
    Buffer.from(len).copy(frame, 6);
    frame.set(event, 6 + len.length);
    return (this.frame = frame);
  }

  /**
   * The WebSocket text frame (RFC 6455 §5.2) carrying json(). Frames a
   * server sends are unmasked, so one frame serves every subscriber.
   */
  wsFrame(): Buffer {
    if (this.textFrame) return this.textFrame;
    const payload = Buffer.from(this.json());
    const n = payload.length;
    const head = n < 126 ? 2 : n < 65_536 ? 4 : 10;
    const frame = Buffer.allocUnsafe(head + n);
    frame[0] = 0x81; // FIN, opcode 1 (text)
    if (n < 126) frame[1] = n;
    else if (n < 65_536) {
      frame[1] = 126;
      frame.writeUInt16BE(n, 2);
    } else {
      frame[1] = 127;
      frame.writeBigUInt64BE(BigInt(n), 2);
    }
    payload.copy(frame, head);
    return (this.textFrame = frame);
  }

  matches(filter: EventFilter): boolean {
    return eventMatches(filter, this.tenant, this.type, this.agentId, this.aboutShared);
  }
}

/** Whether a subscriber with `filter` sees an event of this tenant, type and agent (`shared`: about a shared agent). */
export function eventMatches(filter: EventFilter, tenant: string, type: string, agentId: string, shared: boolean): boolean {
  return (
    (tenant === filter.tenant || filter.allTenants === true || shared) &&
    (filter.types.size === 0 || filter.types.has(type)) &&
    (filter.agentId === "" || filter.agentId === agentId)
  );
}

export interface Subscription {
  close(): void;
}

/**
 * Why a resuming subscriber cannot have every event after its `afterId`:
 * - "trimmed": events after it were dropped from the retention window
 *   (EVENT_RETENTION) — the id is older than what is held;
 * - "reset": the history it belongs to is gone (a Redis that restarted
 *   empty, a stream that was deleted and recreated);
 * - "ahead": no event with that id was issued by this bus yet (the memory
 *   bus restarted and its ids began again at 1, or the id was never ours);
 * - "unreadable": the history could not be read (a failed replay read);
 *   nothing is known to be lost, the same `afterId` may work again.
 */
export interface HistoryGap {
  readonly reason: "trimmed" | "reset" | "ahead" | "unreadable";
  readonly afterId: bigint;
  /** Human-readable detail (the oldest/newest id held, the read's error). */
  readonly detail: string;
}

export interface ComponentStatus {
  readonly ok: boolean;
  readonly message: string;
}

/**
 * The event bus port: memory is the embedded default; Redis carries events
 * between replicas. Ids are monotonic so a client resumes after the last one
 * it saw, from what the bus still holds.
 */
export interface EventBus {
  /**
   * Accepts an event for delivery. Resolves once accepted, never waiting on
   * a backend that is down: a shared bus queues (bounded) and sends later.
   */
  publish(input: EventInput): Promise<void>;
  /** Fleet telemetry (a JSON summary) for other services; a no-op where nobody can listen. */
  publishTelemetry(json: string): void;
  /**
   * Replays held events with an id greater than `afterId` (0n: every held
   * event; undefined: none, live only), then delivers new ones as they are
   * published, in order. `deliver` must not block: it queues or drops, it
   * never waits.
   *
   * A resume is never silently partial: when the events after `afterId`
   * are not all held (see HistoryGap; `afterId` 0n — "from the oldest held"
   * — never is one), `gap` is called once, possibly synchronously within
   * subscribe(), and the subscription has ended: nothing more is delivered
   * (on a shared bus, replay pages read before the gap was seen may have
   * been delivered). Without `gap`, the subscription carries on live.
   */
  subscribe(
    filter: EventFilter,
    afterId: bigint | undefined,
    deliver: (event: PublishedEvent) => void,
    gap?: (gap: HistoryGap) => void,
  ): Subscription;
  health(): ComponentStatus;
  /** Connects a shared bus (retrying in the background); absent for the memory bus. */
  start?(): void;
  /** Shutdown started: stop reading and retrying what is not needed to drain; publishing still queues. */
  beginShutdown?(): void;
  /**
   * Delivers what is queued, until `until` (epoch ms) at most, then lets go
   * of the backend; never waits past it.
   */
  close(until?: number): Promise<void>;
  /** Events accepted but not delivered to a shared backend (after close: never delivered), and dropped ones. */
  unpublishedEvents?(): { readonly queued: number; readonly dropped: number };
}

/** The message schema of each case of the Event's payload. */
const PAYLOAD_SCHEMAS = new Map<string, DescMessage>(
  EventSchema.fields.flatMap((f) => (f.oneof?.localName === "payload" && f.message ? [[f.localName, f.message] as const] : [])),
);

/** The event of a published input (the bus assigned `id` and `nowMs`). */
export function buildEvent(id: bigint, nowMs: number, input: EventInput): PublishedEvent {
  // A lazy payload's message waits for its first reader (PublishedEvent.message).
  return input.lazyPayload ? new PublishedEvent(undefined, id, nowMs, input) : new PublishedEvent(eventMessage(id, nowMs, input));
}

/**
 * The Event, field by field: create() with the whole input as its init
 * walks it by reflection (~2.5 µs an event, against ~0.3 µs so — every
 * registration publishes one). A payload given as a message is held, not
 * copied.
 */
function eventMessage(id: bigint, nowMs: number, input: EventInput): Event {
  const m = create(EventSchema);
  m.id = id;
  m.type = input.type;
  m.time = timestampFromMs(nowMs);
  m.agentId = input.agentId ?? "";
  m.tenant = input.tenant;
  const payload = input.lazyPayload ? input.lazyPayload.make() : input.payload;
  if (payload?.case !== undefined) {
    const value = isMessage(payload.value) ? payload.value : create(PAYLOAD_SCHEMAS.get(payload.case)!, payload.value as never);
    m.payload = { case: payload.case, value } as Event["payload"];
  }
  return m;
}
