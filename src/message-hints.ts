import type { Message } from "@bufbuild/protobuf";

/**
 * Hints a message's builder leaves on the message itself for the
 * transport's encoders (transport/message-encoding.ts), in non-enumerable
 * symbol slots that toBinary, toJson, spreads and Object.assign ignore:
 *
 * - immutable: it will never be mutated again, so its encoding may be
 *   cached on it and reused by every answer that holds it (agent messages
 *   built once per record revision, a cached Discover answer);
 * - base: it copies the set fields of another, immutable message of its
 *   type (built once) and sets a few more, so its encoding is the base's
 *   cached bytes followed by only those fields (an agent revision on its
 *   static fields, a heartbeat answer on its passport's part).
 *
 * Nothing is assumed for a type: a message nobody marked is encoded in full.
 */
const IMMUTABLE = Symbol("immutable message");
const BASE = Symbol("base message");

export function markImmutable<T extends Message>(message: T): T {
  Object.defineProperty(message, IMMUTABLE, { value: true });
  return message;
}

export function isImmutable(message: unknown): boolean {
  return (message as Record<symbol, boolean | undefined>)[IMMUTABLE] === true;
}

/** `message` (a copy of `base` plus fields the base leaves unset), naming its base; the base is immutable from now on. */
export function withBase<T extends Message>(message: T, base: T): T {
  if (!isImmutable(base)) markImmutable(base);
  Object.defineProperty(message, BASE, { value: base });
  return message;
}

/** The base a message was built on, if any. */
export function baseOf(message: object): Message | undefined {
  return (message as { [BASE]?: Message })[BASE];
}

/**
 * What validation checks of a JSON object (validation/requests.ts): its
 * levels (a value in the top object is at level 2) and the bytes of its
 * JSON text. Noted by the request decoder on the deep-frozen schemas it
 * shares between requests (transport/simple-decoding.ts), which cannot
 * change, so a schema sent again is not walked again.
 */
export interface JsonFacts {
  readonly depth: number;
  readonly bytes: number;
}
const JSON_FACTS = Symbol("json facts");

/** Notes the facts on an object about to be deep-frozen. */
export function noteJsonFacts<T extends object>(o: T, facts: JsonFacts): T {
  Object.defineProperty(o, JSON_FACTS, { value: facts });
  return o;
}

export function jsonFacts(o: object): JsonFacts | undefined {
  return (o as { [JSON_FACTS]?: JsonFacts })[JSON_FACTS];
}
