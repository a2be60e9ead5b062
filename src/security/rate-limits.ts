import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from "rate-limiter-flexible";
import { errors } from "../errors.js";

export interface RateLimitConfig {
  /** Requests per window per tenant. */
  readonly tenantPerWindow: number;
  /** Overrides of tenantPerWindow by tenant. */
  readonly perTenant: Readonly<Record<string, number>>;
  /** Heartbeats per window per agent. */
  readonly heartbeatsPerWindow: number;
  readonly windowSec: number;
}

/**
 * Per-tenant request quotas and per-agent heartbeat quotas, with
 * rate-limiter-flexible: in memory by default; in Redis when shared, so a
 * quota holds across replicas, with an in-memory insurance limiter that
 * takes over while Redis is unreachable.
 */
export class RateLimits {
  private readonly tenantLimiters = new Map<number, RateLimiterAbstract>();
  /** Points taken ahead per tenant (see tenant()). */
  private readonly reserves = new Map<string, Reserve>();
  private readonly heartbeat: RateLimiterAbstract;
  private readonly redis: Redis | undefined;
  private readonly prefix: string;

  /** ioredis is loaded only when a shared store is configured (start-up time). */
  static async create(config: RateLimitConfig, shared: { url: string; prefix: string } | undefined): Promise<RateLimits> {
    if (!shared) return new RateLimits(config, undefined, undefined);
    const { Redis } = await import("ioredis");
    const redis = new Redis(shared.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectionName: "fc-rate-limits",
    });
    return new RateLimits(config, redis, shared.prefix);
  }

  private constructor(
    private readonly config: RateLimitConfig,
    redis: Redis | undefined,
    prefix: string | undefined,
  ) {
    this.redis = redis;
    this.redis?.on("error", () => undefined);
    this.prefix = prefix ?? "fc";
    this.heartbeat = this.limiter(config.heartbeatsPerWindow, `${this.prefix}:rl:hb`);
  }

  /**
   * Counts one call against the tenant's quota: undefined when it was
   * counted at once (a point of the tenant's reserve), else a promise that
   * rejects with RESOURCE_EXHAUSTED (with retry-after) over the quota.
   *
   * Quotas of at least 64 per window are taken from the limiter (memory or
   * Redis) in chunks of up to 1/64 of the quota (at most 32 points), held
   * here until spent or until the window they were taken in ends, so most
   * calls are counted without a promise — and, with Redis, without a round
   * trip. Once fewer than two chunks are left in a window, calls are
   * counted one at a time again, so a replica alone is refused exactly at
   * the quota; replicas sharing Redis may each hold one chunk, and one that
   * asks for a chunk when less than one is left loses those last points for
   * the window (at most 1/64 of the quota refused early, never any
   * admitted over it). Smaller quotas count every call with the limiter.
   */
  tenant(tenant: string): Promise<void> | undefined {
    // The common case first: a point of the tenant's reserve, within its window.
    const held = this.reserves.get(tenant);
    if (held !== undefined && held.points > 0 && Date.now() < held.until) {
      held.points--;
      return undefined;
    }
    const points = this.config.perTenant[tenant] ?? this.config.tenantPerWindow;
    let limiter = this.tenantLimiters.get(points);
    if (!limiter) this.tenantLimiters.set(points, (limiter = this.limiter(points, `${this.prefix}:rl:tenant:${points}`)));
    const chunk = Math.min(MAX_CHUNK, Math.floor(points / 64));
    if (chunk <= 1) return limiter.consume(tenant).then(allowed, overTenant);
    let q = this.reserves.get(tenant);
    if (!q) {
      if (this.reserves.size >= MAX_RESERVES) this.reserves.clear();
      this.reserves.set(tenant, (q = { points: 0, until: 0, single: false, taking: undefined }));
    }
    const now = Date.now();
    if (now >= q.until) {
      q.points = 0;
      q.single = false;
    } else if (q.points > 0) {
      q.points--;
      return undefined;
    }
    if (q.taking) return q.taking.then(() => this.tenant(tenant));
    if (q.single) return limiter.consume(tenant).then(allowed, overTenant);
    const reserve = q;
    const taking = limiter.consume(tenant, chunk).then(
      (res) => {
        reserve.taking = undefined;
        reserve.points = chunk - 1; // one is this call's
        reserve.until = Date.now() + res.msBeforeNext;
        reserve.single = res.remainingPoints < 2 * chunk;
      },
      (res: unknown) => {
        reserve.taking = undefined;
        if (res instanceof RateLimiterRes) {
          reserve.until = Date.now() + res.msBeforeNext;
          reserve.single = true;
        }
        return overTenant(res);
      },
    );
    q.taking = taking;
    return taking;
  }

  /**
   * Per agent, counted within the caller's tenant: another tenant naming the
   * same agent id spends its own bucket, never the agent's.
   */
  agentHeartbeat(tenant: string, agentId: string): Promise<void> {
    return this.heartbeat.consume(`${tenant}/${agentId}`).then(allowed, overHeartbeat);
  }

  /**
   * Connects the shared store, waiting at most `timeoutMs`: until Redis
   * answers, the in-memory insurance limiter counts alone.
   */
  async start(timeoutMs = 2_000): Promise<void> {
    if (!this.redis) return;
    const connected = this.redis.connect().catch(() => undefined);
    await Promise.race([connected, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  close(): void {
    this.redis?.disconnect();
  }

  private limiter(points: number, keyPrefix: string): RateLimiterAbstract {
    const duration = this.config.windowSec;
    const memory = new RateLimiterMemory({ points, duration, keyPrefix });
    if (!this.redis) return memory;
    return new RateLimiterRedis({ storeClient: this.redis, points, duration, keyPrefix, insuranceLimiter: memory });
  }
}

/** A tenant's points taken from the limiter and not spent yet, within the window they were taken in. */
interface Reserve {
  points: number;
  /** When the window the points belong to ends (ms since the epoch). */
  until: number;
  /** Fewer than two chunks were left: count one call at a time until the window ends. */
  single: boolean;
  /** A chunk being taken: calls meanwhile wait for it. */
  taking: Promise<void> | undefined;
}

/** The largest chunk of a quota taken ahead. */
const MAX_CHUNK = 32;
/** Tenants whose reserves are held (past it they are all dropped: a dropped reserve's points go unused). */
const MAX_RESERVES = 10_000;

// One promise per check (the limiter's own, and its `then`) when a call is counted by the limiter.
const allowed = (): void => undefined;
const refusal = (what: string) => (res: unknown) => {
  if (res instanceof RateLimiterRes) throw errors.rateLimited(Math.max(1, Math.ceil(res.msBeforeNext / 1000)), what);
  throw res;
};
const overTenant = refusal("tenant");
const overHeartbeat = refusal("heartbeat");
