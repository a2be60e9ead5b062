import { ConnectError } from "@connectrpc/connect";
import { errors } from "../errors.js";
import type { EventBus, EventFilter, PublishedEvent } from "./event-bus.js";

/**
 * Turns a bus subscription into an async iterable with a bounded queue. A
 * subscriber that falls `queueLimit` events behind ends with
 * RESOURCE_EXHAUSTED instead of slowing the publisher or the other
 * subscribers.
 */
export async function* eventStream(
  bus: EventBus,
  filter: EventFilter,
  afterId: bigint | undefined,
  queueLimit: number,
  signal: AbortSignal,
): AsyncGenerator<PublishedEvent> {
  const queue: PublishedEvent[] = [];
  let overflowed = false;
  let wake: (() => void) | undefined;
  const subscription = bus.subscribe(filter, afterId, (event) => {
    if (queue.length >= queueLimit) overflowed = true;
    else queue.push(event);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    while (!signal.aborted) {
      if (overflowed) throw errors.subscriberTooSlow(queueLimit);
      const next = queue.shift();
      if (next) {
        yield next;
        continue;
      }
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    // Shutdown aborts with UNAVAILABLE so clients reconnect to another
    // replica; a deadline ends with its own code. A client that went away
    // needs no status.
    if (signal.reason instanceof ConnectError) throw signal.reason;
  } finally {
    subscription.close();
    signal.removeEventListener("abort", onAbort);
  }
}
