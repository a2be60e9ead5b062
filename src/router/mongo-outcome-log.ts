import { MongoClient, type Collection } from "mongodb";
import type { OutcomeBatch, OutcomeLog, OutcomeSummary } from "./outcome-sharing.js";

export interface MongoOutcomeLogOptions {
  readonly uri: string;
  readonly database: string;
  readonly timeoutMs: number;
  /** Batches older than this are deleted (about a minute after they age out). */
  readonly keepMs: number;
}

interface BatchDoc {
  _id: string;
  replicaId: string;
  at: Date;
  summaries: OutcomeSummary[];
}

/** How often a replica deletes batches older than `keepMs`. */
const PRUNE_INTERVAL_MS = 60_000;

/**
 * Outcome batches in the `routing_outcomes` collection: one insertOne per
 * batch (every ~250 ms of traffic per replica, not per call), read back
 * newest first when a replica starts. Old batches are deleted by the
 * writers now and then (not a TTL index: FerretDB does not expire documents).
 */
export class MongoOutcomeLog implements OutcomeLog {
  private readonly client: MongoClient;
  private readonly batches: Collection<BatchDoc>;
  private connecting: Promise<unknown> | undefined;
  private indexed = false;
  private prunedAt = 0;

  constructor(private readonly opts: MongoOutcomeLogOptions) {
    this.client = new MongoClient(opts.uri, {
      serverSelectionTimeoutMS: opts.timeoutMs,
      connectTimeoutMS: opts.timeoutMs,
      socketTimeoutMS: opts.timeoutMs * 5,
      appName: "federation-core-routing",
    });
    this.batches = this.client.db(opts.database || undefined).collection<BatchDoc>("routing_outcomes");
  }

  async append(batch: OutcomeBatch): Promise<void> {
    await this.ready();
    await this.batches.insertOne({ _id: batch.id, replicaId: batch.replicaId, at: new Date(batch.at), summaries: [...batch.summaries] });
    if (batch.at - this.prunedAt >= PRUNE_INTERVAL_MS) {
      this.prunedAt = batch.at;
      await this.batches.deleteMany({ at: { $lt: new Date(batch.at - this.opts.keepMs) } });
    }
  }

  async recent(since: number, limit: number): Promise<OutcomeBatch[]> {
    await this.ready();
    const docs = await this.batches
      .find({ at: { $gte: new Date(since) } })
      .sort({ at: -1 })
      .limit(limit)
      .toArray();
    return docs.reverse().map((d) => ({ id: d._id, replicaId: d.replicaId, at: d.at.getTime(), summaries: d.summaries }));
  }

  async close(): Promise<void> {
    await this.client.close().catch(() => undefined);
  }

  /** Connects (again after a failed attempt: the driver's client stays closed otherwise) and creates the index once. */
  private async ready(): Promise<void> {
    this.connecting ??= this.client.connect().catch((err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    await this.connecting;
    if (this.indexed) return;
    // Listed first: FerretDB 1.24 fails a createIndexes naming an index that exists.
    const names = new Set((await this.batches.listIndexes().toArray().catch(() => [])).map((i) => String(i.name)));
    if (!names.has("at")) await this.batches.createIndex({ at: 1 }, { name: "at" });
    this.indexed = true;
  }
}
