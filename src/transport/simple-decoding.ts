import { hash } from "node:crypto";
import { isUtf8 } from "node:buffer";
import { create, type DescField, type DescMessage, type JsonObject, type JsonValue, type Message, type MessageShape } from "@bufbuild/protobuf";
import { noteJsonFacts } from "../message-hints.js";
import { plainKind, type PlainKind } from "./plain-fields.js";
import { RecentMap } from "../recent-map.js";

/**
 * fromBinary for plain proto3 requests, giving the message fromBinary gives
 * (the same fields, defaults and values): a Register request's three tool
 * schemas went through Struct, Value and ListValue messages before becoming
 * JSON (wkt reflect), and every field tag through a [number, wireType]
 * array. Here the bytes are read once, straight into the message, and a
 * google.protobuf.Struct whose bytes were seen before is the same JSON
 * object as then, deep-frozen (agents of one kind register the same
 * schemas: registry/shared-values.ts pools them anyway, frozen too).
 *
 * What it handles mirrors simple-encoding.ts: strings, bools, open enums,
 * 32/64-bit integers, doubles, messages of such fields, lists of strings
 * and of messages, string-to-string maps, Struct fields. Anything else in
 * the schema or on the wire — unknown fields (fromBinary keeps them),
 * unexpected wire types, a singular message field sent twice (fromBinary
 * merges), invalid UTF-8 (fromBinary refuses it), a "__proto__" key,
 * nesting past 64 levels, bytes that end early — returns undefined, and
 * the caller uses fromBinary: it answers for every unusual input, errors
 * included.
 */
export function decodeSimple<Desc extends DescMessage>(schema: Desc, bytes: Uint8Array): MessageShape<Desc> | undefined;
export function decodeSimple(schema: DescMessage, bytes: Uint8Array): Message | undefined {
  const plan = planOf(schema);
  if (plan === null) return undefined;
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    return readMessage({ buf, pos: 0 }, plan, buf.length, 0);
  } catch (err) {
    if (err === GIVE_UP) return undefined;
    throw err;
  }
}

/** Thrown inside to leave the input to fromBinary. */
const GIVE_UP = new Error("not a simple message");

/** Struct nesting this decoder follows; deeper is fromBinary's (its own limit is 100 messages). */
const MAX_DEPTH = 64;

interface Reader {
  readonly buf: Buffer;
  pos: number;
}

const enum Kind {
  String,
  Bool,
  Int32,
  Uint32,
  Int64,
  Uint64,
  Double,
  Message,
  Struct,
  StringList,
  MessageList,
  StringMap,
}

interface FieldPlan {
  readonly kind: Kind;
  readonly localName: string;
  readonly wireType: number;
  plan?: Plan;
}

interface Plan {
  readonly desc: DescMessage;
  /** By field number (sparse). */
  readonly fields: (FieldPlan | undefined)[];
}

const plans = new WeakMap<DescMessage, Plan | null>();

function planOf(desc: DescMessage): Plan | null {
  const known = plans.get(desc);
  if (known !== undefined) return known;
  const plan: Plan = { desc, fields: [] };
  plans.set(desc, plan);
  for (const f of desc.fields) {
    const p = f.number < 1024 ? fieldPlan(f) : undefined;
    if (p === undefined) {
      plans.set(desc, null);
      return null;
    }
    plan.fields[f.number] = p;
  }
  return plan;
}

/** The decoder's kind of each plain kind it reads (bytes it leaves to fromBinary; enums are open int32s). */
const KINDS: Partial<Record<PlainKind, Kind>> = {
  string: Kind.String,
  bool: Kind.Bool,
  int32: Kind.Int32,
  uint32: Kind.Uint32,
  int64: Kind.Int64,
  uint64: Kind.Uint64,
  double: Kind.Double,
  enum: Kind.Int32,
  message: Kind.Message,
  struct: Kind.Struct,
  "string-list": Kind.StringList,
  "message-list": Kind.MessageList,
  "string-map": Kind.StringMap,
};

function fieldPlan(f: DescField): FieldPlan | undefined {
  const plain = plainKind(f);
  const kind = plain === undefined ? undefined : KINDS[plain];
  if (kind === undefined || (plain === "enum" && f.fieldKind === "enum" && !f.enum.open)) return undefined;
  const localName = f.localName;
  if (kind === Kind.Message || kind === Kind.MessageList) {
    const plan = planOf((f as DescField & { message: DescMessage }).message);
    return plan === null ? undefined : { kind, localName, wireType: 2, plan };
  }
  return { kind, localName, wireType: kind === Kind.Double ? 1 : kind === Kind.Bool || kind === Kind.Int32 || kind === Kind.Uint32 || kind === Kind.Int64 || kind === Kind.Uint64 ? 0 : 2 };
}

function readMessage(r: Reader, plan: Plan, end: number, depth: number): Message {
  if (depth > MAX_DEPTH) throw GIVE_UP;
  const m = create(plan.desc) as unknown as Record<string, unknown>;
  while (r.pos < end) {
    const tag = varint32(r, end);
    const fieldNo = tag >>> 3;
    const p = plan.fields[fieldNo];
    if (p === undefined || (tag & 7) !== p.wireType) throw GIVE_UP;
    switch (p.kind) {
      case Kind.String:
        m[p.localName] = string(r, end);
        break;
      case Kind.Bool: {
        const [lo, hi] = varint64(r, end);
        m[p.localName] = lo !== 0 || hi !== 0;
        break;
      }
      case Kind.Int32:
        m[p.localName] = varint64(r, end)[0] | 0;
        break;
      case Kind.Uint32:
        m[p.localName] = varint64(r, end)[0] >>> 0;
        break;
      case Kind.Int64: {
        const [lo, hi] = varint64(r, end);
        m[p.localName] = BigInt.asIntN(64, (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0));
        break;
      }
      case Kind.Uint64: {
        const [lo, hi] = varint64(r, end);
        m[p.localName] = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
        break;
      }
      case Kind.Double:
        if (r.pos + 8 > end) throw GIVE_UP;
        m[p.localName] = r.buf.readDoubleLE(r.pos);
        r.pos += 8;
        break;
      case Kind.Message: {
        // Sent twice, fromBinary merges the two: its case.
        if (m[p.localName] !== undefined) throw GIVE_UP;
        const n = length(r, end);
        m[p.localName] = readMessage(r, p.plan!, r.pos + n, depth + 1);
        break;
      }
      case Kind.Struct: {
        if (m[p.localName] !== undefined) throw GIVE_UP;
        m[p.localName] = struct(r, until(r, end), depth + 1);
        break;
      }
      case Kind.StringList:
        (m[p.localName] as string[]).push(string(r, end));
        break;
      case Kind.MessageList: {
        const n = length(r, end);
        (m[p.localName] as Message[]).push(readMessage(r, p.plan!, r.pos + n, depth + 1));
        break;
      }
      case Kind.StringMap: {
        const entryEnd = until(r, end);
        let key = "";
        let value = "";
        while (r.pos < entryEnd) {
          const t = varint32(r, entryEnd);
          if (t === 0x0a) key = string(r, entryEnd);
          else if (t === 0x12) value = string(r, entryEnd);
          else throw GIVE_UP;
        }
        if (key === "__proto__") throw GIVE_UP;
        (m[p.localName] as Record<string, string>)[key] = value;
        break;
      }
    }
  }
  if (r.pos !== end) throw GIVE_UP;
  return m as unknown as Message;
}

// --- google.protobuf.Struct ------------------------------------------------

/**
 * Structs decoded before, by their bytes ("s" and the bytes themselves when
 * short, else "#" and their SHA-256): deep-frozen JSON, shared by every
 * request that sends them, with its depth and JSON size noted on it
 * (message-hints.ts `jsonFacts`: validation need not walk it again). Bounded: RecentMap
 * entries, and only Structs up to STRUCT_KEPT bytes.
 */
const structs = new RecentMap<string, JsonObject>(1_000);
const STRUCT_KEPT = 2_048;
const SHORT_KEY = 64;

function struct(r: Reader, end: number, depth: number): JsonObject {
  const start = r.pos;
  const n = end - start;
  if (end > r.buf.length) throw GIVE_UP;
  let key: string | undefined;
  if (n <= STRUCT_KEPT) {
    key = n <= SHORT_KEY ? `s${r.buf.toString("latin1", start, end)}` : `#${hash("sha256", r.buf.subarray(start, end), "base64")}`;
    const known = structs.get(key);
    if (known !== undefined) {
      r.pos = end;
      return known;
    }
  }
  const json = structFields(r, end, depth);
  if (key !== undefined) {
    noteJsonFacts(json, { depth: depthOf(json), bytes: Buffer.byteLength(JSON.stringify(json)) });
    structs.set(key, deepFreeze(json));
  }
  return json;
}

function structFields(r: Reader, end: number, depth: number): JsonObject {
  if (depth > MAX_DEPTH) throw GIVE_UP;
  const o: JsonObject = {};
  while (r.pos < end) {
    if (varint32(r, end) !== 0x0a) throw GIVE_UP; // fields (1)
    const entryEnd = until(r, end);
    let key = "";
    let value: JsonValue = null;
    while (r.pos < entryEnd) {
      const t = varint32(r, entryEnd);
      if (t === 0x0a) key = string(r, entryEnd);
      else if (t === 0x12) value = valueOf(r, until(r, entryEnd), depth + 1);
      else throw GIVE_UP;
    }
    if (r.pos !== entryEnd || key === "__proto__") throw GIVE_UP;
    o[key] = value;
  }
  if (r.pos !== end) throw GIVE_UP;
  return o;
}

/** A google.protobuf.Value's JSON: its last kind on the wire; none is null. */
function valueOf(r: Reader, end: number, depth: number): JsonValue {
  if (depth > MAX_DEPTH) throw GIVE_UP;
  let value: JsonValue = null;
  let nested = false;
  while (r.pos < end) {
    const t = varint32(r, end);
    switch (t) {
      case 0x08: // null_value
        varint64(r, end);
        value = null;
        break;
      case 0x11: // number_value
        if (r.pos + 8 > end) throw GIVE_UP;
        value = r.buf.readDoubleLE(r.pos);
        r.pos += 8;
        break;
      case 0x1a: // string_value
        value = string(r, end);
        break;
      case 0x20: {
        // bool_value
        const [lo, hi] = varint64(r, end);
        value = lo !== 0 || hi !== 0;
        break;
      }
      case 0x2a: // struct_value
      case 0x32: {
        // list_value; a second nested kind: fromBinary may merge it into the first
        if (nested) throw GIVE_UP;
        nested = true;
        const n = length(r, end);
        value = t === 0x2a ? structFields(r, r.pos + n, depth + 1) : list(r, r.pos + n, depth + 1);
        break;
      }
      default:
        throw GIVE_UP;
    }
  }
  if (r.pos !== end) throw GIVE_UP;
  return value;
}

function list(r: Reader, end: number, depth: number): JsonValue[] {
  const out: JsonValue[] = [];
  while (r.pos < end) {
    if (varint32(r, end) !== 0x0a) throw GIVE_UP; // values (1)
    out.push(valueOf(r, until(r, end), depth + 1));
  }
  if (r.pos !== end) throw GIVE_UP;
  return out;
}

/** Levels as validation counts them: a value in the top object is at level 2. */
function depthOf(v: JsonValue): number {
  if (v === null || typeof v !== "object") return 1;
  let d = 0;
  for (const x of Array.isArray(v) ? v : Object.values(v)) d = Math.max(d, depthOf(x));
  return d + 1;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

// --- wire ------------------------------------------------------------------

/** A varint that must fit 32 bits (tags, lengths). */
function varint32(r: Reader, end: number): number {
  const buf = r.buf;
  let result = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (r.pos >= end) throw GIVE_UP;
    const b = buf[r.pos++]!;
    result += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) {
      if (result > 0xffffffff) throw GIVE_UP;
      return result;
    }
  }
  throw GIVE_UP;
}

/** A varint of up to 64 bits as [low, high] 32-bit halves (ten bytes at most). */
const pair: [number, number] = [0, 0];
function varint64(r: Reader, end: number): [number, number] {
  const buf = r.buf;
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < 10; i++) {
    if (r.pos >= end) throw GIVE_UP;
    const b = buf[r.pos++]!;
    const bits = b & 0x7f;
    const shift = i * 7;
    if (shift < 28) lo |= bits << shift;
    else if (shift === 28) {
      lo |= (bits & 0x0f) << 28;
      hi |= bits >> 4;
    } else hi |= bits << (shift - 32);
    if (b < 0x80) {
      pair[0] = lo;
      pair[1] = hi;
      return pair;
    }
  }
  throw GIVE_UP;
}

/** Where a length-delimited field that starts here ends (after reading its length). */
function until(r: Reader, end: number): number {
  const n = length(r, end);
  return r.pos + n;
}

function length(r: Reader, end: number): number {
  const n = varint32(r, end);
  if (r.pos + n > end) throw GIVE_UP;
  return n;
}

/** A string field: valid UTF-8 only (fromBinary refuses the rest). */
function string(r: Reader, end: number): string {
  const n = length(r, end);
  const buf = r.buf;
  const start = r.pos;
  r.pos += n;
  for (let i = start; i < r.pos; i++) {
    if (buf[i]! > 0x7f) {
      if (!isUtf8(buf.subarray(start, r.pos))) throw GIVE_UP;
      return buf.toString("utf8", start, r.pos);
    }
  }
  return buf.toString("latin1", start, r.pos);
}
