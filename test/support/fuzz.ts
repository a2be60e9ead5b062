import fc from "fast-check";
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";

/**
 * Shared pieces of the fuzz suite (test/fuzz-*.test.ts): one seed for the
 * whole run (printed; FC_SEED overrides it so a CI failure replays
 * locally), the line between a client error and a server error, and
 * arbitrary values for the generated request messages.
 */

const DEFAULT_SEED = 0x5eed14;

export function fuzzSeed(file: string): number {
  const raw = process.env.FC_SEED;
  const seed = raw === undefined || raw === "" ? DEFAULT_SEED : Number(raw);
  if (!Number.isSafeInteger(seed)) throw new Error(`FC_SEED must be an integer, got ${JSON.stringify(raw)}`);
  // One line per file, so a failing CI log says how to replay it.
  console.log(`[fuzz] ${file}: seed ${seed} (replay with FC_SEED=${seed})`);
  return seed;
}

/** fast-check parameters: fixed seed, bounded runs, no time-based interruption (reproducible). */
export function fcParams(seed: number, numRuns: number): fc.Parameters<unknown> {
  return { seed, numRuns, endOnFailure: false };
}

/**
 * gRPC codes that say the server failed, not the client: UNKNOWN,
 * INTERNAL, DATA_LOSS. Everything else names something about the request
 * (UNAVAILABLE is the router's "no healthy agent", DEADLINE_EXCEEDED a
 * deadline the client set, UNIMPLEMENTED a protocol error or unknown method).
 */
export const SERVER_ERROR_CODES: ReadonlySet<number> = new Set([2, 13, 15]);

/** Connect's code names, for answers in the Connect protocol. */
export const CONNECT_CODE: Record<string, number> = {
  canceled: 1,
  unknown: 2,
  invalid_argument: 3,
  deadline_exceeded: 4,
  not_found: 5,
  already_exists: 6,
  permission_denied: 7,
  resource_exhausted: 8,
  failed_precondition: 9,
  aborted: 10,
  out_of_range: 11,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
  data_loss: 15,
  unauthenticated: 16,
};

/**
 * Collects every property violation (grouped by a key naming protocol,
 * method and answer, keeping the shortest input of each group) instead
 * of stopping at the first: one run reports every distinct defect.
 */
export class Violations {
  private readonly groups = new Map<string, { count: number; example: string }>();

  add(key: string, example: unknown): void {
    const text = typeof example === "string" ? example : safeStringify(example);
    const g = this.groups.get(key);
    if (!g) this.groups.set(key, { count: 1, example: text });
    else {
      g.count++;
      if (text.length < g.example.length) g.example = text;
    }
  }

  get size(): number {
    return this.groups.size;
  }

  keys(): string[] {
    return [...this.groups.keys()];
  }

  has(pattern: RegExp): boolean {
    return this.keys().some((k) => pattern.test(k));
  }

  report(): string {
    return [...this.groups]
      .map(([key, g]) => `${key}  ×${g.count}\n    e.g. ${g.example.slice(0, 600)}`)
      .join("\n");
  }
}

export function safeStringify(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x) =>
      typeof x === "bigint" ? `${x}n` : x instanceof Uint8Array ? `<${x.length} bytes ${Buffer.from(x.subarray(0, 48)).toString("hex")}>` : x,
    ) ?? String(v);
  } catch {
    return String(v);
  }
}

// --- arbitrary values ---------------------------------------------------------

/** Strings a client can send: ASCII, full Unicode, lone surrogates (JSON "\ud800"), control characters, long ones. */
export const anyString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 24 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 16 }) },
  { weight: 1, arbitrary: fc.constantFrom("", " ", "\u0000", "../..", "%", "%zz", "a/b", "a:b", "{x}", "é", "🚀", "\ud800", "a".repeat(65), "x".repeat(5000)) },
  { weight: 1, arbitrary: fc.nat({ max: 20_000 }).map((n) => "a".repeat(n)) },
);

/** Identifier-like strings (most fields are patterned): valid ones, with odd ones mixed in. */
export const idLike: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/) },
  { weight: 1, arbitrary: anyString },
);

const int32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const uint32 = fc.integer({ min: 0, max: 0xffffffff });
const float = fc.oneof(fc.double(), fc.constantFrom(0, 0.5, 1, -1, NaN, Infinity, -Infinity, 1e39, -0));

function scalarArb(t: ScalarType): fc.Arbitrary<unknown> {
  switch (t) {
    case ScalarType.STRING:
      return idLike;
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 64 });
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return float;
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return fc.oneof(int32, fc.constantFrom(0, 1, 10, 100, 1000, 1001, -1));
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return uint32;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
  }
}

/** JSON values up to a depth (Struct fields), sometimes deeper than the validators allow. */
export const jsonObject: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }) },
  { weight: 1, arbitrary: fc.integer({ min: 10, max: 40 }).map((d) => nest(d)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 80_000 }).map((n) => ({ big: "x".repeat(n) })) },
);

/** An object nested `depth` levels. */
export function nest(depth: number): Record<string, unknown> {
  let v: Record<string, unknown> = { leaf: 1 };
  for (let i = 1; i < depth; i++) v = { n: v };
  return v;
}

function valueArb(f: DescField, depth: number): fc.Arbitrary<unknown> {
  const one = (): fc.Arbitrary<unknown> => {
    const kind = f.fieldKind === "list" ? f.listKind : f.fieldKind === "map" ? f.mapKind : f.fieldKind;
    if (kind === "scalar") return scalarArb((f as { scalar: ScalarType }).scalar);
    if (kind === "enum") {
      const e = (f as { enum: { values: { number: number }[] } }).enum;
      return fc.oneof(fc.constantFrom(...e.values.map((v) => v.number)), int32);
    }
    return messageInitArb((f as { message: DescMessage }).message, depth + 1);
  };
  switch (f.fieldKind) {
    case "list":
      return fc.oneof(
        { weight: 4, arbitrary: fc.array(one(), { maxLength: 4 }) },
        { weight: 1, arbitrary: fc.array(one(), { minLength: 15, maxLength: 70 }) },
      );
    case "map":
      return fc.dictionary(idLike, one(), { maxKeys: 4 });
    default:
      return one();
  }
}

/**
 * An init shape for `create(desc, …)`: every field optional, values of the
 * field's kind (any int32 for enums, NaN for floats, huge strings, deep
 * Structs); well-known types as protobuf-es v2 represents them.
 */
export function messageInitArb(desc: DescMessage, depth = 0): fc.Arbitrary<unknown> {
  switch (desc.typeName) {
    case "google.protobuf.Struct":
      return jsonObject;
    case "google.protobuf.Value":
      return fc.jsonValue({ maxDepth: 3 });
    case "google.protobuf.Duration":
      return fc.record({
        seconds: fc.oneof(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.bigInt({ min: 0n, max: 400n })),
        nanos: fc.oneof(int32, fc.integer({ min: 0, max: 999_999_999 })),
      });
    case "google.protobuf.Timestamp":
      return fc.record({ seconds: fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }), nanos: int32 });
  }
  if (depth > 3) return fc.constant({});
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of desc.fields) {
    if (f.oneof) continue;
    parts[f.localName] = valueArb(f, depth);
  }
  return fc.record(parts, { requiredKeys: [] });
}
