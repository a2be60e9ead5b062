/**
 * A bounded map that keeps what was used recently, at a Map's cost per
 * lookup (lru-cache's bookkeeping per read was a measurable share of the
 * hot paths that use this: pooling a registration's values, a verified
 * token's lookup, a name's words). Two generations of up to `max / 2`
 * entries: a read that finds an entry in the older one moves it to the
 * younger, and when the younger is full it becomes the older and the older
 * is dropped whole. Whatever was used within the last `max / 2` insertions
 * is kept — an LRU's guarantee for the hot entries without its per-read
 * reordering — and never more than `max` entries are held.
 */
export class RecentMap<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  private readonly half: number;

  constructor(max: number) {
    this.half = Math.max(1, Math.floor(max / 2));
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  get(key: K): V | undefined {
    const v = this.young.get(key);
    if (v !== undefined) return v;
    const o = this.old.get(key);
    if (o !== undefined) {
      this.old.delete(key);
      this.set(key, o);
    }
    return o;
  }

  set(key: K, value: V): void {
    this.old.delete(key);
    this.add(key, value);
  }

  /**
   * set() for a key that get() just missed: there is no older entry to
   * drop, so the older generation is not searched again (a pool's miss
   * was three lookups of a cold table before its insert).
   */
  add(key: K, value: V): void {
    this.young.set(key, value);
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
  }
}
