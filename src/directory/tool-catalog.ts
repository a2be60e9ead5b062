import MiniSearch, { type SearchResult } from "minisearch";
import { LRUCache } from "lru-cache";
import { AgentStatus, type AgentRecord, type ToolRecord } from "../registry/agent-record.js";
import type { CatalogEntry, ToolQuery } from "../registry/agent-store.js";
import { toolContentHash } from "../registry/shared-values.js";

/** Index scope of shared agents, beside one scope per tenant (no tenant can be named this). */
const SHARED = "\u0000shared";

/**
 * One distinct tool in one scope: its content (name, description, schema —
 * `tool_id` is their hash) and the agents of the scope that offer it.
 */
interface Entry {
  readonly id: string;
  /** Sort key: name, then id (browse order and keyset cursor). */
  readonly key: string;
  readonly tool: ToolRecord;
  /** Provider agent ids, sorted (keyset paging of providers, k-way merge of the per-agent view). */
  readonly providers: string[];
  healthy: number;
  /** Providers' capabilities, tags and labels ("k=v"), counted: filters and the indexed text. */
  readonly caps: Map<string, number>;
  readonly tags: Map<string, number>;
  readonly labels: Map<string, number>;
  /** Shared scope only: providers per owning tenant, so a tenant's own shared agents count once. */
  readonly byTenant: Map<string, { n: number; healthy: number }> | undefined;
}

interface Doc {
  id: string;
  name: string;
  description: string;
  caps: string;
  tags: string;
}

class CatalogScope {
  readonly entries = new Map<string, Entry>();
  readonly sorted: string[] = [];
  readonly index = new MiniSearch<Doc>({
    fields: ["name", "description", "caps", "tags"],
    tokenize,
    processTerm: (t) => t.toLowerCase(),
  });
  /** Bumped whenever which entries match a query, or their order, may have changed. */
  version = 0;
  /** Tenant scopes: entries that the shared scope has too (counted once in a view). */
  overlap = 0;

  constructor(readonly name: string) {}
}

/** A query of the distinct catalog. */
export interface CatalogSearch {
  readonly tenant: string;
  readonly text: string;
  readonly capabilities: readonly string[];
  readonly tags: readonly string[];
  /** Each "key=value". */
  readonly labels: readonly string[];
  readonly healthyOnly: boolean;
  readonly after: CatalogCursor | undefined;
  readonly limit: number;
}

/** The position after an entry: its score (0 without a query) and sort key. */
export interface CatalogCursor {
  readonly score: number;
  readonly key: string;
}

/** One distinct tool as a tenant sees it. */
export interface ToolView {
  readonly id: string;
  readonly key: string;
  readonly tool: ToolRecord;
  readonly score: number;
  readonly providerCount: number;
  readonly healthyCount: number;
}

export interface CatalogPage {
  readonly entries: ToolView[];
  readonly next: CatalogCursor | undefined;
  readonly total: number;
}

type Filters = Pick<CatalogSearch, "tenant" | "capabilities" | "tags" | "labels" | "healthyOnly">;

interface Hit {
  readonly id: string;
  readonly key: string;
  readonly score: number;
}

const FIELD_WEIGHT: Record<string, number> = { name: 4, caps: 1.5, tags: 1, description: 1 };

/**
 * The MCP tool catalog: one entry per distinct tool (name + content hash)
 * with its providers, per tenant scope and one shared scope, each with its
 * own full-text index (minisearch). A tenant's view is its scope and the
 * shared one — no other scope is ever read, so other tenants' tools cannot
 * appear, not even in counts. Kept current by `apply(before, after)` on
 * every change of an agent (the memory store calls it on each write; other
 * stores feed it from the event stream, see CatalogFeed).
 *
 * Costs: a change touches the entries of the agent's tools (a binary
 * insert into a provider list); browsing is a keyset merge of two sorted
 * key lists (the page, whatever the catalog's size); a query or filter
 * computes its ranked matches once per catalog version (cached), and its
 * pages are binary searches into them.
 */
export class ToolCatalog {
  private readonly scopes = new Map<string, CatalogScope>();
  private readonly agents = new Map<string, AgentRecord>();
  private readonly results = new LRUCache<string, Hit[]>({ max: 512 });

  /** An agent was added (before undefined), changed, or removed (after undefined). */
  apply(before: AgentRecord | undefined, after: AgentRecord | undefined): void {
    if (after) this.agents.set(after.id, after);
    else if (before) this.agents.delete(before.id);
    if (before && after && sameShape(before, after)) {
      if (before.status !== after.status) this.restate(before, after);
      return;
    }
    if (before) this.remove(before);
    if (after) this.add(after);
  }

  /** The agent as the catalog knows it (feeds compare revisions with it). */
  agent(id: string): AgentRecord | undefined {
    return this.agents.get(id);
  }

  search(q: CatalogSearch): CatalogPage {
    const own = this.scopes.get(q.tenant);
    const shared = this.scopes.get(SHARED);
    const text = q.text.trim();
    if (text === "" && q.capabilities.length === 0 && q.tags.length === 0 && q.labels.length === 0 && !q.healthyOnly) {
      return this.browse(q.tenant, own, shared, q.after, q.limit);
    }
    const hits = this.cachedMatches(q, own, shared, text);
    let start = 0;
    if (q.after) {
      const after = q.after;
      let lo = 0;
      let hi = hits.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const h = hits[mid]!;
        if (h.score > after.score || (h.score === after.score && h.key <= after.key)) lo = mid + 1;
        else hi = mid;
      }
      start = lo;
    }
    const entries: ToolView[] = [];
    for (let i = start; i < hits.length && entries.length < q.limit; i++) {
      entries.push(this.view(q.tenant, hits[i]!.id, hits[i]!.score)!);
    }
    const last = entries.at(-1);
    const more = start + entries.length < hits.length;
    return { entries, next: more && last ? { score: last.score, key: last.key } : undefined, total: hits.length };
  }

  /** A page of the agents (the tenant's own and shared) that offer the tool, in id order. */
  providers(tenant: string, toolId: string, afterId: string, limit: number): { ids: string[]; total: number } | undefined {
    const own = this.scopes.get(tenant)?.entries.get(toolId);
    const shared = this.scopes.get(SHARED)?.entries.get(toolId);
    if (!own && !shared) return undefined;
    const ids: string[] = [];
    const a = own?.providers ?? [];
    const b = shared?.providers ?? [];
    let i = afterId === "" ? 0 : upperBound(a, afterId);
    let j = afterId === "" ? 0 : upperBound(b, afterId);
    while (ids.length < limit && (i < a.length || j < b.length)) {
      if (j >= b.length || (i < a.length && a[i]! < b[j]!)) ids.push(a[i++]!);
      else if (i >= a.length || b[j]! < a[i]!) ids.push(b[j++]!);
      else {
        ids.push(a[i++]!);
        j++;
      }
    }
    return { ids, total: this.view(tenant, toolId, 0)!.providerCount };
  }

  /**
   * The per-agent view: (agent, tool) rows in (agent id, tool name) order
   * after `q.after`, for the tools that match. A k-way merge of the matching
   * entries' sorted provider lists, each entered by binary search: a page
   * costs the page and the number of matching distinct tools, not the fleet.
   */
  perAgent(q: ToolQuery): CatalogEntry[] {
    const own = this.scopes.get(q.tenant);
    const shared = this.scopes.get(SHARED);
    let ids: Iterable<string>;
    if (q.text.trim() !== "") {
      const hits = this.cachedMatches({ tenant: q.tenant, capabilities: [], tags: [], labels: [], healthyOnly: false }, own, shared, q.text.trim());
      ids = hits.filter((h) => q.name === "" || this.toolOf(q.tenant, h.id)!.name === q.name).map((h) => h.id);
    } else if (q.name !== "") {
      const found = new Set<string>();
      for (const scope of [own, shared]) {
        if (!scope) continue;
        for (let i = lowerBound(scope.sorted, `${q.name}\u0000`); i < scope.sorted.length; i++) {
          const key = scope.sorted[i]!;
          if (!key.startsWith(`${q.name}\u0000`)) break;
          found.add(idOfKey(key));
        }
      }
      ids = found;
    } else {
      ids = new Set([...(own?.entries.keys() ?? []), ...(shared?.entries.keys() ?? [])]);
    }
    const afterAgent = q.after?.agentId ?? "";
    const heap = new MergeHeap();
    for (const id of ids) {
      for (const entry of [own?.entries.get(id), shared?.entries.get(id)]) {
        if (!entry) continue;
        const at = afterAgent === "" ? 0 : lowerBound(entry.providers, afterAgent);
        if (at < entry.providers.length) heap.push({ list: entry.providers, at, entry });
      }
    }
    const out: CatalogEntry[] = [];
    let lastAgent = "";
    let lastTool = "";
    while (out.length < q.limit) {
      const top = heap.pop();
      if (!top) break;
      const agentId = top.list[top.at]!;
      const toolName = top.entry.tool.name;
      if (top.at + 1 < top.list.length) heap.push({ ...top, at: top.at + 1 });
      if (q.after && agentId === q.after.agentId && toolName <= q.after.toolName) continue;
      // The tenant's own shared agents are in both scopes: one row.
      if (agentId === lastAgent && toolName === lastTool) continue;
      lastAgent = agentId;
      lastTool = toolName;
      out.push({ agentId, agentName: this.agents.get(agentId)?.name ?? "", tool: top.entry.tool, toolId: top.entry.id });
    }
    return out;
  }

  /** Distinct entries the tenant sees (for tests and the bench). */
  size(tenant: string): number {
    const own = this.scopes.get(tenant);
    const shared = this.scopes.get(SHARED);
    return (own?.entries.size ?? 0) + (shared?.entries.size ?? 0) - (own?.overlap ?? 0);
  }

  private browse(
    tenant: string,
    own: CatalogScope | undefined,
    shared: CatalogScope | undefined,
    after: CatalogCursor | undefined,
    limit: number,
  ): CatalogPage {
    const a = own?.sorted ?? [];
    const b = shared?.sorted ?? [];
    let i = after ? upperBound(a, after.key) : 0;
    let j = after ? upperBound(b, after.key) : 0;
    const entries: ToolView[] = [];
    while (entries.length < limit && (i < a.length || j < b.length)) {
      let key: string;
      if (j >= b.length || (i < a.length && a[i]! < b[j]!)) key = a[i++]!;
      else if (i >= a.length || b[j]! < a[i]!) key = b[j++]!;
      else {
        key = a[i++]!;
        j++;
      }
      entries.push(this.view(tenant, idOfKey(key), 0)!);
    }
    const more = i < a.length || j < b.length;
    const last = entries.at(-1);
    return { entries, next: more && last ? { score: 0, key: last.key } : undefined, total: this.size(tenant) };
  }

  /** matches(), remembered until either scope changes (deeper pages are binary searches into it). */
  private cachedMatches(q: Filters, own: CatalogScope | undefined, shared: CatalogScope | undefined, text: string): Hit[] {
    const cacheKey = [q.tenant, own?.version ?? -1, shared?.version ?? -1, text, q.capabilities.join(","), q.tags.join(","), q.labels.join(","), q.healthyOnly].join("\u0000");
    let hits = this.results.get(cacheKey);
    if (!hits) {
      hits = this.matches(q, own, shared, text);
      this.results.set(cacheKey, hits);
    }
    return hits;
  }

  /** Every entry of the view that matches, best first (score, then key). */
  private matches(
    q: Filters,
    own: CatalogScope | undefined,
    shared: CatalogScope | undefined,
    text: string,
  ): Hit[] {
    const scores = new Map<string, number>();
    const consider = (id: string, score: number) => {
      const known = scores.get(id);
      if (known === undefined || score > known) scores.set(id, score);
    };
    if (text === "") {
      for (const scope of [own, shared]) for (const id of scope?.entries.keys() ?? []) consider(id, 0);
    } else {
      const terms = tokenizeQuery(text);
      if (terms.length === 0) return [];
      const exact = text.toLowerCase();
      for (const scope of [own, shared]) {
        if (!scope) continue;
        for (const r of find(scope, terms, false)) consider(r.id as string, relevance(r, terms, scope.entries.get(r.id as string)!, exact));
      }
      // Nothing by words and their prefixes: try one typo per word (fuzzy
      // matching walks much more of the index, so only when needed).
      if (scores.size === 0) {
        for (const scope of [own, shared]) {
          if (!scope) continue;
          for (const r of find(scope, terms, true)) consider(r.id as string, relevance(r, terms, scope.entries.get(r.id as string)!, exact));
        }
      }
    }
    const hits: Hit[] = [];
    for (const [id, score] of scores) {
      const o = own?.entries.get(id);
      const s = shared?.entries.get(id);
      if (!passes(q, o, s)) continue;
      hits.push({ id, key: (o ?? s)!.key, score });
    }
    hits.sort((x, y) => y.score - x.score || (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
    return hits;
  }

  private view(tenant: string, id: string, score: number): ToolView | undefined {
    const own = this.scopes.get(tenant)?.entries.get(id);
    const shared = this.scopes.get(SHARED)?.entries.get(id);
    const e = own ?? shared;
    if (!e) return undefined;
    const mine = shared?.byTenant?.get(tenant);
    return {
      id,
      key: e.key,
      tool: e.tool,
      score,
      providerCount: (own?.providers.length ?? 0) + (shared ? shared.providers.length - (mine?.n ?? 0) : 0),
      healthyCount: (own?.healthy ?? 0) + (shared ? shared.healthy - (mine?.healthy ?? 0) : 0),
    };
  }

  private toolOf(tenant: string, id: string): ToolRecord | undefined {
    return (this.scopes.get(tenant)?.entries.get(id) ?? this.scopes.get(SHARED)?.entries.get(id))?.tool;
  }

  private scopesOf(a: AgentRecord): CatalogScope[] {
    return a.shared ? [this.scope(a.tenant), this.scope(SHARED)] : [this.scope(a.tenant)];
  }

  private scope(name: string): CatalogScope {
    let s = this.scopes.get(name);
    if (!s) this.scopes.set(name, (s = new CatalogScope(name)));
    return s;
  }

  private add(a: AgentRecord): void {
    const healthy = a.status === AgentStatus.HEALTHY ? 1 : 0;
    for (const scope of this.scopesOf(a)) {
      scope.version++;
      for (const tool of distinctTools(a.tools)) {
        const id = toolContentHash(tool);
        let entry = scope.entries.get(id);
        const fresh = !entry;
        if (!entry) {
          entry = {
            id,
            key: `${tool.name}\u0000${id}`,
            tool,
            providers: [],
            healthy: 0,
            caps: new Map(),
            tags: new Map(),
            labels: new Map(),
            byTenant: scope.name === SHARED ? new Map() : undefined,
          };
          scope.entries.set(id, entry);
          scope.sorted.splice(lowerBound(scope.sorted, entry.key), 0, entry.key);
          this.overlapChanged(scope, id, 1);
        }
        const at = lowerBound(entry.providers, a.id);
        if (entry.providers[at] === a.id) continue;
        entry.providers.splice(at, 0, a.id);
        entry.healthy += healthy;
        if (entry.byTenant) {
          const t = entry.byTenant.get(a.tenant) ?? { n: 0, healthy: 0 };
          t.n++;
          t.healthy += healthy;
          entry.byTenant.set(a.tenant, t);
        }
        let reindex = fresh;
        for (const c of a.capabilities) {
          reindex = count(entry.caps, c.name, 1) || reindex;
          for (const t of c.tags) reindex = count(entry.tags, t, 1) || reindex;
        }
        for (const [k, v] of Object.entries(a.labels)) count(entry.labels, `${k}=${v}`, 1);
        if (reindex) this.reindex(scope, entry, fresh);
      }
    }
  }

  private remove(a: AgentRecord): void {
    const healthy = a.status === AgentStatus.HEALTHY ? 1 : 0;
    for (const scope of this.scopesOf(a)) {
      scope.version++;
      for (const tool of distinctTools(a.tools)) {
        const id = toolContentHash(tool);
        const entry = scope.entries.get(id);
        if (!entry) continue;
        const at = lowerBound(entry.providers, a.id);
        if (entry.providers[at] !== a.id) continue;
        entry.providers.splice(at, 1);
        entry.healthy -= healthy;
        if (entry.byTenant) {
          const t = entry.byTenant.get(a.tenant)!;
          t.n--;
          t.healthy -= healthy;
          if (t.n === 0) entry.byTenant.delete(a.tenant);
        }
        if (entry.providers.length === 0) {
          scope.entries.delete(id);
          const k = lowerBound(scope.sorted, entry.key);
          if (scope.sorted[k] === entry.key) scope.sorted.splice(k, 1);
          scope.index.discard(id);
          this.overlapChanged(scope, id, -1);
          continue;
        }
        let reindex = false;
        for (const c of a.capabilities) {
          reindex = count(entry.caps, c.name, -1) || reindex;
          for (const t of c.tags) reindex = count(entry.tags, t, -1) || reindex;
        }
        for (const [k, v] of Object.entries(a.labels)) count(entry.labels, `${k}=${v}`, -1);
        if (reindex) this.reindex(scope, entry, false);
      }
    }
  }

  /** Same tools, new status: only healthy counts move. */
  private restate(before: AgentRecord, after: AgentRecord): void {
    const delta = (after.status === AgentStatus.HEALTHY ? 1 : 0) - (before.status === AgentStatus.HEALTHY ? 1 : 0);
    if (delta === 0) return;
    for (const scope of this.scopesOf(after)) {
      scope.version++;
      for (const tool of distinctTools(after.tools)) {
        const entry = scope.entries.get(toolContentHash(tool));
        if (!entry) continue;
        entry.healthy += delta;
        const t = entry.byTenant?.get(after.tenant);
        if (t) t.healthy += delta;
      }
    }
  }

  private reindex(scope: CatalogScope, entry: Entry, fresh: boolean): void {
    const doc: Doc = {
      id: entry.id,
      name: entry.tool.name,
      description: entry.tool.description,
      caps: [...entry.caps.keys()].join(" "),
      tags: [...entry.tags.keys()].join(" "),
    };
    if (fresh) scope.index.add(doc);
    else scope.index.replace(doc);
  }

  /** A tenant scope's overlap with the shared scope, when an entry appears (+1) or goes (-1). */
  private overlapChanged(scope: CatalogScope, id: string, delta: 1 | -1): void {
    if (scope.name !== SHARED) {
      if (this.scopes.get(SHARED)?.entries.has(id)) scope.overlap += delta;
      return;
    }
    for (const other of this.scopes.values()) {
      if (other !== scope && other.entries.has(id)) other.overlap += delta;
    }
  }
}

function find(scope: CatalogScope, terms: readonly string[], fuzzy: boolean): SearchResult[] {
  return scope.index.search(terms.join(" "), {
    combineWith: "AND",
    tokenize: tokenizeQuery,
    prefix: true,
    fuzzy: fuzzy ? (term) => (term.length >= 3 ? 1 : false) : false,
  });
}

/** Whether the view of an entry passes the filters (capability, tag, label: some provider has it). */
function passes(
  q: Filters,
  own: Entry | undefined,
  shared: Entry | undefined,
): boolean {
  const has = (field: "caps" | "tags" | "labels", v: string) => (own?.[field].has(v) ?? false) || (shared?.[field].has(v) ?? false);
  for (const c of q.capabilities) if (!has("caps", c)) return false;
  for (const t of q.tags) if (!has("tags", t)) return false;
  for (const l of q.labels) if (!has("labels", l)) return false;
  if (q.healthyOnly) {
    const mine = shared?.byTenant?.get(q.tenant)?.healthy ?? 0;
    if ((own?.healthy ?? 0) + (shared ? shared.healthy - mine : 0) <= 0) return false;
  }
  return true;
}

/**
 * Relevance that depends only on the query and the entry (not on corpus
 * statistics, as BM25's would), so a cursor (score, key) stays valid while
 * other entries come and go: per matched term and field, the field's weight
 * times 1 for an exact word, 0.5 for a prefix, 0.3 for a fuzzy match; +10
 * when the query is the tool's whole name.
 */
function relevance(r: SearchResult, terms: readonly string[], entry: Entry, exact: string): number {
  // (A whole-name match is compared on the name itself: names are not indexed whole.)
  let score = entry.tool.name.toLowerCase() === exact ? 10 : 0;
  for (const [term, fields] of Object.entries(r.match)) {
    const quality = terms.includes(term) ? 1 : terms.some((t) => term.startsWith(t)) ? 0.5 : 0.3;
    for (const f of fields) score += (FIELD_WEIGHT[f] ?? 1) * quality;
  }
  return Math.round(score * 1000) / 1000;
}

/**
 * Words of a name or text: split on anything but letters and digits (so
 * on "_", "." and "-") and on camelCase. A compound name is not kept whole:
 * every prefix of its first word would then expand to every such name
 * (3,000 terms for "tool" in the bench's fleet); the whole name's match is
 * the +10 of relevance() instead.
 */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  for (const word of text.split(/[^\p{L}\p{N}_.-]+/u)) out.push(...splitWord(word));
  return out;
}

/** The lowercased words of a tool's name and description (the MongoDB store's `words` index). */
export function toolWords(tool: ToolRecord): string[] {
  return [...new Set([...tokenize(tool.name), ...tokenize(tool.description)].map((w) => w.toLowerCase()))];
}

/** A query's words: the parts only (a compound query matches its parts in any name). */
export function tokenizeQuery(text: string): string[] {
  const out: string[] = [];
  for (const word of text.split(/[^\p{L}\p{N}_.-]+/u)) out.push(...splitWord(word).map((t) => t.toLowerCase()));
  return [...new Set(out)];
}

function splitWord(word: string): string[] {
  const out: string[] = [];
  for (const piece of word.split(/[_.-]+/)) {
    if (piece === "") continue;
    for (const part of piece.split(/(?<=[\p{Ll}\p{N}])(?=\p{Lu})|(?<=\p{Lu})(?=\p{Lu}\p{Ll})/u)) if (part !== "") out.push(part);
  }
  return out;
}

function distinctTools(tools: readonly ToolRecord[]): ToolRecord[] {
  if (tools.length < 2) return tools as ToolRecord[];
  const seen = new Set<string>();
  return tools.filter((t) => {
    const id = toolContentHash(t);
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

function sameShape(a: AgentRecord, b: AgentRecord): boolean {
  return a.tenant === b.tenant && a.shared === b.shared && a.tools === b.tools && a.capabilities === b.capabilities && a.labels === b.labels;
}

/** Adds `delta` to a counter; true when the key appeared or disappeared. */
function count(map: Map<string, number>, key: string, delta: 1 | -1): boolean {
  const n = (map.get(key) ?? 0) + delta;
  if (n <= 0) {
    map.delete(key);
    return true;
  }
  map.set(key, n);
  return n === 1 && delta === 1;
}

function idOfKey(key: string): string {
  return key.slice(key.lastIndexOf("\u0000") + 1);
}

interface Cursor {
  readonly list: readonly string[];
  readonly at: number;
  readonly entry: Entry;
}

function cursorBefore(a: Cursor, b: Cursor): boolean {
  const x = a.list[a.at]!;
  const y = b.list[b.at]!;
  if (x !== y) return x < y;
  return a.entry.tool.name < b.entry.tool.name;
}

/** A binary min-heap of list cursors, by (agent id, tool name). */
class MergeHeap {
  private readonly items: Cursor[] = [];

  push(c: Cursor): void {
    const h = this.items;
    h.push(c);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!cursorBefore(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): Cursor | undefined {
    const h = this.items;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && cursorBefore(h[l]!, h[m]!)) m = l;
        if (r < h.length && cursorBefore(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function lowerBound(list: readonly string[], key: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function upperBound(list: readonly string[], key: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
