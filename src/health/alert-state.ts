import type { Redis } from "ioredis";
import type { Logger } from "../logger.js";
import type { RemediationRecord } from "./remediation.js";
import type { SloAlert } from "./slo.js";

/**
 * What alerting remembers beyond one process: the alerts firing (so a new
 * probe leader adopts them — same alert id, resolved later under it — and
 * does not fire them again) and the Praetorian Guard's dedup, cooldown,
 * rate and audit trail (so a new leader does not remediate again within
 * the cooldown, and every replica serves the same trail). Memory when
 * there is one process; Redis (REDIS_URL) when replicas share the lease.
 */

/** The firing alerts, by the SLO engine's key (`${slo}|${subject key}|${severity}`). */
export interface FiringAlerts {
  /** Every alert still firing (a new leader adopts them). Memory answers at once. */
  list(): Promise<ReadonlyMap<string, SloAlert>> | ReadonlyMap<string, SloAlert>;
  put(key: string, alert: SloAlert): Promise<void>;
  delete(key: string): Promise<void>;
  /** Keeps the shared set from expiring while alerts fire (throttled by the store). */
  touch(): void;
  close(): void;
}

/** Whether one firing alert is acted on, decided in one step. */
export type Admission =
  | { readonly kind: "duplicate" }
  /** The subject was remediated at `last` (epoch ms), within the cooldown. */
  | { readonly kind: "cooldown"; readonly last: number }
  | { readonly kind: "rate" }
  | { readonly kind: "send" };

export interface AdmissionInput {
  readonly alertId: string;
  /** `${tenant}\0${kind}\0${subject}` */
  readonly subject: string;
  readonly remediationId: string;
  /** Epoch ms. */
  readonly now: number;
  readonly cooldownMs: number;
  readonly maxPerMinute: number;
}

/** The Praetorian Guard's memory: dedup per alert, cooldown per subject, the rate bound, the audit trail. */
export interface RemediationLedger {
  /**
   * A duplicate alert is dropped; a subject within its cooldown is
   * suppressed; past the rate it is held back; else the send is counted
   * and the subject's cooldown starts — all at once.
   */
  admit(input: AdmissionInput): Promise<Admission>;
  /** Writes a trail entry (`isNew`: appended, the oldest dropped past the trail's size; else updated if still kept). */
  save(record: RemediationRecord, isNew: boolean): Promise<void>;
  /** The tenant's trail, newest first. */
  list(tenant: string, limit: number): Promise<readonly RemediationRecord[]>;
  close(): void;
}

/** One process alerts: its memory is the state. */
export class MemoryFiringAlerts implements FiringAlerts {
  private readonly alerts = new Map<string, SloAlert>();
  list(): ReadonlyMap<string, SloAlert> {
    return this.alerts;
  }
  async put(key: string, alert: SloAlert): Promise<void> {
    this.alerts.set(key, alert);
  }
  async delete(key: string): Promise<void> {
    this.alerts.delete(key);
  }
  touch(): void {}
  close(): void {}
}

/** Subjects whose cooldown is remembered at most (expired ones are dropped first). */
const MAX_COOLDOWNS = 10_000;

export class MemoryRemediationLedger implements RemediationLedger {
  /** Oldest first, at most `auditSize`. */
  private readonly trail: RemediationRecord[] = [];
  /** Alerts already acted on (bounded: insertion order, oldest dropped). */
  private readonly handled = new Set<string>();
  /** When each subject was last remediated (epoch ms). */
  private readonly lastSent = new Map<string, number>();
  /** Send times of the last minute (at most maxPerMinute). */
  private readonly sends: number[] = [];

  constructor(private readonly auditSize: number) {}

  async admit(a: AdmissionInput): Promise<Admission> {
    if (this.handled.has(a.alertId)) return { kind: "duplicate" };
    this.handled.add(a.alertId);
    if (this.handled.size > this.auditSize * 2) this.handled.delete(this.handled.values().next().value!);
    const last = this.lastSent.get(a.subject);
    if (last !== undefined && a.now - last < a.cooldownMs) return { kind: "cooldown", last };
    while (this.sends.length > 0 && this.sends[0]! <= a.now - 60_000) this.sends.shift();
    if (this.sends.length >= a.maxPerMinute) return { kind: "rate" };
    this.sends.push(a.now);
    if (this.lastSent.size >= MAX_COOLDOWNS) {
      for (const [k, t] of this.lastSent) if (a.now - t >= a.cooldownMs) this.lastSent.delete(k);
      if (this.lastSent.size >= MAX_COOLDOWNS) this.lastSent.delete(this.lastSent.keys().next().value!);
    }
    this.lastSent.set(a.subject, a.now);
    return { kind: "send" };
  }

  async save(record: RemediationRecord, isNew: boolean): Promise<void> {
    // Records are kept by reference: an update is already in place.
    if (!isNew) return;
    this.trail.push(record);
    if (this.trail.length > this.auditSize) this.trail.shift();
  }

  async list(tenant: string, limit: number): Promise<RemediationRecord[]> {
    const out: RemediationRecord[] = [];
    for (let i = this.trail.length - 1; i >= 0 && out.length < limit; i--) {
      if (this.trail[i]!.alert.tenant === tenant) out.push(this.trail[i]!);
    }
    return out;
  }

  close(): void {}
}

/**
 * One step of admission: KEYS alert marker, subject cooldown, sends of the
 * last minute; ARGV now, cooldown ms, max per minute, remediation id,
 * marker TTL. Returns {0} duplicate, {1, last} cooldown, {2} rate, {3} send.
 */
const ADMIT = `
local now, cooldown, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[5]) then return {0} end
local last = redis.call('GET', KEYS[2])
if last and now - tonumber(last) < cooldown then return {1, tonumber(last)} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[3]) >= max then return {2} end
redis.call('ZADD', KEYS[3], now, ARGV[4])
redis.call('PEXPIRE', KEYS[3], 60000)
if cooldown > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return {3}
`;

/**
 * A trail entry: KEYS the id list (newest first), the records hash; ARGV
 * id, JSON, trail size, new (1/0). A new entry is pushed and the oldest
 * dropped past the size; an update of an entry already dropped is not
 * written back.
 */
const SAVE = `
local list, records, id = KEYS[1], KEYS[2], ARGV[1]
if redis.call('HEXISTS', records, id) == 0 then
  if ARGV[4] ~= '1' then return 0 end
  redis.call('LPUSH', list, id)
  local size = tonumber(ARGV[3])
  while redis.call('LLEN', list) > size do
    local old = redis.call('RPOP', list)
    if not old then break end
    redis.call('HDEL', records, old)
  end
end
redis.call('HSET', records, id, ARGV[2])
return 1
`;

type AlertRedis = Redis & {
  fcAdmit(alertKey: string, cooldownKey: string, sendsKey: string, now: number, cooldownMs: number, max: number, id: string, ttl: number): Promise<number[]>;
  fcSaveRemediation(list: string, records: string, id: string, json: string, size: number, isNew: string): Promise<number>;
};

/**
 * One Redis connection for both stores of a replica (ioredis is loaded
 * only when Redis is configured), closed when the last store using it is.
 */
export class AlertRedisConnection {
  private client: Promise<AlertRedis> | undefined;
  private users = 0;
  constructor(
    private readonly url: string,
    private readonly log: Logger,
  ) {}

  retain(): this {
    this.users++;
    return this;
  }

  get(): Promise<AlertRedis> {
    this.client ??= import("ioredis").then(async ({ Redis }) => {
      const r = new Redis(this.url, {
        lazyConnect: true,
        maxRetriesPerRequest: 1,
        enableOfflineQueue: false,
        retryStrategy: (times: number) => Math.min(2_000, 50 * 2 ** Math.min(times, 6)),
        connectionName: "fc-alerts",
      }) as AlertRedis;
      r.defineCommand("fcAdmit", { numberOfKeys: 3, lua: ADMIT });
      r.defineCommand("fcSaveRemediation", { numberOfKeys: 2, lua: SAVE });
      r.on("error", (err: Error) => this.log.debug({ err: err.message }, "redis error (alerts)"));
      // Commands are not queued while it connects: the first one waits for the connection (one
      // that fails now is retried by ioredis; commands fail until it is back).
      await r.connect().catch(() => undefined);
      return r;
    });
    return this.client;
  }

  close(): void {
    if (--this.users > 0) return;
    void this.client?.then((r) => r.disconnect());
  }
}

/**
 * Firing alerts in a hash `<prefix>:health:firing` (key → alert JSON).
 * Bounded by the engine (one entry per SLO × tracked subject × severity,
 * removed when it resolves); the hash expires `ttlMs` after the leader
 * last wrote or touched it, so state left by a fleet that stopped alerting
 * goes.
 */
export class RedisFiringAlerts implements FiringAlerts {
  private readonly key: string;
  private touchedAt = 0;

  constructor(
    private readonly redis: AlertRedisConnection,
    prefix: string,
    private readonly ttlMs: number,
  ) {
    redis.retain();
    this.key = `${prefix}:health:firing`;
  }

  async list(): Promise<ReadonlyMap<string, SloAlert>> {
    const r = await this.redis.get();
    const all = await r.hgetall(this.key);
    const out = new Map<string, SloAlert>();
    for (const [k, v] of Object.entries(all)) {
      try {
        out.set(k, JSON.parse(v) as SloAlert);
      } catch {
        // Not ours to read: left to expire.
      }
    }
    return out;
  }

  async put(key: string, alert: SloAlert): Promise<void> {
    const r = await this.redis.get();
    this.touchedAt = Date.now();
    await r.multi().hset(this.key, key, JSON.stringify(alert)).pexpire(this.key, this.ttlMs).exec();
  }

  async delete(key: string): Promise<void> {
    const r = await this.redis.get();
    await r.hdel(this.key, key);
  }

  touch(): void {
    const now = Date.now();
    if (now - this.touchedAt < this.ttlMs / 4) return;
    this.touchedAt = now;
    void this.redis
      .get()
      .then((r) => r.pexpire(this.key, this.ttlMs))
      .catch(() => (this.touchedAt = 0));
  }

  close(): void {
    this.redis.close();
  }
}

/** Records read per HMGET when listing the trail. */
const LIST_CHUNK = 200;

/**
 * The Guard's state in Redis (`<prefix>:health:rem:…`): a marker per
 * alert acted on (expires after `markerTtlMs`), a key per subject in its
 * cooldown (expires with the cooldown), a sorted set of the last minute's
 * sends, and the audit trail — a list of ids, newest first, trimmed to
 * REMEDIATION_AUDIT_SIZE, and a hash of their records.
 */
export class RedisRemediationLedger implements RemediationLedger {
  private readonly base: string;

  constructor(
    private readonly redis: AlertRedisConnection,
    prefix: string,
    private readonly auditSize: number,
    private readonly markerTtlMs: number,
  ) {
    redis.retain();
    this.base = `${prefix}:health:rem`;
  }

  async admit(a: AdmissionInput): Promise<Admission> {
    const r = await this.redis.get();
    const [verdict, last] = await r.fcAdmit(
      `${this.base}:alert:${a.alertId}`,
      `${this.base}:cooldown:${a.subject.split("\u0000").map(encodeURIComponent).join(":")}`,
      `${this.base}:sends`,
      a.now,
      a.cooldownMs,
      a.maxPerMinute,
      a.remediationId,
      this.markerTtlMs,
    );
    switch (verdict) {
      case 0:
        return { kind: "duplicate" };
      case 1:
        return { kind: "cooldown", last: Number(last) };
      case 2:
        return { kind: "rate" };
      default:
        return { kind: "send" };
    }
  }

  async save(record: RemediationRecord, isNew: boolean): Promise<void> {
    const r = await this.redis.get();
    await r.fcSaveRemediation(`${this.base}:trail`, `${this.base}:records`, record.remediationId, JSON.stringify(record), this.auditSize, isNew ? "1" : "0");
  }

  async list(tenant: string, limit: number): Promise<RemediationRecord[]> {
    const r = await this.redis.get();
    const out: RemediationRecord[] = [];
    for (let start = 0; start < this.auditSize && out.length < limit; start += LIST_CHUNK) {
      const ids = await r.lrange(`${this.base}:trail`, start, start + LIST_CHUNK - 1);
      if (ids.length === 0) break;
      const values = await r.hmget(`${this.base}:records`, ...ids);
      for (const v of values) {
        if (v === null) continue;
        const record = JSON.parse(v) as RemediationRecord;
        if (record.alert.tenant === tenant) out.push(record);
        if (out.length === limit) break;
      }
      if (ids.length < LIST_CHUNK) break;
    }
    return out;
  }

  close(): void {
    this.redis.close();
  }
}
