import { type DescField, type DescMessage, type JsonObject, type Message } from "@bufbuild/protobuf";
import { plainKind, type PlainKind } from "./plain-fields.js";
import { structBytes } from "./struct-encoding.js";

/**
 * toBinary for the plain proto3 messages our answers are made of, byte for
 * byte what toBinary writes (fields by number, the same presence rules):
 * the sizes first, then one Buffer written once. toBinary grows a 128-byte
 * Uint8Array (zeroed, off the V8 heap) as it writes, forks per nested
 * message and copies the result out at the end — two or more array buffers
 * per call, and a Register answer made six calls (three tools, the agent's
 * static and changing fields, the answer's own).
 *
 * What it handles: strings, bools, enums, 32-bit and 64-bit (bigint)
 * integers, doubles, bytes; messages of such fields (Timestamp, Duration,
 * our own), lists of strings and of messages, string-to-string maps, and
 * google.protobuf.Struct fields (struct-encoding.ts, cached for frozen
 * schemas). Anything else — oneofs, wrappers, Value, packed numbers, other
 * maps, unknown fields, a value of the wrong type — returns undefined for
 * the whole message, and the caller uses toBinary.
 */
export function encodeSimple(schema: DescMessage, message: Message): Uint8Array | undefined {
  const plan = planOf(schema);
  if (plan === null) return undefined;
  // One scratch list of sizes and of Struct encodings for every call (the
  // encoding is synchronous and never nested), read back by a cursor.
  top = 0;
  structs.length = 0;
  try {
    const length = messageSize(plan, message as unknown as Fields, sizes, structs);
    if (length < 0) return undefined;
    const out = Buffer.allocUnsafe(length);
    cursor.next = cursor.struct = 0;
    const end = writeMessage(out, 0, plan, message as unknown as Fields, sizes, structs, cursor);
    if (end !== length) throw new Error(`simple encoding of ${schema.typeName}: wrote ${end} of ${length} bytes`);
    return out;
  } finally {
    structs.length = 0;
  }
}

/** Whether encodeSimple writes messages of this type (it may still give up on a value in one). */
export function encodesSimply(schema: DescMessage): boolean {
  return planOf(schema) !== null;
}

/** Kept between calls (grown, never shrunk): `top` is how many are in use. */
const sizes: number[] = [];
let top = 0;
const structs: Uint8Array[] = [];
const cursor: Cursor = { next: 0, struct: 0 };

type Fields = Record<string, unknown>;

const enum Kind {
  String,
  Bool,
  /** int32, enum: negative values take ten bytes */
  Int32,
  Uint32,
  /** int64, uint64 as bigint */
  Int64,
  Double,
  Bytes,
  Message,
  Struct,
  StringList,
  MessageList,
  StringMap,
}

interface FieldPlan {
  readonly kind: Kind;
  readonly localName: string;
  /** The field's tag as a varint value (number and wire type). */
  readonly tag: number;
  /** Written when set (proto3 `optional`), not when non-zero. */
  readonly explicit: boolean;
  /** Kind.Message and Kind.MessageList: the message's plan. */
  plan?: Plan;
}

interface Plan {
  readonly typeName: string;
  readonly fields: FieldPlan[];
}

const plans = new WeakMap<DescMessage, Plan | null>();

function planOf(desc: DescMessage): Plan | null {
  const known = plans.get(desc);
  if (known !== undefined) return known;
  const plan: Plan = { typeName: desc.typeName, fields: [] };
  // Set before the fields: a recursive type refers to this plan.
  plans.set(desc, plan);
  const ok = desc.fields
    .concat()
    .sort((a, b) => a.number - b.number)
    .every((f) => {
      const p = fieldPlan(f);
      if (p) plan.fields.push(p);
      return p !== undefined;
    });
  if (!ok) {
    plans.set(desc, null);
    return null;
  }
  return plan;
}

/** The encoder's kind of each plain kind (enums are int32s; uint64 is written as int64 is: a bigint varint). */
const KINDS: Record<PlainKind, Kind> = {
  string: Kind.String,
  bool: Kind.Bool,
  int32: Kind.Int32,
  uint32: Kind.Uint32,
  int64: Kind.Int64,
  uint64: Kind.Int64,
  double: Kind.Double,
  bytes: Kind.Bytes,
  enum: Kind.Int32,
  message: Kind.Message,
  struct: Kind.Struct,
  "string-list": Kind.StringList,
  "message-list": Kind.MessageList,
  "string-map": Kind.StringMap,
};

function fieldPlan(f: DescField): FieldPlan | undefined {
  const plain = plainKind(f);
  if (plain === undefined) return undefined;
  const kind = KINDS[plain];
  const base = { localName: f.localName, explicit: f.presence !== IMPLICIT, kind, tag: f.number * 8 + wireType(kind) };
  if (kind !== Kind.Message && kind !== Kind.MessageList) return base;
  const plan = planOf((f as DescField & { message: DescMessage }).message);
  return plan === null ? undefined : { ...base, plan };
}

/** google.protobuf.FeatureSet.FieldPresence.IMPLICIT */
const IMPLICIT = 2;

/** The wire type of a field of this kind: varint, 64-bit, or length-delimited (everything else). */
function wireType(kind: Kind): number {
  return kind === Kind.Double ? 1 : kind === Kind.Bool || kind === Kind.Int32 || kind === Kind.Uint32 || kind === Kind.Int64 ? 0 : 2;
}

/** Whether toBinary writes the field: set (explicit presence, own property) or not its zero value (implicit). */
function present(p: FieldPlan, m: Fields, v: unknown): boolean {
  // Absent (a message holding only some fields, see MessageEncoder.onBase):
  // toBinary would refuse most kinds; nothing to write.
  if (v === undefined) return false;
  if (p.explicit) return v !== undefined && Object.prototype.hasOwnProperty.call(m, p.localName);
  switch (p.kind) {
    case Kind.String:
      return v !== "";
    case Kind.Bool:
      return v !== false;
    case Kind.Double:
      return !Object.is(v, 0);
    case Kind.Bytes:
      return !(v instanceof Uint8Array) || v.byteLength > 0;
    case Kind.Int32:
    case Kind.Uint32:
    case Kind.Int64:
      // Loose, as toBinary's: 0n, 0 and "0" are all zero.
      return v != 0;
    default:
      return v !== undefined;
  }
}

/** Bytes of a message's fields, or -1 when something in it is not handled here. */
function messageSize(plan: Plan, m: Fields, sizes: number[], structs: Uint8Array[]): number {
  if (m.$typeName !== plan.typeName || m.$unknown !== undefined) return -1;
  let total = 0;
  for (const p of plan.fields) {
    const v = m[p.localName];
    if (!present(p, m, v)) continue;
    const tagBytes = varintSize(p.tag);
    switch (p.kind) {
      case Kind.String: {
        if (typeof v !== "string") return -1;
        const n = Buffer.byteLength(v, "utf8");
        sizes[top++] = n;
        total += tagBytes + varintSize(n) + n;
        break;
      }
      case Kind.Bool:
        if (typeof v !== "boolean") return -1;
        total += tagBytes + 1;
        break;
      case Kind.Int32:
        if (typeof v !== "number" || !Number.isInteger(v) || v > 0x7fffffff || v < -0x80000000) return -1;
        total += tagBytes + (v < 0 ? 10 : varintSize(v));
        break;
      case Kind.Uint32:
        if (typeof v !== "number" || !Number.isInteger(v) || v > 0xffffffff || v < 0) return -1;
        total += tagBytes + varintSize(v);
        break;
      case Kind.Int64: {
        if (typeof v !== "bigint" || v < INT64_MIN || v > UINT64_MAX) return -1;
        total += tagBytes + varint64Size(v);
        break;
      }
      case Kind.Double:
        if (typeof v !== "number") return -1;
        total += tagBytes + 8;
        break;
      case Kind.Bytes:
        if (!(v instanceof Uint8Array)) return -1;
        total += tagBytes + varintSize(v.length) + v.length;
        break;
      case Kind.Struct: {
        if (v === null || typeof v !== "object" || Array.isArray(v)) return -1;
        const bytes = structBytes(v as JsonObject);
        if (bytes === undefined) return -1;
        structs.push(bytes);
        total += tagBytes + varintSize(bytes.length) + bytes.length;
        break;
      }
      case Kind.Message: {
        if (v === null || typeof v !== "object") return -1;
        const slot = top++;
        const n = messageSize(p.plan!, v as Fields, sizes, structs);
        if (n < 0) return -1;
        sizes[slot] = n;
        total += tagBytes + varintSize(n) + n;
        break;
      }
      case Kind.StringList: {
        if (!Array.isArray(v)) return -1;
        for (const s of v) {
          if (typeof s !== "string") return -1;
          const n = Buffer.byteLength(s, "utf8");
          sizes[top++] = n;
          total += tagBytes + varintSize(n) + n;
        }
        break;
      }
      case Kind.MessageList: {
        if (!Array.isArray(v)) return -1;
        for (const item of v) {
          if (item === null || typeof item !== "object") return -1;
          const slot = top++;
          const n = messageSize(p.plan!, item as Fields, sizes, structs);
          if (n < 0) return -1;
          sizes[slot] = n;
          total += tagBytes + varintSize(n) + n;
        }
        break;
      }
      case Kind.StringMap: {
        if (v === null || typeof v !== "object") return -1;
        const record = v as Record<string, unknown>;
        for (const k of Object.keys(record)) {
          const value = record[k];
          if (typeof value !== "string") return -1;
          const kn = Buffer.byteLength(k, "utf8");
          const vn = Buffer.byteLength(value, "utf8");
          const entry = 1 + varintSize(kn) + kn + 1 + varintSize(vn) + vn;
          sizes[top++] = kn;
          sizes[top++] = vn;
          total += tagBytes + varintSize(entry) + entry;
        }
        break;
      }
    }
  }
  return total;
}

interface Cursor {
  /** The next of `sizes` to read. */
  next: number;
  /** The next of `structs`. */
  struct: number;
}

const INT64_MIN = -(2n ** 63n);
const UINT64_MAX = 2n ** 64n - 1n;

function writeMessage(out: Buffer, at: number, plan: Plan, m: Fields, sizes: number[], structs: Uint8Array[], c: Cursor): number {
  for (const p of plan.fields) {
    const v = m[p.localName];
    if (!present(p, m, v)) continue;
    switch (p.kind) {
      case Kind.String: {
        at = varint(out, varint(out, at, p.tag), sizes[c.next++]!);
        at += out.write(v as string, at, "utf8");
        break;
      }
      case Kind.Bool:
        at = varint(out, at, p.tag);
        out[at++] = v ? 1 : 0;
        break;
      case Kind.Int32:
      case Kind.Uint32: {
        at = varint(out, at, p.tag);
        const n = v as number;
        at = n < 0 ? varint64(out, at, BigInt.asUintN(64, BigInt(n))) : varint(out, at, n);
        break;
      }
      case Kind.Int64:
        at = varint64(out, varint(out, at, p.tag), BigInt.asUintN(64, v as bigint));
        break;
      case Kind.Double:
        at = varint(out, at, p.tag);
        out.writeDoubleLE(v as number, at);
        at += 8;
        break;
      case Kind.Bytes: {
        const bytes = v as Uint8Array;
        at = varint(out, varint(out, at, p.tag), bytes.length);
        out.set(bytes, at);
        at += bytes.length;
        break;
      }
      case Kind.Struct: {
        const bytes = structs[c.struct++]!;
        at = varint(out, varint(out, at, p.tag), bytes.length);
        out.set(bytes, at);
        at += bytes.length;
        break;
      }
      case Kind.Message:
        at = varint(out, varint(out, at, p.tag), sizes[c.next++]!);
        at = writeMessage(out, at, p.plan!, v as Fields, sizes, structs, c);
        break;
      case Kind.StringList:
        for (const s of v as string[]) {
          at = varint(out, varint(out, at, p.tag), sizes[c.next++]!);
          at += out.write(s, at, "utf8");
        }
        break;
      case Kind.MessageList:
        for (const item of v as Fields[]) {
          at = varint(out, varint(out, at, p.tag), sizes[c.next++]!);
          at = writeMessage(out, at, p.plan!, item, sizes, structs, c);
        }
        break;
      case Kind.StringMap: {
        const record = v as Record<string, string>;
        for (const k of Object.keys(record)) {
          const kn = sizes[c.next++]!;
          const vn = sizes[c.next++]!;
          at = varint(out, varint(out, at, p.tag), 1 + varintSize(kn) + kn + 1 + varintSize(vn) + vn);
          out[at++] = 0x0a;
          at = varint(out, at, kn);
          at += out.write(k, at, "utf8");
          out[at++] = 0x12;
          at = varint(out, at, vn);
          at += out.write(record[k]!, at, "utf8");
        }
        break;
      }
    }
  }
  return at;
}

export function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

/** A varint of an unsigned value below 2^32. */
export function varint(out: Buffer, at: number, value: number): number {
  while (value > 0x7f) {
    out[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  out[at++] = value;
  return at;
}

function varint64Size(v: bigint): number {
  let u = BigInt.asUintN(64, v);
  if (u < 0x100000000n) return varintSize(Number(u));
  let n = 1;
  while (u > 0x7fn) {
    u >>= 7n;
    n++;
  }
  return n;
}

function varint64(out: Buffer, at: number, u: bigint): number {
  if (u < 0x100000000n) return varint(out, at, Number(u));
  while (u > 0x7fn) {
    out[at++] = Number(u & 0x7fn) | 0x80;
    u >>= 7n;
  }
  out[at++] = Number(u);
  return at;
}
