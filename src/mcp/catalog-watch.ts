import type { EventBus, Subscription } from "../events/event-bus.js";
import type { Logger } from "../logger.js";

const AGENT_EVENTS = new Set(["agent.registered", "agent.updated", "agent.status_changed", "agent.unregistered", "agent.expired"]);

/**
 * Tells a tenant's watchers when its tool list changed: follows the agent
 * events of every tenant, and after a quiet `debounceMs` compares the
 * digest of each touched tenant's list (FederatedTools.digest) with the
 * last one — a heartbeat, a status change or a re-registration with the
 * same tools notifies nobody; a burst of registrations notifies once.
 * Only tenants someone watches are looked at. An event about a shared
 * agent, or an update (sharing may have changed), touches every watched
 * tenant.
 */
export class CatalogWatch {
  /** Tenant → each watcher and the digest of the list it last knew (a new watcher knows the list of its start). */
  private readonly watchers = new Map<string, Map<() => void, string>>();
  private readonly touched = new Set<string>();
  private everyone = false;
  private timer: NodeJS.Timeout | undefined;
  private subscription: Subscription | undefined;

  constructor(
    private readonly bus: EventBus,
    private readonly digest: (tenant: string) => string,
    private readonly debounceMs: number,
    private readonly log: Logger,
  ) {}

  /** Calls `changed` after each change of the tenant's list, until the returned function is called. */
  watch(tenant: string, changed: () => void): () => void {
    this.subscription ??= this.bus.subscribe({ tenant: "", allTenants: true, types: AGENT_EVENTS, agentId: "" }, undefined, (e) => {
      const m = e.message;
      const agent = m.payload.case === "agentChange" ? m.payload.value.agent : undefined;
      if (agent?.shared || m.type === "agent.updated") this.everyone = true;
      else this.touched.add(m.tenant);
      this.timer ??= setTimeout(() => this.flush(), this.debounceMs).unref();
    });
    let known = this.watchers.get(tenant);
    if (!known) this.watchers.set(tenant, (known = new Map()));
    known.set(changed, this.safeDigest(tenant));
    return () => {
      known.delete(changed);
      if (known.size === 0 && this.watchers.get(tenant) === known) this.watchers.delete(tenant);
    };
  }

  close(): void {
    this.subscription?.close();
    this.subscription = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.watchers.clear();
  }

  private flush(): void {
    this.timer = undefined;
    const tenants = this.everyone ? [...this.watchers.keys()] : [...this.touched].filter((t) => this.watchers.has(t));
    this.everyone = false;
    this.touched.clear();
    for (const tenant of tenants) {
      const known = this.watchers.get(tenant);
      if (!known) continue;
      const now = this.safeDigest(tenant);
      for (const [changed, digest] of [...known]) {
        if (digest === now) continue;
        known.set(changed, now);
        try {
          changed();
        } catch (err) {
          this.log.warn({ err }, "tools/list_changed notification failed");
        }
      }
    }
  }

  /** The digest, or "" while the catalog cannot be read (loading): the next change compares against that. */
  private safeDigest(tenant: string): string {
    try {
      return this.digest(tenant);
    } catch {
      return "";
    }
  }
}
