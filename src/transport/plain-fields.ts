import { ScalarType, type DescField } from "@bufbuild/protobuf";

/**
 * The fields that simple-encoding.ts writes and simple-decoding.ts reads
 * themselves (each keeps its own plan of them, built once per message
 * type): anything else makes the whole message the library's.
 */
export type PlainKind =
  | "string"
  | "bool"
  | "int32"
  | "uint32"
  | "int64"
  | "uint64"
  | "double"
  | "bytes"
  | "enum"
  | "message"
  | "struct"
  | "string-list"
  | "message-list"
  | "string-map";

/** Message types protobuf-es converts to other values (wrappers, Value, ListValue, Any). */
const CONVERTED = /^google\.protobuf\.(Value|ListValue|Any|DoubleValue|FloatValue|Int64Value|UInt64Value|Int32Value|UInt32Value|BoolValue|StringValue|BytesValue)$/;

/**
 * A field's plain kind, or undefined for what is left to the library:
 * oneofs, 64-bit integers as strings, delimited (group) encoding, floats
 * and fixed-width or zigzag integers, converted message types, a Struct
 * inside a Value, lists of other than strings and messages, maps other
 * than string to string. "message" and "message-list" name `f.message`,
 * whose own fields decide whether it is plain too.
 */
export function plainKind(f: DescField): PlainKind | undefined {
  if (f.oneof) return undefined;
  switch (f.fieldKind) {
    case "scalar":
      return f.longAsString ? undefined : SCALARS.get(f.scalar);
    case "enum":
      return "enum";
    case "message":
      if (f.delimitedEncoding) return undefined;
      if (f.message.typeName === "google.protobuf.Struct") return f.parent.typeName === "google.protobuf.Value" ? undefined : "struct";
      return CONVERTED.test(f.message.typeName) ? undefined : "message";
    case "list":
      if (f.listKind === "scalar") return f.scalar === ScalarType.STRING ? "string-list" : undefined;
      if (f.listKind !== "message" || f.delimitedEncoding || CONVERTED.test(f.message.typeName) || f.message.typeName === "google.protobuf.Struct") return undefined;
      return "message-list";
    case "map":
      return f.mapKey === ScalarType.STRING && f.mapKind === "scalar" && f.scalar === ScalarType.STRING ? "string-map" : undefined;
  }
}

const SCALARS: ReadonlyMap<ScalarType, PlainKind> = new Map([
  [ScalarType.STRING, "string"],
  [ScalarType.BOOL, "bool"],
  [ScalarType.INT32, "int32"],
  [ScalarType.UINT32, "uint32"],
  [ScalarType.INT64, "int64"],
  [ScalarType.UINT64, "uint64"],
  [ScalarType.DOUBLE, "double"],
  [ScalarType.BYTES, "bytes"],
]);
