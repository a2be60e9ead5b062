import type { ComponentStatus } from "../events/event-bus.js";
import type { AgentRecord, AgentStatus } from "./agent-record.js";
import type { AgentQuery, AgentStore, CatalogEntry, FleetCounts, ToolQuery } from "./agent-store.js";

/**
 * The embedded agent store: a map by id, a sorted id list for paging, and
 * inverted indexes from capability and tag to agent ids so discovery starts
 * from the smallest matching set instead of scanning the fleet.
 */
export class MemoryAgentStore implements AgentStore {
  private readonly agents = new Map<string, AgentRecord>();
  private readonly sortedIds: string[] = [];
  private readonly byCapability = new Map<string, Set<string>>();
  private readonly byTag = new Map<string, Set<string>>();
  private readonly statusCounts = new Map<AgentStatus, number>();
  private toolCount = 0;

  async get(id: string): Promise<AgentRecord | undefined> {
    return this.agents.get(id);
  }

  async put(record: AgentRecord, expectedRevision: number): Promise<boolean> {
    const current = this.agents.get(record.id);
    if ((current?.revision ?? 0) !== expectedRevision) return false;
    if (current) this.unindex(current);
    else this.sortedIds.splice(lowerBound(this.sortedIds, record.id), 0, record.id);
    this.agents.set(record.id, record);
    this.index(record);
    return true;
  }

  async delete(id: string, expectedRevision: number): Promise<boolean> {
    const current = this.agents.get(id);
    if (!current || current.revision !== expectedRevision) return false;
    this.unindex(current);
    this.agents.delete(id);
    const at = lowerBound(this.sortedIds, id);
    if (this.sortedIds[at] === id) this.sortedIds.splice(at, 1);
    return true;
  }

  async list(afterId: string, limit: number): Promise<AgentRecord[]> {
    const start = afterId === "" ? 0 : upperBound(this.sortedIds, afterId);
    return this.sortedIds.slice(start, start + limit).map((id) => this.agents.get(id)!);
  }

  async query(q: AgentQuery): Promise<AgentRecord[]> {
    const sets: Set<string>[] = [];
    for (const c of q.capabilities) sets.push(this.byCapability.get(c) ?? new Set());
    for (const t of q.tags) sets.push(this.byTag.get(t) ?? new Set());
    const out: AgentRecord[] = [];
    if (sets.length === 0) {
      for (const a of this.agents.values()) {
        if (out.length >= q.limit) break;
        if (matchesStatus(a, q.statuses)) out.push(a);
      }
      return out;
    }
    sets.sort((a, b) => a.size - b.size);
    const [smallest, ...rest] = sets;
    for (const id of smallest!) {
      if (out.length >= q.limit) break;
      if (!rest.every((s) => s.has(id))) continue;
      const a = this.agents.get(id)!;
      if (matchesStatus(a, q.statuses)) out.push(a);
    }
    return out;
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
    const text = q.text.toLowerCase();
    const out: CatalogEntry[] = [];
    let start = 0;
    if (q.after) start = lowerBound(this.sortedIds, q.after.agentId);
    for (let i = start; i < this.sortedIds.length && out.length < q.limit; i++) {
      const agent = this.agents.get(this.sortedIds[i]!)!;
      // Tools in name order, so a (agent id, tool name) key resumes exactly.
      for (const tool of [...agent.tools].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
        if (q.after && agent.id === q.after.agentId && tool.name <= q.after.toolName) continue;
        if (q.name !== "" && tool.name !== q.name) continue;
        if (text !== "" && !tool.name.toLowerCase().includes(text) && !tool.description.toLowerCase().includes(text)) {
          continue;
        }
        out.push({ agentId: agent.id, agentName: agent.name, tool });
        if (out.length >= q.limit) break;
      }
    }
    return out;
  }

  async counts(): Promise<FleetCounts> {
    return {
      total: this.agents.size,
      byStatus: new Map(this.statusCounts),
      capabilities: this.byCapability.size,
      tools: this.toolCount,
    };
  }

  health(): ComponentStatus {
    return { ok: true, message: "in-memory" };
  }

  async close(): Promise<void> {}

  private index(a: AgentRecord): void {
    for (const c of a.capabilities) {
      addTo(this.byCapability, c.name, a.id);
      for (const t of c.tags) addTo(this.byTag, t, a.id);
    }
    this.statusCounts.set(a.status, (this.statusCounts.get(a.status) ?? 0) + 1);
    this.toolCount += a.tools.length;
  }

  private unindex(a: AgentRecord): void {
    for (const c of a.capabilities) {
      removeFrom(this.byCapability, c.name, a.id);
      for (const t of c.tags) removeFrom(this.byTag, t, a.id);
    }
    this.statusCounts.set(a.status, (this.statusCounts.get(a.status) ?? 1) - 1);
    this.toolCount -= a.tools.length;
  }
}

function matchesStatus(a: AgentRecord, statuses: readonly AgentStatus[]): boolean {
  return statuses.length === 0 || statuses.includes(a.status);
}

function addTo(index: Map<string, Set<string>>, key: string, id: string): void {
  let set = index.get(key);
  if (!set) index.set(key, (set = new Set()));
  set.add(id);
}

function removeFrom(index: Map<string, Set<string>>, key: string, id: string): void {
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
