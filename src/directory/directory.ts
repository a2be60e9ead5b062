import type { Clock } from "../clock.js";
import type { AgentRecord } from "../registry/agent-record.js";
import type { AgentQuery, AgentStore, CatalogEntry, ToolQuery } from "../registry/agent-store.js";

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
  constructor(
    private readonly store: AgentStore,
    private readonly clock: Clock,
    private readonly federationName: string,
  ) {}

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
