import type { Writable } from "node:stream";

interface Batch {
  frames: Buffer[];
  bytes: number;
}

/**
 * Coalesces the event frames written to each subscriber during one turn of
 * the event loop into one write. A burst of events then costs each
 * subscriber one trip through its stream (and one system call, or one
 * HTTP/2 DATA submission), not one per event; a lone event waits only until
 * the current I/O phase ends (setImmediate).
 *
 * Anything else written to a subscriber's stream (a close frame, trailers)
 * must first `drain` it, so that frames keep their order.
 */
export class FrameBatcher {
  private readonly pending = new Map<Writable, Batch>();

  write(out: Writable, frame: Buffer): void {
    let batch = this.pending.get(out);
    if (!batch) {
      this.pending.set(out, (batch = { frames: [], bytes: 0 }));
      if (this.pending.size === 1) setImmediate(this.flush);
    }
    batch.frames.push(frame);
    batch.bytes += frame.length;
  }

  /** Bytes waiting here for `out` (they count toward a subscriber's backlog). */
  queued(out: Writable): number {
    return this.pending.get(out)?.bytes ?? 0;
  }

  /** Writes what waits for `out` now. */
  drain(out: Writable): void {
    const batch = this.pending.get(out);
    if (!batch) return;
    this.pending.delete(out);
    send(out, batch);
  }

  /** Drops what waits for `out` (the subscriber is being cut off). */
  discard(out: Writable): void {
    this.pending.delete(out);
  }

  /** Writes everything that waits. */
  drainAll(): void {
    this.flush();
  }

  private readonly flush = (): void => {
    for (const [out, batch] of this.pending) send(out, batch);
    this.pending.clear();
  };
}

function send(out: Writable, batch: Batch): void {
  if (out.destroyed || out.writableEnded) return;
  out.write(batch.frames.length === 1 ? batch.frames[0]! : Buffer.concat(batch.frames, batch.bytes));
}
