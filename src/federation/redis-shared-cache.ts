import { Redis } from "ioredis";
import type { Logger } from "../logger.js";
import type { SharedCache } from "./remote-cache.js";

/** A shared read waits this long at most: a slow Redis is a miss, not a slower federated read. */
const COMMAND_TIMEOUT_MS = 100;

/**
 * The remote cache's shared half in Redis: `<prefix>:fedcache:<key>` holds
 * an entry (SET with PX = fresh + stale time), `<prefix>:fedcache-claim:<key>`
 * who refreshes it (SET NX PX). As the task store: offline queue off and
 * one retry, so an unreachable Redis costs a failed call (a miss), never a
 * wait.
 */
export class RedisSharedCache implements SharedCache {
  private readonly redis: Redis;
  private readonly prefix: string;

  constructor(opts: { readonly url: string; readonly prefix: string }, log: Logger) {
    this.prefix = `${opts.prefix}:fedcache`;
    this.redis = new Redis(opts.url, {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      commandTimeout: COMMAND_TIMEOUT_MS,
      retryStrategy: (times: number) => Math.min(2_000, 50 * 2 ** Math.min(times, 6)),
      connectionName: "fc-fedcache",
    });
    this.redis.on("error", (err: Error) => log.debug({ err: err.message }, "redis error (federation cache)"));
    this.redis.on("ready", () => log.info({ prefix: this.prefix }, "federation cache shared through redis"));
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const value = await this.redis.getBuffer(`${this.prefix}:${key}`);
    // A copy: ioredis may hand out a slice of a larger buffer.
    return value ? new Uint8Array(value) : undefined;
  }

  set(key: string, value: Uint8Array, ttlMs: number): void {
    this.redis.set(`${this.prefix}:${key}`, Buffer.from(value.buffer, value.byteOffset, value.byteLength), "PX", ttlMs).catch(() => undefined);
  }

  async claim(key: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(`${this.prefix}-claim:${key}`, "1", "PX", ttlMs, "NX")) === "OK";
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
