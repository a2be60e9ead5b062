import type { Redis } from "ioredis";
import type { Logger } from "../logger.js";

/**
 * Who probes. Replicas sharing a registry must not each probe the whole
 * fleet: one of them holds the right, and another takes it over when that
 * one dies.
 */
export interface ProbeLeadership {
  /** Starts campaigning; `onChange` hears each gain and loss of the right to probe. */
  start(onChange: (leading: boolean) => void): void;
  readonly leading: boolean;
  /** Gives the right up (so another replica takes it at once) and stops; bounded in time. */
  stop(): Promise<void>;
  /**
   * Agents the probes degraded, as the probers share them (absent: this
   * process is the only prober and remembers them itself). A new leader
   * reads them, so it recovers what its predecessor degraded.
   */
  readonly degraded?: DegradedAgents;
}

export interface DegradedAgents {
  list(): Promise<string[]>;
  /**
   * Resolves once written (never rejects: a lost write costs at most one
   * agent left DEGRADED until the probes degrade it again). The prober
   * writes "degraded" before it changes the status, so a leader killed in
   * between leaves its successor the agent to recover.
   */
  set(agentId: string, degraded: boolean): Promise<void>;
}

/** Without Redis there is one process: it probes. */
export class SoleProber implements ProbeLeadership {
  leading = false;
  start(onChange: (leading: boolean) => void): void {
    this.leading = true;
    onChange(true);
  }
  async stop(): Promise<void> {
    this.leading = false;
  }
}

/**
 * Acquire or renew in one step: the key is ours (renewed) or free (taken);
 * otherwise the holder's remaining time, so a follower retries the moment
 * it ends. Returns [1, 0] when held, [0, pttl] when not.
 */
const ACQUIRE = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, 0}
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
`;

/** Deletes the key only while it is still ours. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * A leader lease in Redis (`<prefix>:probes:leader`): SET NX PX to take it,
 * renewed every third of its TTL by a script that compares the holder
 * first. A follower asks again when the holder's time runs out (PTTL), so a
 * leader that dies is replaced within the TTL. A leader that cannot renew
 * stops leading when its own TTL, counted from the last renewal it SENT,
 * runs out — before Redis lets anyone else in — so two replicas never
 * probe at once for longer than a command's flight. Wall-clock time: Redis
 * expires keys by it too.
 */
export class RedisLeaderLease implements ProbeLeadership {
  leading = false;
  private onChange: (leading: boolean) => void = () => undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Drops leadership when no renewal succeeded in time (a Redis that hangs or is gone). */
  private expiry: NodeJS.Timeout | undefined;
  private stopped = false;
  private redis: Redis | undefined;
  readonly degraded: DegradedAgents = {
    list: async () => (this.redis ? await this.redis.smembers(`${this.opts.key}:degraded`) : []),
    set: async (agentId, degraded) => {
      const key = `${this.opts.key}:degraded`;
      await (degraded ? this.redis?.sadd(key, agentId) : this.redis?.srem(key, agentId))?.catch(() => undefined);
    },
  };

  constructor(
    private readonly opts: {
      readonly url: string;
      readonly key: string;
      /** Unique per process: names the holder. */
      readonly token: string;
      readonly ttlMs: number;
      readonly log: Logger;
    },
  ) {}

  private get ttlMs(): number {
    return this.opts.ttlMs;
  }

  private get log(): Logger {
    return this.opts.log;
  }

  start(onChange: (leading: boolean) => void): void {
    this.onChange = onChange;
    void this.connect();
  }

  /** ioredis is loaded only when Redis is configured (start-up time). */
  private async connect(): Promise<void> {
    const { Redis } = await import("ioredis");
    if (this.stopped) return;
    this.redis = new Redis(this.opts.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      // A command that hangs must not outlive a renewal period.
      commandTimeout: Math.max(100, Math.floor(this.ttlMs / 3)),
      connectionName: "fc-probe-leader",
    });
    this.redis.on("error", (err: Error) => this.log.debug({ err: err.message }, "redis error (probe leader lease)"));
    await this.redis.connect().catch(() => undefined);
    await this.campaign(this.redis);
  }

  private async campaign(redis: Redis): Promise<void> {
    if (this.stopped) return;
    const sentAt = Date.now();
    let next = Math.max(50, Math.floor(this.ttlMs / 3));
    try {
      const [held, pttl] = (await redis.eval(ACQUIRE, 1, this.opts.key, this.opts.token, String(this.ttlMs))) as [number, number];
      if (this.stopped) return;
      if (held === 1) {
        this.armExpiry(sentAt + this.ttlMs - Date.now());
        this.set(true);
      } else {
        this.set(false);
        // -1: a key without expiry (not ours to break); -2: just gone.
        if (pttl >= -2) next = Math.min(next, Math.max(0, pttl) + 10);
      }
    } catch (err) {
      // The expiry timer drops leadership when renewals keep failing.
      this.log.debug({ err: (err as Error).message }, "probe leader lease: redis command failed");
      next = Math.min(next, 250);
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.campaign(redis), next);
    this.timer.unref();
  }

  private armExpiry(ms: number): void {
    clearTimeout(this.expiry);
    this.expiry = setTimeout(() => {
      this.log.warn("probe leader lease not renewed in time: probing stops on this replica");
      this.set(false);
    }, Math.max(0, ms));
    this.expiry.unref();
  }

  private set(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    if (!leading) clearTimeout(this.expiry);
    this.log.info({ leading }, leading ? "probe leader: this replica probes" : "probe leader: another replica probes");
    this.onChange(leading);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const wasLeading = this.leading;
    this.set(false);
    const redis = this.redis;
    if (!redis) return;
    if (wasLeading) {
      // Handing over at once beats making the next leader wait out the TTL; never waited for long.
      await Promise.race([
        redis.eval(RELEASE, 1, this.opts.key, this.opts.token).catch(() => undefined),
        new Promise((r) => setTimeout(r, 300).unref()),
      ]);
    }
    redis.disconnect();
  }
}
