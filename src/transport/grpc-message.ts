/**
 * grpc-message as the gRPC spec asks: UTF-8, with every byte outside
 * printable ASCII, and "%" itself, as %XX. (encodeURIComponent also encodes
 * ";", ",", "/" ..., which grpc-js and grpc-go then show undecoded.)
 */
export function percentEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
