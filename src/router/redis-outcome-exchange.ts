import { Redis } from "ioredis";
import type { ComponentStatus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import type { OutcomeBatch, OutcomeExchange } from "./outcome-sharing.js";

export interface RedisOutcomeExchangeOptions {
  readonly url: string;
  /** Channel `<prefix>:outcomes`; replicas that share the prefix share outcomes. */
  readonly prefix: string;
  readonly log: Logger;
}

/**
 * Outcome batches over Redis pub/sub: one PUBLISH per batch interval per
 * replica, nothing per Route. Pub/sub and not the event stream: batches are
 * replica-to-replica traffic no client should see or resume, and a replica
 * that misses some while disconnected only knows a little less until the
 * evidence decays (a restart replays MongoDB). A batch that cannot be sent
 * at once is dropped, never queued without bound.
 */
export class RedisOutcomeExchange implements OutcomeExchange {
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly channel: string;
  private readonly listeners: ((batch: OutcomeBatch) => void)[] = [];
  private dropped = 0;

  constructor(private readonly opts: RedisOutcomeExchangeOptions) {
    this.channel = `${opts.prefix}:outcomes`;
    const common = {
      lazyConnect: true,
      maxRetriesPerRequest: null,
      retryStrategy: (times: number) => Math.min(2_000, 50 * 2 ** Math.min(times, 6)),
    };
    this.pub = new Redis(opts.url, { ...common, enableOfflineQueue: false, connectionName: "fc-outcomes-publish" });
    this.sub = new Redis(opts.url, { ...common, connectionName: "fc-outcomes-subscribe" });
    for (const conn of [this.pub, this.sub]) conn.on("error", (err: Error) => opts.log.debug({ err: err.message }, "redis error (outcomes)"));
    this.sub.on("message", (channel: string, text: string) => {
      if (channel !== this.channel) return;
      let batch: OutcomeBatch;
      try {
        batch = JSON.parse(text) as OutcomeBatch;
      } catch {
        return;
      }
      for (const l of this.listeners) l(batch);
    });
  }

  start(): void {
    void this.pub.connect().catch(() => undefined);
    // ioredis subscribes again after every reconnect.
    void this.sub
      .connect()
      .then(() => this.sub.subscribe(this.channel))
      .catch((err: unknown) => this.opts.log.warn({ err: String(err) }, "outcome channel not subscribed"));
  }

  send(batch: OutcomeBatch): void {
    if (this.pub.status !== "ready") {
      this.dropped++;
      return;
    }
    this.pub.publish(this.channel, JSON.stringify(batch)).catch(() => this.dropped++);
  }

  listen(deliver: (batch: OutcomeBatch) => void): void {
    this.listeners.push(deliver);
  }

  health(): ComponentStatus {
    const ok = this.pub.status === "ready" && this.sub.status === "ready";
    return { ok, message: ok ? "connected" : `outcome sharing unreachable (${this.dropped} batch(es) not sent)` };
  }

  async close(): Promise<void> {
    this.listeners.length = 0;
    this.pub.disconnect();
    this.sub.disconnect();
  }
}
