import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  MongoClient,
  MongoError,
  MongoServerError,
  type Collection,
  type Db,
  type Filter,
} from "mongodb";
import type { JsonObject } from "@bufbuild/protobuf";
import type { ComponentStatus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { patched, ROUTABLE_STATUSES, routeTier, type AgentRecord, type AgentStatus, type Transport } from "./agent-record.js";
import type { AgentPatch, AgentQuery, AgentStore, CatalogEntry, FleetCounts, ToolQuery } from "./agent-store.js";
import { RevisionClaims, type ClaimedAgent } from "./revision-claims.js";
import { toolContentHash } from "./shared-values.js";
import { tokenizeQuery, toolWords } from "../directory/tool-catalog.js";

/**
 * An agent as MongoDB keeps it. Client-chosen strings never become field
 * names: labels are an array of {k, v} pairs and tool schemas are stored as
 * JSON text, so a `$` or `.` in a key can neither inject an operator nor
 * break a path. `capNames` and `tags` are the multikey discovery indexes;
 * `routeTier` (status × load bucket, agent-record.ts) orders the router's
 * reads: its index entry changes only when the tier does, not on every load
 * a heartbeat reports.
 */
interface AgentDoc {
  _id: string;
  tenant: string;
  shared: boolean;
  name: string;
  version: string;
  status: number;
  endpoint: { url: string; transport: number };
  capabilities: { name: string; tags: string[] }[];
  capNames: string[];
  tags: string[];
  tools: { name: string; description: string; inputSchema: string | null }[];
  labels: { k: string; v: string }[];
  load: number;
  /** Absent on documents written before route tiers (they had `routeCeiling`): see routable() and backfillRouteTiers(). */
  routeTier?: number;
  leaseTtlMs: number;
  registeredAt: number;
  lastHeartbeatAt: number;
  leaseExpiresAt: number;
  revision: number;
}

/** One catalog entry per (agent, tool), kept beside the agent for indexed search. */
interface ToolDoc {
  _id: string;
  tenant: string;
  shared: boolean;
  agentId: string;
  agentName: string;
  name: string;
  description: string;
  inputSchema: string | null;
  /** The catalog entry (toolContentHash). */
  toolId: string;
  /** Lowercased words of name and description: text search is anchored prefixes on this multikey index. */
  words: string[];
}

/**
 * The catalog version of one scope — a tenant's own agents (`t:<tenant>`)
 * or the shared agents of every tenant (`shared`) — changed by every write
 * the manifest shows. `tag` is new on each change and is the version;
 * `n` counts the changes, for people reading the collection. A fresh tag
 * rather than the counter: FerretDB applies `$inc` as a read and a write,
 * so two racing increments can leave the same count (or an older one),
 * while a tag written last is never one a replica saw before.
 */
interface CatalogVersionDoc {
  _id: string;
  n: number;
  tag: string;
}

/** Scope of the shared agents' catalog version; a tenant's is `t:<tenant>`. */
const SHARED_SCOPE = "shared";
/** How often a replica reads again the catalog versions its manifests were asked for. */
const CATALOG_VERSION_POLL_MS = 250;
/** A version read longer ago than this (its reads are failing) is not trusted: the manifest is read again. */
const CATALOG_VERSION_STALE_MS = 1_000;
/** A scope whose manifest was not asked for this long is no longer read. */
const CATALOG_VERSION_IDLE_MS = 60_000;
/** Documents without a routeTier (older versions wrote them) that one routable() read places by their computed tier. */
const MAX_UNTIERED_PLACED = 1_000;
/** The start's backfill of routeTier: documents per batch, and batches at most (the rest: routable() places them). */
const BACKFILL_BATCH = 500;
const BACKFILL_MAX_BATCHES = 400;

export interface MongoStoreOptions {
  readonly uri: string;
  /** Database name; from the URI when empty. */
  readonly database: string;
  /** Operations fail with UNAVAILABLE after this long without a server. */
  readonly timeoutMs: number;
  readonly log: Logger;
}

/**
 * The shared agent store: any number of replicas read and write the same
 * MongoDB (or FerretDB) database. Writes are compare-and-set on `revision`
 * (insert for a new id, a replace filtered on the expected revision), so two
 * replicas or reapers never overwrite each other and each transition
 * happens once. On FerretDB, whose filtered writes are not atomic, each
 * transition is also claimed first (see RevisionClaims).
 */
export class MongoAgentStore implements AgentStore {
  private readonly client: MongoClient;
  private readonly db: Db;
  private readonly agents: Collection<AgentDoc>;
  private readonly toolDocs: Collection<ToolDoc>;
  private readonly versions: Collection<CatalogVersionDoc>;
  /** Catalog versions as last read or written here; `seq` orders this replica's writes against reads. */
  private readonly versionCache = new Map<string, { tag: string; readAt: number; seq: number }>();
  /** Scopes a manifest asked for, with when it last did: the ones read every CATALOG_VERSION_POLL_MS. */
  private readonly versionWatch = new Map<string, number>();
  /** Scopes whose version a write here failed to change: written again before the next read. */
  private readonly unbumped = new Set<string>();
  private versionSeq = 0;
  /** Reads started: an unknown version names the read that will tell it. */
  private versionReads = 0;
  private versionRead: Promise<void> = Promise.resolve();
  private versionReadQueued: Promise<void> | undefined;
  private versionTimer: NodeJS.Timeout | undefined;
  private status: ComponentStatus = { ok: false, message: "connecting to MongoDB" };
  private ready: Promise<void> | undefined;
  /** Indexes exist; from then on health follows the pings. */
  private initialized = false;
  private pinger: NodeJS.Timeout | undefined;
  private claims: Promise<RevisionClaims> | undefined;
  /** client.connect() succeeded; before that the driver answers "Topology is closed". */
  private connected = false;
  /** The last connect attempt failed (the client stays closed until the next one). */
  private connectFailed = false;
  /** Shutdown started: no more connect attempts or pings. */
  private stopping = false;
  private wake: () => void = () => undefined;
  /** The state last logged (undefined: nothing yet), so each change is logged once, not once per retry. */
  private reportedUp: boolean | undefined;

  constructor(private readonly opts: MongoStoreOptions) {
    this.client = new MongoClient(opts.uri, {
      serverSelectionTimeoutMS: opts.timeoutMs,
      connectTimeoutMS: opts.timeoutMs,
      socketTimeoutMS: opts.timeoutMs * 5,
      heartbeatFrequencyMS: 1_000,
      // Connections opened while the server was restarting are closed once
      // idle (the soak saw the pool grow 7 → 13 → 22 over two restarts).
      maxIdleTimeMS: 60_000,
      retryWrites: true,
      retryReads: true,
      writeConcern: { w: "majority" },
      appName: "federation-core",
    });
    this.db = this.client.db(opts.database || undefined);
    this.agents = this.db.collection<AgentDoc>("agents");
    this.toolDocs = this.db.collection<ToolDoc>("tools");
    this.versions = this.db.collection<CatalogVersionDoc>("catalog_versions");
  }

  /**
   * Connects and creates indexes, retrying with backoff until it works;
   * health reports NOT_SERVING with the reason meanwhile.
   */
  start(): Promise<void> {
    this.ready ??= this.connectWithRetry();
    this.pinger ??= setInterval(() => void this.ping(), 2_000).unref();
    return this.ready;
  }

  private async connectWithRetry(): Promise<void> {
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        // An explicit connect: a client whose first (implicit) connect
        // failed stays closed ("Topology is closed") until connect() again.
        await this.client.connect();
        this.connected = true;
        this.connectFailed = false;
        await this.revisionClaims();
        await this.ensureIndexes();
        this.initialized = true;
        this.setStatus({ ok: true, message: "connected" });
        // In the background: routable() reads documents without a tier correctly meanwhile.
        void this.backfillRouteTiers().catch((err: unknown) =>
          this.opts.log.warn({ err: describe(err) }, "routeTier backfill stopped; documents without one are placed on read"),
        );
        return;
      } catch (err) {
        if (this.stopping) return;
        if (!this.connected) this.connectFailed = true;
        const delay = Math.min(2_000, 250 * 2 ** attempt);
        // Logged once when it goes down (setStatus), each retry only at debug.
        this.setStatus({ ok: false, message: `MongoDB unreachable: ${describe(err)}` });
        this.opts.log.debug({ err: describe(err), retryInMs: delay }, "MongoDB connect failed; retrying");
        await new Promise<void>((r) => {
          const timer = setTimeout(r, delay).unref();
          this.wake = () => (clearTimeout(timer), r());
        });
      }
    }
  }

  /**
   * Creates missing indexes, one at a time. Idempotent without relying on
   * the server: FerretDB 1.24 panics on a createIndexes that names indexes
   * which already exist, so existing ones are listed and skipped.
   */
  private async ensureIndexes(): Promise<void> {
    const wanted: [collection: string, name: string, key: Record<string, 1 | -1>][] = [
      ["agents", "tenant_capabilities_tier", { tenant: 1, capNames: 1, routeTier: 1, _id: 1 }],
      ["agents", "shared_capabilities_tier", { shared: 1, capNames: 1, routeTier: 1, _id: 1 }],
      ["agents", "tenant_tags", { tenant: 1, tags: 1 }],
      ["agents", "tenant_id", { tenant: 1, _id: 1 }],
      ["agents", "tenant_name", { tenant: 1, name: 1 }],
      ["agents", "lease_expires_at", { leaseExpiresAt: 1 }],
      ["tools", "tenant_name", { tenant: 1, name: 1 }],
      ["tools", "shared_name", { shared: 1, name: 1 }],
      ["tools", "agent", { agentId: 1 }],
      ["tools", "agent_name", { agentId: 1, name: 1 }],
      ["tools", "tenant_words", { tenant: 1, words: 1 }],
      ["tools", "shared_words", { shared: 1, words: 1 }],
      ["agent_claims", "agent", { agentId: 1 }],
    ];
    const existing = new Map<string, Set<string>>();
    for (const [collectionName, name, key] of wanted) {
      const collection = this.db.collection(collectionName);
      let names = existing.get(collectionName);
      if (!names) {
        const list = await collection.listIndexes().toArray().catch(() => []);
        names = new Set(list.map((i) => String(i.name)));
        existing.set(collectionName, names);
      }
      if (!names.has(name)) await collection.createIndex(key, { name });
    }
    // Older versions indexed routeCeiling, rewritten on almost every heartbeat: those indexes only cost writes now.
    for (const old of ["tenant_capabilities_ceiling", "shared_capabilities_ceiling"]) {
      if (existing.get("agents")?.has(old)) await this.agents.dropIndex(old).catch(() => undefined);
    }
  }

  /**
   * Gives documents written by older versions (no routeTier) theirs, in
   * bounded batches; each write is filtered on the revision read and the
   * field still missing, so it never overwrites a newer write. Returns how
   * many it wrote. Stops at BACKFILL_MAX_BATCHES or when a batch writes
   * nothing (an older replica still rewriting them: routable() places
   * what is left by its computed tier).
   */
  async backfillRouteTiers(): Promise<number> {
    let written = 0;
    for (let batch = 0; batch < BACKFILL_MAX_BATCHES && !this.stopping; batch++) {
      const docs = await this.run(() =>
        this.agents
          .find({ routeTier: { $exists: false } }, { projection: { status: 1, load: 1, revision: 1 } })
          .limit(BACKFILL_BATCH)
          .toArray(),
      );
      if (docs.length === 0) break;
      const res = await this.run(() =>
        this.agents.bulkWrite(
          docs.map((d) => ({
            updateOne: {
              filter: { _id: d._id, revision: d.revision, routeTier: { $exists: false } },
              update: { $set: { routeTier: routeTier({ status: d.status as AgentStatus, load: d.load }) }, $unset: { routeCeiling: "" } },
            },
          })),
          { ordered: false },
        ),
      );
      written += res.modifiedCount;
      if (res.modifiedCount === 0) break;
    }
    return written;
  }

  /** Whether writes need claims depends on the server: FerretDB says so in buildInfo. */
  private revisionClaims(): Promise<RevisionClaims> {
    this.claims ??= this.run(async () => {
      const info = await this.db.admin().command({ buildInfo: 1 });
      const needed = "ferretdbVersion" in info;
      return new RevisionClaims(needed ? this.db.collection("agent_claims") : undefined, this.opts.timeoutMs * 10);
    }).catch((err: unknown) => {
      this.claims = undefined;
      throw err;
    });
    return this.claims;
  }

  private async ping(): Promise<void> {
    // Before the first connect the connect loop reports; after close, nothing does.
    if (!this.connected || this.stopping) return;
    try {
      await this.db.command({ ping: 1 }, { timeoutMS: this.opts.timeoutMs });
      if (!this.status.ok && this.initialized) this.setStatus({ ok: true, message: "connected" });
    } catch (err) {
      this.setStatus({ ok: false, message: `MongoDB unreachable: ${describe(err)}` });
    }
  }

  private setStatus(s: ComponentStatus): void {
    this.status = s;
    if (s.ok === this.reportedUp || this.stopping) return;
    this.reportedUp = s.ok;
    if (s.ok) this.opts.log.info("MongoDB available");
    else this.opts.log.warn({ reason: s.message }, "MongoDB unavailable; writes fail with UNAVAILABLE, retrying in the background");
  }

  health(): ComponentStatus {
    return this.status;
  }

  async get(id: string): Promise<AgentRecord | undefined> {
    const doc = await this.run(() => this.agents.findOne({ _id: id }));
    return doc ? fromDoc(doc) : undefined;
  }

  async put(record: AgentRecord, expectedRevision: number): Promise<boolean> {
    const doc = toDoc(record);
    const claims = await this.revisionClaims();
    if (expectedRevision === 0) {
      const won = await this.run(async () => {
        try {
          await this.agents.insertOne(doc);
          return true;
        } catch (err) {
          if (err instanceof MongoServerError && err.code === 11000) return false;
          throw err;
        }
      });
      if (won) {
        await this.run(() => this.syncTools(record, true));
        await this.catalogChanged(record.tenant, record.shared);
      }
      return won;
    }
    // Whether it was shared: a write that stops sharing changes every tenant's manifest.
    const before = await this.run(() => this.agents.findOne({ _id: record.id }, { projection: { shared: 1, revision: 1 } }));
    if (before?.revision !== expectedRevision) return false;
    const won = await this.guarded(claims, record, expectedRevision, async () => {
      const res = await this.agents.replaceOne({ _id: record.id, revision: expectedRevision }, doc);
      return res.matchedCount === 1;
    });
    if (won) {
      await this.run(() => this.syncTools(record, false));
      await this.catalogChanged(record.tenant, record.shared || before.shared);
    }
    return won;
  }

  async update(current: AgentRecord, patch: AgentPatch): Promise<boolean> {
    return (await this.updated(current, patch)) !== undefined;
  }

  async updated(current: AgentRecord, patch: AgentPatch): Promise<AgentRecord | undefined> {
    const id = current.id;
    const record = patched(current, patch);
    // Always written (an unchanged index key costs the index nothing), so a document an older version wrote gets its tier.
    const set = { ...patch, routeTier: routeTier(record) };
    const claims = await this.revisionClaims();
    const won = await this.guarded(claims, current, current.revision, async () => {
      const res = await this.agents.updateOne({ _id: id, revision: current.revision }, { $set: set });
      return res.matchedCount === 1;
    });
    if (won && patch.shared !== undefined) {
      await this.run(() => this.toolDocs.updateMany({ agentId: id }, { $set: { shared: patch.shared! } }));
    }
    // A heartbeat that keeps the status moves only load and lease times, which the manifest does not show.
    const shown = (patch.status !== undefined && patch.status !== current.status) || (patch.shared !== undefined && patch.shared !== current.shared);
    if (won && shown) await this.catalogChanged(current.tenant, current.shared || patch.shared === true);
    return won ? record : undefined;
  }

  async delete(id: string, expectedRevision: number): Promise<boolean> {
    const claims = await this.revisionClaims();
    // Claims name the registration, and the catalog versions to change
    // are its tenant's and, if it is shared, the shared one's.
    const doc = await this.run(() =>
      this.agents.findOne({ _id: id }, { projection: { registeredAt: 1, tenant: 1, shared: 1, revision: 1 } }),
    );
    if (doc?.revision !== expectedRevision) return false;
    const agent: ClaimedAgent = { id, registeredAt: claims.active ? doc.registeredAt : 0 };
    const won = await this.guarded(claims, agent, expectedRevision, async () => {
      const res = await this.agents.deleteOne({ _id: id, revision: expectedRevision });
      return res.deletedCount === 1;
    });
    if (won) {
      await this.run(() => Promise.all([this.toolDocs.deleteMany({ agentId: id }), claims.release(agent, expectedRevision + 1)]));
      await this.catalogChanged(doc.tenant, doc.shared);
    }
    return won;
  }

  /**
   * The view's catalog version: the tags of the tenant's scope and the
   * shared one (the shared one alone for the anonymous view), as this
   * replica last read or wrote them. Every replica reads the same documents,
   * so all agree once they read them again: the scopes a manifest asked for
   * are read every CATALOG_VERSION_POLL_MS (one small query for all, and
   * only while manifests are asked for), and a write here changes this
   * replica's at once. While a scope's tag is not known (first asked, or
   * its reads failing) the version names the read that will tell it, so
   * the manifest is read again rather than answered from an older view.
   */
  catalogVersion(tenant: string | undefined): string {
    const now = Date.now();
    const shared = this.scopeTag(SHARED_SCOPE, now);
    if (tenant === undefined) return shared ?? `?${this.versionReads}`;
    const own = this.scopeTag(`t:${tenant}`, now);
    return own !== undefined && shared !== undefined ? `${own}.${shared}` : `?${this.versionReads}`;
  }

  /** Reads every watched scope's version now (after a read under way); catalogVersion reflects it when this resolves. */
  refreshCatalogVersions(): Promise<void> {
    // A read not yet started serves every caller that came before it starts.
    if (this.versionReadQueued) return this.versionReadQueued;
    const next = this.versionRead.then(() => {
      this.versionReadQueued = undefined;
      return this.readVersions();
    });
    this.versionReadQueued = next;
    this.versionRead = next.catch(() => undefined);
    return next;
  }

  private scopeTag(scope: string, now: number): string | undefined {
    const watched = this.versionWatch.has(scope);
    this.versionWatch.set(scope, now);
    if (!watched) {
      void this.refreshCatalogVersions().catch(() => undefined);
      this.pollVersions();
    }
    const known = this.versionCache.get(scope);
    if (!known || now - known.readAt > CATALOG_VERSION_STALE_MS || this.unbumped.has(scope)) return undefined;
    return known.tag;
  }

  /** Reads the watched scopes again every CATALOG_VERSION_POLL_MS while there are any. */
  private pollVersions(): void {
    if (this.versionTimer || this.stopping) return;
    this.versionTimer = setTimeout(() => {
      void this.refreshCatalogVersions()
        .catch(() => undefined)
        .finally(() => {
          this.versionTimer = undefined;
          if (this.versionWatch.size > 0 || this.unbumped.size > 0) this.pollVersions();
        });
    }, CATALOG_VERSION_POLL_MS).unref();
  }

  private async readVersions(): Promise<void> {
    const now = Date.now();
    this.versionReads++;
    for (const [scope, askedAt] of this.versionWatch) {
      if (now - askedAt <= CATALOG_VERSION_IDLE_MS) continue;
      this.versionWatch.delete(scope);
      this.versionCache.delete(scope);
    }
    if (this.unbumped.size > 0) await this.bump([...this.unbumped]);
    const scopes = [...this.versionWatch.keys()];
    if (scopes.length === 0) return;
    const seq = this.versionSeq;
    const docs = await this.run(() => this.versions.find({ _id: { $in: scopes } }).toArray());
    const tags = new Map(docs.map((d) => [d._id, d.tag]));
    for (const scope of scopes) {
      // Written here since this read started: the write's tag is at least as new.
      if ((this.versionCache.get(scope)?.seq ?? 0) > seq) continue;
      this.versionCache.set(scope, { tag: tags.get(scope) ?? "0", readAt: now, seq });
    }
  }

  /**
   * After a write the manifest shows (made before, so a replica that reads
   * the new version reads the write too): new tags for the agent's tenant
   * and, for a shared agent, for the shared scope every view includes.
   */
  private async catalogChanged(tenant: string, shared: boolean): Promise<void> {
    await this.bump(shared ? [`t:${tenant}`, SHARED_SCOPE] : [`t:${tenant}`]).catch((err: unknown) => {
      // The write stands; the versions are written again before the next read.
      this.opts.log.warn({ err: describe(err) }, "catalog version not changed; retrying with the next read");
    });
  }

  private async bump(scopes: string[]): Promise<void> {
    const tag = randomBytes(12).toString("base64url");
    const ops = scopes.map((_id) => ({ updateOne: { filter: { _id }, update: { $inc: { n: 1 }, $set: { tag } }, upsert: true } }));
    try {
      await this.run(async () => {
        try {
          await this.versions.bulkWrite(ops, { ordered: false });
        } catch (err) {
          // Two first writes of a scope raced to insert it: the other's exists now.
          if (!(err instanceof MongoServerError && err.code === 11000)) throw err;
          await this.versions.bulkWrite(ops, { ordered: false });
        }
      });
    } catch (err) {
      for (const scope of scopes) this.unbumped.add(scope);
      this.pollVersions();
      throw err;
    }
    const seq = ++this.versionSeq;
    const now = Date.now();
    for (const scope of scopes) {
      this.unbumped.delete(scope);
      this.versionCache.set(scope, { tag, readAt: now, seq });
    }
  }

  /** A write conditional on `fromRevision`, claimed first where the server needs it. */
  private async guarded(
    claims: RevisionClaims,
    agent: ClaimedAgent,
    fromRevision: number,
    write: () => Promise<boolean>,
  ): Promise<boolean> {
    return this.run(async () => {
      if (!(await claims.claim(agent, fromRevision))) return false;
      let won = false;
      try {
        won = await write();
      } finally {
        // After a failed write, release the claim if the server lets us
        // (otherwise it goes stale and is taken over later).
        await claims.settle(agent, fromRevision, won).catch(() => undefined);
      }
      return won;
    });
  }

  async list(tenant: string, afterId: string, limit: number): Promise<AgentRecord[]> {
    return this.page({ tenant }, afterId, limit);
  }

  async all(afterId: string, limit: number): Promise<AgentRecord[]> {
    return this.page({}, afterId, limit);
  }

  async listShared(afterId: string, limit: number): Promise<AgentRecord[]> {
    return this.page({ shared: true }, afterId, limit);
  }

  private async page(scope: Filter<AgentDoc>, afterId: string, limit: number): Promise<AgentRecord[]> {
    const filter: Filter<AgentDoc> = afterId === "" ? scope : { ...scope, _id: { $gt: afterId } };
    const docs = await this.run(() => this.agents.find(filter).sort({ _id: 1 }).limit(limit).toArray());
    return docs.map(fromDoc);
  }

  async query(q: AgentQuery): Promise<readonly AgentRecord[]> {
    const filter: Filter<AgentDoc> = { $or: [{ tenant: q.tenant }, { shared: true }] };
    if (q.capabilities.length > 0) filter.capNames = { $all: [...q.capabilities] };
    if (q.tags.length > 0) filter.tags = { $all: [...q.tags] };
    if (q.statuses.length > 0) filter.status = { $in: [...q.statuses] };
    const docs = await this.run(() => this.agents.find(filter).limit(q.limit).toArray());
    return docs.map(fromDoc);
  }

  async *routable(tenant: string, capabilities: readonly string[]): AsyncGenerator<AgentRecord> {
    const filter: Filter<AgentDoc> = {
      $or: [{ tenant }, { shared: true }],
      capNames: { $all: [...capabilities] },
      status: { $in: [...ROUTABLE_STATUSES] },
    };
    // Small batches: the router usually stops after the first few dozen agents.
    const cursor = this.agents.find(filter).sort({ routeTier: 1, _id: 1 }).batchSize(32);
    try {
      let doc = await this.run(() => cursor.next());
      // Documents an older version wrote have no routeTier and sort first:
      // held (bounded) and handed over where their computed tier places them.
      const untiered: { tier: number; id: string; agent: AgentRecord }[] = [];
      while (doc && doc.routeTier === undefined && untiered.length < MAX_UNTIERED_PLACED) {
        const agent = fromDoc(doc);
        untiered.push({ tier: routeTier(agent), id: agent.id, agent });
        doc = await this.run(() => cursor.next());
      }
      untiered.sort((a, b) => a.tier - b.tier || (a.id < b.id ? -1 : 1));
      let held = 0;
      while (doc) {
        const tier = doc.routeTier ?? routeTier(doc as { status: AgentStatus; load: number });
        while (held < untiered.length && (untiered[held]!.tier < tier || (untiered[held]!.tier === tier && untiered[held]!.id < doc._id))) {
          yield untiered[held++]!.agent;
        }
        yield fromDoc(doc);
        doc = await this.run(() => cursor.next());
      }
      while (held < untiered.length) yield untiered[held++]!.agent;
    } finally {
      await cursor.close().catch(() => undefined);
    }
  }

  async expired(now: number, limit: number): Promise<AgentRecord[]> {
    const docs = await this.run(() =>
      this.agents.find({ leaseExpiresAt: { $lte: now } }).limit(limit).toArray(),
    );
    return docs.map(fromDoc);
  }

  async tools(q: ToolQuery): Promise<CatalogEntry[]> {
    const scope: Filter<ToolDoc> = { $or: [{ tenant: q.tenant }, { shared: true }] };
    const filter: Filter<ToolDoc> = { $and: [scope] };
    if (q.name !== "") filter.name = q.name;
    // Each word of the query is the start of a word of the tool: an
    // anchored, case-sensitive prefix of the lowercased `words` array, which
    // the multikey index answers as a range (an unanchored case-insensitive
    // $regex over names and descriptions was a collection scan).
    for (const word of tokenizeQuery(q.text)) filter.$and!.push({ words: { $regex: `^${escapeRegex(word)}` } });
    // (agent id, tool name) order, as the memory store pages: not the `_id` key's order, where
    // "ab-c/…" sorts before "ab/…" ("-" is below "/").
    if (q.after) {
      const { agentId, toolName } = q.after;
      filter.$and!.push({ $or: [{ agentId: { $gt: agentId } }, { agentId, name: { $gt: toolName } }] });
    }
    const docs = await this.run(() => this.toolDocs.find(filter).sort({ agentId: 1, name: 1 }).limit(q.limit).toArray());
    return docs.map((d) => ({
      agentId: d.agentId,
      agentName: d.agentName,
      tool: { name: d.name, description: d.description, inputSchema: parseSchema(d.inputSchema) },
      toolId: d.toolId ?? "",
    }));
  }

  async counts(tenant: string): Promise<FleetCounts> {
    return this.run(async () => {
      const byStatus = new Map<AgentStatus, number>();
      const groups = await this.agents
        .aggregate<{ _id: number; n: number }>([{ $match: { tenant } }, { $group: { _id: "$status", n: { $sum: 1 } } }])
        .toArray();
      let total = 0;
      for (const g of groups) {
        byStatus.set(g._id as AgentStatus, g.n);
        total += g.n;
      }
      const capabilities = (await this.agents.distinct("capNames", { tenant })).length;
      const tools = await this.toolDocs.countDocuments({ tenant });
      return { total, byStatus, capabilities, tools };
    });
  }

  async statusTotals(): Promise<ReadonlyMap<AgentStatus, number>> {
    return this.run(async () => {
      const groups = await this.agents.aggregate<{ _id: number; n: number }>([{ $group: { _id: "$status", n: { $sum: 1 } } }]).toArray();
      return new Map(groups.map((g) => [g._id as AgentStatus, g.n]));
    });
  }

  /** Shutdown started: the connect loop and the pings stop; operations in flight go on. */
  beginShutdown(): void {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.pinger);
    clearTimeout(this.versionTimer);
    this.wake();
  }

  /**
   * Closes the client, waiting `timeoutMs` at most (the driver's close waits
   * on a connect or operations in flight); the connections go with the
   * process after that.
   */
  async close(timeoutMs = 1_000): Promise<void> {
    this.beginShutdown();
    const closed = this.client.close().then(
      () => true,
      () => true,
    );
    const done = await Promise.race([closed, new Promise<false>((r) => setTimeout(() => r(false), timeoutMs).unref())]);
    if (!done) this.opts.log.warn({ waitedMs: timeoutMs }, "MongoDB client did not close in time; leaving it to the process exit");
  }

  /** Drops everything (tests only: each test run uses its own database). */
  async dropDatabase(): Promise<void> {
    await this.db.dropDatabase();
  }

  /**
   * Replaces the agent's catalog entries. The agent document is the source
   * of truth; entries are keyed by (agent id, tool name), so a retry after a
   * partial failure converges.
   */
  private async syncTools(record: AgentRecord, isNew: boolean): Promise<void> {
    const keep = record.tools.map((t) => toolKey(record.id, t.name));
    // A new agent has no entries to remove (and FerretDB's SQLite backend
    // answers this filter with a scan of the whole collection).
    if (!isNew) await this.toolDocs.deleteMany({ agentId: record.id, _id: { $nin: keep } });
    if (record.tools.length === 0) return;
    await this.toolDocs.bulkWrite(
      record.tools.map((t) => ({
        replaceOne: {
          filter: { _id: toolKey(record.id, t.name) },
          replacement: {
            tenant: record.tenant,
            shared: record.shared,
            agentId: record.id,
            agentName: record.name,
            name: t.name,
            description: t.description,
            inputSchema: t.inputSchema ? JSON.stringify(t.inputSchema) : null,
            toolId: toolContentHash(t),
            words: toolWords(t),
          },
          upsert: true,
        },
      })),
      { ordered: false },
    );
  }

  /** Any driver failure becomes UNAVAILABLE, so clients retry instead of seeing INTERNAL. */
  private async run<T>(op: () => Promise<T>): Promise<T> {
    // Not connected yet and the last attempt failed: the client is closed
    // until the next attempt, and the reason is the connect error, not the
    // driver's "Topology is closed".
    if (!this.connected && this.connectFailed) {
      throw new ConnectError(`agent store unavailable: ${this.status.message}`, Code.Unavailable);
    }
    try {
      return await op();
    } catch (err) {
      if (err instanceof MongoError) {
        // Before the first connect the connect loop owns the status (and its reason).
        if (!this.connected) throw new ConnectError(`agent store unavailable: ${this.status.message}`, Code.Unavailable);
        this.setStatus({ ok: false, message: `MongoDB unreachable: ${describe(err)}` });
        throw new ConnectError(`agent store unavailable: ${describe(err)}`, Code.Unavailable);
      }
      throw err;
    }
  }
}

function toolKey(agentId: string, toolName: string): string {
  // Ids never contain "/" (validation/limits.ts), so the key is unique (paging sorts on agentId, name).
  return `${agentId}/${toolName}`;
}

function toDoc(a: AgentRecord): AgentDoc {
  return {
    _id: a.id,
    tenant: a.tenant,
    shared: a.shared,
    name: a.name,
    version: a.version,
    status: a.status,
    endpoint: { url: a.endpoint.url, transport: a.endpoint.transport },
    capabilities: a.capabilities.map((c) => ({ name: c.name, tags: [...c.tags] })),
    capNames: a.capabilities.map((c) => c.name),
    tags: [...new Set(a.capabilities.flatMap((c) => c.tags))],
    tools: a.tools.map((t) => ({
      name: t.name,
      description: t.description,
      inputSchema: t.inputSchema ? JSON.stringify(t.inputSchema) : null,
    })),
    labels: Object.entries(a.labels).map(([k, v]) => ({ k, v })),
    load: a.load,
    routeTier: routeTier(a),
    leaseTtlMs: a.leaseTtlMs,
    registeredAt: a.registeredAt,
    lastHeartbeatAt: a.lastHeartbeatAt,
    leaseExpiresAt: a.leaseExpiresAt,
    revision: a.revision,
  };
}

function fromDoc(d: AgentDoc): AgentRecord {
  return {
    id: d._id,
    tenant: d.tenant,
    shared: d.shared,
    name: d.name,
    version: d.version,
    status: d.status as AgentStatus,
    endpoint: { url: d.endpoint.url, transport: d.endpoint.transport as Transport },
    capabilities: d.capabilities.map((c) => ({ name: c.name, tags: c.tags })),
    tools: d.tools.map((t) => ({ name: t.name, description: t.description, inputSchema: parseSchema(t.inputSchema) })),
    labels: Object.fromEntries(d.labels.map((l) => [l.k, l.v])),
    load: d.load,
    leaseTtlMs: d.leaseTtlMs,
    registeredAt: d.registeredAt,
    lastHeartbeatAt: d.lastHeartbeatAt,
    leaseExpiresAt: d.leaseExpiresAt,
    revision: d.revision,
  };
}

function parseSchema(text: string | null): JsonObject | undefined {
  return text === null ? undefined : (JSON.parse(text) as JsonObject);
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message.slice(0, 200) : String(err);
}
