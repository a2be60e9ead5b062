import SearchableMap from "minisearch/SearchableMap";
import { LRUCache } from "lru-cache";
import { idOrder } from "../id-order.js";
import { RecentMap } from "../recent-map.js";
import { AgentStatus, type AgentRecord, type ToolRecord } from "../registry/agent-record.js";
import type { CatalogEntry, ToolKey, ToolQuery } from "../registry/agent-store.js";
import { toolContentHash } from "../registry/shared-values.js";

/** Index scope of shared agents, beside one scope per tenant (no tenant can be named this). */
const SHARED = "\u0000shared";

/**
 * One distinct tool in one scope: its content (name, description, schema —
 * `id` is their hash) and the agents of the scope that offer it. Kept small
 * (a fleet of unique agents has one per tool): the common single-provider
 * entry holds its provider's id and reads capabilities, tags and labels
 * from that agent; counters exist only once a second provider arrives.
 */
interface Entry {
  readonly id: string;
  readonly tool: ToolRecord;
  /**
   * The sort key (see compareKey): the tool's name, held here too, and
   * idOrder(id). A search of the sorted blocks then reads the entry alone,
   * not its tool and its id's text as well (each a cold read at 10k agents).
   */
  readonly name: string;
  readonly order: number;
  /** The one provider's id, or the sorted ids of several (keyset paging, k-way merge of the per-agent view). */
  providers: string | string[];
  healthy: number;
  /** With two or more providers: their capabilities, tags and labels ("k=v"), counted. */
  facets: Facets | undefined;
  /** Lowercased words, space-delimited (" a b "): the name's (shared between entries of one name), the description's. */
  readonly nameWords: string;
  readonly descWords: string;
  /** Shared scope only: providers per owning tenant, so a tenant's own shared agents count once. */
  readonly byTenant: Map<string, { n: number; healthy: number }> | undefined;
  /** The index's: the entry's facet group as it was when indexed (its facets may have changed since); undefined while not indexed. */
  group: FacetGroup | undefined;
}

interface Facets {
  readonly caps: Map<string, number>;
  readonly tags: Map<string, number>;
  readonly labels: Map<string, number>;
  /** The words of caps and tags (see facetWords), until they change. */
  words: FacetWords | undefined;
}

/** The words of an entry's providers' capability names and tags (" a b "), one object per set of providers' capabilities (see facetWords). */
interface FacetWords {
  readonly caps: string;
  readonly tags: string;
  /** Both, as one string: the index's facet groups are by content (see CatalogIndex.groups). */
  readonly key: string;
}

/** One word of a scope's index: the entries that hold it themselves, and the facet groups that hold it. */
interface Posting {
  readonly word: string;
  /**
   * The entries that hold the word themselves, until more than the index's
   * cap do (a word of most descriptions: "tool", "of"): then undefined, the
   * word's entries are found by a scan (see matching), and only counted.
   */
  entries: Set<Entry> | undefined;
  /** How many entries hold the word themselves. */
  own: number;
  /** Made with the first group (most words — an agent's own, in a description — never have one). */
  groups: Set<FacetGroup> | undefined;
  /** Entries that hold the word through a group (the sum of its groups' sizes). */
  viaGroups: number;
}

/** The entries whose facet words are one object, and that object's words' postings. */
interface FacetGroup {
  readonly words: FacetWords;
  readonly entries: Set<Entry>;
  readonly postings: readonly Posting[];
}

/**
 * The scope's full-text index: from each word (in a term tree, for prefix
 * and fuzzy matching) to the entries that hold it. It finds candidates;
 * relevance is computed from the query and the entry alone (see
 * relevance()). An entry's own words (name, description) are indexed per
 * entry; its capability and tag words are the same for every tool of one
 * agent (and for agents registered alike), so they are indexed once per
 * facet group (facetWords' content) and an entry joins its group: a new
 * agent's tool costs its own few words, not the ~30 words of its
 * capabilities again (that was most of a registration's catalog work, and
 * most of the index's memory, when each tool was a minisearch document).
 */
class CatalogIndex {
  private readonly tree = new SearchableMap<Posting>();
  private readonly postings = new Map<string, Posting>();
  /**
   * Facet groups by their words' content (FacetWords.key), not by the
   * FacetWords object: agents registered alike share one group even when
   * their capabilities are not one list (records decoded from events or
   * read from a store, a list the shared-values pool let go, an entry of
   * several providers whose words were computed again) — a group per
   * agent made each registration write its ~15 words' postings and add a
   * member to each of their `groups` sets, and a search of a capability
   * word walk one group per agent.
   */
  private readonly groups = new Map<string, FacetGroup>();

  constructor(
    /** Every entry of the scope (each is indexed): what a scan reads. */
    private readonly entries: ReadonlyMap<string, Entry>,
    private readonly facets: (e: Entry) => FacetWords,
    /** Entries a posting lists before it only counts them (see Posting.entries). */
    private readonly postingCap: number,
  ) {}

  add(e: Entry): void {
    if (e.group) return;
    // Words are sliced one by one, not split (no arrays), and a word of
    // both the name and the description is held once (hasWord: no " w "
    // string per word to test the name with).
    const n = e.nameWords;
    for (let at = 1, end = n.indexOf(" ", 1); end > 0; at = end + 1, end = n.indexOf(" ", at)) this.join(this.posting(n.slice(at, end)), e);
    const d = e.descWords;
    for (let at = 1, end = d.indexOf(" ", 1); end > 0; at = end + 1, end = d.indexOf(" ", at)) {
      const w = d.slice(at, end);
      if (!hasWord(n, w)) this.join(this.posting(w), e);
    }
    const f = this.facets(e);
    let group = this.groups.get(f.key);
    if (!group) {
      const postings = new Set<Posting>();
      for (const words of [f.caps, f.tags]) for (const w of words.split(" ")) if (w !== "") postings.add(this.posting(w));
      group = { words: f, entries: new Set(), postings: [...postings] };
      for (const p of group.postings) (p.groups ??= new Set()).add(group);
      this.groups.set(f.key, group);
    }
    group.entries.add(e);
    for (const p of group.postings) p.viaGroups++;
    e.group = group;
  }

  discard(e: Entry): void {
    const group = e.group;
    if (!group) return;
    e.group = undefined;
    const n = e.nameWords;
    for (let at = 1, end = n.indexOf(" ", 1); end > 0; at = end + 1, end = n.indexOf(" ", at)) this.leave(n.slice(at, end), e);
    const d = e.descWords;
    for (let at = 1, end = d.indexOf(" ", 1); end > 0; at = end + 1, end = d.indexOf(" ", at)) {
      const w = d.slice(at, end);
      if (!hasWord(n, w)) this.leave(w, e);
    }
    group.entries.delete(e);
    for (const p of group.postings) p.viaGroups--;
    if (group.entries.size > 0) return;
    this.groups.delete(group.words.key);
    for (const p of group.postings) p.groups!.delete(group);
    for (const words of [group.words.caps, group.words.tags]) {
      for (const w of words.split(" ")) {
        const p = w === "" ? undefined : this.postings.get(w);
        if (p) this.dropIfEmpty(w, p);
      }
    }
  }

  /** Words and facet groups held (for tests). */
  get size(): { readonly words: number; readonly groups: number } {
    return { words: this.postings.size, groups: this.groups.size };
  }

  /** The entry's words or facets changed: indexed again. */
  replace(e: Entry): void {
    this.discard(e);
    this.add(e);
  }

  /** The entries holding a word that begins with `term`, or (`typos`) one edit away from it. */
  matching(term: string, typos: boolean): Entry[] {
    const found = new Set<Entry>();
    /** Words whose postings only count their entries: found by one scan of every entry. */
    let scan: string[] | undefined;
    const take = (p: Posting) => {
      // A word that most entries held when it stopped listing them, but few hold now (the scope grew): listed again, from one scan.
      if (!p.entries && p.own * 4 <= this.entries.size) p.entries = this.holding(p.word);
      if (p.entries) for (const e of p.entries) found.add(e);
      else (scan ??= []).push(` ${p.word} `);
      if (p.groups) for (const g of p.groups) for (const e of g.entries) found.add(e);
    };
    for (const p of this.tree.atPrefix(term).values()) take(p);
    if (typos) for (const [p] of this.tree.fuzzyGet(term, 1).values()) take(p);
    if (scan) {
      for (const e of this.entries.values()) {
        for (const w of scan) {
          if (e.nameWords.includes(w) || e.descWords.includes(w)) {
            found.add(e);
            break;
          }
        }
      }
    }
    return [...found];
  }

  /** How many entries hold `term` as a whole word (one holding it twice, itself and through its group, counts twice): the cost of searching it. */
  documentFrequency(term: string): number {
    const p = this.postings.get(term);
    return p ? p.own + p.viaGroups : 0;
  }

  /** How many (entry, word) matches `term` has as a prefix, counted up to `limit` (a walk of at most that many words). */
  prefixFrequency(term: string, limit: number): number {
    let n = 0;
    for (const p of this.tree.atPrefix(term).values()) {
      n += p.own + p.viaGroups;
      if (n >= limit) return limit;
    }
    return n;
  }

  private posting(w: string): Posting {
    let p = this.postings.get(w);
    if (!p) {
      p = { word: w, entries: new Set(), own: 0, groups: undefined, viaGroups: 0 };
      this.postings.set(w, p);
      this.tree.set(w, p);
    }
    return p;
  }

  /** The entry holds the posting's word itself. */
  private join(p: Posting, e: Entry): void {
    p.own++;
    if (!p.entries) return;
    p.entries.add(e);
    // Many entries, and more than a quarter of the scope's, hold it: a list
    // of them costs every registration a write into a large set (and its
    // memory), while a search that walks this word reads a fair share of
    // the index anyway (a scan reads at most four times what the list holds).
    if (p.entries.size > this.postingCap && p.entries.size * 4 > this.entries.size) p.entries = undefined;
  }

  /** The entries that hold `word` themselves, by a scan. */
  private holding(word: string): Set<Entry> {
    const w = ` ${word} `;
    const out = new Set<Entry>();
    for (const e of this.entries.values()) if (e.nameWords.includes(w) || e.descWords.includes(w)) out.add(e);
    return out;
  }

  private leave(w: string, e: Entry): void {
    const p = this.postings.get(w);
    if (!p) return;
    p.own--;
    p.entries?.delete(e);
    this.dropIfEmpty(w, p);
  }

  private dropIfEmpty(w: string, p: Posting): void {
    if (p.own > 0 || (p.groups?.size ?? 0) > 0) return;
    this.postings.delete(w);
    this.tree.delete(w);
  }
}

class CatalogScope {
  readonly entries = new Map<string, Entry>();
  readonly sorted: SortedEntries;
  /** The scope's agents that offer at least one tool, in id order (the per-agent view walks them). */
  readonly agentIds: SortedIds;
  readonly index: CatalogIndex;
  /** Bumped whenever which entries match a query, or their order, may have changed. */
  version = 0;
  /** Tenant scopes: entries that the shared scope has too (counted once in a view). */
  overlap = 0;
  /** scopesOf()'s lists for this tenant's agents. */
  readonly alone: readonly CatalogScope[] = [this];
  withShared: readonly CatalogScope[] | undefined;

  constructor(
    readonly name: string,
    facets: (e: Entry) => FacetWords,
    postingCap: number,
    pending: number,
  ) {
    this.index = new CatalogIndex(this.entries, facets, postingCap);
    this.sorted = new SortedEntries(pending);
    this.agentIds = new SortedIds(pending);
  }
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
  /** The entry of the tenant's scope, else the shared one's. */
  readonly entry: Entry;
  readonly score: number;
}

/** Field weights of relevance(). */
const NAME = 4;
const CAPS = 1.5;
const TAGS = 1;
const DESCRIPTION = 1;

/**
 * The MCP tool catalog: one entry per distinct tool (name + content hash)
 * with its providers, per tenant scope and one shared scope, each with its
 * own full-text index (minisearch). A tenant's view is its scope and the
 * shared one — no other scope is ever read, so other tenants' tools cannot
 * appear, not even in counts. Kept current by `apply(before, after)` on
 * every change of an agent (the memory store calls it on each write; other
 * stores feed it from the event stream, see CatalogFeed).
 *
 * Costs: a change touches the entries of the agent's tools (a push onto a
 * pending list, later placed into blocks of a sorted list in one ordered
 * pass; a few index terms); browsing is a keyset merge
 * of two sorted lists (the page, whatever the catalog's size); a query
 * asks the index for its rarest word only and checks the other words
 * against each candidate's own words, computes its ranked matches once per
 * catalog version (cached), and its pages are binary searches into them;
 * a page once answered is kept until the catalog changes.
 */
export class ToolCatalog {
  private readonly scopes = new Map<string, CatalogScope>();
  private readonly agents = new Map<string, AgentRecord>();
  private readonly results = new LRUCache<string, Hit[]>({ max: 512 });
  /** The per-agent view's matching entries, by everything that decides them (see rowEntries). */
  private readonly rowMatches = new LRUCache<string, Entry[]>({ max: 256 });
  /** Answered pages, by everything that decides them (scope versions included): a repeated request is a lookup. */
  private readonly pages: LRUCache<string, CatalogPage> | undefined;
  private readonly facets = (e: Entry) => this.facetWords(e);

  /** Rows a filtered per-agent page looks at before it merges (undefined: WALK_BUDGET and WALK_BUDGET_PER_ROW). */
  private readonly walkBudget: number | undefined;
  /** See Posting.entries. */
  private readonly postingCap: number;
  /** See PENDING. */
  private readonly pending: number;

  /**
   * `pageCache`: how many answered pages to keep (0: none, so every page is
   * computed — what the benchmark's page rows measure). `walkBudget`: see
   * perAgent (tests set it low to take both of its ways on a small fleet).
   * `postingCap`: how many entries a word's posting lists before it only
   * counts them (POSTING_CAP; tests set it low to search both ways).
   * `pending`: how many new entries (and agent ids) of a scope wait before
   * they are placed in order (PENDING; tests set it low to take both ways).
   */
  constructor(opts: { readonly pageCache?: number; readonly walkBudget?: number; readonly postingCap?: number; readonly pending?: number } = {}) {
    const max = opts.pageCache ?? 1_024;
    this.pages = max > 0 ? new LRUCache<string, CatalogPage>({ max }) : undefined;
    this.walkBudget = opts.walkBudget;
    this.postingCap = opts.postingCap ?? POSTING_CAP;
    this.pending = Math.max(1, opts.pending ?? PENDING);
  }

  /** An agent was added (before undefined), changed, or removed (after undefined). */
  apply(before: AgentRecord | undefined, after: AgentRecord | undefined): void {
    if (before && after && sameShape(before, after)) {
      this.agents.set(after.id, after);
      if (before.status !== after.status) this.restate(before, after);
      return;
    }
    // Single-provider entries read their provider's record: it must be the
    // one being removed while removing, the new one while adding.
    if (before) {
      this.remove(before);
      this.agents.delete(before.id);
    }
    if (after) {
      this.agents.set(after.id, after);
      this.add(after);
    }
  }

  /** The agent as the catalog knows it (feeds compare revisions with it). */
  agent(id: string): AgentRecord | undefined {
    return this.agents.get(id);
  }

  /** A page of the tenant's view; an identical request against an unchanged catalog gets the same (frozen) page. */
  search(q: CatalogSearch): CatalogPage {
    const own = this.scopes.get(q.tenant);
    const shared = this.scopes.get(SHARED);
    const text = q.text.trim();
    if (!this.pages) return freezePage(this.page(q, own, shared, text));
    const pageKey = [
      q.tenant, own?.version ?? -1, shared?.version ?? -1, text, q.capabilities.join(","), q.tags.join(","), q.labels.join(","),
      q.healthyOnly, q.after?.score ?? "", q.after?.key ?? "", q.limit,
    ].join("\u0000");
    let page = this.pages.get(pageKey);
    if (!page) {
      page = freezePage(this.page(q, own, shared, text));
      this.pages.set(pageKey, page);
    }
    return page;
  }

  private page(q: CatalogSearch, own: CatalogScope | undefined, shared: CatalogScope | undefined, text: string): CatalogPage {
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
        if (h.score > after.score || (h.score === after.score && keyOf(h.entry) <= after.key)) lo = mid + 1;
        else hi = mid;
      }
      start = lo;
    }
    const entries: ToolView[] = [];
    for (let i = start; i < hits.length && entries.length < q.limit; i++) {
      entries.push(this.view(q.tenant, hits[i]!.entry.id, hits[i]!.score)!);
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
    const a = own ? providerList(own) : [];
    const b = shared ? providerList(shared) : [];
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
   * after `q.after`, for the tools that match: `q.name` exactly, and each
   * word of `q.text` the start of a word of the tool's name or description
   * (the MongoDB store's semantics; a text of no words filters nothing).
   * Walks the view's agents in id order from the cursor (each scope keeps
   * the ids of its agents with tools, sorted): a page costs the page plus
   * a binary search, whatever the fleet. A filter that leaves few rows
   * would make that walk long, so it stops after a budget and merges the
   * matching entries' sorted provider lists from where it stopped (a k-way
   * merge, each entered by binary search): then the page costs the
   * matching distinct tools, which a selective filter keeps few.
   */
  perAgent(q: ToolQuery): CatalogEntry[] {
    const own = this.scopes.get(q.tenant);
    const shared = this.scopes.get(SHARED);
    const terms = tokenizeQuery(q.text);
    const filtered = q.name !== "" || terms.length > 0;
    const out: CatalogEntry[] = [];
    const budget = !filtered ? Infinity : (this.walkBudget ?? WALK_BUDGET + WALK_BUDGET_PER_ROW * q.limit);
    // Few entries may match (counted cheaply, up to the budget): merging them costs less than walking.
    if (filtered && this.fewEntries(q.name, terms, own, shared, budget)) {
      this.mergeProviders(q, own, shared, terms, q.after ?? { agentId: "", toolName: "" }, out);
      return out;
    }
    const stopped = this.walkAgents(q, own, shared, terms, out, budget);
    if (stopped === undefined || out.length >= q.limit) return out;
    this.mergeProviders(q, own, shared, terms, stopped, out);
    return out;
  }

  /**
   * Appends matching rows after `q.after` to `out`, agent by agent, until
   * the page is full or the view ends (undefined), or `budget` rows were
   * looked at: the position of the last one looked at.
   */
  private walkAgents(
    q: ToolQuery,
    own: CatalogScope | undefined,
    shared: CatalogScope | undefined,
    terms: readonly string[],
    out: CatalogEntry[],
    budget: number,
  ): ToolKey | undefined {
    const afterAgent = q.after?.agentId ?? "";
    const a = own ? own.agentIds.from(afterAgent) : [][Symbol.iterator]();
    const b = shared ? shared.agentIds.from(afterAgent) : [][Symbol.iterator]();
    let x = a.next();
    let y = b.next();
    let looked = 0;
    while (!x.done || !y.done) {
      let id: string;
      if (y.done || (!x.done && x.value < y.value)) {
        id = x.value!;
        x = a.next();
      } else if (x.done || y.value < x.value) {
        id = y.value;
        y = b.next();
      } else {
        // The tenant's own shared agent: in both scopes, one agent.
        id = x.value;
        x = a.next();
        y = b.next();
      }
      const agent = this.agents.get(id)!;
      for (const tool of byName(agent.tools)) {
        if (q.after && id === q.after.agentId && tool.name <= q.after.toolName) continue;
        const toolId = toolContentHash(tool);
        if (rowMatches(q.name, terms, tool, own?.entries.get(toolId) ?? shared?.entries.get(toolId))) {
          out.push({ agentId: id, agentName: agent.name, tool, toolId });
          if (out.length >= q.limit) return undefined;
        }
        if (++looked >= budget) return { agentId: id, toolName: tool.name };
      }
    }
    return undefined;
  }

  /** Appends matching rows after `from` to `out` until the page is full: a k-way merge of the matching entries' provider lists. */
  private mergeProviders(
    q: ToolQuery,
    own: CatalogScope | undefined,
    shared: CatalogScope | undefined,
    terms: readonly string[],
    from: ToolKey,
    out: CatalogEntry[],
  ): void {
    const heap = new MergeHeap();
    for (const entry of this.rowEntries(q.name, terms, own, shared)) {
      const list = providerList(entry);
      const at = lowerBound(list, from.agentId);
      if (at < list.length) heap.push({ list, at, entry });
    }
    let lastAgent = "";
    let lastTool = "";
    while (out.length < q.limit) {
      const top = heap.pop();
      if (!top) break;
      const agentId = top.list[top.at]!;
      const toolName = top.entry.tool.name;
      if (top.at + 1 < top.list.length) heap.push({ ...top, at: top.at + 1 });
      if (agentId === from.agentId && toolName <= from.toolName) continue;
      // The tenant's own shared agents are in both scopes: one row.
      if (agentId === lastAgent && toolName === lastTool) continue;
      lastAgent = agentId;
      lastTool = toolName;
      out.push({ agentId, agentName: this.agents.get(agentId)?.name ?? "", tool: top.entry.tool, toolId: top.entry.id });
    }
  }

  /**
   * Whether at most `cap` entries may match: the fewest index matches of a
   * query word as a prefix (a bounded walk of the index's term tree), or
   * the entries of the name (a bounded walk of the sorted entries).
   */
  private fewEntries(name: string, terms: readonly string[], own: CatalogScope | undefined, shared: CatalogScope | undefined, cap: number): boolean {
    const scopes = [own, shared].filter((x): x is CatalogScope => x !== undefined);
    if (terms.length > 0) {
      for (const t of terms) {
        let n = 0;
        for (const scope of scopes) n += scope.index.prefixFrequency(t, cap + 1);
        if (n <= cap) return true;
      }
      return false;
    }
    let n = 0;
    for (const scope of scopes) {
      for (const e of scope.sorted.from(name, "", true)) {
        if (e.tool.name !== name) break;
        if (++n > cap) return false;
      }
    }
    return true;
  }

  /** The entries of both scopes whose rows match (an entry of each scope: the merge reads both provider lists), remembered until either scope changes. */
  private rowEntries(name: string, terms: readonly string[], own: CatalogScope | undefined, shared: CatalogScope | undefined): Entry[] {
    const key = [own?.name ?? "", own?.version ?? -1, shared?.version ?? -1, name, terms.join(" ")].join("\u0000");
    let found = this.rowMatches.get(key);
    if (found) return found;
    found = [];
    for (const scope of [own, shared]) {
      if (!scope) continue;
      if (terms.length === 0) {
        for (const e of scope.sorted.from(name, "", true)) {
          if (e.tool.name !== name) break;
          found.push(e);
        }
        continue;
      }
      // The index holds every word of an entry (capabilities' and tags' too): its matches of one word are a superset.
      for (const e of candidates(scope.index, terms, NONE)) if (rowMatches(name, terms, e.tool, e)) found.push(e);
    }
    this.rowMatches.set(key, found);
    return found;
  }

  /** The words and facet groups of a scope's index (a tenant's, or "" for the shared one): for tests. */
  indexSize(tenant: string): { readonly words: number; readonly groups: number } {
    return this.scopes.get(tenant === "" ? SHARED : tenant)?.index.size ?? { words: 0, groups: 0 };
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
    const [name, id] = after ? splitKey(after.key) : ["", ""];
    const a = own?.sorted.from(name, id, !after) ?? [][Symbol.iterator]();
    const b = shared?.sorted.from(name, id, !after) ?? [][Symbol.iterator]();
    let x = a.next();
    let y = b.next();
    const entries: ToolView[] = [];
    while (entries.length < limit && (!x.done || !y.done)) {
      let e: Entry;
      if (y.done || (!x.done && compareEntries(x.value, y.value) < 0)) {
        e = x.value!;
        x = a.next();
      } else if (x.done || compareEntries(y.value, x.value) < 0) {
        e = y.value;
        y = b.next();
      } else {
        e = x.value;
        x = a.next();
        y = b.next();
      }
      entries.push(this.view(tenant, e.id, 0)!);
    }
    const more = !x.done || !y.done;
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
  private matches(q: Filters, own: CatalogScope | undefined, shared: CatalogScope | undefined, text: string): Hit[] {
    const scores = new Map<string, Hit>();
    const consider = (entry: Entry, score: number) => {
      const known = scores.get(entry.id);
      if (known === undefined || score > known.score) scores.set(entry.id, { entry: known?.entry ?? entry, score });
    };
    if (text === "") {
      // The tenant's own entry first: the hit names the tenant's scope's entry when there is one.
      for (const scope of [own, shared]) for (const e of scope?.entries.values() ?? []) if (!scores.has(e.id)) scores.set(e.id, { entry: e, score: 0 });
    } else {
      const terms = tokenizeQuery(text);
      if (terms.length === 0) return [];
      const exact = text.toLowerCase();
      for (const pass of ["words", "typos"] as const) {
        // Nothing by words and their prefixes: try one typo in the words that
        // no entry has (in every word when all are known), so that a typo
        // does not make the correctly spelled words fuzzy too (fuzzy
        // matching walks much more of the index, so only when needed).
        if (pass === "typos" && scores.size > 0) break;
        for (const scope of [own, shared]) {
          if (!scope) continue;
          let fuzzy: ReadonlySet<string> = NONE;
          if (pass === "typos") {
            const unknown = terms.filter((t) => scope.index.documentFrequency(t) === 0);
            fuzzy = new Set(unknown.length > 0 ? unknown : terms);
          }
          for (const entry of candidates(scope.index, terms, fuzzy)) {
            const score = this.relevance(entry, terms, exact, fuzzy);
            if (score > 0) consider(entry, score);
          }
        }
      }
    }
    const hits: Hit[] = [];
    for (const hit of scores.values()) {
      if (passes(q, own?.entries.get(hit.entry.id), shared?.entries.get(hit.entry.id), this.agents)) hits.push(hit);
    }
    hits.sort((x, y) => y.score - x.score || compareEntries(x.entry, y.entry));
    return hits;
  }

  /**
   * Relevance that depends only on the query and the entry (not on corpus
   * statistics, as BM25's would), so a cursor (score, key) stays valid while
   * other entries come and go: for each query word and field, the field's
   * weight times the best match there — 1 for the word itself, 0.5 for a
   * word it begins, else (typo pass, `fuzzy` words only, when it matches
   * no field so) 0.3 for a word one edit away; +10 when the query is the
   * tool's whole name. 0 when a word matches nowhere.
   */
  private relevance(e: Entry, terms: readonly string[], exact: string, fuzzy: ReadonlySet<string>): number {
    const facets = this.facetWords(e);
    // (A whole-name match is compared on the name itself: names are not indexed whole.)
    let score = e.tool.name.toLowerCase() === exact ? 10 : 0;
    for (const t of terms) {
      let s = NAME * quality(e.nameWords, t) + DESCRIPTION * quality(e.descWords, t) + CAPS * quality(facets.caps, t) + TAGS * quality(facets.tags, t);
      if (s === 0 && fuzzy.has(t)) {
        s = 0.3 * (NAME * typo(e.nameWords, t) + DESCRIPTION * typo(e.descWords, t) + CAPS * typo(facets.caps, t) + TAGS * typo(facets.tags, t));
      }
      if (s === 0) return 0;
      score += s;
    }
    return Math.round(score * 1000) / 1000;
  }

  /** The words of an entry's providers' capability names and tags (" a b "). */
  private facetWords(e: Entry): FacetWords {
    if (e.facets) {
      if (!e.facets.words) {
        let caps = "";
        let tags = "";
        for (const k of e.facets.caps.keys()) caps += wordsOf(k);
        for (const k of e.facets.tags.keys()) tags += wordsOf(k);
        e.facets.words = facetWordsOf(caps, tags);
      }
      return e.facets.words;
    }
    const caps = this.agents.get(e.providers as string)?.capabilities ?? [];
    let words = capabilityWords.get(caps);
    if (!words) {
      let capWords = "";
      let tagWords = "";
      for (const c of caps) {
        capWords += wordsOf(c.name);
        for (const t of c.tags) tagWords += wordsOf(t);
      }
      capabilityWords.set(caps, (words = facetWordsOf(capWords, tagWords)));
    }
    return words;
  }

  private view(tenant: string, id: string, score: number): ToolView | undefined {
    const own = this.scopes.get(tenant)?.entries.get(id);
    const shared = this.scopes.get(SHARED)?.entries.get(id);
    const e = own ?? shared;
    if (!e) return undefined;
    const mine = shared?.byTenant?.get(tenant);
    return {
      id,
      key: keyOf(e),
      tool: e.tool,
      score,
      providerCount: (own ? providerCount(own) : 0) + (shared ? providerCount(shared) - (mine?.n ?? 0) : 0),
      healthyCount: (own?.healthy ?? 0) + (shared ? shared.healthy - (mine?.healthy ?? 0) : 0),
    };
  }

  /** The scopes an agent's tools are in: its tenant's, and the shared one's when it is shared (one list per tenant, kept: scopes are never dropped). */
  private scopesOf(a: AgentRecord): readonly CatalogScope[] {
    const own = this.scope(a.tenant);
    return a.shared ? (own.withShared ??= [own, this.scope(SHARED)]) : own.alone;
  }

  private scope(name: string): CatalogScope {
    let s = this.scopes.get(name);
    if (!s) this.scopes.set(name, (s = new CatalogScope(name, this.facets, this.postingCap, this.pending)));
    return s;
  }

  private add(a: AgentRecord): void {
    const healthy = a.status === AgentStatus.HEALTHY ? 1 : 0;
    for (const scope of this.scopesOf(a)) {
      scope.version++;
      if (a.tools.length > 0) scope.agentIds.insert(a.id);
      for (const tool of distinctTools(a.tools)) {
        const id = toolContentHash(tool);
        let entry = scope.entries.get(id);
        if (!entry) {
          entry = {
            id,
            tool,
            name: tool.name,
            order: idOrder(id),
            providers: a.id,
            healthy,
            facets: undefined,
            nameWords: wordsOf(tool.name),
            descWords: words(tool.description),
            byTenant: scope.name === SHARED ? new Map([[a.tenant, { n: 1, healthy }]]) : undefined,
            group: undefined,
          };
          scope.entries.set(id, entry);
          scope.sorted.insert(entry);
          scope.index.add(entry);
          this.overlapChanged(scope, id, 1);
          continue;
        }
        let reindex = false;
        if (typeof entry.providers === "string") {
          if (entry.providers === a.id) continue;
          // A second provider: count both providers' facets from here on.
          const first = this.agents.get(entry.providers)!;
          entry.facets = { caps: new Map(), tags: new Map(), labels: new Map(), words: undefined };
          countFacets(entry.facets, first, 1);
          entry.providers = a.id < entry.providers ? [a.id, entry.providers] : [entry.providers, a.id];
        } else {
          const at = lowerBound(entry.providers, a.id);
          if (entry.providers[at] === a.id) continue;
          entry.providers.splice(at, 0, a.id);
        }
        reindex = countFacets(entry.facets!, a, 1);
        entry.healthy += healthy;
        if (entry.byTenant) {
          const t = entry.byTenant.get(a.tenant) ?? { n: 0, healthy: 0 };
          t.n++;
          t.healthy += healthy;
          entry.byTenant.set(a.tenant, t);
        }
        if (reindex) {
          if (entry.facets) entry.facets.words = undefined;
          scope.index.replace(entry);
        }
      }
    }
  }

  private remove(a: AgentRecord): void {
    const healthy = a.status === AgentStatus.HEALTHY ? 1 : 0;
    for (const scope of this.scopesOf(a)) {
      scope.version++;
      scope.agentIds.delete(a.id);
      for (const tool of distinctTools(a.tools)) {
        const id = toolContentHash(tool);
        const entry = scope.entries.get(id);
        if (!entry) continue;
        if (typeof entry.providers === "string") {
          if (entry.providers !== a.id) continue;
          // The last provider: the entry goes.
          scope.entries.delete(id);
          scope.sorted.delete(entry);
          scope.index.discard(entry);
          this.overlapChanged(scope, id, -1);
          continue;
        }
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
        const reindex = countFacets(entry.facets!, a, -1);
        // One provider left: its own record holds the facets again.
        if (entry.providers.length === 1) {
          entry.providers = entry.providers[0]!;
          entry.facets = undefined;
        }
        if (reindex) {
          if (entry.facets) entry.facets.words = undefined;
          scope.index.replace(entry);
        }
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

const NONE: ReadonlySet<string> = new Set();

/**
 * Entries a word's posting lists before it may only count them (when they
 * are also more than a quarter of the scope's): a word in
 * more descriptions than this ("tool", "of", "agent" in a fleet whose
 * descriptions differ only in a name) made each registration write into
 * sets of the whole catalog's size, and held ~12 bytes per entry per such
 * word; a search driven by such a word scans the scope's entries instead
 * of that set — it returns more entries than this anyway.
 */
const POSTING_CAP = 1_024;

/**
 * Rows a filtered per-agent page looks at before it merges the matching
 * entries' provider lists instead: a filter that matches a fair share of
 * the rows fills the page within it; one that matches few has few entries.
 */
const WALK_BUDGET = 512;
const WALK_BUDGET_PER_ROW = 8;

/** Whether a tool is a row of a per-agent query: its name, and each word the start of a word of its name or description. */
function rowMatches(name: string, terms: readonly string[], tool: ToolRecord, e: Entry | undefined): boolean {
  if (name !== "" && tool.name !== name) return false;
  if (terms.length === 0) return true;
  const nameWords = e?.nameWords ?? wordsOf(tool.name);
  const descWords = e?.descWords ?? words(tool.description);
  for (const t of terms) if (nameWords.indexOf(` ${t}`) < 0 && descWords.indexOf(` ${t}`) < 0) return false;
  return true;
}

/** An agent's tools in name order (validation keeps names unique per agent). */
function byName(tools: readonly ToolRecord[]): readonly ToolRecord[] {
  for (let i = 1; i < tools.length; i++) {
    if (tools[i - 1]!.name > tools[i]!.name) return [...tools].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  }
  return tools;
}

function facetWordsOf(caps: string, tags: string): FacetWords {
  // Capability and tag words hold no NUL (tokenize splits on it).
  return { caps, tags, key: `${caps}\u0000${tags}` };
}

/** facetWords() of single-provider entries, by the provider's capabilities (shared by its tools, gone with the record). */
const capabilityWords = new WeakMap<readonly object[], FacetWords>();

/**
 * The entries that may match every word: the index's matches of the word
 * that the fewest entries hold (a word in every entry, such as "tool", is
 * never walked); relevance() then checks all words on each candidate.
 * Prefix matching always; one typo for `fuzzy` words of 3+ letters, and a
 * word that is not fuzzy drives when there is one.
 */
function candidates(index: CatalogIndex, terms: readonly string[], fuzzy: ReadonlySet<string>): Entry[] {
  // The cost of a word is its matches as a prefix ("1" matches "12" too),
  // walked no further than the best word so far; fuzzy words come last.
  // Rarest whole word first (a word that is no whole term, only a prefix, last).
  const order = terms
    .filter((t) => !fuzzy.has(t))
    .map((t) => ({ t, n: index.documentFrequency(t) || Infinity }))
    .sort((x, y) => x.n - y.n);
  let driver = terms[0]!;
  let cost = 10_000;
  let found = false;
  for (const { t, n } of order) {
    if (n > cost) break;
    const c = index.prefixFrequency(t, cost + 1);
    if (c <= cost) {
      cost = c;
      driver = t;
      found = true;
    }
  }
  // Every word fuzzy (or very common): the longest.
  if (!found) driver = terms.reduce((a, b) => (b.length > a.length ? b : a));
  const typos = fuzzy.has(driver) && driver.length >= 3;
  return index.matching(driver, typos);
}

/** How well `term` matches a word of `words` (" a b "): 1 itself, 0.5 as a prefix, else 0. */
function quality(words: string, term: string): number {
  if (words.indexOf(` ${term}`) < 0) return 0;
  return words.includes(` ${term} `) ? 1 : 0.5;
}

/** 1 when a word of `words` is one edit away from `term` (of 3+ letters), else 0. */
function typo(words: string, term: string): number {
  if (term.length < 3 || words === "") return 0;
  for (const w of words.split(" ")) if (w !== "" && oneEditAway(term, w)) return 1;
  return 0;
}

/** Whether a and b differ by one insertion, deletion or substitution (the index's fuzzy distance 1). */
function oneEditAway(a: string, b: string): boolean {
  if (Math.abs(a.length - b.length) > 1 || a === b) return false;
  const [s, l] = a.length <= b.length ? [a, b] : [b, a];
  let i = 0;
  while (i < s.length && s[i] === l[i]) i++;
  return s.length === l.length ? s.slice(i + 1) === l.slice(i + 1) : s.slice(i) === l.slice(i + 1);
}

/** Whether the view of an entry passes the filters (capability, tag, label: some provider has it). */
function passes(q: Filters, own: Entry | undefined, shared: Entry | undefined, agents: ReadonlyMap<string, AgentRecord>): boolean {
  const has = (field: "caps" | "tags" | "labels", v: string) => hasFacet(own, field, v, agents) || hasFacet(shared, field, v, agents);
  for (const c of q.capabilities) if (!has("caps", c)) return false;
  for (const t of q.tags) if (!has("tags", t)) return false;
  for (const l of q.labels) if (!has("labels", l)) return false;
  if (q.healthyOnly) {
    const mine = shared?.byTenant?.get(q.tenant)?.healthy ?? 0;
    if ((own?.healthy ?? 0) + (shared ? shared.healthy - mine : 0) <= 0) return false;
  }
  return true;
}

function hasFacet(e: Entry | undefined, field: "caps" | "tags" | "labels", v: string, agents: ReadonlyMap<string, AgentRecord>): boolean {
  if (!e) return false;
  if (e.facets) return e.facets[field].has(v);
  const a = agents.get(e.providers as string);
  if (!a) return false;
  if (field === "caps") return a.capabilities.some((c) => c.name === v);
  if (field === "tags") return a.capabilities.some((c) => c.tags.includes(v));
  const eq = v.indexOf("=");
  return eq >= 0 && a.labels[v.slice(0, eq)] === v.slice(eq + 1);
}

/** Counts an agent's capabilities, tags and labels in (+1) or out (-1); true when a capability or tag appeared or went (the indexed text changed). */
function countFacets(f: Facets, a: AgentRecord, delta: 1 | -1): boolean {
  let changed = false;
  for (const c of a.capabilities) {
    changed = count(f.caps, c.name, delta) || changed;
    for (const t of c.tags) changed = count(f.tags, t, delta) || changed;
  }
  for (const [k, v] of Object.entries(a.labels)) count(f.labels, `${k}=${v}`, delta);
  return changed;
}

function providerList(e: Entry): readonly string[] {
  return typeof e.providers === "string" ? [e.providers] : e.providers;
}

function providerCount(e: Entry): number {
  return typeof e.providers === "string" ? 1 : e.providers.length;
}

/** Sort key: name, then id (browse order and keyset cursor). */
function keyOf(e: Entry): string {
  return `${e.tool.name}\u0000${e.id}`;
}

function splitKey(key: string): [name: string, id: string] {
  const at = key.lastIndexOf("\u0000");
  return at < 0 ? [key, ""] : [key.slice(0, at), key.slice(at + 1)];
}

/** The order of keyOf() (names hold no NUL), without building the keys. */
function compareEntries(a: Entry, b: Entry): number {
  return compareKey(a, b.name, b.order, b.id);
}

/** `e` against the key (name, id); `order` is idOrder(id). */
function compareKey(e: Entry, name: string, order: number, id: string): number {
  const n = e.name;
  if (n !== name) return n < name ? -1 : 1;
  if (e.order !== order) return e.order < order ? -1 : 1;
  return e.id < id ? -1 : e.id > id ? 1 : 0;
}

function freezePage(p: CatalogPage): CatalogPage {
  for (const e of p.entries) Object.freeze(e);
  Object.freeze(p.entries);
  if (p.next) Object.freeze(p.next);
  return Object.freeze(p);
}

/**
 * The lowercased distinct words of a text, space-delimited with a space at
 * each end (" a b "), in the order of their first occurrence; "" for none.
 * A text that is already that (ASCII words, single spaces, no camelCase
 * split, no word twice: most descriptions) costs one lowercasing and one
 * concatenation; any other is tokenized. (Appending word by word to a
 * string and testing it with includes() made every test flatten the
 * string built so far: ~0.8 KB of garbage per description.)
 */
export function words(text: string): string {
  if (plainWords(text)) return ` ${text.toLowerCase()} `;
  const tokens = tokenize(text);
  const seen: string[] = [];
  const many = tokens.length > 32 ? new Set<string>() : undefined;
  for (const t of tokens) {
    const w = t.toLowerCase();
    if (many ? many.has(w) : seen.includes(w)) continue;
    many?.add(w);
    seen.push(w);
  }
  return seen.length === 0 ? "" : ` ${seen.join(" ")} `;
}

/**
 * Whether words(text) is " " + text lowercased + " ": ASCII letters and
 * digits in words split by single spaces, none split further by case (see
 * asciiTokens) and no two equal but for case. Reads the text only.
 */
function plainWords(text: string): boolean {
  const n = text.length;
  if (n === 0 || n > 256) return false;
  let start = 0;
  let previous = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? text.charCodeAt(i) : 32;
    if (c === 32) {
      // No empty word (a leading, trailing or double space).
      if (i === start) return false;
      for (let s = 0; s < start; ) {
        let e = s;
        while (text.charCodeAt(e) !== 32) e++;
        if (e - s === i - start && sameLetters(text, s, start, e - s)) return false;
        s = e + 1;
      }
      start = i + 1;
      previous = 0;
      continue;
    }
    const kind = asciiKind(c);
    if (kind === 0) return false;
    if (
      kind === UPPER &&
      i > start &&
      (previous === LOWER || previous === DIGIT || (previous === UPPER && i + 1 < n && asciiKind(text.charCodeAt(i + 1)) === LOWER))
    ) {
      return false;
    }
    previous = kind;
  }
  return true;
}

/** Whether text[a, a+len) and text[b, b+len) are equal but for ASCII case. */
function sameLetters(text: string, a: number, b: number, len: number): boolean {
  for (let k = 0; k < len; k++) if ((text.charCodeAt(a + k) | 32) !== (text.charCodeAt(b + k) | 32)) return false;
  return true;
}

/** Whether `w` (no spaces) is a word of `words` (" a b "): words.includes(` ${w} `) without making that string. */
function hasWord(words: string, w: string): boolean {
  for (let at = words.indexOf(w, 1); at > 0; at = words.indexOf(w, at + 1)) {
    if (words.charCodeAt(at - 1) === 32 && words.charCodeAt(at + w.length) === 32) return true;
  }
  return false;
}

/** words() of names, capabilities and tags: few and repeated, so computed once and shared (the 20,000 last used). */
const knownWords = new RecentMap<string, string>(20_000);
function wordsOf(text: string): string {
  let w = knownWords.get(text);
  if (w === undefined) knownWords.add(text, (w = words(text)));
  return w;
}

/**
 * Words of a name or text: split on anything but letters and digits (so
 * on "_", "." and "-") and on camelCase. A compound name is not kept whole:
 * every prefix of its first word would then expand to every such name
 * (3,000 terms for "tool" in the bench's fleet); the whole name's match is
 * the +10 of relevance() instead.
 */
export function tokenize(text: string): string[] {
  const ascii = asciiTokens(text);
  if (ascii) return ascii;
  const out: string[] = [];
  for (const word of text.split(/[^\p{L}\p{N}_.-]+/u)) out.push(...splitWord(word));
  return out;
}

/** Character classes of asciiTokens: anything else (space, punctuation, "_", ".", "-") separates. */
const LOWER = 1;
const UPPER = 2;
const DIGIT = 3;
function asciiKind(c: number): number {
  return c >= 97 && c <= 122 ? LOWER : c >= 65 && c <= 90 ? UPPER : c >= 48 && c <= 57 ? DIGIT : 0;
}

/**
 * tokenize() of an ASCII text in one pass, without the Unicode property
 * regexes (most tool names and descriptions are ASCII; the regexes were
 * most of a registration's catalog words): the same splits — on anything
 * but letters and digits, before an upper-case letter that follows a
 * lower-case letter or a digit, and before the last of a run of upper-case
 * letters followed by a lower-case one. Undefined for any other text.
 */
function asciiTokens(text: string): string[] | undefined {
  const out: string[] = [];
  let start = -1;
  let previous = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128) return undefined;
    const kind = asciiKind(c);
    if (kind === 0) {
      if (start >= 0) out.push(text.slice(start, i));
      start = -1;
    } else if (start < 0) {
      start = i;
    } else if (
      kind === UPPER &&
      (previous === LOWER || previous === DIGIT || (previous === UPPER && asciiKind(text.charCodeAt(i + 1)) === LOWER))
    ) {
      out.push(text.slice(start, i));
      start = i;
    }
    previous = kind;
  }
  if (start >= 0) out.push(text.slice(start));
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
  if (tools.length < 2 || distinctNames(tools)) return tools as ToolRecord[];
  const seen = new Set<string>();
  return tools.filter((t) => {
    const id = toolContentHash(t);
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/** Whether no two of a few tools have one name (then no two are equal: validation keeps names unique per agent). */
function distinctNames(tools: readonly ToolRecord[]): boolean {
  if (tools.length > 16) return false;
  for (let i = 1; i < tools.length; i++) for (let j = 0; j < i; j++) if (tools[i]!.name === tools[j]!.name) return false;
  return true;
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

/**
 * Entries in key order (tool name, then id), as a list of blocks of at
 * most BLOCK: an insert or delete moves at most a block, not the whole
 * catalog (a splice into one array of 300k keys cost ~0.5 ms per agent).
 * Small: moving an old-generation array's elements costs V8's write
 * barrier per element — blocks of 512 cost a registration at 10k agents
 * ~25 µs more (in-process, its 3 tools' inserts and its id's) than 64.
 */
const BLOCK = 64;

/**
 * New entries (ids) wait unsorted until this many, or until anything reads
 * the order: then they are sorted and placed in one pass over the blocks
 * (see SortedEntries.flush). Placing each on its insert cost a binary
 * search over ~600 blocks whose entries are cold in memory (block → last
 * entry → tool → name, id: ~36 µs of a registration's 3 tools at 10k
 * agents). The pass gallops from the block of the previous entry: a few
 * probes each when many wait. A probe reads one cold entry: the blocks'
 * last entries are an array of their own, and an entry holds its sort key
 * (name, idOrder) itself — placing a registration's 3 entries went from
 * ~12.5 to ~6.5 µs at 10k agents (in-process; it read the block's array,
 * the entry, its tool and its id's text per probe).
 */
const PENDING = 256;

class SortedEntries {
  private readonly blocks: Entry[][] = [];
  /**
   * Each block's last entry (lasts[i] is blocks[i]'s): the search for an
   * entry's block reads this one array and the probed entries, not each
   * probed block's array as well.
   */
  private readonly lasts: Entry[] = [];
  /** Inserted, not yet placed in the blocks (any order). */
  private pending: Entry[] = [];

  constructor(private readonly batch: number) {}

  insert(e: Entry): void {
    this.pending.push(e);
    if (this.pending.length >= this.batch) this.flush();
  }

  delete(e: Entry): void {
    const p = this.pending.indexOf(e);
    if (p >= 0) {
      this.pending[p] = this.pending[this.pending.length - 1]!;
      this.pending.pop();
      return;
    }
    const b = this.blockOf(e.name, e.order, e.id, 0, this.blocks.length);
    const block = this.blocks[b];
    if (!block) return;
    const i = indexIn(block, e.name, e.order, e.id);
    if (block[i] !== e) return;
    block.splice(i, 1);
    if (block.length === 0) {
      this.blocks.splice(b, 1);
      this.lasts.splice(b, 1);
    } else {
      this.lasts[b] = block[block.length - 1]!;
    }
  }

  /** Entries from (name, id) on: at it when `inclusive`, else after it. */
  *from(name: string, id: string, inclusive: boolean): Generator<Entry, undefined, undefined> {
    this.flush();
    const order = idOrder(id);
    let b = this.blockOf(name, order, id, 0, this.blocks.length);
    if (b >= this.blocks.length) return;
    let i = indexIn(this.blocks[b]!, name, order, id);
    if (!inclusive && i < this.blocks[b]!.length && compareKey(this.blocks[b]![i]!, name, order, id) === 0) i++;
    for (; b < this.blocks.length; b++, i = 0) {
      const block = this.blocks[b]!;
      for (; i < block.length; i++) yield block[i]!;
    }
    return undefined;
  }

  /** Places the pending entries, in order: each block is searched from the previous entry's. */
  private flush(): void {
    const pending = this.pending;
    if (pending.length === 0) return;
    this.pending = [];
    pending.sort(compareEntries);
    let b = 0;
    for (const e of pending) {
      if (this.blocks.length === 0) {
        this.blocks.push([e]);
        this.lasts.push(e);
        continue;
      }
      b = Math.min(this.gallop(b, e.name, e.order, e.id), this.blocks.length - 1);
      const block = this.blocks[b]!;
      block.splice(indexIn(block, e.name, e.order, e.id), 0, e);
      if (block.length > BLOCK) {
        const tail = block.splice(BLOCK >> 1);
        this.blocks.splice(b + 1, 0, tail);
        this.lasts.splice(b + 1, 0, tail[tail.length - 1]!);
      }
      this.lasts[b] = block[block.length - 1]!;
    }
  }

  /** blockOf() when every block before `lo` ends before the key: probes lo, lo+1, lo+3, lo+7 … then searches the last step. */
  private gallop(lo: number, name: string, order: number, id: string): number {
    const lasts = this.lasts;
    const n = lasts.length;
    let hi = lo;
    for (let step = 1; hi < n && compareKey(lasts[hi]!, name, order, id) < 0; step *= 2) {
      lo = hi + 1;
      hi += step;
    }
    return this.blockOf(name, order, id, lo, Math.min(hi, n));
  }

  /** The first block in [lo, hi) whose last entry is at or after the key; hi when none (and block hi's is, when hi < blocks.length). */
  private blockOf(name: string, order: number, id: string, lo: number, hi: number): number {
    return firstAtOrAfter(this.lasts, name, order, id, lo, hi);
  }
}

/** The first index in the block at or after the key (name, id); `order` is idOrder(id). */
function indexIn(block: readonly Entry[], name: string, order: number, id: string): number {
  return firstAtOrAfter(block, name, order, id, 0, block.length);
}

/** The first index in [lo, hi) of sorted `entries` whose entry is at or after the key; hi when none. */
function firstAtOrAfter(entries: readonly Entry[], name: string, order: number, id: string, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKey(entries[mid]!, name, order, id) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Ids in order, as a list of blocks of at most BLOCK, new ids pending until PENDING or a read (as SortedEntries); inserting an id held is a no-op. */
class SortedIds {
  private readonly blocks: string[][] = [];
  /** Each block's last id (as SortedEntries.lasts). */
  private readonly lasts: string[] = [];
  /** Inserted, not yet placed (any order; may repeat each other or a placed id). */
  private pending: string[] = [];

  constructor(private readonly batch: number) {}

  insert(id: string): void {
    this.pending.push(id);
    if (this.pending.length >= this.batch) this.flush();
  }

  delete(id: string): void {
    if (this.pending.includes(id)) this.pending = this.pending.filter((p) => p !== id);
    const b = this.blockOf(id, 0, this.blocks.length);
    const block = this.blocks[b];
    if (!block) return;
    const i = lowerBound(block, id);
    if (block[i] !== id) return;
    block.splice(i, 1);
    if (block.length === 0) {
      this.blocks.splice(b, 1);
      this.lasts.splice(b, 1);
    } else {
      this.lasts[b] = block[block.length - 1]!;
    }
  }

  /** Ids from `id` on (itself included). */
  *from(id: string): Generator<string, undefined, undefined> {
    this.flush();
    let b = this.blockOf(id, 0, this.blocks.length);
    if (b >= this.blocks.length) return;
    let i = lowerBound(this.blocks[b]!, id);
    for (; b < this.blocks.length; b++, i = 0) {
      const block = this.blocks[b]!;
      for (; i < block.length; i++) yield block[i]!;
    }
    return undefined;
  }

  /** Places the pending ids, in order (as SortedEntries.flush), each once. */
  private flush(): void {
    const pending = this.pending;
    if (pending.length === 0) return;
    this.pending = [];
    pending.sort();
    let b = 0;
    for (let p = 0; p < pending.length; p++) {
      const id = pending[p]!;
      if (p > 0 && id === pending[p - 1]) continue;
      if (this.blocks.length === 0) {
        this.blocks.push([id]);
        this.lasts.push(id);
        continue;
      }
      b = Math.min(this.gallop(b, id), this.blocks.length - 1);
      const block = this.blocks[b]!;
      const i = lowerBound(block, id);
      if (block[i] === id) continue;
      block.splice(i, 0, id);
      if (block.length > BLOCK) {
        const tail = block.splice(BLOCK >> 1);
        this.blocks.splice(b + 1, 0, tail);
        this.lasts.splice(b + 1, 0, tail[tail.length - 1]!);
      }
      this.lasts[b] = block[block.length - 1]!;
    }
  }

  /** As SortedEntries.gallop. */
  private gallop(lo: number, id: string): number {
    const lasts = this.lasts;
    const n = lasts.length;
    let hi = lo;
    for (let step = 1; hi < n && lasts[hi]! < id; step *= 2) {
      lo = hi + 1;
      hi += step;
    }
    return this.blockOf(id, lo, Math.min(hi, n));
  }

  /** The first block in [lo, hi) whose last id is at or after `id` (as SortedEntries.blockOf). */
  private blockOf(id: string, lo: number, hi: number): number {
    const lasts = this.lasts;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (lasts[mid]! < id) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
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
