import { LRUCache } from "lru-cache";
import type { Clock } from "../clock.js";
import type { Logger } from "../logger.js";

export interface RemoteCacheOptions {
  /** Bytes the cache may hold (answers as encoded, keys and a per-entry overhead). */
  readonly maxBytes: number;
  /** An answer is fresh this long after it was fetched; 0 turns the cache off. */
  readonly ttlMs: number;
  /** After that, served stale (and refreshed in the background) this long at most. */
  readonly staleMs: number;
  /** The background refresh keeps this many of the hottest entries fresh (0: none). */
  readonly hot: number;
  /** Shared with the other replicas through Redis; undefined: this process only. */
  readonly redis?: { readonly url: string; readonly prefix: string };
}

/**
 * The shared half of the cache (Redis when configured): entries written
 * with PX = fresh + stale time, so replicas warm each other. Every call
 * may fail or be slow; the cache treats a failure as a miss.
 */
export interface SharedCache {
  get(key: string): Promise<Uint8Array | undefined>;
  set(key: string, value: Uint8Array, ttlMs: number): void;
  /** One refresh at a time per key across replicas: true for the one that may. */
  claim(key: string, ttlMs: number): Promise<boolean>;
  close(): Promise<void>;
}

/** The null object: this process only. */
export const noSharedCache: SharedCache = {
  get: async () => undefined,
  set: () => undefined,
  claim: async () => true,
  close: async () => undefined,
};

/** Asks the peer again (outside any caller's request) for the answer of a key, encoded. */
export type Refresher = () => Promise<Uint8Array>;

/**
 * An answer loaded for a caller, handed back as it is (decoded, stamped)
 * and encoded for the cache only after the caller's answer has gone.
 */
export interface LoadedAnswer<T> {
  readonly items: readonly T[];
  encode(): Uint8Array;
  /**
   * Encoded (and stored) only once this settles: a federated read passes
   * its whole fan-out, so one peer's answer is not encoded while the read
   * still waits for another's (the merged answer goes out first).
   */
  readonly after?: Promise<unknown>;
}

/** Counters since start, and what is held now. */
export interface RemoteCacheStats {
  /** Fresh answers served from this process's memory. */
  hits: number;
  /** Answers served from the shared cache (another replica fetched them). */
  sharedHits: number;
  /** Stale answers served at once while refreshed in the background. */
  staleHits: number;
  misses: number;
  evictions: number;
  refreshes: number;
  refreshFailures: number;
  bytes: number;
  entries: number;
}

interface Entry {
  readonly bytes: Uint8Array;
  /**
   * The answer decoded (and stamped) once, on its first read from memory,
   * and handed out as is from then on: immutable messages whose encodings
   * are cached on them, so a hit costs neither decoding nor encoding.
   */
  readonly items?: readonly unknown[];
  /** Epoch ms; then stale until freshUntil + staleMs. */
  readonly freshUntil: number;
  readonly peerId: string;
  refresh: Refresher;
  /** Uses, each decaying with HEAT_HALF_LIFE: frequency weighted by recency. */
  heat: number;
  usedAt: number;
}

/** What an entry costs beyond its bytes and key: the entry object, the LRU's slots, the refresher closure. */
export const ENTRY_OVERHEAD_BYTES = 320;
/**
 * A decoded answer's heap per byte of its encoding (generated messages, and
 * the JSON and binary encodings the transport caches on them), as measured
 * by the bench row "remote cache holding 100000 remote tools": counted
 * against the bytes too, so the bound holds for what is really held.
 */
export const DECODED_BYTES_PER_BYTE = 8;
/** The background refresh looks this often (at most) for hot entries about to go stale. */
const MIN_TICK_MS = 50;
const MAX_TICK_MS = 30_000;
/** An entry whose score fell below this is not worth a request to its peer. */
const MIN_SCORE = 0.1;
/** Shared entries start with the fresh-until time, 8 bytes, then the answer. */
const HEADER_BYTES = 8;

/**
 * Remote answers kept close: an LRU bounded by bytes (lru-cache's maxSize,
 * each entry's size its encoded answer + key + a fixed overhead), fresh for
 * `ttlMs`, then served stale for up to `staleMs` while one background
 * refresh per key fetches the new answer (stale-while-revalidate). A
 * background tick keeps the `hot` highest-scoring entries fresh before they
 * go stale: score = heat (uses, each halving every TTL: frequency ×
 * recency) × the peer's reputation. With a shared cache (Redis), a miss
 * reads it before asking the peer, and every fetched answer is written to
 * it, so a replica serves what another fetched. Only answers that passed
 * the peer checks are cached (the Federation decides; see `read`).
 */
export class RemoteCache {
  private readonly lru: LRUCache<string, Entry>;
  private readonly refreshing = new Set<string>();
  private shared: SharedCache = noSharedCache;
  private timer: NodeJS.Timeout | undefined;
  private readonly tickMs: number;
  private readonly halfLifeMs: number;
  readonly stats: RemoteCacheStats = {
    hits: 0,
    sharedHits: 0,
    staleHits: 0,
    misses: 0,
    evictions: 0,
    refreshes: 0,
    refreshFailures: 0,
    bytes: 0,
    entries: 0,
  };

  constructor(
    private readonly opts: RemoteCacheOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** The peer's reputation now (0..1; 0 for a peer that is gone). */
    private readonly reputation: (peerId: string) => number,
  ) {
    this.lru = new LRUCache<string, Entry>({
      maxSize: Math.max(1, opts.maxBytes),
      sizeCalculation: (e, key) =>
        e.bytes.byteLength * (e.items ? 1 + DECODED_BYTES_PER_BYTE : 1) + key.length * 2 + ENTRY_OVERHEAD_BYTES,
      dispose: (_e, _k, reason) => {
        if (reason === "evict") this.stats.evictions++;
      },
    });
    this.tickMs = Math.min(MAX_TICK_MS, Math.max(MIN_TICK_MS, Math.floor(opts.ttlMs / 4)));
    this.halfLifeMs = Math.max(1_000, opts.ttlMs);
  }

  get enabled(): boolean {
    return this.opts.ttlMs > 0;
  }

  /** Connects the shared cache (Redis) and starts the hot refresh (unref'd). */
  async start(): Promise<void> {
    if (!this.enabled) return;
    if (this.opts.redis && this.shared === noSharedCache) {
      const { RedisSharedCache } = await import("./redis-shared-cache.js");
      this.shared = new RedisSharedCache(this.opts.redis, this.log);
    }
    if (this.opts.hot > 0 && !this.timer) {
      this.timer = setInterval(() => this.keepHot(), this.tickMs);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    const shared = this.shared;
    this.shared = noSharedCache;
    await shared.close();
  }

  /**
   * The answer for `key`: fresh from memory, or from the shared cache; a
   * stale one at once (refreshed in the background); else `load()`'s,
   * which is stored. `load` throws for an answer that must not be cached
   * (a failure, a noisy answer): nothing is stored then.
   */
  async read<T>(
    key: string,
    peerId: string,
    load: () => Promise<Uint8Array | LoadedAnswer<T>>,
    refresh: Refresher,
    decode: (bytes: Uint8Array) => T[],
  ): Promise<readonly T[]> {
    const now = this.clock.now();
    const e = this.lru.get(key);
    if (e) {
      if (now < e.freshUntil + this.opts.staleMs) {
        this.use(e, now);
        e.refresh = refresh;
        if (now < e.freshUntil) this.stats.hits++;
        else {
          this.stats.staleHits++;
          this.revalidate(key, e);
        }
        return this.itemsOf(key, e, decode);
      }
      this.lru.delete(key);
    }
    const shared = await this.fromShared(key, peerId, refresh, now);
    if (shared) return decode(shared.bytes);
    this.stats.misses++;
    const loaded = await load();
    if (loaded instanceof Uint8Array) {
      this.store(key, peerId, loaded, refresh, 1);
      return decode(loaded);
    }
    // Encoding is not on the caller's path (a cold read waits for the slowest peer already).
    const store = () => {
      try {
        this.store(key, peerId, loaded.encode(), refresh, 1, this.clock.now(), loaded.items);
      } catch (err) {
        this.log.warn({ peer: peerId, err: (err as Error).message }, "a remote answer was not cached");
      }
    };
    if (loaded.after) void loaded.after.then(() => setImmediate(store));
    else setImmediate(store);
    return loaded.items;
  }

  /**
   * A fresh answer held in memory and already decoded, counted as a hit;
   * undefined otherwise (then `read`). Lets a federated read whose every
   * peer is answered from memory skip its deadline's machinery.
   */
  fresh<T>(key: string): readonly T[] | undefined {
    const e = this.lru.get(key);
    if (!e?.items) return undefined;
    const now = this.clock.now();
    if (now >= e.freshUntil) return undefined;
    this.use(e, now);
    this.stats.hits++;
    return e.items as readonly T[];
  }

  /** The entry's decoded answer, decoded now if it was not yet (its size grows by it). */
  private itemsOf<T>(key: string, e: Entry, decode: (bytes: Uint8Array) => T[]): readonly T[] {
    if (e.items) return e.items as readonly T[];
    const items = decode(e.bytes);
    this.lru.set(key, { ...e, items });
    return items;
  }

  /** Forgets a peer's entries (it was removed). Shared entries expire on their own. */
  forgetPeer(peerId: string): void {
    for (const [key, e] of this.lru.entries()) if (e.peerId === peerId) this.lru.delete(key);
  }

  snapshot(): RemoteCacheStats {
    this.stats.bytes = this.lru.calculatedSize;
    this.stats.entries = this.lru.size;
    return { ...this.stats };
  }

  /** One pass of the hot refresh: the `hot` best-scored entries that would go stale before the next pass are refreshed. */
  keepHot(): void {
    const now = this.clock.now();
    const horizon = now + this.tickMs * 1.5;
    const due: { key: string; e: Entry; score: number }[] = [];
    for (const [key, e] of this.lru.entries()) {
      if (e.freshUntil > horizon || this.refreshing.has(key)) continue;
      const score = this.heatOf(e, now) * this.reputation(e.peerId);
      if (score >= MIN_SCORE) due.push({ key, e, score });
    }
    due.sort((a, b) => b.score - a.score);
    for (const d of due.slice(0, this.opts.hot)) this.revalidate(d.key, d.e);
  }

  private heatOf(e: Entry, now: number): number {
    return e.heat * 2 ** (-(now - e.usedAt) / this.halfLifeMs);
  }

  private use(e: Entry, now: number): void {
    e.heat = this.heatOf(e, now) + 1;
    e.usedAt = now;
  }

  private store(
    key: string,
    peerId: string,
    bytes: Uint8Array,
    refresh: Refresher,
    heat: number,
    usedAt = this.clock.now(),
    items?: readonly unknown[],
  ): void {
    const freshUntil = this.clock.now() + this.opts.ttlMs;
    this.lru.set(key, { bytes, items, freshUntil, peerId, refresh, heat, usedAt });
    const framed = new Uint8Array(HEADER_BYTES + bytes.byteLength);
    new DataView(framed.buffer).setFloat64(0, freshUntil);
    framed.set(bytes, HEADER_BYTES);
    this.shared.set(key, framed, this.opts.ttlMs + this.opts.staleMs);
  }

  /** A shared entry that is still servable, now held in memory too (a stale one is refreshed in the background). */
  private async fromShared(key: string, peerId: string, refresh: Refresher, now: number): Promise<Entry | undefined> {
    if (this.shared === noSharedCache) return undefined;
    const framed = await this.shared.get(key).catch(() => undefined);
    if (!framed || framed.byteLength < HEADER_BYTES) return undefined;
    const freshUntil = new DataView(framed.buffer, framed.byteOffset, framed.byteLength).getFloat64(0);
    if (!(now < freshUntil + this.opts.staleMs)) return undefined;
    const e: Entry = { bytes: framed.slice(HEADER_BYTES), freshUntil, peerId, refresh, heat: 1, usedAt: now };
    this.lru.set(key, e);
    this.stats.sharedHits++;
    if (now >= freshUntil) {
      this.stats.staleHits++;
      this.revalidate(key, e);
    }
    return e;
  }

  /**
   * One refresh at a time per key: a fresher shared entry is taken if
   * another replica wrote one; else, if this replica wins the claim, the
   * peer is asked (through its breaker). Failures keep the stale entry.
   */
  private revalidate(key: string, e: Entry): void {
    if (this.refreshing.has(key)) return;
    this.refreshing.add(key);
    void (async () => {
      try {
        if (this.shared !== noSharedCache) {
          const fresher = await this.shared.get(key).catch(() => undefined);
          if (fresher && fresher.byteLength >= HEADER_BYTES) {
            const freshUntil = new DataView(fresher.buffer, fresher.byteOffset, fresher.byteLength).getFloat64(0);
            if (freshUntil > this.clock.now() + this.tickMs * 1.5 && freshUntil > e.freshUntil) {
              this.lru.set(key, { ...e, bytes: fresher.slice(HEADER_BYTES), freshUntil });
              return;
            }
          }
          if (!(await this.shared.claim(key, Math.max(1_000, this.opts.ttlMs)).catch(() => true))) return;
        }
        const bytes = await e.refresh();
        this.stats.refreshes++;
        const current = this.lru.peek(key);
        this.store(key, e.peerId, bytes, e.refresh, current?.heat ?? e.heat, current?.usedAt ?? e.usedAt);
      } catch (err) {
        this.stats.refreshFailures++;
        this.log.debug({ peer: e.peerId, err: (err as Error).message }, "remote cache refresh failed");
      } finally {
        this.refreshing.delete(key);
      }
    })();
  }
}
