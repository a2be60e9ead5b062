import type { JsonObject } from "@bufbuild/protobuf";

/**
 * The binary encoding of a google.protobuf.Struct written straight from its
 * JSON object (the local form protobuf-es gives a Struct field), byte for
 * byte what toBinary writes: toBinary first converts the object to Struct,
 * Value and ListValue messages (wkt reflect), then encodes those with a
 * BinaryWriter fork per map entry and per nested value — for a tool's small
 * schema that was most of the cost of encoding the tool.
 *
 * A frozen object cannot change, so its encoding is kept (WeakMap: a frozen
 * object takes no symbol slot): tool schemas are pooled and deep-frozen
 * (registry/shared-values.ts), so agents registered with the same schema
 * share one encoding of it. An object holding anything that is not JSON
 * (undefined, a bigint, a function …) gets undefined: the caller leaves it
 * to toBinary, which has its own answer for it.
 */
const frozenEncodings = new WeakMap<object, Uint8Array>();

export function structBytes(json: JsonObject): Uint8Array | undefined {
  const frozen = Object.isFrozen(json);
  if (frozen) {
    const known = frozenEncodings.get(json);
    if (known) return known;
  }
  const sizes: number[] = [];
  const length = structSize(json, sizes);
  if (length < 0) return undefined;
  const out = Buffer.allocUnsafe(length);
  const end = writeStruct(out, 0, json, sizes, { next: 0 });
  if (end !== length) throw new Error(`struct encoding: wrote ${end} of ${length} bytes`);
  if (frozen && isDeepFrozen(json)) frozenEncodings.set(json, out);
  return out;
}

/** Deep-frozen: only then can the encoding be kept (a frozen object may hold unfrozen ones). */
function isDeepFrozen(v: unknown): boolean {
  if (v === null || typeof v !== "object") return true;
  if (!Object.isFrozen(v)) return false;
  for (const k of Object.keys(v)) if (!isDeepFrozen((v as Record<string, unknown>)[k])) return false;
  return true;
}

// Sizes are computed first, in one pass over the object (each nested
// length-prefixed part's size pushed in visiting order), then the bytes are
// written in a second pass reading them back in the same order: one buffer,
// no copies.

/** Bytes of a Struct's fields (its entries), or -1 when something in it is not JSON. */
function structSize(o: JsonObject, sizes: number[]): number {
  let total = 0;
  for (const k of Object.keys(o)) {
    const slot = sizes.length;
    sizes.push(0);
    const keyBytes = Buffer.byteLength(k, "utf8");
    const value = valueSize(o[k], sizes);
    if (value < 0) return -1;
    // entry: key (field 1) and value (field 2, a Value message)
    const entry = 1 + varintSize(keyBytes) + keyBytes + 1 + varintSize(value) + value;
    sizes[slot] = entry;
    total += 1 + varintSize(entry) + entry;
  }
  return total;
}

/** Bytes of a Value message's fields. */
function valueSize(v: unknown, sizes: number[]): number {
  switch (typeof v) {
    case "number":
      return 9;
    case "boolean":
      return 2;
    case "string": {
      const n = Buffer.byteLength(v, "utf8");
      sizes.push(n);
      return 1 + varintSize(n) + n;
    }
    case "object": {
      if (v === null) return 2;
      const slot = sizes.length;
      sizes.push(0);
      let n: number;
      if (Array.isArray(v)) {
        n = 0;
        for (const item of v) {
          const itemSlot = sizes.length;
          sizes.push(0);
          const s = valueSize(item, sizes);
          if (s < 0) return -1;
          sizes[itemSlot] = s;
          n += 1 + varintSize(s) + s;
        }
      } else {
        n = structSize(v as JsonObject, sizes);
        if (n < 0) return -1;
      }
      sizes[slot] = n;
      return 1 + varintSize(n) + n;
    }
    default:
      return -1;
  }
}

interface Cursor {
  next: number;
}

function writeStruct(out: Buffer, at: number, o: JsonObject, sizes: number[], c: Cursor): number {
  for (const k of Object.keys(o)) {
    const entry = sizes[c.next++]!;
    out[at++] = 0x0a; // fields (1), length-delimited
    at = varint(out, at, entry);
    out[at++] = 0x0a; // key (1)
    const keyBytes = Buffer.byteLength(k, "utf8");
    at = varint(out, at, keyBytes);
    at += out.write(k, at, "utf8");
    out[at++] = 0x12; // value (2)
    const v = o[k];
    at = varint(out, at, valueLength(v, sizes, c.next));
    at = writeValue(out, at, v, sizes, c);
  }
  return at;
}

/** The size of a Value's fields, from the sizes pass (peeked: writeValue reads it again). */
function valueLength(v: unknown, sizes: number[], next: number): number {
  switch (typeof v) {
    case "number":
      return 9;
    case "boolean":
      return 2;
    case "string": {
      const n = sizes[next]!;
      return 1 + varintSize(n) + n;
    }
    default: {
      if (v === null) return 2;
      const n = sizes[next]!;
      return 1 + varintSize(n) + n;
    }
  }
}

function writeValue(out: Buffer, at: number, v: unknown, sizes: number[], c: Cursor): number {
  switch (typeof v) {
    case "number":
      out[at++] = 0x11; // number_value (2), 64-bit
      out.writeDoubleLE(v, at);
      return at + 8;
    case "boolean":
      out[at++] = 0x20; // bool_value (4), varint
      out[at++] = v ? 1 : 0;
      return at;
    case "string": {
      out[at++] = 0x1a; // string_value (3)
      at = varint(out, at, sizes[c.next++]!);
      return at + out.write(v, at, "utf8");
    }
    default: {
      if (v === null) {
        out[at++] = 0x08; // null_value (1), varint 0
        out[at++] = 0;
        return at;
      }
      const n = sizes[c.next++]!;
      if (Array.isArray(v)) {
        out[at++] = 0x32; // list_value (6)
        at = varint(out, at, n);
        for (const item of v) {
          const s = sizes[c.next++]!;
          out[at++] = 0x0a; // values (1)
          at = varint(out, at, s);
          at = writeValue(out, at, item, sizes, c);
        }
        return at;
      }
      out[at++] = 0x2a; // struct_value (5)
      at = varint(out, at, n);
      return writeStruct(out, at, v as JsonObject, sizes, c);
    }
  }
}

function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

function varint(out: Buffer, at: number, value: number): number {
  while (value > 0x7f) {
    out[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  out[at++] = value;
  return at;
}
