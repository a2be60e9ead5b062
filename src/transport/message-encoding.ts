import {
  ScalarType,
  create,
  isFieldSet,
  toBinary,
  toJson,
  type DescField,
  type DescMessage,
  type JsonWriteOptions,
  type Message,
} from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
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
 *
 * A kept encoding (see Kept) is a string of its bytes, not a Buffer, and
 * refers to long texts — a base's kept encoding, a passport — instead of
 * copying them: an agent's kept encodings are then a few heap strings, and
 * a heartbeat answer's passport is held once, by its token.
 */
export class MessageEncoder {
  private readonly cache = new Memo<Kept>("encoding");
  /** Immutable messages encoded once inside another's kept encoding, not kept themselves (see pushCached). */
  private readonly encodedOnce = new Memo<true>("encoded once");
  private readonly frames = new Memo<Buffer>("grpc frame");
  private readonly plans = new Map<string, readonly DescField[]>();
  private readonly texts = new Map<string, readonly DescField[]>();
  /** The fields a base leaves unset, by the base's type and set fields: bases of one kind share one list. */
  private readonly ownFieldLists = new Map<string, readonly DescField[]>();
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
    const parts = marked ? this.fieldParts(schema, message, false) : this.encodeParts(schema, message);
    const length = partsLength(parts);
    // A kept frame lives as long as its message: a buffer of its own (a slice
    // of node's 8 KiB pool would keep its whole chunk alive).
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
    if (isImmutable(message)) return pushKept([], this.cached(schema, message));
    return this.onBase(schema, message, false) ?? this.fieldParts(schema, message, false);
  }

  /**
   * @param keeping the encoding is to be kept: long texts (see
   * sharedTextsOf) are then parts of their own, referred to, not copied,
   * and the immutable messages in it are copied without keeping their own
   */
  private fieldParts(schema: DescMessage, message: Message, keeping: boolean): Part[] {
    const fields = immutableFieldsOf(schema, message, this.plans);
    const texts = keeping ? sharedTextsOf(schema, message, this.texts) : undefined;
    if (fields === undefined && texts === undefined) return [binary(schema, message)];
    const emptying = texts === undefined ? fields! : fields === undefined ? texts : [...fields, ...texts];
    const parts: Part[] = [];
    const m = message as unknown as Record<string, unknown>;
    const saved: unknown[] = new Array(emptying.length);
    // The other fields are encoded with the immutable ones (and the texts)
    // emptied for the moment of the (synchronous) call and put back right
    // after: nothing else can observe the message meanwhile, and it is
    // several times cheaper than encoding a copy of it.
    let emptied = 0;
    try {
      for (; emptied < emptying.length; emptied++) {
        const f = emptying[emptied]!;
        const value = (saved[emptied] = m[f.localName]);
        if (f.fieldKind === "scalar") {
          parts.push(f.number * 8 + 2, (value as string).length, value as string);
          m[f.localName] = "";
        } else {
          this.pushCached(parts, f, value, !keeping);
          m[f.localName] = f.fieldKind === "list" ? EMPTY_LIST : undefined;
        }
      }
      parts.push(binary(schema, message));
    } finally {
      for (let i = 0; i < emptied; i++) m[emptying[i]!.localName] = saved[i];
    }
    return parts;
  }

  /**
   * Appends the encodings of an immutable field's value (each item, tagged
   * and length-prefixed): kept ones, else encoded and kept when `keepItems`
   * or when the item was encoded once before, else encoded only (and noted).
   * Not kept the first time inside an encoding being kept: its bytes are
   * copied into that one, so an agent's own tools, written into its base's
   * kept encoding, were kept twice (~350 bytes per agent of three tools).
   * An item met a second time is shared (a capability list or tool list
   * of agents registered alike): kept then, every later base copies its
   * bytes — encoding a new base's five shared capabilities again was ~8 µs
   * of a registration at 10k agents.
   */
  private pushCached(parts: Part[], f: DescField, value: unknown, keepItems: boolean): void {
    const items = f.fieldKind === "list" ? (value as Message[]) : value === undefined ? [] : [value as Message];
    const schema = f.message!;
    for (const item of items) {
      const kept = this.cache.get(item) ?? (keepItems || this.encodedOnce.get(item) ? this.cached(schema, item) : undefined);
      if (kept !== undefined) {
        parts.push(f.number * 8 + 2, keptLength(kept));
        pushKept(parts, kept);
      } else {
        const own = this.onBase(schema, item, true) ?? this.fieldParts(schema, item, true);
        parts.push(f.number * 8 + 2, partsLength(own));
        for (const p of own) parts.push(p);
        this.encodedOnce.set(item, true);
      }
    }
  }

  private cached(schema: DescMessage, message: Message): Kept {
    return this.cache.get(message) ?? this.cache.set(message, keep(this.onBase(schema, message, true) ?? this.fieldParts(schema, message, true)));
  }

  /**
   * The base's encoding (cached: a base is immutable), then the fields the
   * base leaves unset: those of immutable types from their cached
   * encodings, the others as a message holding only them (none: nothing
   * more to encode, as for a heartbeat answer on its base).
   */
  private onBase(schema: DescMessage, message: Message, keeping: boolean): Part[] | undefined {
    const base = this.baseOf(message);
    if (!base || base.$typeName !== schema.typeName || schema.oneofs.length > 0) return undefined;
    const own = this.ownFields.get(base) ?? this.ownFields.set(base, this.unsetFields(schema, base));
    const m = message as unknown as Record<string, unknown>;
    const parts = pushKept([], this.cached(schema, base));
    // The other fields in a message of their own: only them when
    // encodeSimple writes the type (absent fields are skipped), else a whole
    // message for toBinary.
    let rest: Record<string, unknown> | undefined;
    for (const f of own) {
      const value = m[f.localName];
      if (value === undefined) continue;
      if (holdsImmutable(f, value)) this.pushCached(parts, f, value, !keeping);
      else (rest ??= encodesSimply(schema) ? { $typeName: schema.typeName } : (create(schema) as Record<string, unknown>))[f.localName] = value;
    }
    if (rest) parts.push(encodeSimple(schema, rest as unknown as Message) ?? toBinary(schema, Object.assign(create(schema), rest)));
    return parts;
  }

  /** The fields `base` leaves unset: one list per type and set of fields (an array per agent's base was ~80 bytes of it). */
  private unsetFields(schema: DescMessage, base: Message): readonly DescField[] {
    let key = schema.typeName;
    for (const f of schema.fields) key += isFieldSet(base, f) ? "1" : "0";
    let list = this.ownFieldLists.get(key);
    if (!list) this.ownFieldLists.set(key, (list = schema.fields.filter((f) => !isFieldSet(base, f))));
    return list;
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

/**
 * Texts at least this long are referred to by a kept encoding, not copied
 * into it (a passport, ~600 bytes, is then held once by its heartbeat
 * answer's base; an agent revision's kept encoding refers to its base's).
 * Shorter ones are copied: a part of its own costs a write per answer.
 */
export const SHARED_TEXT = 256;

/**
 * The string fields of this message whose values are long ASCII texts
 * (proto3 implicit presence, not in a oneof: emptied to "" they are not
 * written); undefined when none. ASCII: their UTF-8 bytes are their chars,
 * so the text itself is a part (written as latin1).
 */
function sharedTextsOf(schema: DescMessage, message: Message, plans: Map<string, readonly DescField[]>): DescField[] | undefined {
  let candidates = plans.get(schema.typeName);
  if (!candidates) {
    candidates = schema.fields.filter((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING && !f.oneof && f.presence === IMPLICIT);
    plans.set(schema.typeName, candidates);
  }
  let out: DescField[] | undefined;
  const m = message as unknown as Record<string, unknown>;
  for (const f of candidates) {
    const v = m[f.localName] as string;
    if (v.length >= SHARED_TEXT && Buffer.byteLength(v) === v.length) (out ??= []).push(f);
  }
  return out;
}

const IMPLICIT = FeatureSet_FieldPresence.IMPLICIT;

/** What an emptied list field holds meanwhile (frozen: nothing can add to it). */
const EMPTY_LIST: readonly never[] = Object.freeze([]);

/** toBinary's bytes: written directly for the plain messages simple-encoding.ts handles. */
function binary(schema: DescMessage, message: Message): Uint8Array {
  return encodeSimple(schema, message) ?? toBinary(schema, message);
}

/**
 * A piece of an encoding: bytes; a number to write as a varint (a
 * length-delimited field's tag and length are two numbers, not a buffer of
 * their own: a Buffer per header was a tenth of an answer's allocations);
 * or a string of bytes, one per char (latin1: every char below 256), as
 * kept encodings hold them.
 */
export type Part = Uint8Array | number | string;

/**
 * An encoding kept as long as its message: its bytes as one string
 * (latin1), or, when it refers to long texts instead of copying them, its
 * parts — strings and varint numbers. A string is one heap object; a Buffer
 * was three (the Buffer, its ArrayBuffer, the backing store outside the
 * heap), ~200 bytes besides the bytes, five or six of them per agent. And
 * unlike a slice of node's 8 KiB Buffer pool, a string keeps nothing else
 * alive.
 */
export type Kept = string | readonly (string | number)[];

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
    else if (typeof p === "string") at += out.write(p, at, "latin1");
    else {
      out.set(p, at);
      at += p.length;
    }
  }
  return at;
}

function keptLength(kept: Kept): number {
  return typeof kept === "string" ? kept.length : partsLength(kept);
}

function pushKept(parts: Part[], kept: Kept): Part[] {
  if (typeof kept === "string") parts.push(kept);
  else for (const p of kept) parts.push(p);
  return parts;
}

/**
 * The parts as kept: each run of parts joined into one string, but for
 * strings of SHARED_TEXT chars or more (a text, another message's kept
 * encoding), which stay parts of their own and are referred to, and runs of
 * numbers only (a tag and a length), which stay numbers.
 */
function keep(parts: readonly Part[]): Kept {
  const out: (string | number)[] = [];
  let from = 0;
  const flush = (to: number) => {
    let bytes = false;
    for (let i = from; i < to && !bytes; i++) bytes = typeof parts[i] !== "number";
    if (!bytes) for (let i = from; i < to; i++) out.push(parts[i] as number);
    else if (to - from === 1) out.push(bytesString(parts[from] as Uint8Array | string));
    else {
      const run = parts.slice(from, to);
      const buf = Buffer.allocUnsafe(partsLength(run));
      out.push(buf.toString("latin1", 0, writeParts(buf, 0, run)));
    }
    from = to;
  };
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (typeof p === "string" && p.length >= SHARED_TEXT) {
      flush(i);
      out.push(p);
      from = i + 1;
    }
  }
  flush(parts.length);
  return out.length === 1 && typeof out[0] === "string" ? out[0] : out;
}

function bytesString(p: Uint8Array | string): string {
  return typeof p === "string" ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString("latin1");
}

/** The parts as one array (the part itself when it is the only one and holds bytes). */
export function joinParts(parts: readonly Part[]): Uint8Array {
  if (parts.length === 1 && typeof parts[0] === "object") return parts[0];
  const out = Buffer.allocUnsafe(partsLength(parts));
  writeParts(out, 0, parts);
  return out;
}


