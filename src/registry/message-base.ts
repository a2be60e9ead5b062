import type { Message } from "@bufbuild/protobuf";

/**
 * Answers built on a base: a message that copies the fields of another,
 * immutable message of the same type (its base, built once) and sets a
 * few more. It names its base, so the transport writes the base's cached
 * encoding followed by only the fields the base leaves unset
 * (transport/message-encoding.ts) instead of encoding every field again.
 * A revision of an agent is built on the agent's static fields; a
 * heartbeat answer on the part that changes only with the passport.
 */
const BASE = Symbol("base message");

/** `message` (a copy of `base` plus fields the base leaves unset), naming its base. */
export function withBase<T extends Message>(message: T, base: T): T {
  Object.defineProperty(message, BASE, { value: base });
  return message;
}

/** The base a message was built on, if any. */
export function baseOf(message: object): Message | undefined {
  return (message as { [BASE]?: Message })[BASE];
}
