import { randomUUID } from "node:crypto";
import type { Clock } from "../clock.js";
import type { Logger } from "../logger.js";
import type { OutcomeBatch, OutcomeExchange, OutcomeLog, OutcomeSummary } from "./outcome-sharing.js";
import type { Outcome, Reputation } from "./reputation.js";

export interface ReputationSyncOptions {
  readonly replicaId: string;
  /** How long outcomes are summed before they are sent and persisted (default 250 ms). */
  readonly intervalMs?: number;
  /** Persisted batches older than this many half-lives are not loaded (their weight is under 1/256). */
  readonly halfLifeMs: number;
}

/** Summaries per batch at most; a busier interval is sent in several. */
const MAX_SUMMARIES = 2_000;
/** Latencies kept per summary (the p95/p99 window). */
const MAX_LATENCIES = 64;
/** Batches loaded at start at most (the newest). */
const MAX_LOADED = 20_000;
/** Batch ids remembered, so a batch both received live and loaded counts once. */
const MAX_SEEN = 20_000;
/** Evidence older than this many half-lives is not worth loading. */
const HORIZON_HALF_LIVES = 8;

interface Pending {
  readonly agentId: string;
  readonly capabilities: readonly string[];
  count: number;
  quality: number;
  timed: number;
  readonly latencies: number[];
}

/**
 * Keeps one Reputation in step with the other replicas' without a shared
 * store on the routing path: this replica's outcomes are recorded locally at
 * once and summed per agent for `intervalMs`; then one batch goes to the
 * exchange (the others absorb it) and one document to the log (a replica
 * starting replays the log). A Route never waits on either.
 */
export class ReputationSync {
  /** This run of this replica: batch ids are unique across restarts. */
  private readonly source: string;
  private seq = 0;
  private readonly pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private readonly seen = new Map<string, true>();
  private readonly appending = new Set<Promise<void>>();
  private closed = false;
  /** Resolves once persisted evidence was loaded (or there is no log, or loading gave up at close). */
  readonly loaded: Promise<void>;

  constructor(
    private readonly reputation: Reputation,
    private readonly exchange: OutcomeExchange | undefined,
    private readonly log: OutcomeLog | undefined,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly opts: ReputationSyncOptions,
  ) {
    this.source = `${opts.replicaId}#${randomUUID().slice(0, 8)}`;
    exchange?.listen((batch) => {
      if (!batch.id.startsWith(`${this.source}/`)) this.apply(batch, this.clock.now());
    });
    exchange?.start?.();
    this.loaded = log ? this.load(log) : Promise.resolve();
  }

  /** An outcome on this replica: counted now, shared with the next batch. */
  record(agentId: string, capabilities: readonly string[], o: Outcome, now: number): void {
    this.reputation.record(agentId, capabilities, o, now);
    // Nobody to share with, or closed (outcomes of tasks that finish while the server drains count here only).
    if ((!this.exchange && !this.log) || this.closed) return;
    const k = `${agentId}\u0000${capabilities.join("\u0000")}`;
    let p = this.pending.get(k);
    if (!p) {
      if (this.pending.size >= MAX_SUMMARIES) this.flush();
      p = { agentId, capabilities: [...capabilities], count: 0, quality: 0, timed: 0, latencies: [] };
      this.pending.set(k, p);
    }
    p.count++;
    p.quality += o.quality ?? (o.success ? 1 : 0);
    if (o.latencyMs !== undefined) {
      p.timed++;
      if (p.latencies.length >= MAX_LATENCIES) p.latencies.shift();
      p.latencies.push(Math.round(o.latencyMs * 10) / 10);
    }
    this.timer ??= setTimeout(() => this.flush(), this.opts.intervalMs ?? 250).unref();
  }

  /** Sends what is pending and lets go of the exchange and the log, waiting `ms` at most for the last writes. */
  async close(ms = 500): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    const writes = Promise.allSettled([...this.appending]);
    await Promise.race([writes, new Promise((r) => setTimeout(r, ms).unref())]);
    await Promise.allSettled([this.exchange?.close(), this.log?.close()]);
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.size === 0 || this.closed) return;
    const summaries: OutcomeSummary[] = [...this.pending.values()];
    this.pending.clear();
    const batch: OutcomeBatch = { id: `${this.source}/${++this.seq}`, replicaId: this.opts.replicaId, at: this.clock.now(), summaries };
    this.exchange?.send(batch);
    if (this.log) {
      const write = this.log
        .append(batch)
        .catch((err: unknown) => this.logger.warn({ err: String(err), summaries: summaries.length }, "outcome batch not persisted"));
      this.appending.add(write);
      void write.finally(() => this.appending.delete(write));
    }
  }

  private apply(batch: OutcomeBatch, at: number): boolean {
    if (this.seen.has(batch.id)) return false;
    this.seen.set(batch.id, true);
    if (this.seen.size > MAX_SEEN) this.seen.delete(this.seen.keys().next().value!);
    this.reputation.absorb(batch.summaries, at);
    return true;
  }

  /** Replays the persisted batches of the last few half-lives, retrying while the log is unreachable. */
  private async load(log: OutcomeLog): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        const now = this.clock.now();
        const batches = await log.recent(now - HORIZON_HALF_LIVES * this.opts.halfLifeMs, MAX_LOADED);
        let summaries = 0;
        for (const b of batches) if (this.apply(b, Math.min(b.at, now))) summaries += b.summaries.length;
        this.logger.info({ batches: batches.length, summaries }, "routing evidence loaded");
        return;
      } catch (err) {
        const delay = Math.min(5_000, 250 * 2 ** attempt);
        this.logger.warn({ err: String(err), retryInMs: delay }, "routing evidence not loaded yet; retrying");
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }
}
