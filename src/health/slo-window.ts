/** Counts over one window: events, failed ones, and successful ones over the latency threshold. */
export interface WindowCounts {
  total: number;
  errors: number;
  slow: number;
}

/** Counters per bucket: total, errors, slow. */
const SERIES = 3;

/**
 * One subject's events in fixed-width time buckets, a ring that covers the
 * longest window: memory is fixed per subject whatever the event rate
 * (buckets × 3 counters), never a list of events. Each slot remembers which
 * bucket it holds, so a slot left from an earlier lap reads as empty and is
 * cleared when written. A window is summed from whole buckets: its edge is
 * exact to a bucket's width (a fifth of the shortest window).
 */
export class BucketRing {
  private readonly counts: Uint32Array;
  /** The absolute bucket number (time / width) each slot holds; -1 when none. */
  private readonly held: Float64Array;

  constructor(
    private readonly bucketMs: number,
    private readonly buckets: number,
  ) {
    this.counts = new Uint32Array(buckets * SERIES);
    this.held = new Float64Array(buckets).fill(-1);
  }

  /** One event at `at` (epoch ms): failed, or succeeded in `latencyMs`, slow when over the threshold. */
  add(at: number, ok: boolean, slow: boolean): void {
    const bucket = Math.floor(at / this.bucketMs);
    const slot = bucket % this.buckets;
    const base = slot * SERIES;
    if (this.held[slot] !== bucket) {
      // A newer bucket takes the slot; an event older than the ring is dropped.
      if (this.held[slot]! > bucket) return;
      this.held[slot] = bucket;
      this.counts.fill(0, base, base + SERIES);
    }
    this.counts[base]!++;
    if (!ok) this.counts[base + 1]!++;
    else if (slow) this.counts[base + 2]!++;
  }

  /** Sums the buckets of the last `windowMs` up to `now` (the current, partial bucket included). */
  sum(now: number, windowMs: number, into: WindowCounts = { total: 0, errors: 0, slow: 0 }): WindowCounts {
    const last = Math.floor(now / this.bucketMs);
    const n = Math.min(this.buckets, Math.max(1, Math.ceil(windowMs / this.bucketMs)));
    into.total = into.errors = into.slow = 0;
    for (let b = last - n + 1; b <= last; b++) {
      const slot = ((b % this.buckets) + this.buckets) % this.buckets;
      if (this.held[slot] !== b) continue;
      const base = slot * SERIES;
      into.total += this.counts[base]!;
      into.errors += this.counts[base + 1]!;
      into.slow += this.counts[base + 2]!;
    }
    return into;
  }

  /** Adds this ring's last `windowMs` to `into` (fleet totals) without clearing it. */
  addTo(now: number, windowMs: number, into: WindowCounts): void {
    const c = this.sum(now, windowMs);
    into.total += c.total;
    into.errors += c.errors;
    into.slow += c.slow;
  }
}

/** Bucket width and count for a set of windows: a fifth of the shortest, enough to cover the longest. */
export function ringShape(windowsMs: readonly number[]): { bucketMs: number; buckets: number } {
  const bucketMs = Math.max(1, Math.floor(Math.min(...windowsMs) / 5));
  return { bucketMs, buckets: Math.ceil(Math.max(...windowsMs) / bucketMs) + 1 };
}
