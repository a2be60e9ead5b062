import { MongoServerError, type Collection } from "mongodb";

interface ClaimDoc {
  /** `<agent id>#<revision>`: the revision a writer is moving the agent to. */
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
 * pairs both reported matchedCount 1; a conditional deleteOne stayed exact).
 * A unique `_id` insert is atomic on both, so on FerretDB every transition
 * r → r+1 first inserts the claim `<id>#<r+1>`: only one writer gets it.
 * The claim of the previous revision is removed after the write, all of an
 * agent's claims when it is deleted or first inserted, and a claim left by a
 * writer that died mid-way is taken over once it is older than `staleMs`.
 */
export class RevisionClaims {
  constructor(
    private readonly claims: Collection<ClaimDoc> | undefined,
    private readonly staleMs: number,
  ) {}

  /** True when this writer may move `agentId` from `fromRevision` to the next one. */
  async claim(agentId: string, fromRevision: number): Promise<boolean> {
    if (!this.claims) return true;
    const _id = claimKey(agentId, fromRevision + 1);
    const doc = { _id, agentId, claimedAt: Date.now() };
    if (await this.insert(doc)) return true;
    const stale = await this.claims.deleteOne({ _id, claimedAt: { $lt: Date.now() - this.staleMs } });
    return stale.deletedCount === 1 && (await this.insert(doc));
  }

  /** After a write: `won` drops the previous revision's claim, a loss its own. */
  async settle(agentId: string, fromRevision: number, won: boolean): Promise<void> {
    if (!this.claims) return;
    await this.claims.deleteOne({ _id: claimKey(agentId, won ? fromRevision : fromRevision + 1) });
  }

  /** After the agent was deleted or newly inserted. */
  async clear(agentId: string): Promise<void> {
    if (!this.claims) return;
    await this.claims.deleteMany({ agentId });
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

function claimKey(agentId: string, revision: number): string {
  return `${agentId}#${revision}`;
}
