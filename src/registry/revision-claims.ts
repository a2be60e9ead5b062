import { MongoServerError, type Collection } from "mongodb";

interface ClaimDoc {
  /** `<agent id>#<registeredAt>#<revision>`: the revision a writer is moving the agent to. */
  _id: string;
  agentId: string;
  claimedAt: number;
}

/**
 * Makes compare-and-set on `revision` hold on servers whose conditional
 * writes are not atomic.
 *
 * MongoDB applies an update's filter and the write as one step, so
 * `updateOne({_id, revision: r})` matches for at most one of two racing
 * writers. FerretDB v1 does not: it reads, filters and then writes by id, so
 * both racers match (measured on FerretDB 1.24/SQLite: 195 of 200 racing
 * pairs both reported matchedCount 1; a conditional deleteOne stayed exact;
 * on its PostgreSQL backend 184 of 200 updateOne pairs, and a racing
 * deleteOne and updateOne on one revision both succeeded in 97 of 100).
 * A unique `_id` insert is atomic on both, so on FerretDB every transition
 * r → r+1 first inserts the claim `<id>#<registeredAt>#<r+1>`: only one
 * writer gets it. The claim of the previous revision is removed after the
 * write and the last one when the agent is deleted; a claim left by a writer
 * that died mid-way is taken over once it is older than `staleMs`.
 *
 * Claims name the registration (`registeredAt`), so an agent registered
 * again under the same id never meets a claim of its previous life, and
 * every claim is written and removed by its exact `_id`: FerretDB's SQLite
 * backend answers any other filter with a scan of the collection (deleting
 * by `agentId` cost ~350 ms per registration at 20k agents).
 */
export class RevisionClaims {
  constructor(
    private readonly claims: Collection<ClaimDoc> | undefined,
    private readonly staleMs: number,
  ) {}

  /** True when this writer may move the agent from `fromRevision` to the next one. */
  async claim(agent: ClaimedAgent, fromRevision: number): Promise<boolean> {
    if (!this.claims) return true;
    const agentId = agent.id;
    const _id = claimKey(agent, fromRevision + 1);
    const doc = { _id, agentId, claimedAt: Date.now() };
    if (await this.insert(doc)) return true;
    const stale = await this.claims.deleteOne({ _id, claimedAt: { $lt: Date.now() - this.staleMs } });
    return stale.deletedCount === 1 && (await this.insert(doc));
  }

  /** After a write: `won` drops the previous revision's claim, a loss its own. */
  async settle(agent: ClaimedAgent, fromRevision: number, won: boolean): Promise<void> {
    if (!this.claims) return;
    await this.claims.deleteOne({ _id: claimKey(agent, won ? fromRevision : fromRevision + 1) });
  }

  /** After the agent was deleted at `revision`: the claim its deletion took. */
  async release(agent: ClaimedAgent, revision: number): Promise<void> {
    if (!this.claims) return;
    await this.claims.deleteOne({ _id: claimKey(agent, revision) });
  }

  /** Whether claims are written at all (FerretDB): callers skip reads only claims need. */
  get active(): boolean {
    return this.claims !== undefined;
  }

  private async insert(doc: ClaimDoc): Promise<boolean> {
    try {
      await this.claims!.insertOne(doc);
      return true;
    } catch (err) {
      if (err instanceof MongoServerError && err.code === 11000) return false;
      throw err;
    }
  }
}

/** The agent a claim is for: its id and the registration it belongs to. */
export interface ClaimedAgent {
  readonly id: string;
  readonly registeredAt: number;
}

function claimKey(agent: ClaimedAgent, revision: number): string {
  return `${agent.id}#${agent.registeredAt}#${revision}`;
}
