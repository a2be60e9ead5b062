import { hostname } from "node:os";

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
  /** How long a connection may stay silent before its first bytes. */
  readonly sniffTimeoutMs: number;
  /** How long shutdown waits for in-flight requests before closing sockets. */
  readonly shutdownGraceMs: number;
  /** The shared agent store; the embedded memory store when undefined. */
  readonly mongodb: { readonly uri: string; readonly database: string; readonly timeoutMs: number } | undefined;
  /** The shared event bus; the embedded memory bus when undefined. */
  readonly redis: { readonly url: string; readonly prefix: string } | undefined;
  /** Names this replica in logs and telemetry. */
  readonly replicaId: string;
  readonly telemetryIntervalMs: number;
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
  /** Events queued for one subscriber before it is cut off as too slow. */
  readonly subscriberQueueLimit: number;
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
      subscriberQueueLimit: integer(env, "SUBSCRIBER_QUEUE_LIMIT", 1_024, 1, 1_000_000),
    },
    sniffTimeoutMs: duration(env, "SNIFF_TIMEOUT", 10_000),
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
  };
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

const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** Durations as "250ms", "30s", "5m", "1h", or a bare number of milliseconds. */
function duration(env: Env, name: string, fallbackMs: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw.trim());
  if (!m) throw new ConfigError(`${name}: must be a duration such as "30s" or "250ms", got "${raw}"`);
  return Math.round(Number(m[1]) * units[m[2] ?? "ms"]!);
}
