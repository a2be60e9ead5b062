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

  /** Throws RESOURCE_EXHAUSTED (with retry-after) when the tenant is over its quota. */
  tenant(tenant: string): Promise<void> {
    const points = this.config.perTenant[tenant] ?? this.config.tenantPerWindow;
    let limiter = this.tenantLimiters.get(points);
    if (!limiter) this.tenantLimiters.set(points, (limiter = this.limiter(points, `${this.prefix}:rl:tenant:${points}`)));
    return limiter.consume(tenant).then(allowed, overTenant);
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

// One promise per check (the limiter's own, and its `then`): the quota runs on every call.
const allowed = (): void => undefined;
const refusal = (what: string) => (res: unknown) => {
  if (res instanceof RateLimiterRes) throw errors.rateLimited(Math.max(1, Math.ceil(res.msBeforeNext / 1000)), what);
  throw res;
};
const overTenant = refusal("tenant");
const overHeartbeat = refusal("heartbeat");
