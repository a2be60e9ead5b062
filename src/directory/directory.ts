import type { Clock } from "../clock.js";
import type { AgentRecord } from "../registry/agent-record.js";
import type { AgentQuery, AgentStore, CatalogEntry, ToolQuery } from "../registry/agent-store.js";
import { errors } from "../errors.js";
import { noFederation, type FederatedReads } from "../federation/federation.js";
import { ToolCatalog, type CatalogPage, type CatalogSearch } from "./tool-catalog.js";

export interface ManifestContent {
  readonly name: string;
  readonly generatedAt: number;
  /** In id order; each agent's tools are the manifest's tools of that agent. */
  readonly agents: AgentRecord[];
}

/** Agents listed in one manifest; beyond this, clients page through ListAgents. */
const MANIFEST_MAX_AGENTS = 10_000;

/** What the federation publishes: the manifest, discovery and the tool catalog. */
export class Directory {
  /**
   * The remote half of a federated Discover or SearchTools (scope
   * FEDERATED or AUTO): the peers app.ts configured, or none.
   */
  federation: FederatedReads = noFederation;

  constructor(
    private readonly store: AgentStore,
    private readonly clock: Clock,
    private readonly federationName: string,
    /** The distinct tool catalog: the store's own, or one a CatalogFeed keeps current. */
    private readonly catalog: ToolCatalog = store.toolCatalog?.() ?? new ToolCatalog(),
    /** False while a fed catalog is still loading from the store. */
    private readonly catalogReady: () => boolean = () => true,
  ) {}

  /** The distinct tool catalog: one entry per tool (name + content hash) with its providers. */
  searchTools(q: CatalogSearch & { readonly providerPageSize: number }): CatalogPage & { providers: Map<string, { ids: string[]; total: number }> } {
    if (!this.catalogReady()) throw errors.catalogLoading();
    const page = this.catalog.search(q);
    const providers = new Map<string, { ids: string[]; total: number }>();
    if (q.providerPageSize > 0) {
      for (const e of page.entries) providers.set(e.id, this.catalog.providers(q.tenant, e.id, "", q.providerPageSize)!);
    }
    return { ...page, providers };
  }

  /** A page of the agents the tenant sees that offer one catalog tool; NOT_FOUND when none. */
  toolProviders(tenant: string, toolId: string, afterId: string, limit: number): { ids: string[]; total: number } {
    if (!this.catalogReady()) throw errors.catalogLoading();
    const page = this.catalog.providers(tenant, toolId, afterId, limit);
    if (!page) throw errors.toolNotFound(toolId);
    return page;
  }

  discover(query: AgentQuery): Promise<readonly AgentRecord[]> {
    return this.store.query(query);
  }

  async tools(query: ToolQuery): Promise<{ tools: CatalogEntry[]; next: CatalogEntry | undefined }> {
    const tools = await this.store.tools({ ...query, limit: query.limit + 1 });
    const more = tools.length > query.limit;
    if (more) tools.length = query.limit;
    return { tools, next: more ? tools[tools.length - 1] : undefined };
  }

  /**
   * A token that changes when the manifest of this view changes (see
   * AgentStore.catalogVersion); undefined when the store cannot tell.
   */
  catalogVersion(tenant: string | undefined): string | undefined {
    return this.store.catalogVersion?.(tenant);
  }

  /**
   * The manifest content: shared agents for an anonymous caller, the
   * tenant's own and shared agents otherwise. Signing it is the security
   * layer's job.
   */
  async manifest(tenant: string | undefined): Promise<ManifestContent> {
    const shared = await this.store.listShared("", MANIFEST_MAX_AGENTS);
    const own = tenant === undefined ? [] : await this.store.list(tenant, "", MANIFEST_MAX_AGENTS);
    const ids = new Set(own.map((a) => a.id));
    const agents = [...own, ...shared.filter((a) => !ids.has(a.id))].sort((a, b) => (a.id < b.id ? -1 : 1));
    return { name: this.federationName, generatedAt: this.clock.now(), agents };
  }
}
