import { randomUUID, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import { isInstanceId } from "./federation/hop-headers.js";
import { checkPeerSpec, isPeerSpecProblem, type PeerSpec } from "./federation/peer-spec.js";

/**
 * Configuration, read once from the environment into a typed object.
 * Every variable is documented in README.md; an invalid value stops start-up
 * with an error that names the variable.
 */
export interface Config {
  readonly host: string;
  readonly port: number;
  readonly logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  readonly federationName: string;
  /** Largest request body accepted on any protocol. */
  readonly maxBodyBytes: number;
  readonly lease: LeaseConfig;
  readonly events: EventConfig;
  /** How long a connection may take to say which protocol it speaks (HTTP/2: the preface and first SETTINGS). */
  readonly sniffTimeoutMs: number;
  /** Limits on every phase of a connection (the door's hardening). */
  readonly connections: ConnectionLimits;
  /** How long shutdown waits for in-flight requests before closing sockets. */
  readonly shutdownGraceMs: number;
  /** The shared agent store; the embedded memory store when undefined. */
  readonly mongodb: { readonly uri: string; readonly database: string; readonly timeoutMs: number } | undefined;
  /** The shared event bus; the embedded memory bus when undefined. */
  readonly redis: { readonly url: string; readonly prefix: string } | undefined;
  /** Names this replica in logs and telemetry. */
  readonly replicaId: string;
  readonly telemetryIntervalMs: number;
  /** WatchFleetHealth sends a changed snapshot at most this often. */
  readonly fleetWatchIntervalMs: number;
  readonly security: SecurityConfig;
  readonly tls: TlsConfig | undefined;
  /** Plain gRPC unary calls and WatchEvents on the lean path (off: everything through connect-node). */
  readonly grpcFastPath: boolean;
  /** Prometheus metrics: the pipeline's metrics link and GET /metrics (off: neither, for measuring their cost). */
  readonly metrics: boolean;
  /** Browser origins allowed to call the service (CORS and /ws); none by default, `*` for any. */
  readonly corsAllowedOrigins: readonly string[];
  /** Carrying routed tasks to agents (src/dispatch/). */
  readonly dispatch: DispatchConfig;
  /** Reputation and circuit breaker tunables (src/router/). */
  readonly routing: RoutingConfig;
  /** Active checks of what agents say they can do (src/health/probes.ts). */
  readonly probes: ProbeConfig;
  /** Remote registries asked by federated reads (src/federation/). */
  readonly federation: FederationConfig;
  /** SLOs, burn-rate alerts and the Praetorian Guard (src/health/slo.ts, remediation.ts). */
  readonly slo: SloConfig;
  readonly websocket: {
    /** How often /ws clients are pinged (one that missed the previous ping is dropped). */
    readonly pingIntervalMs: number;
    /** Largest frame a /ws client may send. */
    readonly maxMessageBytes: number;
  };
  /** The MCP endpoint at /mcp (src/mcp/). */
  readonly mcp: McpConfig;
  /** A2A agent cards (src/a2a/). */
  readonly a2a: A2aConfig;
}

export interface A2aConfig {
  /** Where clients reach the service (FEDERATION_PUBLIC_URL), for its agent card; undefined: from each request's Host. */
  readonly publicUrl: string | undefined;
  /** RegisterFromCard gives up on a card after this long. */
  readonly cardFetchTimeoutMs: number;
  /** A card larger than this is refused. */
  readonly cardMaxBytes: number;
}

export interface McpConfig {
  /** MCP sessions open at most (every tenant together); an initialize past it is refused with 503. */
  readonly maxSessions: number;
  /** A session without a request for this long is closed (its client gets 404 and initializes again). */
  readonly sessionIdleMs: number;
}

export interface DispatchConfig {
  /** A dispatch's whole budget, failovers included, when the request names none. */
  readonly timeoutMs: number;
  /** A requested timeout is clamped to this. */
  readonly maxTimeoutMs: number;
  /** One attempt's share of the budget at most, so a slow agent leaves time to fail over. */
  readonly attemptTimeoutMs: number;
  /** Agents tried per task at most. */
  readonly maxAttempts: number;
  /** An agent's answer over this is a failed (noisy) attempt. */
  readonly maxResponseBytes: number;
  /** Dispatch to 127.0.0.0/8 and ::1 (tests, single-host demos). */
  readonly allowLoopback: boolean;
  /** Dispatch to private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7). */
  readonly allowPrivate: boolean;
  /** Lifetime of a route ticket. */
  readonly ticketTtlMs: number;
  /** Recent tasks kept for GetTask, and their bytes (results included) at most. */
  readonly taskRetention: number;
  readonly taskRetentionBytes: number;
  /** A task is forgotten this long after its last change (the Redis key's TTL). */
  readonly taskRetentionMs: number;
}

export interface RoutingConfig {
  readonly reputation: {
    readonly halfLifeMs: number;
    readonly priorWeight: number;
    readonly uptimeWindowMs: number;
    readonly latencySlackMs: number;
  };
  readonly breakers: {
    readonly errorThresholdPercentage: number;
    readonly volumeThreshold: number;
    readonly rollingWindowMs: number;
    readonly resetTimeoutMs: number;
  };
  /** CONTEXT_SERVER_URL: asked for ranking hints before each decision (src/router/context-hints.ts); undefined: none. */
  readonly contextServer?: { readonly url: string; readonly timeoutMs: number; readonly cacheTtlMs: number };
  /** How long outcomes are summed before they are shared (Redis) and persisted (MongoDB). */
  readonly shareIntervalMs: number;
}

export interface ProbeConfig {
  /** PROBES=on: probe every HEALTHY or DEGRADED agent over its endpoint's transport. */
  readonly enabled: boolean;
  /** Between the starts of two probe rounds (each jittered by up to ±10%). */
  readonly intervalMs: number;
  /** One probe's time, connection to last byte. */
  readonly timeoutMs: number;
  /** Probes in flight at once. */
  readonly concurrency: number;
  /** Consecutive failed probes that turn a HEALTHY agent DEGRADED. */
  readonly failuresToDegrade: number;
  /** Consecutive good probes that turn an agent the probes degraded HEALTHY again. */
  readonly successesToRecover: number;
  /** Path an HTTP/JSON or Connect agent answers 2xx on. */
  readonly httpPath: string;
  /** With Redis, one replica probes: its lease on the leadership lasts this long unless renewed. */
  readonly leaderTtlMs: number;
}

/** A burn-rate alert's window pair (the SRE workbook's multi-window, multi-burn-rate alerts). */
export interface BurnWindows {
  readonly longMs: number;
  readonly shortMs: number;
  /** Both windows must burn the error budget faster than this. */
  readonly burnRate: number;
}

export interface SloConfig {
  /** SLO=on: count probe and dispatch outcomes per agent and per capability, and alert on burn rates. */
  readonly enabled: boolean;
  /** Availability objective: share of probes and dispatch attempts that succeed. */
  readonly availabilityTarget: number;
  /** Latency objective: share of successful events at or under the threshold (the threshold at that percentile). */
  readonly latencyThresholdMs: number;
  readonly latencyTarget: number;
  /** The fast pair pages (1 h / 5 min at 14.4×), the slow pair opens a ticket (6 h / 30 min at 6×); windows already scaled. */
  readonly fast: BurnWindows;
  readonly slow: BurnWindows;
  /** How often the leader evaluates the burn rates. */
  readonly evaluationIntervalMs: number;
  /** Events a short window needs before it can fire (one failed probe of an idle agent is not a burn). */
  readonly minEvents: number;
  /** Subjects (agents, capabilities) tracked at most; the least recently fed are forgotten beyond it. */
  readonly maxSubjects: number;
  readonly remediation: RemediationConfig;
}

export interface RemediationConfig {
  /** The Praetorian Guard: firing alerts become remediation tasks (REMEDIATION=on). */
  readonly enabled: boolean;
  /** Where a remediation goes when the alert's tenant has no agent offering capability "remediation". */
  readonly webhookUrl: string | undefined;
  /** One remediation per subject within this. */
  readonly cooldownMs: number;
  /** Remediations sent per minute at most, over all subjects. */
  readonly maxPerMinute: number;
  /** A remediation's whole budget (dispatch or webhook). */
  readonly timeoutMs: number;
  /** Entries the audit trail keeps. */
  readonly auditSize: number;
}

export interface ConnectionLimits {
  /** Open connections in all; past it, a few more are kept for health checks only (HEALTH_RESERVE). */
  readonly max: number;
  /** Open connections from one client address. */
  readonly maxPerClient: number;
  /** Connections beyond `max` that may only ask for health (/health, grpc.health.v1, HealthService/Check). */
  readonly healthReserve: number;
  /** Headers and body of one request must have arrived within this (HTTP/1.1: 408; HTTP/2: the stream is ended). */
  readonly requestTimeoutMs: number;
  /** Concurrent streams one HTTP/2 session may open (more are refused; a flood of refused ones ends the session). */
  readonly http2MaxConcurrentStreams: number;
  /** An HTTP/2 session without an open stream for this long is closed (also reclaims sessions left after a GOAWAY). */
  readonly http2IdleTimeoutMs: number;
  /** Deadlines asked for (grpc-timeout, connect-timeout-ms) are clamped to this. */
  readonly maxDeadlineMs: number;
}

export interface SecurityConfig {
  /** Where generated keys live (created on first start). */
  readonly dataDir: string;
  /** JSON key set shared by replicas, instead of the key file. */
  readonly signingKeys: string | undefined;
  readonly keyRetireAfterMs: number;
  /** Dev-mode root token; generated and printed once when unset and no issuer is configured. */
  readonly bootstrapToken: string | undefined;
  readonly bootstrapTenant: string;
  readonly issuer: string;
  readonly audience: string;
  readonly issuers: readonly { issuer: string; jwksUri?: string; jwks?: { keys: Record<string, unknown>[] } }[];
  readonly algorithms: readonly string[];
  readonly clockSkewSec: number;
  /** Least time between two fetches of a remote JWKS (an unknown kid refetches after it). */
  readonly jwksCooldownMs: number;
  readonly maxTokenBytes: number;
  readonly passportTtlMs: number;
  readonly manifestSigning: { mode: "hmac"; secret: string } | { mode: "jws" } | { mode: "none" };
  readonly rateLimits: {
    tenantPerWindow: number;
    perTenant: Record<string, number>;
    heartbeatsPerWindow: number;
    windowSec: number;
  };
  readonly trustDomain: string | undefined;
}

export interface TlsConfig {
  readonly cert: string;
  readonly key: string;
  readonly ca: string | undefined;
  readonly clientAuth: "none" | "request" | "require";
}

export interface LeaseConfig {
  readonly defaultTtlMs: number;
  readonly minTtlMs: number;
  readonly maxTtlMs: number;
  /** Time an agent stays UNHEALTHY after a missed lease before removal. */
  readonly graceMs: number;
  readonly reaperIntervalMs: number;
}

export interface EventConfig {
  /** Events held for clients that resume with a last event id. */
  readonly retention: number;
  /** Unsent bytes one event-feed subscriber (any protocol) may have before it is cut off. */
  readonly subscriberBufferBytes: number;
  /** Events queued for an unreachable Redis before new ones are dropped. */
  readonly publishQueueLimit: number;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Env = Record<string, string | undefined>;

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export function loadConfig(env: Env = process.env): Config {
  const lease: LeaseConfig = {
    defaultTtlMs: duration(env, "LEASE_TTL_DEFAULT", 30_000),
    minTtlMs: duration(env, "LEASE_TTL_MIN", 1_000),
    maxTtlMs: duration(env, "LEASE_TTL_MAX", 3_600_000),
    graceMs: duration(env, "LEASE_GRACE", 30_000),
    reaperIntervalMs: duration(env, "REAPER_INTERVAL", 1_000),
  };
  if (lease.minTtlMs > lease.defaultTtlMs || lease.defaultTtlMs > lease.maxTtlMs) {
    throw new ConfigError("LEASE_TTL_DEFAULT: must lie between LEASE_TTL_MIN and LEASE_TTL_MAX");
  }
  const logLevel = env.LOG_LEVEL ?? "info";
  if (!(logLevels as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL: must be one of ${logLevels.join(", ")}, got "${logLevel}"`);
  }
  return {
    host: env.HOST ?? "0.0.0.0",
    port: integer(env, "PORT", 9405, 0, 65535),
    logLevel: logLevel as Config["logLevel"],
    federationName: env.FEDERATION_NAME ?? "federation-core",
    maxBodyBytes: integer(env, "MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    lease,
    events: {
      retention: integer(env, "EVENT_RETENTION", 10_000, 0, 10_000_000),
      subscriberBufferBytes: integer(env, "SUBSCRIBER_BUFFER_BYTES", 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
      publishQueueLimit: integer(env, "EVENT_PUBLISH_QUEUE", 100_000, 1, 10_000_000),
    },
    sniffTimeoutMs: duration(env, "SNIFF_TIMEOUT", 10_000),
    connections: {
      max: integer(env, "MAX_CONNECTIONS", 8_192, 1, 1_000_000),
      maxPerClient: integer(env, "MAX_CONNECTIONS_PER_CLIENT", 256, 1, 1_000_000),
      healthReserve: integer(env, "HEALTH_RESERVE", 64, 0, 10_000),
      requestTimeoutMs: duration(env, "REQUEST_TIMEOUT", 30_000, 100, MAX_TIMER_MS),
      http2MaxConcurrentStreams: integer(env, "HTTP2_MAX_CONCURRENT_STREAMS", 256, 1, 100_000),
      http2IdleTimeoutMs: duration(env, "HTTP2_IDLE_TIMEOUT", 120_000, 100, MAX_TIMER_MS),
      maxDeadlineMs: duration(env, "MAX_DEADLINE", MAX_TIMER_MS, 1, MAX_TIMER_MS),
    },
    shutdownGraceMs: duration(env, "SHUTDOWN_GRACE", 10_000),
    mongodb: env.MONGODB_URI
      ? {
          uri: url(env, "MONGODB_URI", ["mongodb:", "mongodb+srv:"]),
          database: env.MONGODB_DB ?? "",
          timeoutMs: duration(env, "STORE_TIMEOUT", 2_000),
        }
      : undefined,
    redis: env.REDIS_URL
      ? { url: url(env, "REDIS_URL", ["redis:", "rediss:"]), prefix: env.REDIS_PREFIX ?? "fc" }
      : undefined,
    replicaId: env.REPLICA_ID ?? `${hostname()}-${process.pid}`,
    telemetryIntervalMs: duration(env, "TELEMETRY_INTERVAL", 5_000),
    fleetWatchIntervalMs: duration(env, "FLEET_WATCH_INTERVAL", 5_000, 10, MAX_TIMER_MS),
    security: security(env),
    tls: tls(env),
    corsAllowedOrigins: corsOrigins(env),
    grpcFastPath: oneOf(env, "GRPC_FAST_PATH", ["on", "off"], "on") === "on",
    metrics: oneOf(env, "METRICS", ["on", "off"], "on") === "on",
    dispatch: dispatch(env),
    routing: {
      reputation: {
        halfLifeMs: duration(env, "REPUTATION_HALF_LIFE", 300_000, 100, MAX_TIMER_MS),
        priorWeight: integer(env, "REPUTATION_PRIOR_WEIGHT", 2, 1, 1_000),
        uptimeWindowMs: duration(env, "REPUTATION_UPTIME_WINDOW", 600_000, 1_000, MAX_TIMER_MS),
        latencySlackMs: duration(env, "REPUTATION_LATENCY_SLACK", 20, 0, 60_000),
      },
      breakers: {
        errorThresholdPercentage: integer(env, "BREAKER_ERROR_PERCENT", 50, 1, 100),
        volumeThreshold: integer(env, "BREAKER_MIN_OUTCOMES", 5, 1, 1_000_000),
        rollingWindowMs: duration(env, "BREAKER_WINDOW", 10_000, 100, MAX_TIMER_MS),
        resetTimeoutMs: duration(env, "BREAKER_COOL_DOWN", 30_000, 10, MAX_TIMER_MS),
      },
      shareIntervalMs: duration(env, "REPUTATION_SHARE_INTERVAL", 250, 10, 60_000),
      contextServer: env.CONTEXT_SERVER_URL
        ? {
            url: url(env, "CONTEXT_SERVER_URL", ["http:", "https:"]),
            timeoutMs: duration(env, "CONTEXT_SERVER_TIMEOUT", 50, 1, 10_000),
            cacheTtlMs: duration(env, "CONTEXT_SERVER_CACHE_TTL", 1_000, 0, 3_600_000),
          }
        : undefined,
    },
    probes: probes(env),
    federation: federation(env),
    slo: slo(env),
    websocket: {
      pingIntervalMs: duration(env, "WS_PING_INTERVAL", 30_000, 1_000, 3_600_000),
      maxMessageBytes: integer(env, "WS_MAX_MESSAGE_BYTES", 64 * 1024, 1024, 64 * 1024 * 1024),
    },
    mcp: {
      maxSessions: integer(env, "MCP_MAX_SESSIONS", 1_000, 1, 1_000_000),
      sessionIdleMs: duration(env, "MCP_SESSION_IDLE", 600_000, 1_000, MAX_TIMER_MS),
    },
    a2a: {
      publicUrl: env.FEDERATION_PUBLIC_URL ? url(env, "FEDERATION_PUBLIC_URL", ["http:", "https:"]) : undefined,
      cardFetchTimeoutMs: duration(env, "A2A_CARD_FETCH_TIMEOUT", 5_000, 100, 60_000),
      cardMaxBytes: integer(env, "A2A_CARD_MAX_BYTES", 256 * 1024, 1024, 16 * 1024 * 1024),
    },
  };
}

export interface FederationConfig {
  /** Names this federation in x-federation-visited; replicas of one federation should share it. */
  readonly instanceId: string;
  /** Peers at start (FEDERATION_PEERS); AddPeer / RemovePeer change the list at run time. */
  readonly peers: readonly PeerSpec[];
  /** A federated read waits this long for its peers at most. */
  readonly timeoutMs: number;
  /** A request that has crossed this many federations is answered from local results only. */
  readonly maxHops: number;
  /** How often Federation Core peers' manifest signatures are checked again. */
  readonly verifyIntervalMs: number;
  /** Remote answers kept (FEDERATION_CACHE_*; 5 s by default, 0: off). Shared through Redis when REDIS_URL is set. */
  readonly cache: { readonly maxBytes: number; readonly ttlMs: number; readonly staleMs: number; readonly hot: number };
  /** A peer's answer over this many bytes counts against it and is not used. */
  readonly maxAnswerBytes: number;
  /** A peer's answer slower than this is used but counts against it. */
  readonly slowAnswerMs: number;
}

function federation(env: Env): FederationConfig {
  const instanceId = env.FEDERATION_INSTANCE_ID ?? `fc-${randomUUID()}`;
  if (!isInstanceId(instanceId)) throw new ConfigError(`FEDERATION_INSTANCE_ID: must match [A-Za-z0-9_.:-]{1,128}, got "${instanceId.slice(0, 140)}"`);
  const timeoutMs = duration(env, "FEDERATION_TIMEOUT", 800, 10, 60_000);
  return {
    instanceId,
    peers: federationPeers(env),
    timeoutMs,
    maxHops: integer(env, "FEDERATION_MAX_HOPS", 2, 1, 16),
    verifyIntervalMs: duration(env, "FEDERATION_VERIFY_INTERVAL", 300_000, 1_000, MAX_TIMER_MS),
    cache: {
      maxBytes: integer(env, "FEDERATION_CACHE_BYTES", 64 * 1024 * 1024, 4096, 16 * 1024 * 1024 * 1024),
      ttlMs: duration(env, "FEDERATION_CACHE_TTL", 5_000, 0, MAX_TIMER_MS),
      staleMs: duration(env, "FEDERATION_CACHE_STALE", 60_000, 0, MAX_TIMER_MS),
      hot: integer(env, "FEDERATION_CACHE_HOT", 100, 0, 100_000),
    },
    maxAnswerBytes: integer(env, "FEDERATION_MAX_ANSWER_BYTES", 4 * 1024 * 1024, 1024, 32 * 1024 * 1024),
    slowAnswerMs: duration(env, "FEDERATION_SLOW_ANSWER", Math.round(0.75 * timeoutMs), 1, MAX_TIMER_MS),
  };
}

/** FEDERATION_PEERS: a JSON list of {"url", "kind", "token", "tenants", "id"}; each checked as AddPeer checks it. */
function federationPeers(env: Env): PeerSpec[] {
  if (!env.FEDERATION_PEERS) return [];
  const expected = 'a JSON array such as [{"url": "http://peer:9405", "token": "...", "tenants": ["*"]}]';
  const doc = parseJson(env, "FEDERATION_PEERS", expected);
  if (!Array.isArray(doc)) throw new ConfigError(`FEDERATION_PEERS: must be ${expected}, got ${kind(doc)}`);
  const ids = new Set<string>();
  return doc.map((p: unknown, n) => {
    if (!isObject(p)) throw new ConfigError(`FEDERATION_PEERS: entry ${n} must be an object {"url", "kind", "token", "tenants"}, got ${kind(p)}`);
    const spec = checkPeerSpec({ id: p.id, url: p.url, kind: p.kind, token: p.token, tenants: p.tenants });
    if (isPeerSpecProblem(spec)) {
      const field = spec.field === "peer_id" ? "id" : spec.field;
      throw new ConfigError(`FEDERATION_PEERS: entry ${n} "${field}" ${spec.reason}`);
    }
    if (ids.has(spec.id)) throw new ConfigError(`FEDERATION_PEERS: entry ${n} "id": "${spec.id}" appears twice (give each peer its own id)`);
    ids.add(spec.id);
    return spec;
  });
}

function dispatch(env: Env): DispatchConfig {
  const maxTimeoutMs = duration(env, "DISPATCH_MAX_TIMEOUT", 300_000, 1, MAX_TIMER_MS);
  const timeoutMs = duration(env, "DISPATCH_TIMEOUT", Math.min(30_000, maxTimeoutMs), 1, MAX_TIMER_MS);
  if (timeoutMs > maxTimeoutMs) throw new ConfigError("DISPATCH_TIMEOUT: must not exceed DISPATCH_MAX_TIMEOUT");
  return {
    timeoutMs,
    maxTimeoutMs,
    attemptTimeoutMs: duration(env, "DISPATCH_ATTEMPT_TIMEOUT", 10_000, 1, MAX_TIMER_MS),
    maxAttempts: integer(env, "DISPATCH_MAX_ATTEMPTS", 3, 1, 10),
    maxResponseBytes: integer(env, "DISPATCH_MAX_RESPONSE_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    allowLoopback: oneOf(env, "DISPATCH_ALLOW_LOOPBACK", ["true", "false"], "false") === "true",
    allowPrivate: oneOf(env, "DISPATCH_ALLOW_PRIVATE", ["true", "false"], "false") === "true",
    ticketTtlMs: duration(env, "ROUTE_TICKET_TTL", 60_000, 1_000, 24 * 3_600_000),
    taskRetention: integer(env, "TASK_RETENTION", 10_000, 1, 10_000_000),
    taskRetentionBytes: integer(env, "TASK_RETENTION_BYTES", 64 * 1024 * 1024, 64 * 1024, 16 * 1024 * 1024 * 1024),
    taskRetentionMs: duration(env, "TASK_RETENTION_TTL", 3_600_000, 1_000, 30 * 24 * 3_600_000),
  };
}

function probes(env: Env): ProbeConfig {
  const intervalMs = duration(env, "PROBE_INTERVAL", 30_000, 100, MAX_TIMER_MS);
  const timeoutMs = duration(env, "PROBE_TIMEOUT", 5_000, 1, MAX_TIMER_MS);
  if (timeoutMs > intervalMs) throw new ConfigError("PROBE_TIMEOUT: must not exceed PROBE_INTERVAL");
  const httpPath = env.PROBE_HTTP_PATH || "/health";
  if (!httpPath.startsWith("/") || /[\s?#]/.test(httpPath)) {
    throw new ConfigError(`PROBE_HTTP_PATH: must be a path such as /health (no query, no spaces), got "${httpPath.slice(0, 100)}"`);
  }
  return {
    enabled: oneOf(env, "PROBES", ["on", "off"], "off") === "on",
    intervalMs,
    timeoutMs,
    concurrency: integer(env, "PROBE_CONCURRENCY", 256, 1, 100_000),
    failuresToDegrade: integer(env, "PROBE_FAILURES_TO_DEGRADE", 3, 1, 1_000),
    successesToRecover: integer(env, "PROBE_SUCCESSES_TO_RECOVER", 2, 1, 1_000),
    httpPath,
    leaderTtlMs: duration(env, "PROBE_LEADER_TTL", 5_000, 300, 3_600_000),
  };
}

function slo(env: Env): SloConfig {
  const scale = ratio(env, "SLO_WINDOW_SCALE", 1, 1e-6, 1);
  const windows = (prefix: string, longMs: number, shortMs: number, burnRate: number): BurnWindows => {
    const w = {
      longMs: Math.max(1, Math.round(duration(env, `${prefix}_LONG_WINDOW`, longMs, 1, 30 * 24 * 3_600_000) * scale)),
      shortMs: Math.max(1, Math.round(duration(env, `${prefix}_SHORT_WINDOW`, shortMs, 1, 30 * 24 * 3_600_000) * scale)),
      burnRate: ratio(env, `${prefix}_BURN_RATE`, burnRate, 1, 1_000_000),
    };
    if (w.shortMs >= w.longMs) throw new ConfigError(`${prefix}_SHORT_WINDOW: must be shorter than ${prefix}_LONG_WINDOW`);
    return w;
  };
  const fast = windows("SLO_FAST", 3_600_000, 300_000, 14.4);
  const slow = windows("SLO_SLOW", 6 * 3_600_000, 1_800_000, 6);
  const shortest = Math.min(fast.shortMs, slow.shortMs);
  return {
    enabled: oneOf(env, "SLO", ["on", "off"], "off") === "on",
    availabilityTarget: ratio(env, "SLO_AVAILABILITY_TARGET", 0.99, 0.5, 0.99999),
    latencyThresholdMs: duration(env, "SLO_LATENCY_THRESHOLD", 1_000, 1, MAX_TIMER_MS),
    latencyTarget: ratio(env, "SLO_LATENCY_TARGET", 0.99, 0.5, 0.99999),
    fast,
    slow,
    evaluationIntervalMs: duration(env, "SLO_EVALUATION_INTERVAL", Math.max(10, Math.round(shortest / 10)), 10, MAX_TIMER_MS),
    minEvents: integer(env, "SLO_MIN_EVENTS", 5, 1, 1_000_000),
    maxSubjects: integer(env, "SLO_MAX_SUBJECTS", 4_096, 1, 1_000_000),
    remediation: {
      enabled: oneOf(env, "REMEDIATION", ["on", "off"], "on") === "on",
      webhookUrl: env.REMEDIATION_WEBHOOK_URL ? url(env, "REMEDIATION_WEBHOOK_URL", ["http:", "https:"]) : undefined,
      cooldownMs: duration(env, "REMEDIATION_COOLDOWN", 900_000, 0, MAX_TIMER_MS),
      maxPerMinute: integer(env, "REMEDIATION_MAX_PER_MINUTE", 10, 1, 100_000),
      timeoutMs: duration(env, "REMEDIATION_TIMEOUT", 30_000, 1, MAX_TIMER_MS),
      auditSize: integer(env, "REMEDIATION_AUDIT_SIZE", 1_000, 1, 1_000_000),
    },
  };
}

/** CORS_ALLOWED_ORIGINS: comma-separated origins (scheme://host[:port]), or `*` alone. */
function corsOrigins(env: Env): string[] {
  const fail = (why: string) => new ConfigError(`CORS_ALLOWED_ORIGINS: ${why}`);
  const out: string[] = [];
  for (const part of (env.CORS_ALLOWED_ORIGINS ?? "").split(",")) {
    const o = part.trim().replace(/\/$/, "");
    if (o === "" || o === "*") {
      if (o === "*") out.push(o);
      continue;
    }
    let origin: string;
    try {
      origin = new URL(o).origin;
    } catch {
      throw fail(`"${o.slice(0, 100)}" is not an origin such as https://app.example.com`);
    }
    if (origin !== o) throw fail(`"${o.slice(0, 100)}" is not an origin (scheme://host[:port], no path); did you mean ${origin}?`);
    out.push(o);
  }
  if (out.includes("*") && out.length > 1) throw fail('"*" must stand alone');
  return out;
}

const ALLOWED_ALGORITHMS = ["EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];

function security(env: Env): SecurityConfig {
  const algorithms = (env.AUTH_ALGORITHMS ?? "EdDSA,ES256,RS256,PS256").split(",").map((a) => a.trim());
  for (const a of algorithms) {
    // No "none" and no HMAC: a shared-secret algorithm next to public keys
    // is the classic key-confusion hole.
    if (!ALLOWED_ALGORITHMS.includes(a)) {
      throw new ConfigError(`AUTH_ALGORITHMS: "${a}" is not allowed; choose from ${ALLOWED_ALGORITHMS.join(", ")}`);
    }
  }
  const issuers = authIssuers(env);
  const mode = env.MANIFEST_SIGNING ?? (env.MANIFEST_HMAC_SECRET ? "hmac" : "jws");
  let manifestSigning: SecurityConfig["manifestSigning"];
  if (mode === "hmac") {
    if (!env.MANIFEST_HMAC_SECRET || env.MANIFEST_HMAC_SECRET.length < 32) {
      throw new ConfigError("MANIFEST_HMAC_SECRET: required for hmac signing, at least 32 characters");
    }
    manifestSigning = { mode, secret: env.MANIFEST_HMAC_SECRET };
  } else if (mode === "jws" || mode === "none") {
    manifestSigning = { mode };
  } else {
    throw new ConfigError(`MANIFEST_SIGNING: must be hmac, jws or none, got "${mode}"`);
  }
  const perTenant = rateLimits(env);
  return {
    dataDir: env.DATA_DIR ?? ".data",
    signingKeys: signingKeys(env),
    keyRetireAfterMs: duration(env, "KEY_RETIRE_AFTER", 31 * 24 * 3_600_000),
    bootstrapToken: env.FEDERATION_BOOTSTRAP_TOKEN,
    bootstrapTenant: env.BOOTSTRAP_TENANT ?? "default",
    issuer: env.FEDERATION_ISSUER ?? "federation-core",
    audience: env.AUTH_AUDIENCE ?? "federation-core",
    issuers,
    algorithms,
    clockSkewSec: Math.round(duration(env, "AUTH_CLOCK_SKEW", 30_000) / 1000),
    jwksCooldownMs: duration(env, "AUTH_JWKS_COOLDOWN", 30_000),
    maxTokenBytes: integer(env, "AUTH_MAX_TOKEN_BYTES", 8192, 256, 65536),
    passportTtlMs: duration(env, "PASSPORT_TTL", 15 * 60_000),
    manifestSigning,
    rateLimits: {
      tenantPerWindow: integer(env, "RATE_LIMIT_TENANT", 1000, 1, 10_000_000),
      perTenant,
      heartbeatsPerWindow: integer(env, "RATE_LIMIT_HEARTBEAT", 5, 1, 10_000),
      windowSec: Math.max(1, Math.round(duration(env, "RATE_LIMIT_WINDOW", 1_000) / 1000)),
    },
    trustDomain: env.MTLS_TRUST_DOMAIN,
  };
}

function tls(env: Env): TlsConfig | undefined {
  if (!env.TLS_CERT && !env.TLS_KEY) {
    // Client certificates are only asked for over TLS: without a server
    // certificate these would be silently ignored.
    if (env.TLS_CA) throw new ConfigError("TLS_CA: needs TLS_CERT and TLS_KEY (client certificates are checked only over TLS)");
    if (env.TLS_CLIENT_AUTH && env.TLS_CLIENT_AUTH !== "none") {
      throw new ConfigError("TLS_CLIENT_AUTH: needs TLS_CERT, TLS_KEY and TLS_CA");
    }
    return undefined;
  }
  if (!env.TLS_CERT) throw new ConfigError("TLS_CERT: required when TLS_KEY is set (set both, or neither)");
  if (!env.TLS_KEY) throw new ConfigError("TLS_KEY: required when TLS_CERT is set (set both, or neither)");
  const clientAuth = env.TLS_CLIENT_AUTH || (env.TLS_CA ? "require" : "none");
  if (clientAuth !== "none" && clientAuth !== "request" && clientAuth !== "require") {
    throw new ConfigError(`TLS_CLIENT_AUTH: must be none, request or require, got "${clientAuth}"`);
  }
  if (clientAuth !== "none" && !env.TLS_CA) throw new ConfigError("TLS_CA: required when TLS_CLIENT_AUTH is not none");
  readTlsFile("TLS_CERT", env.TLS_CERT);
  readTlsFile("TLS_KEY", env.TLS_KEY);
  if (env.TLS_CA) readTlsFile("TLS_CA", env.TLS_CA);
  return { cert: env.TLS_CERT, key: env.TLS_KEY, ca: env.TLS_CA || undefined, clientAuth };
}

function readTlsFile(name: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${name}: cannot read "${file}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** OpenSSL's reason without its error-code prefix ("error:0480006C:PEM routines::no start line" → "no start line"). */
function opensslReason(err: unknown): string {
  return String((err as Error)?.message ?? err).replace(/^error:[0-9A-Fa-f]+:[^:]*::?/, "");
}

/**
 * Reads the TLS files and has OpenSSL parse each one as the server will,
 * so a bad file stops start-up with the variable that names it. App.create
 * calls this (loadConfig has already checked the files are readable).
 */
export function loadTlsMaterial(t: TlsConfig): { cert: Buffer; key: Buffer; ca: Buffer | undefined } {
  const cert = readTlsFile("TLS_CERT", t.cert);
  const key = readTlsFile("TLS_KEY", t.key);
  const ca = t.ca ? readTlsFile("TLS_CA", t.ca) : undefined;
  const check = (name: string, file: string, what: string, opts: SecureContextOptions) => {
    try {
      createSecureContext(opts);
    } catch (err) {
      throw new ConfigError(`${name}: "${file}" is not ${what} (${opensslReason(err)})`);
    }
  };
  check("TLS_CERT", t.cert, "a PEM certificate (chain)", { cert });
  check("TLS_KEY", t.key, "an unencrypted PEM private key", { key });
  if (ca && t.ca) {
    // OpenSSL skips what it cannot parse in a CA bundle, which would
    // silently trust no client at all: every block must be a certificate.
    const blocks = ca.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) throw new ConfigError(`TLS_CA: "${t.ca}" holds no PEM certificate`);
    blocks.forEach((block, n) => {
      try {
        new X509Certificate(block);
      } catch (err) {
        throw new ConfigError(`TLS_CA: certificate ${n + 1} in "${t.ca}" cannot be parsed (${opensslReason(err)})`);
      }
    });
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError(`TLS_KEY: "${t.key}" does not go with the certificate in TLS_CERT "${t.cert}" (${opensslReason(err)})`);
  }
  return { cert, key, ca };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** What a JSON value is, for messages (never the value of a secret). */
function kind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

function parseJson(env: Env, name: string, expected: string): unknown {
  try {
    return JSON.parse(env[name]!);
  } catch {
    throw new ConfigError(`${name}: is not valid JSON; expected ${expected}`);
  }
}

/** RATE_LIMITS: a JSON object of tenant → positive integer (requests per window). */
function rateLimits(env: Env): Record<string, number> {
  // No prototype: a tenant called "constructor" must not find Object's.
  const out = Object.create(null) as Record<string, number>;
  if (!env.RATE_LIMITS) return out;
  const expected = 'a JSON object of tenant → requests per window, such as {"tenant-a": 50}';
  const doc = parseJson(env, "RATE_LIMITS", expected);
  if (!isObject(doc)) throw new ConfigError(`RATE_LIMITS: must be ${expected}, got ${kind(doc)}`);
  for (const [tenant, v] of Object.entries(doc)) {
    if (tenant === "") throw new ConfigError("RATE_LIMITS: a tenant name is empty");
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 10_000_000) {
      throw new ConfigError(
        `RATE_LIMITS: the limit of "${tenant}" must be an integer between 1 and 10000000, got ${JSON.stringify(v) ?? kind(v)}`,
      );
    }
    out[tenant] = v;
  }
  return out;
}

/** AUTH_ISSUERS: external identity providers, each with a remote (jwksUri) or fixed (jwks) key set. */
function authIssuers(env: Env): SecurityConfig["issuers"] {
  if (!env.AUTH_ISSUERS) return [];
  const expected = 'a JSON array such as [{"issuer": "https://idp.example", "jwksUri": "https://idp.example/jwks.json"}]';
  const doc = parseJson(env, "AUTH_ISSUERS", expected);
  if (!Array.isArray(doc)) throw new ConfigError(`AUTH_ISSUERS: must be ${expected}, got ${kind(doc)}`);
  const seen = new Set<string>();
  return doc.map((i: unknown, n) => {
    const fail = (why: string) => new ConfigError(`AUTH_ISSUERS: entry ${n}${why}`);
    if (!isObject(i)) throw fail(` must be an object {"issuer", "jwksUri" or "jwks"}, got ${kind(i)}`);
    if (typeof i.issuer !== "string" || i.issuer === "") throw fail(`: "issuer" must be a non-empty string`);
    const at = (why: string) => fail(` ("${i.issuer}"): ${why}`);
    if (seen.has(i.issuer)) throw at("the issuer appears twice");
    seen.add(i.issuer);
    if ((i.jwksUri === undefined) === (i.jwks === undefined)) throw at('needs exactly one of "jwksUri" or "jwks"');
    if (i.jwksUri !== undefined) {
      if (typeof i.jwksUri !== "string") throw at(`"jwksUri" must be a string, got ${kind(i.jwksUri)}`);
      let parsed: URL;
      try {
        parsed = new URL(i.jwksUri);
      } catch {
        throw at(`"jwksUri" is not a valid URL`);
      }
      if (parsed.protocol !== "https:" && parsed.protocol !== "http:") throw at(`"jwksUri" must be an http(s) URL`);
      return { issuer: i.issuer, jwksUri: i.jwksUri };
    }
    const jwks = i.jwks;
    if (!isObject(jwks) || !Array.isArray(jwks.keys)) throw at(`"jwks" must be a key set {"keys": [...]}`);
    jwks.keys.forEach((k: unknown, m) => {
      if (!isObject(k) || typeof k.kty !== "string") throw at(`jwks.keys[${m}] must be a JWK object with a "kty"`);
      if ("d" in k || "k" in k) throw at(`jwks.keys[${m}] holds private key material; give public keys only`);
    });
    return { issuer: i.issuer, jwks: { keys: jwks.keys as Record<string, unknown>[] } };
  });
}

/**
 * FEDERATION_SIGNING_KEYS: the JSON of signing-keys.json. Only its shape is
 * checked here; key-store.ts imports the keys (and names this variable and
 * the key when one cannot be used).
 */
function signingKeys(env: Env): string | undefined {
  const raw = env.FEDERATION_SIGNING_KEYS;
  if (!raw) return undefined;
  const doc = parseJson(env, "FEDERATION_SIGNING_KEYS", 'the content of signing-keys.json, {"keys": [...]}');
  const problem = signingKeySetProblem(doc);
  if (problem) throw new ConfigError(`FEDERATION_SIGNING_KEYS: ${problem}`);
  return raw;
}

const isEd25519 = (jwk: unknown): jwk is Record<string, unknown> =>
  isObject(jwk) && jwk.kty === "OKP" && jwk.crv === "Ed25519" && typeof jwk.x === "string" && jwk.x !== "";

/**
 * What is wrong with the shape of a signing key set (FEDERATION_SIGNING_KEYS
 * or signing-keys.json), or undefined. Messages name the key, never its
 * private part.
 */
export function signingKeySetProblem(doc: unknown): string | undefined {
  if (!isObject(doc) || !Array.isArray(doc.keys)) {
    return `must be a JSON object {"keys": [...]} (the content of signing-keys.json), got ${kind(doc)}`;
  }
  if (doc.keys.length === 0) return "the key set is empty";
  const kids = new Set<string>();
  for (const [n, k] of doc.keys.entries()) {
    if (!isObject(k)) return `keys[${n}] must be an object, got ${kind(k)}`;
    if (typeof k.kid !== "string" || k.kid === "") return `keys[${n}]: "kid" must be a non-empty string`;
    const at = `keys[${n}] (kid "${k.kid}")`;
    if (kids.has(k.kid)) return `${at}: the kid appears twice`;
    kids.add(k.kid);
    if (typeof k.createdAt !== "number" || !Number.isFinite(k.createdAt)) {
      return `${at}: "createdAt" must be a time in ms since the epoch, got ${kind(k.createdAt)}`;
    }
    if (k.retiresAt !== undefined && (typeof k.retiresAt !== "number" || !Number.isFinite(k.retiresAt))) {
      return `${at}: "retiresAt" must be a time in ms since the epoch, or absent; got ${kind(k.retiresAt)}`;
    }
    if (!isEd25519(k.privateJwk) || typeof k.privateJwk.d !== "string" || k.privateJwk.d === "") {
      return `${at}: "privateJwk" must be an Ed25519 private JWK {"kty": "OKP", "crv": "Ed25519", "x", "d"}`;
    }
    if (!isEd25519(k.publicJwk)) return `${at}: "publicJwk" must be an Ed25519 public JWK {"kty": "OKP", "crv": "Ed25519", "x"}`;
    if ("d" in k.publicJwk) return `${at}: "publicJwk" holds the private part "d" (it would be published)`;
    if (k.publicJwk.x !== k.privateJwk.x) return `${at}: "publicJwk" and "privateJwk" are different keys (their "x" differ)`;
  }
  return undefined;
}

function oneOf<T extends string>(env: Env, name: string, values: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!(values as readonly string[]).includes(raw)) throw new ConfigError(`${name}: must be one of ${values.join(", ")}, got "${raw}"`);
  return raw as T;
}

function url(env: Env, name: string, schemes: string[]): string {
  const raw = env[name]!;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name}: is not a valid URL`);
  }
  if (!schemes.includes(parsed.protocol)) {
    throw new ConfigError(`${name}: scheme must be one of ${schemes.join(" ")}`);
  }
  return raw;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name}: must be an integer, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(`${name}: must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

/** A decimal number within [min, max]. */
function ratio(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+(\.\d+)?(e-?\d+)?$/.test(raw.trim())) throw new ConfigError(`${name}: must be a number such as 0.99, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(`${name}: must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

/** Node's timers hold at most 2^31-1 ms (~24.8 days); a longer delay fires after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** Durations as "250ms", "30s", "5m", "1h", or a bare number of milliseconds. */
function duration(env: Env, name: string, fallbackMs: number, minMs = 0, maxMs = Infinity): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw.trim());
  if (!m) throw new ConfigError(`${name}: must be a duration such as "30s" or "250ms", got "${raw}"`);
  const ms = Math.round(Number(m[1]) * units[m[2] ?? "ms"]!);
  if (ms < minMs || ms > maxMs) throw new ConfigError(`${name}: must be between ${minMs}ms and ${maxMs}ms, got "${raw}"`);
  return ms;
}
