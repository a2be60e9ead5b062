import {
  create,
  isFieldSet,
  toBinary,
  toJson,
  type DescField,
  type DescMessage,
  type JsonWriteOptions,
  type Message,
} from "@bufbuild/protobuf";
import { isImmutable } from "../message-hints.js";
import { encodeSimple, encodesSimply, varint, varintSize } from "./simple-encoding.js";

/**
 * Binary encoding that reuses the encoding of immutable sub-messages.
 *
 * A Discover answer lists agents whose messages are built once per record
 * revision and never mutated (registry/agent-message.ts), yet encoding them
 * again on every call was a quarter of the CPU of a Discover. Protobuf lets
 * a message be the concatenation of its fields' encodings, so message
 * fields whose values their builder marked immutable (message-hints.ts)
 * are written from a cache on the value itself (tag, length, cached bytes)
 * and the remaining fields are encoded as usual after them; an immutable
 * message is itself encoded that way once, so a new Agent revision that
 * keeps its tools reuses their bytes. Nothing is cached for a message
 * nobody marked. The result decodes to the same message as toBinary's
 * (only the order of fields on the wire may differ, which every parser
 * accepts).
 *
 * A message may also name a base (`baseOf`, message-hints.ts): an
 * immutable message of the same type (without oneofs) whose set fields it
 * shares, value for value. Its encoding is then the base's cached encoding
 * followed by that of the fields the base leaves unset: a heartbeat answer
 * encodes its agent's five changed fields, not the whole agent, and not
 * its passport either.
 *
 * "Encoded as usual" is simple-encoding.ts for the plain messages it
 * handles (toBinary's bytes, one Buffer written once, a pooled tool
 * schema's Struct bytes kept), toBinary for the rest.
 */
export class MessageEncoder {
  private readonly cache = new Memo<Uint8Array>("encoding");
  private readonly frames = new Memo<Buffer>("grpc frame");
  private readonly plans = new Map<string, readonly DescField[]>();
  private readonly ownFields = new Memo<readonly DescField[]>("fields a base leaves unset");

  /** @param baseOf the base a message shares its set fields with, if any */
  constructor(private readonly baseOf: (message: Message) => Message | undefined = () => undefined) {}

  /**
   * The gRPC frame (5-byte envelope + encoding) of a response. A message
   * marked immutable (`markImmutable`: a cached answer) keeps its frame, so
   * the same bytes are written for every call that answers with it.
   */
  frame(schema: DescMessage, message: Message): Buffer {
    const marked = isImmutable(message);
    if (marked) {
      const known = this.frames.get(message);
      if (known) return known;
    }
    const parts = marked ? this.fieldParts(schema, message) : this.encodeParts(schema, message);
    const length = partsLength(parts);
    // A kept frame lives as long as its message: a buffer of its own (lasting).
    const frame = marked ? Buffer.allocUnsafeSlow(5 + length) : Buffer.allocUnsafe(5 + length);
    frame[0] = 0;
    frame.writeUInt32BE(length, 1);
    writeParts(frame, 5, parts);
    return marked ? this.frames.set(message, frame) : frame;
  }

  encode(schema: DescMessage, message: Message): Uint8Array {
    return joinParts(this.encodeParts(schema, message));
  }

  /** The encoding in pieces, to be written one after the other (joinParts). */
  encodeParts(schema: DescMessage, message: Message): Part[] {
    if (isImmutable(message)) return [this.cached(schema, message)];
    return this.onBase(schema, message) ?? this.fieldParts(schema, message);
  }

  private fieldParts(schema: DescMessage, message: Message): Part[] {
    const fields = immutableFieldsOf(schema, message, this.plans);
    if (fields === undefined) return [binary(schema, message)];
    const parts: Part[] = [];
    const m = message as unknown as Record<string, unknown>;
    const saved: unknown[] = new Array(fields.length);
    // The other fields are encoded with the immutable ones emptied for the
    // moment of the (synchronous) call and put back right after: nothing
    // else can observe the message meanwhile, and it is several times
    // cheaper than encoding a copy of it.
    let emptied = 0;
    try {
      for (; emptied < fields.length; emptied++) {
        const f = fields[emptied]!;
        const value = (saved[emptied] = m[f.localName]);
        this.pushCached(parts, f, value);
        m[f.localName] = f.fieldKind === "list" ? EMPTY_LIST : undefined;
      }
      parts.push(binary(schema, message));
    } finally {
      for (let i = 0; i < emptied; i++) m[fields[i]!.localName] = saved[i];
    }
    return parts;
  }

  /** Appends the cached encodings of an immutable field's value (each item, tagged and length-prefixed). */
  private pushCached(parts: Part[], f: DescField, value: unknown): void {
    const items = f.fieldKind === "list" ? (value as Message[]) : value === undefined ? [] : [value as Message];
    for (const item of items) {
      const bytes = this.cached(f.message!, item);
      parts.push(f.number * 8 + 2, bytes.length, bytes);
    }
  }

  private cached(schema: DescMessage, message: Message): Uint8Array {
    let bytes = this.cache.get(message);
    if (!bytes) {
      bytes = this.cache.set(message, lasting(this.onBase(schema, message) ?? this.fieldParts(schema, message)));
    }
    return bytes;
  }

  /**
   * The base's encoding (cached: a base is immutable), then the fields the
   * base leaves unset: those of immutable types from their cached
   * encodings, the others as a message holding only them (none: nothing
   * more to encode, as for a heartbeat answer on its base).
   */
  private onBase(schema: DescMessage, message: Message): Part[] | undefined {
    const base = this.baseOf(message);
    if (!base || base.$typeName !== schema.typeName || schema.oneofs.length > 0) return undefined;
    const own = this.ownFields.get(base) ?? this.ownFields.set(base, schema.fields.filter((f) => !isFieldSet(base, f)));
    const m = message as unknown as Record<string, unknown>;
    const parts: Part[] = [this.cached(schema, base)];
    // The other fields in a message of their own: only them when
    // encodeSimple writes the type (absent fields are skipped), else a whole
    // message for toBinary.
    let rest: Record<string, unknown> | undefined;
    for (const f of own) {
      const value = m[f.localName];
      if (value === undefined) continue;
      if (holdsImmutable(f, value)) this.pushCached(parts, f, value);
      else (rest ??= encodesSimply(schema) ? { $typeName: schema.typeName } : (create(schema) as Record<string, unknown>))[f.localName] = value;
    }
    if (rest) parts.push(encodeSimple(schema, rest as unknown as Message) ?? toBinary(schema, Object.assign(create(schema), rest)));
    return parts;
  }

}

/**
 * proto3 JSON text that reuses the text of immutable sub-messages, as
 * MessageEncoder does for binary: the REST answer of a Discover spent most
 * of its time in toJson and JSON.stringify of the same agents. Object keys
 * of the immutable fields come after the others (JSON key order carries no
 * meaning).
 */
export class JsonEncoder {
  private readonly cache = new Memo<string>("json");
  private readonly plans = new Map<string, readonly DescField[]>();

  constructor(private readonly options: Partial<JsonWriteOptions>) {}

  stringify(schema: DescMessage, message: Message): string {
    if (isImmutable(message)) return this.cached(schema, message);
    return this.text(schema, message);
  }

  private text(schema: DescMessage, message: Message): string {
    const fields = immutableFieldsOf(schema, message, this.plans);
    if (fields === undefined) return JSON.stringify(toJson(schema, message, this.options));
    const rest: Record<string, unknown> = { ...message };
    for (const f of fields) rest[f.localName] = f.fieldKind === "list" ? [] : undefined;
    const base = toJson(schema, rest as unknown as Message, this.options) as Record<string, unknown>;
    const members: string[] = [];
    for (const f of fields) {
      delete base[f.jsonName];
      const value = (message as unknown as Record<string, unknown>)[f.localName];
      if (f.fieldKind === "list") {
        const items = (value as Message[]).map((item) => this.cached(f.message!, item));
        if (items.length > 0 || this.options.alwaysEmitImplicit) members.push(`${JSON.stringify(f.jsonName)}:[${items.join(",")}]`);
      } else if (value !== undefined) {
        members.push(`${JSON.stringify(f.jsonName)}:${this.cached(f.message!, value as Message)}`);
      }
    }
    const head = JSON.stringify(base);
    if (members.length === 0) return head;
    return head === "{}" ? `{${members.join(",")}}` : `${head.slice(0, -1)},${members.join(",")}}`;
  }

  private cached(schema: DescMessage, message: Message): string {
    return this.cache.get(message) ?? this.cache.set(message, this.text(schema, message));
  }
}

/**
 * A value remembered on an object itself, in a non-enumerable symbol slot
 * (invisible to toBinary, toJson, spreads and JSON.stringify). A WeakMap did
 * this before: every Register and Heartbeat answer's one-off Agent message
 * went into it, its table grew to 16 MiB under load and its entries made
 * each GC do ephemeron work. A slot goes away with its object.
 */
export class Memo<T> {
  private readonly slot: symbol;

  constructor(name: string) {
    this.slot = Symbol(name);
  }

  get(o: object): T | undefined {
    return (o as Record<symbol, T | undefined>)[this.slot];
  }

  set(o: object, value: T): T {
    if (Object.isExtensible(o)) Object.defineProperty(o, this.slot, { value });
    return value;
  }
}

/**
 * The message fields of this message whose values are all marked
 * immutable (a list: every item, and at least one); undefined when none.
 */
function immutableFieldsOf(schema: DescMessage, message: Message, plans: Map<string, readonly DescField[]>): DescField[] | undefined {
  let candidates = plans.get(schema.typeName);
  if (!candidates) {
    candidates = schema.fields.filter((f) => (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) && !f.oneof);
    plans.set(schema.typeName, candidates);
  }
  let out: DescField[] | undefined;
  const m = message as unknown as Record<string, unknown>;
  for (const f of candidates) if (holdsImmutable(f, m[f.localName])) (out ??= []).push(f);
  return out;
}

function holdsImmutable(f: DescField, value: unknown): boolean {
  if (f.fieldKind === "list") {
    const items = value as readonly unknown[];
    if (f.listKind !== "message" || items.length === 0) return false;
    for (const item of items) if (!isImmutable(item)) return false;
    return true;
  }
  return f.fieldKind === "message" && !f.oneof && value !== undefined && isImmutable(value);
}

/** What an emptied list field holds meanwhile (frozen: nothing can add to it). */
const EMPTY_LIST: readonly never[] = Object.freeze([]);

/** toBinary's bytes: written directly for the plain messages simple-encoding.ts handles. */
function binary(schema: DescMessage, message: Message): Uint8Array {
  return encodeSimple(schema, message) ?? toBinary(schema, message);
}

/**
 * A piece of an encoding: bytes, or a number to write as a varint (a
 * length-delimited field's tag and length are two numbers, not a buffer of
 * their own: a Buffer per header was a tenth of an answer's allocations).
 */
export type Part = Uint8Array | number;

/** Bytes the parts take. */
export function partsLength(parts: readonly Part[]): number {
  let n = 0;
  for (const p of parts) n += typeof p === "number" ? varintSize(p) : p.length;
  return n;
}

/** Writes the parts at `at`; returns where they end. */
export function writeParts(out: Buffer, at: number, parts: readonly Part[]): number {
  for (const p of parts) {
    if (typeof p === "number") at = varint(out, at, p);
    else {
      out.set(p, at);
      at += p.length;
    }
  }
  return at;
}

/**
 * The parts as one array of its own, for bytes kept as long as their
 * message. Buffer.allocUnsafe hands out slices of node's shared 8 KiB pool
 * chunks, and one live slice keeps its whole chunk: the encodings kept per
 * agent (its base, its current revision), each in a chunk otherwise filled
 * with one call's short-lived bytes, held ~6 KiB of pool chunks per agent
 * at 10k agents. A buffer of exact size costs ~0.4 µs more to allocate.
 */
export function lasting(parts: readonly Part[]): Uint8Array {
  const only = parts.length === 1 ? parts[0] : undefined;
  if (only !== undefined && typeof only !== "number" && only.byteLength === only.buffer.byteLength) return only;
  const out = Buffer.allocUnsafeSlow(partsLength(parts));
  writeParts(out, 0, parts);
  return out;
}

/** The parts as one array (the part itself when it is the only one). */
export function joinParts(parts: readonly Part[]): Uint8Array {
  if (parts.length === 1 && typeof parts[0] !== "number") return parts[0]!;
  const out = Buffer.allocUnsafe(partsLength(parts));
  writeParts(out, 0, parts);
  return out;
}


