import { LRUCache } from "lru-cache";
import type { ComponentStatus } from "../events/event-bus.js";
import { NOT_ROUTABLE_TIER, patched, routeTier, type AgentRecord, type AgentStatus, type CapabilityRecord } from "./agent-record.js";
import type { AgentPatch, AgentQuery, AgentStore, CatalogEntry, FleetCounts, ToolQuery } from "./agent-store.js";
import { ToolCatalog } from "../directory/tool-catalog.js";
import { idOrder } from "../id-order.js";

/** Index scope of shared agents, beside one scope per tenant (no tenant can be named this). */
const SHARED = "\u0000shared";
const NO_KINDS: ReadonlySet<readonly CapabilityRecord[]> = new Set();

interface Ranked {
  /** The agent's route tier (agent-record.ts routeTier). */
  readonly tier: number;
  readonly id: string;
  /** idOrder(id): compared before the id's text (id-order.ts). */
  readonly order: number;
  /**
   * The agent's capabilities (the record's own array, which heartbeats
   * keep): a walk of one capability's list checks the others here, without
   * looking up the agents that lack them.
   */
  readonly capabilities: readonly CapabilityRecord[];
}

/** The agent's route tier, undefined when it is not routable (not in the routable lists). */
function indexedTier(a: AgentRecord): number | undefined {
  const tier = routeTier(a);
  return tier === NOT_ROUTABLE_TIER ? undefined : tier;
}

/**
 * Per-scope indexes: sorted ids for paging, inverted indexes for discovery,
 * and per capability the routable agents ordered by route tier (best
 * first, then id) for the router: an entry moves only when the agent's tier
 * does (its status or load bucket), not on every load a heartbeat reports.
 */
class Scope {
  private sorted: string[] = [];
  /**
   * Ids added since the sorted list was last read, merged into it on the
   * next read: inserting each new id into a sorted array moved the whole
   * array once per registration (~40 µs at 15k agents, and growing with the
   * fleet), while paging reads it far less often than agents register.
   */
  private added: string[] = [];
  /**
   * Discovery's inverted indexes, by kind: agents registered alike share
   * one capabilities array (registry/shared-values.ts), a "kind"; per kind
   * the ids of its agents, and per capability name and per tag the kinds
   * that have it. A registration adds its id to one set — and its kind to
   * the capability and tag sets only when the kind is new — where an index
   * of ids per capability and per tag added it to ~15 sets of thousands
   * (each an old-generation table written with a young key: ~18 µs of a
   * Register's CPU at 10k agents, and ~15 entries per agent kept). A
   * record whose array is its own (not pooled) is a kind of its own:
   * still correct, only not shared.
   */
  readonly kinds = new Map<readonly CapabilityRecord[], Set<string>>();
  readonly kindsByCapability = new Map<string, Set<readonly CapabilityRecord[]>>();
  readonly kindsByTag = new Map<string, Set<readonly CapabilityRecord[]>>();
  readonly routable = new Map<string, RankedList>();
  readonly statusCounts = new Map<AgentStatus, number>();
  toolCount = 0;
  /** The store's catalog clock when the manifest's view of this scope last changed. */
  catalogStamp = 0;

  /** Every id in the scope, in id order. */
  get sortedIds(): readonly string[] {
    if (this.added.length > 0) {
      this.sorted = [...mergeSorted(this.sorted, this.added.sort())];
      this.added = [];
    }
    return this.sorted;
  }

  get size(): number {
    return this.sorted.length + this.added.length;
  }

  add(a: AgentRecord): void {
    this.added.push(a.id);
    const kind = a.capabilities;
    let ids = this.kinds.get(kind);
    if (!ids) {
      this.kinds.set(kind, (ids = new Set()));
      for (const c of kind) {
        addTo(this.kindsByCapability, c.name, kind);
        for (const t of c.tags) addTo(this.kindsByTag, t, kind);
      }
    }
    ids.add(a.id);
    this.addState(a);
    this.toolCount += a.tools.length;
  }

  remove(a: AgentRecord): void {
    const sorted = this.sortedIds as string[];
    const at = lowerBound(sorted, a.id);
    if (sorted[at] === a.id) sorted.splice(at, 1);
    const kind = a.capabilities;
    const ids = this.kinds.get(kind);
    if (ids?.delete(a.id) && ids.size === 0) {
      this.kinds.delete(kind);
      for (const c of kind) {
        removeFrom(this.kindsByCapability, c.name, kind);
        for (const t of c.tags) removeFrom(this.kindsByTag, t, kind);
      }
    }
    this.removeState(a);
    this.toolCount -= a.tools.length;
  }

  /** A heartbeat or reaper change: same capabilities and tools, new status, load or lease. */
  restate(before: AgentRecord, after: AgentRecord): void {
    const from = indexedTier(before);
    const to = indexedTier(after);
    if (before.status !== after.status) {
      this.statusCounts.set(before.status, (this.statusCounts.get(before.status) ?? 1) - 1);
      this.statusCounts.set(after.status, (this.statusCounts.get(after.status) ?? 0) + 1);
    }
    if (from === to) return;
    const old = from === undefined ? undefined : ranked(from, before);
    const next = to === undefined ? undefined : ranked(to, after);
    for (const c of after.capabilities) {
      let list = this.routable.get(c.name);
      if (!list) this.routable.set(c.name, (list = new RankedList()));
      // Same list, new place: in place when the order allows, else a
      // remove and an insert.
      if (old && next && list.move(old, next)) continue;
      if (old) list.remove(old);
      if (next) list.insert(next);
      if (list.length === 0) this.routable.delete(c.name);
    }
  }

  private addState(a: AgentRecord): void {
    this.statusCounts.set(a.status, (this.statusCounts.get(a.status) ?? 0) + 1);
    const tier = indexedTier(a);
    if (tier === undefined) return;
    const entry = ranked(tier, a);
    for (const c of a.capabilities) {
      let list = this.routable.get(c.name);
      if (!list) this.routable.set(c.name, (list = new RankedList()));
      list.insert(entry);
    }
  }

  private removeState(a: AgentRecord): void {
    this.statusCounts.set(a.status, (this.statusCounts.get(a.status) ?? 1) - 1);
    const tier = indexedTier(a);
    if (tier === undefined) return;
    const entry = ranked(tier, a);
    for (const c of a.capabilities) {
      const list = this.routable.get(c.name);
      if (!list) continue;
      list.remove(entry);
      if (list.length === 0) this.routable.delete(c.name);
    }
  }
}

/**
 * The embedded agent store: a map by id and, per tenant (and one more scope
 * for shared agents), a sorted id list for paging and inverted indexes from
 * capability and tag to ids, so discovery starts from the smallest matching
 * set of the caller's own scope instead of scanning the fleet.
 */
export class MemoryAgentStore implements AgentStore {
  private readonly agents = new Map<string, AgentRecord>();
  private readonly scopes = new Map<string, Scope>();
  /**
   * Recent discovery answers. Which agents a query matches (and in which
   * order) changes only when an agent is added, removed, reshaped or
   * changes status — not on a heartbeat that keeps its status — so answers
   * are kept with the membership version they were computed at, and the
   * current record of each is looked up again. While all are the same
   * records, the same array is returned (callers cache by its identity).
   */
  private readonly answers = new LRUCache<string, { version: number; records: readonly AgentRecord[] }>({ max: 1_000 });
  private membership = 0;
  /** Ticks on every change the manifest shows (see catalogVersion); scopes keep the tick of their last one. */
  private catalogClock = 0;
  /** The distinct tool catalog and its search index, kept current on every write. */
  private readonly catalog = new ToolCatalog();

  async get(id: string): Promise<AgentRecord | undefined> {
    return this.agents.get(id);
  }

  peek(id: string): AgentRecord | undefined {
    return this.agents.get(id);
  }

  async put(record: AgentRecord, expectedRevision: number): Promise<boolean> {
    return this.write(record, expectedRevision);
  }

  async update(current: AgentRecord, patch: AgentPatch): Promise<boolean> {
    return this.updated(current, patch) !== undefined;
  }

  /** Synchronous: the patched record is built once, stored, and handed back (see AgentStore.updated). */
  updated(current: AgentRecord, patch: AgentPatch): AgentRecord | undefined {
    const stored = this.agents.get(current.id);
    if (!stored || stored.revision !== current.revision) return undefined;
    const record = patched(stored, patch);
    this.replace(stored, record);
    return record;
  }

  /** put(), without its promise. */
  private write(record: AgentRecord, expectedRevision: number): boolean {
    const current = this.agents.get(record.id);
    if ((current?.revision ?? 0) !== expectedRevision) return false;
    this.replace(current, record);
    return true;
  }

  /** Stores `record` in place of `current` (the stored one, if any) and moves the indexes. */
  private replace(current: AgentRecord | undefined, record: AgentRecord): void {
    this.agents.set(record.id, record);
    if (current && sameShape(current, record)) {
      // Heartbeats keep capabilities and tools: only state indexes move.
      this.scope(record.tenant).restate(current, record);
      if (record.shared) this.scope(SHARED).restate(current, record);
      if (current.status !== record.status) this.membership++;
      if (!sameCatalogEntry(current, record)) this.catalogChanged(record);
    } else {
      if (current) this.unindex(current);
      this.index(record);
    }
    this.catalog.apply(current, record);
  }

  async delete(id: string, expectedRevision: number): Promise<boolean> {
    const current = this.agents.get(id);
    if (!current || current.revision !== expectedRevision) return false;
    this.unindex(current);
    this.agents.delete(id);
    this.catalog.apply(current, undefined);
    return true;
  }

  async list(tenant: string, afterId: string, limit: number): Promise<AgentRecord[]> {
    return this.page(this.scopes.get(tenant), afterId, limit);
  }

  async listShared(afterId: string, limit: number): Promise<AgentRecord[]> {
    return this.page(this.scopes.get(SHARED), afterId, limit);
  }

  async query(q: AgentQuery): Promise<readonly AgentRecord[]> {
    const key = `${q.tenant}\u0000${q.capabilities.join("\u0001")}\u0000${q.tags.join("\u0001")}\u0000${q.statuses.join(",")}\u0000${q.limit}`;
    const known = this.answers.get(key);
    if (known && known.version === this.membership) {
      if (known.records.every((a) => this.agents.get(a.id) === a)) return known.records;
      known.records = known.records.map((a) => this.agents.get(a.id)!);
      return known.records;
    }
    const out: AgentRecord[] = [];
    this.collect(this.scopes.get(q.tenant), q, out, undefined);
    // The tenant's own shared agents were found in its scope already.
    if (q.tenant !== SHARED) this.collect(this.scopes.get(SHARED), q, out, q.tenant);
    this.answers.set(key, { version: this.membership, records: out });
    return out;
  }

  /** Appends the scope's matches to `out` (up to the limit), skipping agents of `skipTenant`. */
  private collect(scope: Scope | undefined, q: AgentQuery, out: AgentRecord[], skipTenant: string | undefined): void {
    if (!scope || out.length >= q.limit) return;
    // Nothing asked: every id, in order.
    if (q.capabilities.length === 0 && q.tags.length === 0) {
      this.collectIds(scope.sortedIds, q, out, skipTenant);
      return;
    }
    // The kinds that have every capability and tag asked: the smallest
    // set of kinds walked, each checked in the others.
    const sets: ReadonlySet<readonly CapabilityRecord[]>[] = [];
    for (const c of q.capabilities) sets.push(scope.kindsByCapability.get(c) ?? NO_KINDS);
    for (const t of q.tags) sets.push(scope.kindsByTag.get(t) ?? NO_KINDS);
    sets.sort((a, b) => a.size - b.size);
    for (const kind of sets[0]!) {
      let all = true;
      for (let i = 1; i < sets.length && all; i++) all = sets[i]!.has(kind);
      if (!all) continue;
      if (this.collectIds(scope.kinds.get(kind)!, q, out, skipTenant)) return;
    }
  }

  /** Appends the agents of `ids` that pass the status and tenant filters; true once the limit is reached. */
  private collectIds(ids: Iterable<string>, q: AgentQuery, out: AgentRecord[], skipTenant: string | undefined): boolean {
    for (const id of ids) {
      const a = this.agents.get(id)!;
      if (a.tenant === skipTenant) continue;
      if (q.statuses.length > 0 && !q.statuses.includes(a.status)) continue;
      out.push(a);
      if (out.length >= q.limit) return true;
    }
    return false;
  }

  *routable(tenant: string, capabilities: readonly string[]): Generator<AgentRecord> {
    // Each list's blocks, walked by (block, index) (no iterator objects: this is Route's hot loop).
    const own = this.ranked(this.scopes.get(tenant), capabilities);
    const shared = this.ranked(this.scopes.get(SHARED), capabilities);
    let ob = 0;
    let oi = 0;
    let sb = 0;
    let si = 0;
    for (;;) {
      const x = own[ob]?.[oi];
      const y = shared[sb]?.[si];
      if (x === undefined && y === undefined) return;
      const takeOwn = y === undefined || (x !== undefined && !rankedBefore(y, x));
      let entry: Ranked;
      if (takeOwn) {
        entry = x!;
        if (++oi >= own[ob]!.length) {
          ob++;
          oi = 0;
        }
      } else {
        entry = y;
        if (++si >= shared[sb]!.length) {
          sb++;
          si = 0;
        }
      }
      // The list walked is one capability's; the others are checked first, on the entry (no closures per agent: this is Route's hot loop).
      if (capabilities.length > 1 && !offersAll(entry.capabilities, capabilities)) continue;
      const agent = this.agents.get(entry.id)!;
      // The tenant's own shared agents are in both scopes: read them once.
      if (!takeOwn && agent.tenant === tenant) continue;
      yield agent;
    }
  }

  async expired(now: number, limit: number): Promise<AgentRecord[]> {
    const out: AgentRecord[] = [];
    for (const a of this.agents.values()) {
      if (a.leaseExpiresAt <= now) out.push(a);
      if (out.length >= limit) break;
    }
    return out;
  }

  async tools(q: ToolQuery): Promise<CatalogEntry[]> {
    return this.catalog.perAgent(q);
  }

  toolCatalog(): ToolCatalog {
    return this.catalog;
  }

  async counts(tenant: string): Promise<FleetCounts> {
    const scope = this.scopes.get(tenant);
    return {
      total: scope?.size ?? 0,
      byStatus: new Map(scope?.statusCounts),
      capabilities: scope?.kindsByCapability.size ?? 0,
      tools: scope?.toolCount ?? 0,
    };
  }

  async statusTotals(): Promise<ReadonlyMap<AgentStatus, number>> {
    const totals = new Map<AgentStatus, number>();
    // Every agent is in its tenant's scope once (shared ones also in SHARED's: not counted twice).
    for (const [tenant, scope] of this.scopes) {
      if (tenant === SHARED) continue;
      for (const [status, n] of scope.statusCounts) totals.set(status, (totals.get(status) ?? 0) + n);
    }
    return totals;
  }

  health(): ComponentStatus {
    return { ok: true, message: "in-memory" };
  }

  async close(): Promise<void> {}

  /** The blocks of the shortest ranked list among the capabilities; the others are checked per agent. */
  private ranked(scope: Scope | undefined, capabilities: readonly string[]): readonly (readonly Ranked[])[] {
    let best: RankedList | undefined;
    for (const c of capabilities) {
      const list = scope?.routable.get(c);
      if (!list) return [];
      if (!best || list.length < best.length) best = list;
    }
    return best?.blocks ?? [];
  }

  private page(scope: Scope | undefined, afterId: string, limit: number): AgentRecord[] {
    if (!scope) return [];
    const start = afterId === "" ? 0 : upperBound(scope.sortedIds, afterId);
    return scope.sortedIds.slice(start, start + limit).map((id) => this.agents.get(id)!);
  }

  catalogVersion(tenant: string | undefined): string {
    const own = tenant === undefined ? 0 : (this.scopes.get(tenant)?.catalogStamp ?? 0);
    return `${own}.${this.scopes.get(SHARED)?.catalogStamp ?? 0}`;
  }

  private catalogChanged(a: AgentRecord): void {
    const tick = ++this.catalogClock;
    this.scope(a.tenant).catalogStamp = tick;
    if (a.shared) this.scope(SHARED).catalogStamp = tick;
  }

  private index(a: AgentRecord): void {
    this.membership++;
    this.catalogChanged(a);
    this.scope(a.tenant).add(a);
    if (a.shared) this.scope(SHARED).add(a);
  }

  private unindex(a: AgentRecord): void {
    this.membership++;
    this.catalogChanged(a);
    this.scope(a.tenant).remove(a);
    if (a.shared) this.scope(SHARED).remove(a);
  }

  private scope(name: string): Scope {
    let s = this.scopes.get(name);
    if (!s) this.scopes.set(name, (s = new Scope()));
    return s;
  }
}

/** Capabilities and tools are the same objects: the record came from update(). */
function sameShape(a: AgentRecord, b: AgentRecord): boolean {
  return a.tenant === b.tenant && a.shared === b.shared && a.capabilities === b.capabilities && a.tools === b.tools;
}

/**
 * Same in everything the manifest shows (both records of one tenant and
 * sharing, same capabilities and tools): load, heartbeat and lease times
 * and revision are not shown.
 */
function sameCatalogEntry(a: AgentRecord, b: AgentRecord): boolean {
  return (
    a.status === b.status &&
    a.name === b.name &&
    a.version === b.version &&
    (a.endpoint === b.endpoint || (a.endpoint.url === b.endpoint.url && a.endpoint.transport === b.endpoint.transport)) &&
    a.labels === b.labels &&
    a.leaseTtlMs === b.leaseTtlMs &&
    a.registeredAt === b.registeredAt
  );
}

/** The agent offers every one of the capabilities. */
function offersAll(offered: readonly CapabilityRecord[], capabilities: readonly string[]): boolean {
  outer: for (const c of capabilities) {
    for (const a of offered) if (a.name === c) continue outer;
    return false;
  }
  return true;
}

function ranked(tier: number, a: AgentRecord): Ranked {
  return { tier, id: a.id, order: idOrder(a.id), capabilities: a.capabilities };
}

/** Route order: better (lower) tier first, then id (its idOrder first: the entry alone, not its id's text, decides most probes). */
function rankedBefore(a: Ranked, b: Ranked): boolean {
  return a.tier < b.tier || (a.tier === b.tier && (a.order < b.order || (a.order === b.order && a.id < b.id)));
}

/**
 * One capability's routable agents in route order (tier, then id), as
 * blocks of at most RANK_BLOCK entries: an insert or a removal moves at
 * most a block. (One array of every capable agent moved ~1,600 entries
 * per capability per registration at 16k agents — with V8's write barrier
 * on an old-generation array, ~50 µs of a registration's CPU for its five
 * capabilities, more than the rest of the store's write; blocks of 256
 * cost more than of 64.) Blocks are never empty; iterable, for reads outside the hot paths.
 */
const RANK_BLOCK = 64;
/**
 * Entries inserted since the list was last read wait, unordered, up to this
 * many (a registration storm inserts into every capability's list and
 * routes read few of them): they are then sorted and placed in one pass,
 * each block search starting from where the one before it ended.
 */
const RANK_PENDING = 64;
class RankedList {
  private readonly placed: Ranked[][] = [];
  /**
   * Each block's last entry (lasts[i] is blocks[i]'s): the search for an
   * entry's block reads this one array, not each probed block (one memory
   * read fewer per probe; the store's inserts ~15–20% cheaper).
   */
  private readonly lasts: Ranked[] = [];
  /** Inserted, not yet placed (see RANK_PENDING), in no order. */
  private pending: Ranked[] = [];
  length = 0;

  /** The blocks in order, every waiting entry placed. */
  get blocks(): readonly (readonly Ranked[])[] {
    if (this.pending.length > 0) this.flush();
    return this.placed;
  }

  insert(entry: Ranked): void {
    this.length++;
    this.pending.push(entry);
    if (this.pending.length >= RANK_PENDING) this.flush();
  }

  /** Removes the agent's entry, found at the place of `entry` (same id and tier); false when it is not there. */
  remove(entry: Ranked): boolean {
    const waiting = this.waiting(entry);
    if (waiting >= 0) {
      this.pending[waiting] = this.pending[this.pending.length - 1]!;
      this.pending.pop();
      this.length--;
      return true;
    }
    const b = this.blockOf(entry, 0);
    const block = this.placed[b];
    if (!block) return false;
    const at = rankedPosition(block, entry);
    if (block[at]?.id !== entry.id) return false;
    this.length--;
    block.splice(at, 1);
    if (block.length === 0) {
      this.placed.splice(b, 1);
      this.lasts.splice(b, 1);
    } else {
      this.lasts[b] = block[block.length - 1]!;
    }
    return true;
  }

  /**
   * Replaces the agent's entry `old` (found at its place, or waiting) with
   * `next` in place, when `next` belongs there in the order (its neighbours
   * stay before and after it); false, changing nothing, otherwise.
   */
  move(old: Ranked, next: Ranked): boolean {
    const waiting = this.waiting(old);
    if (waiting >= 0) {
      this.pending[waiting] = next;
      return true;
    }
    const b = this.blockOf(old, 0);
    const block = this.placed[b];
    if (!block) return false;
    const at = rankedPosition(block, old);
    if (block[at]?.id !== old.id) return false;
    const before = at > 0 ? block[at - 1] : this.placed[b - 1]?.at(-1);
    const after = at + 1 < block.length ? block[at + 1] : this.placed[b + 1]?.[0];
    if ((before && !rankedBefore(before, next)) || (after && rankedBefore(after, next))) return false;
    block[at] = next;
    if (at === block.length - 1) this.lasts[b] = next;
    return true;
  }

  /** Where `entry` (same id and tier) waits in `pending`; -1 when it does not. */
  private waiting(entry: Ranked): number {
    const pending = this.pending;
    for (let i = 0; i < pending.length; i++) {
      const p = pending[i]!;
      if (p.id === entry.id && p.tier === entry.tier) return i;
    }
    return -1;
  }

  /** Places the waiting entries, in order: each one's block is searched from the last one's. */
  private flush(): void {
    const pending = this.pending;
    this.pending = [];
    pending.sort((x, y) => (rankedBefore(x, y) ? -1 : 1));
    let from = 0;
    for (const entry of pending) from = this.place(entry, from);
  }

  /** Puts `entry` in its block (the first not before it at or after block `from`); returns that block. */
  private place(entry: Ranked, from: number): number {
    if (this.placed.length === 0) {
      this.placed.push([entry]);
      this.lasts.push(entry);
      return 0;
    }
    const b = Math.min(this.blockOf(entry, from), this.placed.length - 1);
    const block = this.placed[b]!;
    block.splice(rankedPosition(block, entry), 0, entry);
    if (block.length > RANK_BLOCK) {
      const tail = block.splice(RANK_BLOCK >> 1);
      this.placed.splice(b + 1, 0, tail);
      this.lasts.splice(b, 1, block[block.length - 1]!, tail[tail.length - 1]!);
    } else {
      this.lasts[b] = block[block.length - 1]!;
    }
    return b;
  }

  *[Symbol.iterator](): Generator<Ranked> {
    for (const block of this.blocks) yield* block;
  }

  /**
   * The first block whose last entry is not before `entry`, searched from
   * block `from` (every block before it must be before `entry`): from 0 by
   * halving, else galloping from `from` (1, 3, 7, … blocks on) and then
   * halving; blocks.length when none.
   */
  private blockOf(entry: Ranked, from: number): number {
    const lasts = this.lasts;
    let lo = from;
    let hi = lasts.length;
    if (from > 0) {
      for (hi = from; hi < lasts.length && rankedBefore(lasts[hi]!, entry); ) {
        lo = hi + 1;
        hi = from + 2 * (hi - from + 1) - 1;
      }
      hi = Math.min(hi, lasts.length);
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (rankedBefore(lasts[mid]!, entry)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** First position whose entry is not before `entry`. */
function rankedPosition(list: readonly Ranked[], entry: Ranked): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (rankedBefore(list[mid]!, entry)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Two sorted id lists as one sorted sequence, without duplicates. */
function* mergeSorted(a: readonly string[], b: readonly string[]): Generator<string> {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i]! < b[j]!)) yield a[i++]!;
    else if (i >= a.length || b[j]! < a[i]!) yield b[j++]!;
    else {
      yield a[i++]!;
      j++;
    }
  }
}

function addTo<T>(index: Map<string, Set<T>>, key: string, id: T): void {
  let set = index.get(key);
  if (!set) index.set(key, (set = new Set()));
  set.add(id);
}

function removeFrom<T>(index: Map<string, Set<T>>, key: string, id: T): void {
  const set = index.get(key);
  if (!set) return;
  set.delete(id);
  if (set.size === 0) index.delete(key);
}

/** First index whose id is >= `id`. */
function lowerBound(ids: readonly string[], id: string): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose id is > `id`. */
function upperBound(ids: readonly string[], id: string): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! <= id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
