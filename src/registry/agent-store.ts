import type { ComponentStatus } from "../events/event-bus.js";
import type { ToolCatalog } from "../directory/tool-catalog.js";
import type { AgentPatch, AgentRecord, AgentStatus, ToolRecord } from "./agent-record.js";

/** The fields a heartbeat, the reaper or sharing change; `revision` is the new one. */
export type { AgentPatch } from "./agent-record.js";

/** A discovery query: every listed capability and tag must match. */
export interface AgentQuery {
  /** The caller's tenant: its agents, plus shared agents of every tenant. */
  readonly tenant: string;
  readonly capabilities: readonly string[];
  readonly tags: readonly string[];
  /** Empty matches every status. */
  readonly statuses: readonly AgentStatus[];
  readonly limit: number;
}

export interface ToolQuery {
  /** The caller's tenant: its agents' tools, plus those of shared agents. */
  readonly tenant: string;
  /**
   * Words, each the start of a word of the tool's name (split on "_", ".",
   * "-" and camelCase) or description, case-insensitively.
   */
  readonly text: string;
  /** Exact tool name. */
  readonly name: string;
  /** Resume after this (agentId, toolName) key; undefined starts at the beginning. */
  readonly after: ToolKey | undefined;
  readonly limit: number;
}

export interface ToolKey {
  readonly agentId: string;
  readonly toolName: string;
}

export interface CatalogEntry {
  readonly agentId: string;
  readonly agentName: string;
  readonly tool: ToolRecord;
  /** The tool's distinct catalog entry (toolContentHash). */
  readonly toolId: string;
}

export interface FleetCounts {
  readonly total: number;
  readonly byStatus: ReadonlyMap<AgentStatus, number>;
  readonly capabilities: number;
  readonly tools: number;
}

/**
 * The agent store port. Writes are compare-and-set on `revision` so that
 * several replicas (and the lease reaper) never overwrite each other's
 * changes; the memory adapter is the embedded default, MongoDB the shared one.
 */
export interface AgentStore {
  get(id: string): Promise<AgentRecord | undefined>;
  /**
   * Writes `record` if the stored revision equals `expectedRevision`
   * (0: the id must not exist yet). Returns false when another write won.
   */
  put(record: AgentRecord, expectedRevision: number): Promise<boolean>;
  /**
   * Changes only lease and state fields of `current`, if the stored revision
   * still equals `current.revision` — a heartbeat is a small update, not a
   * rewrite of the agent and its tools.
   */
  update(current: AgentRecord, patch: AgentPatch): Promise<boolean>;
  /**
   * update(), answering with the record as stored (undefined when another
   * write won), so the caller never builds a second copy of it; a store
   * that holds its agents in memory answers without a promise (a
   * heartbeat's path: one record and no promise per beat).
   */
  updated(current: AgentRecord, patch: AgentPatch): AgentRecord | undefined | Promise<AgentRecord | undefined>;
  /**
   * get() without a promise, on a store that holds its agents in memory;
   * absent on the others (the registry then takes the asynchronous path).
   */
  peek?(id: string): AgentRecord | undefined;
  /** Deletes if the stored revision matches; returns false when it does not. */
  delete(id: string, expectedRevision: number): Promise<boolean>;
  /** The tenant's own agents ordered by id, starting after `afterId`. */
  list(tenant: string, afterId: string, limit: number): Promise<AgentRecord[]>;
  /**
   * Agents of every tenant, ordered by id: a catalog built outside the
   * store (CatalogFeed) loads from it at start. Absent on stores that keep
   * their own catalog (toolCatalog).
   */
  all?(afterId: string, limit: number): Promise<AgentRecord[]>;
  /** Shared agents of every tenant, ordered by id (the public manifest). */
  listShared(afterId: string, limit: number): Promise<AgentRecord[]>;
  /**
   * A cheap token that changes whenever what the manifest shows of a view
   * changes — the tenant's own agents and the shared ones, or (undefined)
   * shared agents only: an agent added or removed, its status, sharing or
   * anything it was registered with — and not on a heartbeat that moves
   * only load and lease times. Absent when a store cannot tell cheaply:
   * the manifest is then rebuilt on a timer (and re-signed only when its
   * digest changed).
   */
  catalogVersion?(tenant: string | undefined): string;
  /**
   * Discovery through the capability and tag indexes, never a scan of all
   * agents. A store may answer a repeated query with the same array while
   * its answer is unchanged (callers never mutate it, and may cache what
   * they derive from it by its identity).
   */
  query(query: AgentQuery): Promise<readonly AgentRecord[]>;
  /**
   * Routable agents (HEALTHY or DEGRADED) visible to the tenant that have
   * every capability, best `routeTier` first (lowest number; then any
   * stable order, e.g. id), read lazily. The tier is status × load bucket
   * (agent-record.ts), so a store reorders an agent only when its status or
   * bucket changes; the router scores (router/scoring.ts) and stops as soon
   * as a tier's bound says no later agent can matter, so a decision reads
   * tens of index entries, not every capable agent.
   */
  routable(tenant: string, capabilities: readonly string[]): Iterable<AgentRecord> | AsyncIterable<AgentRecord>;
  /** Agents of every tenant whose lease ended at or before `now` (the reaper). */
  expired(now: number, limit: number): Promise<AgentRecord[]>;
  /** The per-agent view of the tool catalog, by index: a page costs the page, not the fleet. */
  tools(query: ToolQuery): Promise<CatalogEntry[]>;
  /**
   * The distinct tool catalog, when the store keeps it current itself (the
   * memory store, on every write). Absent: the Directory builds one from the
   * store and keeps it current from the event stream (CatalogFeed).
   */
  toolCatalog?(): ToolCatalog;
  /** The tenant's own agents. */
  counts(tenant: string): Promise<FleetCounts>;
  /** Agents of every tenant by status (each counted once; for /metrics). */
  statusTotals(): Promise<ReadonlyMap<AgentStatus, number>>;
  health(): ComponentStatus;
  /** Connects a shared store (retrying in the background); absent for the memory store. */
  start?(): Promise<void>;
  /** Shutdown started: stop background retries (connecting, pinging); operations in flight go on. */
  beginShutdown?(): void;
  /** Releases the backend, waiting `timeoutMs` at most (shutdown has a deadline). */
  close(timeoutMs?: number): Promise<void>;
}
