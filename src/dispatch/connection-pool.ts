import { LRUCache } from "lru-cache";

/** How a pooled connection is made and ended. */
export interface PoolOptions<T> {
  /** Entries kept at most; the least recently used one is closed past it. */
  readonly max: number;
  /** An entry nobody used for this long is closed (checked every idleMs / 2). */
  readonly idleMs: number;
  readonly close: (value: T) => void;
}

interface Entry<T> {
  readonly value: T;
  lastUsed: number;
  /** Calls holding it: an evicted entry is closed when the last one lets go. */
  holders: number;
  evicted: boolean;
}

/**
 * A small bounded pool of connections (keep-alive agents, HTTP/2 sessions,
 * MCP sessions) keyed by what they connect to — the pinned address is part
 * of every key, so a DNS answer that changes opens a new entry and the old
 * one idles out. Least recently used entries past `max`, and entries idle
 * for `idleMs`, are closed; one a call still holds is closed when it lets go.
 */
export class ConnectionPool<T> {
  private readonly entries: LRUCache<string, Entry<T>>;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly opts: PoolOptions<T>) {
    this.entries = new LRUCache<string, Entry<T>>({
      max: opts.max,
      dispose: (entry) => this.retire(entry),
    });
  }

  /** Runs `use` with the key's entry (made by `open` when there is none), held for the call. */
  async with<R>(key: string, open: () => T, use: (value: T, reused: boolean) => Promise<R>): Promise<R> {
    let entry = this.entries.get(key);
    const reused = entry !== undefined;
    if (!entry) {
      entry = { value: open(), lastUsed: Date.now(), holders: 0, evicted: false };
      this.entries.set(key, entry);
      this.startSweeper();
    }
    entry.holders++;
    try {
      return await use(entry.value, reused);
    } finally {
      entry.holders--;
      entry.lastUsed = Date.now();
      if (entry.evicted && entry.holders === 0) this.opts.close(entry.value);
    }
  }

  /** Drops the key's entry if it is still `value` (a broken session: the next call opens a new one). */
  discard(key: string, value: T): void {
    if (this.entries.peek(key)?.value === value) this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Closes every entry (held ones when they are let go). */
  close(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.entries.clear();
  }

  private retire(entry: Entry<T>): void {
    entry.evicted = true;
    if (entry.holders === 0) this.opts.close(entry.value);
  }

  private startSweeper(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      const before = Date.now() - this.opts.idleMs;
      const idle = [...this.entries.entries()].filter(([, e]) => e.holders === 0 && e.lastUsed < before);
      for (const [key] of idle) this.entries.delete(key);
      if (this.entries.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, Math.max(10, this.opts.idleMs / 2));
    this.sweeper.unref();
  }
}
