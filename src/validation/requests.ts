import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { LeaseConfig } from "../config.js";
import { errors } from "../errors.js";
import { AgentStatus, Transport, type CapabilityRecord, type ToolRecord } from "../registry/agent-record.js";
import type { AgentQuery, ToolQuery } from "../registry/agent-store.js";
import { EVENT_TYPES, type EventFilter } from "../events/event-bus.js";
import type {
  GetAgentRequest,
  HeartbeatRequest,
  ListAgentsRequest,
  RegisterFromCardRequest,
  RegisterRequest,
  UnregisterRequest,
} from "../../gen/federation/v1/registry_service_pb.js";
import type {
  DiscoverRequest,
  GetManifestRequest,
  ListToolProvidersRequest,
  ListToolsRequest,
  SearchToolsRequest,
} from "../../gen/federation/v1/directory_service_pb.js";
import type { CatalogSearch } from "../directory/tool-catalog.js";
import { RouteStrategy, type GetTaskRequest, type ReportOutcomeRequest, type RouteRequest } from "../../gen/federation/v1/router_service_pb.js";
import type { WatchEventsRequest } from "../../gen/federation/v1/health_service_pb.js";
import { limits } from "./limits.js";
import { jsonFacts } from "../message-hints.js";
import { PeerKind, type AddPeerRequest, type RemovePeerRequest } from "../../gen/federation/v1/federation_service_pb.js";
import { FederationScope } from "../../gen/federation/v1/origin_pb.js";
import { checkPeerSpec, isPeerSpecProblem, type PeerSpec } from "../federation/peer-spec.js";

/**
 * Every request field is checked here, before any domain code or store sees
 * it. Each violation is INVALID_ARGUMENT with a message that starts with the
 * field path (proto names, as clients of every language write them).
 */

export interface RegisterInput {
  readonly agentId: string;
  readonly name: string;
  readonly version: string;
  readonly endpoint: { readonly url: string; readonly transport: Transport };
  readonly capabilities: CapabilityRecord[];
  readonly tools: ToolRecord[];
  readonly labels: Record<string, string>;
  readonly leaseTtlMs: number;
}

export function parseRegister(req: RegisterRequest, lease: LeaseConfig): RegisterInput {
  if (req.agentId !== "") id("agent_id", req.agentId);
  match("name", req.name, limits.namePattern);
  if (req.version !== "") match("version", req.version, limits.versionPattern);
  if (!req.endpoint) throw errors.invalidArgument("endpoint", "is required");
  const url = endpointUrl("endpoint.url", req.endpoint.url);
  const transport = enumValue("endpoint.transport", req.endpoint.transport, Transport);

  // One pass per list; a field's path (`capabilities[2].tags[0]`) is only
  // spelled out for an error (Register is a hot path: strings and closures
  // per item were most of what validating a registration allocated).
  if (req.capabilities.length === 0) throw errors.invalidArgument("capabilities", "at least one is required");
  count("capabilities", req.capabilities.length, limits.maxCapabilities);
  const capabilities: CapabilityRecord[] = new Array(req.capabilities.length);
  const capabilityNames = namesSeen(req.capabilities);
  for (let i = 0; i < req.capabilities.length; i++) {
    const c = req.capabilities[i]!;
    if (c.name === "" || !limits.capabilityPattern.test(c.name)) match(`capabilities[${i}].name`, c.name, limits.capabilityPattern);
    if (repeats(req.capabilities, i, capabilityNames)) throw errors.invalidArgument(`capabilities[${i}].name`, `duplicate capability "${c.name}"`);
    count(`capabilities[${i}].tags`, c.tags.length, limits.maxTagsPerCapability);
    for (let j = 0; j < c.tags.length; j++) matchItem(`capabilities[${i}].tags`, j, c.tags[j]!, limits.tagPattern);
    capabilities[i] = { name: c.name, tags: distinct(c.tags) };
  }

  count("tools", req.tools.length, limits.maxTools);
  const tools: ToolRecord[] = new Array(req.tools.length);
  const toolNames = namesSeen(req.tools);
  for (let i = 0; i < req.tools.length; i++) {
    const t = req.tools[i]!;
    if (t.name === "" || !limits.toolNamePattern.test(t.name)) match(`tools[${i}].name`, t.name, limits.toolNamePattern);
    if (repeats(req.tools, i, toolNames)) throw errors.invalidArgument(`tools[${i}].name`, `duplicate tool "${t.name}"`);
    if (t.description.length > limits.maxDescriptionLength) length(`tools[${i}].description`, t.description, limits.maxDescriptionLength);
    if (t.inputSchema) json(`tools[${i}].input_schema`, t.inputSchema, limits.maxSchemaBytes);
    tools[i] = { name: t.name, description: t.description, inputSchema: t.inputSchema };
  }

  const labelKeys = Object.keys(req.labels);
  count("labels", labelKeys.length, limits.maxLabels);
  for (const k of labelKeys) {
    if (k === "" || !limits.labelKeyPattern.test(k)) match(`labels[${JSON.stringify(k.slice(0, 80))}]`, k, limits.labelKeyPattern, "key");
    if (req.labels[k]!.length > limits.maxLabelValueLength) length(`labels[${JSON.stringify(k)}]`, req.labels[k]!, limits.maxLabelValueLength);
  }

  let leaseTtlMs = lease.defaultTtlMs;
  if (req.leaseTtl) {
    leaseTtlMs = durationMs("lease_ttl", req.leaseTtl);
    if (leaseTtlMs < lease.minTtlMs || leaseTtlMs > lease.maxTtlMs) {
      throw errors.invalidArgument("lease_ttl", `must be between ${lease.minTtlMs}ms and ${lease.maxTtlMs}ms`);
    }
  }
  return {
    agentId: req.agentId,
    name: req.name,
    version: req.version,
    endpoint: { url, transport: transport === Transport.UNSPECIFIED ? inferTransport(url) : transport },
    capabilities,
    tools,
    labels: { ...req.labels },
    leaseTtlMs,
  };
}

/**
 * RegisterFromCard's own fields, checked before anything is fetched; the
 * card's are checked as it is mapped (a2a/card-import.ts), and the
 * resulting registration as Register's (labels, lease_ttl keep their names).
 * Returns the card URL.
 */
export function parseRegisterFromCard(req: RegisterFromCardRequest): string {
  const url = endpointUrl("card_url", req.cardUrl);
  if (!["http:", "https:"].includes(new URL(url).protocol)) {
    throw errors.invalidArgument("card_url", "scheme must be http or https");
  }
  if (req.agentId !== "") id("agent_id", req.agentId);
  if (req.name !== "") match("name", req.name, limits.namePattern);
  if (req.version !== "") match("version", req.version, limits.versionPattern);
  return url;
}

export interface HeartbeatInput {
  readonly agentId: string;
  readonly status: AgentStatus;
  readonly load: number | undefined;
}

const reportableStatuses = [AgentStatus.UNSPECIFIED, AgentStatus.HEALTHY, AgentStatus.DEGRADED, AgentStatus.DRAINING];

/** A Heartbeat, or one heartbeat of a HeartbeatStream (the same fields and rules). */
export function parseHeartbeat(req: Pick<HeartbeatRequest, "agentId" | "status" | "load">): HeartbeatInput {
  id("agent_id", req.agentId);
  enumValue("status", req.status, AgentStatus);
  if (!reportableStatuses.includes(req.status)) {
    throw errors.invalidArgument("status", "an agent may report HEALTHY, DEGRADED or DRAINING");
  }
  if (req.load !== undefined && !(req.load >= 0 && req.load <= 1)) {
    throw errors.invalidArgument("load", "must be between 0 and 1");
  }
  return { agentId: req.agentId, status: req.status, load: req.load };
}

export function parseAgentId(req: Pick<GetAgentRequest | UnregisterRequest, "agentId">): string {
  return id("agent_id", req.agentId);
}

/** AddPeer's fields, checked as FEDERATION_PEERS entries are (federation/peer-spec.ts). */
export function parseAddPeer(req: AddPeerRequest): PeerSpec {
  enumValue("kind", req.kind, PeerKind);
  const spec = checkPeerSpec({
    id: req.peerId,
    url: req.url,
    kind: req.kind === PeerKind.MCP_REGISTRY ? "mcp-registry" : "federation-core",
    token: req.token,
    tenants: req.tenants,
  });
  if (isPeerSpecProblem(spec)) throw errors.invalidArgument(spec.field, spec.reason);
  return spec;
}

export function parseRemovePeer(req: RemovePeerRequest): string {
  return id("peer_id", req.peerId);
}

/** A read's federation scope (Discover, SearchTools): a known value, UNSPECIFIED meaning LOCAL. */
export function parseScope(scope: FederationScope): FederationScope {
  return enumValue("scope", scope, FederationScope) as FederationScope;
}

export interface Page {
  readonly size: number;
  readonly after: string;
}

export function parseListAgents(req: ListAgentsRequest): Page {
  const size = pageSize("page_size", req.pageSize);
  if (req.pageToken === "") return { size, after: "" };
  const after = decodeToken("page_token", req.pageToken);
  if (typeof after !== "string" || !limits.idPattern.test(after)) {
    throw errors.invalidArgument("page_token", "is not a token this server issued");
  }
  return { size, after };
}

export function parseDiscover(req: DiscoverRequest, tenant: string): AgentQuery {
  // Discover is the hottest call: nothing here allocates unless the input is wrong or repeats itself.
  count("capabilities", req.capabilities.length, limits.maxQueryCapabilities);
  for (let i = 0; i < req.capabilities.length; i++) matchItem("capabilities", i, req.capabilities[i]!, limits.capabilityPattern);
  count("tags", req.tags.length, limits.maxQueryTags);
  for (let i = 0; i < req.tags.length; i++) matchItem("tags", i, req.tags[i]!, limits.tagPattern);
  enumValue("status", req.status, AgentStatus);
  return {
    tenant,
    capabilities: distinct(req.capabilities),
    tags: distinct(req.tags),
    statuses: req.status === AgentStatus.UNSPECIFIED ? LIVE_STATUSES : [req.status],
    limit: pageSize("limit", req.limit),
  };
}

/** What Discover finds when no status is asked for. */
const LIVE_STATUSES: readonly AgentStatus[] = Object.freeze([AgentStatus.HEALTHY, AgentStatus.DEGRADED]);

/**
 * Whether the item at `i` has the name of one before it: short lists are
 * scanned; a longer one brings a set, which it is given the names in order.
 */
function repeats(items: readonly { readonly name: string }[], i: number, seen: Set<string> | undefined): boolean {
  const name = items[i]!.name;
  if (seen === undefined) {
    for (let j = 0; j < i; j++) if (items[j]!.name === name) return true;
    return false;
  }
  if (seen.has(name)) return true;
  seen.add(name);
  return false;
}

/** For `repeats`: a set for lists longer than a scan is worth. */
const namesSeen = (items: readonly unknown[]) => (items.length > 16 ? new Set<string>() : undefined);

/** The list without repeats, first occurrences in order: the list itself when it has none (short lists). */
function distinct(values: readonly string[]): string[] {
  for (let i = 1; i < values.length; i++) if (values.lastIndexOf(values[i]!, i - 1) !== -1) return [...new Set(values)];
  return values as string[];
}

export interface ManifestRead {
  /** The paged form (page_size or page_token given). */
  readonly paged: boolean;
  readonly size: number;
  /** Where the page starts: the catalog digest it was issued for and an agent offset. */
  readonly after: { readonly digest: string; readonly offset: number } | undefined;
  readonly ifNoneMatch: string;
}

export function parseGetManifest(req: GetManifestRequest): ManifestRead {
  const size = pageSize("page_size", req.pageSize);
  length("if_none_match", req.ifNoneMatch, 256);
  if (req.pageToken === "") return { paged: req.pageSize !== 0, size, after: undefined, ifNoneMatch: req.ifNoneMatch };
  const key = decodeToken("page_token", req.pageToken);
  if (
    !Array.isArray(key) ||
    key.length !== 2 ||
    typeof key[0] !== "string" ||
    !/^[A-Za-z0-9_-]{43}$/.test(key[0]) ||
    typeof key[1] !== "number" ||
    !Number.isSafeInteger(key[1]) ||
    key[1] < 1
  ) {
    throw errors.invalidArgument("page_token", "is not a token this server issued");
  }
  return { paged: true, size, after: { digest: key[0], offset: key[1] }, ifNoneMatch: req.ifNoneMatch };
}

export function parseListTools(req: ListToolsRequest, tenant: string): ToolQuery {
  length("query", req.query, limits.maxTextQueryLength);
  if (req.name !== "") match("name", req.name, limits.toolNamePattern);
  let after: ToolQuery["after"];
  if (req.pageToken !== "") {
    const key = decodeToken("page_token", req.pageToken);
    if (
      !Array.isArray(key) ||
      key.length !== 2 ||
      typeof key[0] !== "string" ||
      typeof key[1] !== "string" ||
      !limits.idPattern.test(key[0])
    ) {
      throw errors.invalidArgument("page_token", "is not a token this server issued");
    }
    after = { agentId: key[0], toolName: key[1] };
  }
  return { tenant, text: req.query, name: req.name, after, limit: pageSize("page_size", req.pageSize) };
}

export interface ToolSearchInput extends CatalogSearch {
  /** Provider ids to include per entry. */
  readonly providerPageSize: number;
}

const TOOL_ID = /^[A-Za-z0-9_-]{43}$/;

export function parseSearchTools(req: SearchToolsRequest, tenant: string): ToolSearchInput {
  length("query", req.query, limits.maxTextQueryLength);
  count("capabilities", req.capabilities.length, limits.maxQueryCapabilities);
  req.capabilities.forEach((c, i) => match(`capabilities[${i}]`, c, limits.capabilityPattern));
  count("tags", req.tags.length, limits.maxQueryTags);
  req.tags.forEach((t, i) => match(`tags[${i}]`, t, limits.tagPattern));
  count("labels", req.labels.length, limits.maxQueryTags);
  req.labels.forEach((l, i) => {
    const eq = l.indexOf("=");
    if (eq < 0) throw errors.invalidArgument(`labels[${i}]`, "must be key=value");
    match(`labels[${i}]`, l.slice(0, eq), limits.labelKeyPattern);
    length(`labels[${i}]`, l.slice(eq + 1), limits.maxLabelValueLength);
  });
  if (req.providerPageSize < 0 || req.providerPageSize > 100) {
    throw errors.invalidArgument("provider_page_size", "must be between 0 and 100");
  }
  let after: CatalogSearch["after"];
  if (req.pageToken !== "") {
    const key = decodeToken("page_token", req.pageToken);
    if (!Array.isArray(key) || key.length !== 2 || typeof key[0] !== "number" || !Number.isFinite(key[0]) || typeof key[1] !== "string") {
      throw errors.invalidArgument("page_token", "is not a token this server issued");
    }
    after = { score: key[0], key: key[1] };
  }
  return {
    tenant,
    text: req.query,
    capabilities: req.capabilities,
    tags: req.tags,
    labels: req.labels,
    healthyOnly: req.healthyOnly,
    after,
    limit: pageSize("page_size", req.pageSize),
    providerPageSize: req.providerPageSize,
  };
}

export function parseListToolProviders(req: ListToolProvidersRequest): { toolId: string; after: string; size: number } {
  if (!TOOL_ID.test(req.toolId)) throw errors.invalidArgument("tool_id", "is not a tool id (43 base64url characters)");
  const size = pageSize("page_size", req.pageSize);
  if (req.pageToken === "") return { toolId: req.toolId, after: "", size };
  const after = decodeToken("page_token", req.pageToken);
  if (typeof after !== "string" || !limits.idPattern.test(after)) {
    throw errors.invalidArgument("page_token", "is not a token this server issued");
  }
  return { toolId: req.toolId, after, size };
}

export interface RouteInput {
  readonly capabilities: string[];
  readonly excludeAgentIds: ReadonlySet<string>;
  readonly task: JsonObject | undefined;
  /** Carry the task to the chosen agent (dispatch/). */
  readonly dispatch?: boolean;
  /** ...and answer at once; the outcome arrives on the feed. */
  readonly dispatchAsync?: boolean;
  /** Dispatch's whole budget asked for (undefined: DISPATCH_TIMEOUT). */
  readonly timeoutMs?: number;
  /** A caller-chosen task id (a retry of a task sent before); server-assigned when undefined. */
  readonly taskId?: string;
  /** How to choose among the scored candidates (undefined: p2c). */
  readonly strategy?: RouteStrategy;
  /** RouteRequest.hint (undefined: none). */
  readonly hint?: RouteHintInput;
}

export interface RouteHintInput {
  /** Preferred labels, [key, value] each; empty: none. */
  readonly preferredLabels: readonly (readonly [string, string])[];
  /** Skip candidates whose latency estimate exceeds this (undefined: no bound). */
  readonly maxLatencyMs: number | undefined;
}

const taskIdPattern = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function parseRoute(req: RouteRequest): RouteInput {
  if (req.capabilities.length === 0) throw errors.invalidArgument("capabilities", "at least one is required");
  count("capabilities", req.capabilities.length, limits.maxQueryCapabilities);
  req.capabilities.forEach((c, i) => match(`capabilities[${i}]`, c, limits.capabilityPattern));
  count("exclude_agent_ids", req.excludeAgentIds.length, limits.maxExcludedAgents);
  req.excludeAgentIds.forEach((a, i) => id(`exclude_agent_ids[${i}]`, a));
  if (req.task) json("task", req.task, limits.maxTaskBytes);
  if (req.taskId !== "") match("task_id", req.taskId, taskIdPattern);
  const timeoutMs = req.timeout ? durationMs("timeout", req.timeout) : undefined;
  if (timeoutMs === 0) throw errors.invalidArgument("timeout", "must be positive (or absent for the default)");
  let hint: RouteHintInput | undefined;
  if (req.hint) {
    const labels = req.hint.preferredLabels;
    count("hint.preferred_labels", labels.length, limits.maxQueryTags);
    const preferredLabels = labels.map((l, i): [string, string] => {
      const eq = l.indexOf("=");
      if (eq < 0) throw errors.invalidArgument(`hint.preferred_labels[${i}]`, "must be key=value");
      match(`hint.preferred_labels[${i}]`, l.slice(0, eq), limits.labelKeyPattern, "key");
      length(`hint.preferred_labels[${i}]`, l.slice(eq + 1), limits.maxLabelValueLength);
      return [l.slice(0, eq), l.slice(eq + 1)];
    });
    const maxLatencyMs = req.hint.maxLatency ? durationMs("hint.max_latency", req.hint.maxLatency) : undefined;
    if (maxLatencyMs === 0) throw errors.invalidArgument("hint.max_latency", "must be positive (or absent for no bound)");
    if (preferredLabels.length > 0 || maxLatencyMs !== undefined) hint = { preferredLabels, maxLatencyMs };
  }
  return {
    capabilities: [...new Set(req.capabilities)],
    excludeAgentIds: new Set(req.excludeAgentIds),
    task: req.task,
    dispatch: req.dispatch || req.dispatchAsync,
    dispatchAsync: req.dispatchAsync,
    timeoutMs,
    taskId: req.taskId === "" ? undefined : req.taskId,
    strategy: req.strategy === RouteStrategy.UNSPECIFIED ? undefined : (enumValue("strategy", req.strategy, RouteStrategy) as RouteStrategy),
    hint,
  };
}

export interface ReportOutcomeInput {
  readonly agentId: string;
  readonly capabilities: readonly string[];
  readonly success: boolean;
  readonly latencyMs: number | undefined;
  readonly quality: number | undefined;
}

export function parseReportOutcome(req: ReportOutcomeRequest): ReportOutcomeInput {
  id("agent_id", req.agentId);
  count("capabilities", req.capabilities.length, limits.maxQueryCapabilities);
  req.capabilities.forEach((c, i) => match(`capabilities[${i}]`, c, limits.capabilityPattern));
  if (req.taskId !== "") match("task_id", req.taskId, taskIdPattern);
  const latencyMs = req.latency ? durationMs("latency", req.latency) : undefined;
  if (req.quality !== undefined && !(req.quality >= 0 && req.quality <= 1)) {
    throw errors.invalidArgument("quality", "must be between 0 and 1");
  }
  return { agentId: req.agentId, capabilities: [...new Set(req.capabilities)], success: req.success, latencyMs, quality: req.quality };
}

export function parseGetTask(req: GetTaskRequest): string {
  match("task_id", req.taskId, taskIdPattern);
  return req.taskId;
}

export interface WatchInput {
  readonly filter: EventFilter;
  /** Undefined: live only; 0n: from the oldest held event. */
  readonly afterId: bigint | undefined;
}

export function parseWatch(req: WatchEventsRequest, tenant: string): WatchInput {
  count("types", req.types.length, EVENT_TYPES.length);
  req.types.forEach((t, i) => {
    if (!(EVENT_TYPES as readonly string[]).includes(t)) {
      throw errors.invalidArgument(`types[${i}]`, `unknown event type "${t.slice(0, 64)}"; known: ${EVENT_TYPES.join(", ")}`);
    }
  });
  if (req.agentId !== "") id("agent_id", req.agentId);
  return { filter: { tenant, types: new Set(req.types), agentId: req.agentId }, afterId: req.afterId };
}

export function encodeToken(value: JsonValue): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

// --- field checks -----------------------------------------------------------

function id(field: string, value: string): string {
  if (value === "") throw errors.invalidArgument(field, "is required");
  if (!limits.idPattern.test(value)) {
    throw errors.invalidArgument(field, "must be 1-64 characters of letters, digits, '-' or '_'");
  }
  return value;
}

/** `match` for `field[index]`, naming the item only when it is wrong. */
function matchItem(field: string, index: number, value: string, pattern: RegExp): void {
  if (value === "" || !pattern.test(value)) match(`${field}[${index}]`, value, pattern);
}

function match(field: string, value: string, pattern: RegExp, what = "value"): void {
  if (value === "") throw errors.invalidArgument(field, "is required");
  if (!pattern.test(value)) {
    const shown = value.length > 64 ? `${value.slice(0, 64)}…` : value;
    throw errors.invalidArgument(field, `${what} ${JSON.stringify(shown)} does not match ${pattern.source}`);
  }
}

function length(field: string, value: string, max: number): void {
  if (value.length > max) throw errors.invalidArgument(field, `must be at most ${max} characters`);
}

function count(field: string, n: number, max: number): void {
  if (n > max) throw errors.invalidArgument(field, `at most ${max} entries, got ${n}`);
}

function pageSize(field: string, n: number): number {
  if (n < 0 || n > limits.maxPageSize) {
    throw errors.invalidArgument(field, `must be between 0 and ${limits.maxPageSize}`);
  }
  return n === 0 ? limits.defaultPageSize : n;
}

const enumNumbers = new WeakMap<object, ReadonlySet<unknown>>();

function enumValue(field: string, value: number, e: object): number {
  let known = enumNumbers.get(e);
  if (!known) enumNumbers.set(e, (known = new Set(Object.values(e))));
  if (!known.has(value)) throw errors.invalidArgument(field, `unknown enum value ${value}`);
  return value;
}

function endpointUrl(field: string, value: string): string {
  if (value === "") throw errors.invalidArgument(field, "is required");
  if (value.length > limits.maxUrlLength) {
    throw errors.invalidArgument(field, `must be at most ${limits.maxUrlLength} characters`);
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw errors.invalidArgument(field, "is not a valid URL");
  }
  if (!(limits.urlSchemes as readonly string[]).includes(url.protocol)) {
    throw errors.invalidArgument(field, `scheme must be one of http, https, grpc, grpcs; got "${url.protocol.slice(0, -1)}"`);
  }
  if (url.hostname === "") throw errors.invalidArgument(field, "must name a host");
  if (url.username !== "" || url.password !== "") {
    throw errors.invalidArgument(field, "must not carry credentials");
  }
  return value;
}

function inferTransport(url: string): Transport {
  return url.startsWith("grpc") ? Transport.GRPC : Transport.HTTP_JSON;
}

function durationMs(field: string, d: Duration): number {
  const nanosOk = d.nanos > -1e9 && d.nanos < 1e9 && (d.seconds === 0n || Math.sign(d.nanos) * Number(d.seconds) >= 0);
  if (!nanosOk) throw errors.invalidArgument(field, "is not a valid duration");
  if (d.seconds < 0n || d.nanos < 0) throw errors.invalidArgument(field, "must be positive");
  if (d.seconds > 315_576_000_000n) throw errors.invalidArgument(field, "is out of range");
  return Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);
}

/**
 * Bounded depth and size, so a hostile schema cannot exhaust the stack or
 * the store. A schema the request decoder shared (deep-frozen, seen before:
 * transport/simple-decoding.ts) carries its depth and size, noted once
 * (message-hints.ts).
 */
function json(field: string, value: JsonObject, maxBytes: number): void {
  const facts = jsonFacts(value);
  if (facts !== undefined) {
    if (facts.depth > limits.maxJsonDepth) throw errors.invalidArgument(field, `nests deeper than ${limits.maxJsonDepth} levels`);
    if (facts.bytes > maxBytes) throw errors.invalidArgument(field, `must be at most ${maxBytes} bytes as JSON`);
    return;
  }
  const depth = (v: JsonValue, d: number): void => {
    if (d > limits.maxJsonDepth) {
      throw errors.invalidArgument(field, `nests deeper than ${limits.maxJsonDepth} levels`);
    }
    if (Array.isArray(v)) for (const x of v) depth(x, d + 1);
    else if (v !== null && typeof v === "object") for (const x of Object.values(v)) depth(x, d + 1);
  };
  depth(value, 1);
  if (Buffer.byteLength(JSON.stringify(value)) > maxBytes) {
    throw errors.invalidArgument(field, `must be at most ${maxBytes} bytes as JSON`);
  }
}

function decodeToken(field: string, token: string): JsonValue {
  try {
    if (token.length > 1024) throw new Error("too long");
    return JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as JsonValue;
  } catch {
    throw errors.invalidArgument(field, "is not a token this server issued");
  }
}
