import type { ComponentStatus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";

/**
 * What replicas exchange about outcomes: not each outcome, but per agent
 * (and the capabilities of its tasks) a sum over a short interval, so a
 * busy replica sends one small message and writes one small document per
 * interval whatever its traffic.
 */
export interface OutcomeSummary {
  readonly agentId: string;
  /** The tasks' capabilities; the summary counts for the agent and for each. */
  readonly capabilities: readonly string[];
  /** Outcomes summed up. */
  readonly count: number;
  /** Σ quality (success 1, failure 0, or the reported 0..1). */
  readonly quality: number;
  /** Outcomes that said something about latency. */
  readonly timed: number;
  /** The latest of those latencies (ms), oldest first; at most 64. */
  readonly latencies: readonly number[];
}

export interface OutcomeBatch {
  /** Unique per batch: the sending replica's boot and a sequence number. */
  readonly id: string;
  readonly replicaId: string;
  /** When the batch was sealed (epoch ms): persisted evidence decays from then. */
  readonly at: number;
  readonly summaries: readonly OutcomeSummary[];
}

/** Carries this replica's outcome batches to the other replicas (Redis pub/sub). */
export interface OutcomeExchange {
  /** Never waits: a batch that cannot be sent now is dropped (the log still has it). */
  send(batch: OutcomeBatch): void;
  /** Batches from every replica, this one's included (the receiver skips its own). */
  listen(deliver: (batch: OutcomeBatch) => void): void;
  start?(): void;
  close(): Promise<void>;
  health?(): ComponentStatus;
}

/** Keeps outcome batches so a replica starting again knows what was learnt (MongoDB). */
export interface OutcomeLog {
  append(batch: OutcomeBatch): Promise<void>;
  /** Batches sealed at or after `since`, oldest first, the newest `limit` at most. */
  recent(since: number, limit: number): Promise<OutcomeBatch[]>;
  close(): Promise<void>;
}

/**
 * Replicas in one process sharing outcomes (tests); one replica alone
 * (the embedded default) hears only itself, which ReputationSync skips.
 */
export class MemoryOutcomeExchange implements OutcomeExchange {
  private readonly listeners = new Set<(batch: OutcomeBatch) => void>();
  private readonly hub: Set<MemoryOutcomeExchange>;

  /** `joined`: another exchange of the same process to share with. */
  constructor(joined?: MemoryOutcomeExchange) {
    this.hub = joined?.hub ?? new Set();
    this.hub.add(this);
  }

  send(batch: OutcomeBatch): void {
    for (const peer of this.hub) for (const l of peer.listeners) queueMicrotask(() => l(batch));
  }

  listen(deliver: (batch: OutcomeBatch) => void): void {
    this.listeners.add(deliver);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.hub.delete(this);
  }
}

/** Batches kept in memory, bounded (tests; a process that restarts forgets them with everything else). */
export class MemoryOutcomeLog implements OutcomeLog {
  private readonly batches: OutcomeBatch[] = [];

  constructor(private readonly max = 10_000) {}

  async append(batch: OutcomeBatch): Promise<void> {
    this.batches.push(batch);
    if (this.batches.length > this.max) this.batches.splice(0, this.batches.length - this.max);
  }

  async recent(since: number, limit: number): Promise<OutcomeBatch[]> {
    return this.batches.filter((b) => b.at >= since).slice(-limit);
  }

  async close(): Promise<void> {}
}

/** Where outcomes go beyond this replica, as configured: Redis shares them, MongoDB keeps them. */
export async function createOutcomeSharing(
  config: { readonly redis?: { readonly url: string; readonly prefix: string }; readonly mongodb?: { readonly uri: string; readonly database: string; readonly timeoutMs: number } },
  halfLifeMs: number,
  log: Logger,
): Promise<{ exchange: OutcomeExchange | undefined; outcomeLog: OutcomeLog | undefined }> {
  let exchange: OutcomeExchange | undefined;
  let outcomeLog: OutcomeLog | undefined;
  if (config.redis) {
    const { RedisOutcomeExchange } = await import("./redis-outcome-exchange.js");
    exchange = new RedisOutcomeExchange({ ...config.redis, log });
  }
  if (config.mongodb) {
    const { MongoOutcomeLog } = await import("./mongo-outcome-log.js");
    // Kept a little beyond what is loaded (8 half-lives).
    outcomeLog = new MongoOutcomeLog({ ...config.mongodb, keepMs: 10 * halfLifeMs });
  }
  return { exchange, outcomeLog };
}
