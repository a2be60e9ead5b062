import { randomFillSync } from "node:crypto";

/** Hex digits of each byte, as character codes. */
const HEX = Array.from({ length: 256 }, (_, b) => ["0123456789abcdef".charCodeAt(b >> 4), "0123456789abcdef".charCodeAt(b & 15)] as const);
/** Where each of the 16 bytes' two digits go in "xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx". */
const AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
/** Random bytes for 256 ids, refilled when used up (as node's randomUUID does). */
const pool = Buffer.allocUnsafe(16 * 256);
let next = pool.length;
const text = Buffer.alloc(36);
text[8] = text[13] = text[18] = text[23] = 0x2d; // "-"

/**
 * A new agent id: a random (version 4) UUID, as crypto.randomUUID makes,
 * but one flat string. randomUUID joins 20 pieces with `+`, which V8 keeps
 * as a tree of ~14 concatenation nodes until something reads the text —
 * and an agent's id is read constantly: compared in every route list it
 * joins (memory-agent-store.ts), hashed into maps and sets. The store's
 * write measured ~25% slower with such ids than with flat ones; this is
 * also faster than randomUUID itself (~360 vs ~460 ns here).
 */
export function newAgentId(): string {
  if (next === pool.length) {
    randomFillSync(pool);
    next = 0;
  }
  pool[next + 6] = (pool[next + 6]! & 0x0f) | 0x40; // version 4
  pool[next + 8] = (pool[next + 8]! & 0x3f) | 0x80; // variant 10xx (RFC 9562)
  for (let i = 0; i < 16; i++) {
    const hex = HEX[pool[next + i]!]!;
    text[AT[i]!] = hex[0];
    text[AT[i]! + 1] = hex[1];
  }
  next += 16;
  return text.toString("latin1", 0, 36);
}
