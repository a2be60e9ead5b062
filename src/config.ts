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
  readonly security: SecurityConfig;
  readonly tls: TlsConfig | undefined;
  /** Plain gRPC unary calls and WatchEvents on the lean path (off: everything through connect-node). */
  readonly grpcFastPath: boolean;
  /** Browser origins allowed to call the service (CORS and /ws); none by default, `*` for any. */
  readonly corsAllowedOrigins: readonly string[];
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
    security: security(env),
    tls: tls(env),
    corsAllowedOrigins: corsOrigins(env),
    grpcFastPath: oneOf(env, "GRPC_FAST_PATH", ["on", "off"], "on") === "on",
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
  let issuers: SecurityConfig["issuers"] = [];
  if (env.AUTH_ISSUERS) {
    try {
      issuers = JSON.parse(env.AUTH_ISSUERS) as SecurityConfig["issuers"];
    } catch {
      throw new ConfigError("AUTH_ISSUERS: must be a JSON array");
    }
    if (!Array.isArray(issuers)) throw new ConfigError("AUTH_ISSUERS: must be a JSON array");
    issuers.forEach((i, n) => {
      if (typeof i?.issuer !== "string" || i.issuer === "") throw new ConfigError(`AUTH_ISSUERS[${n}].issuer: is required`);
      if (!i.jwksUri && !i.jwks) throw new ConfigError(`AUTH_ISSUERS[${n}]: needs jwksUri or jwks`);
      if (i.jwksUri && !/^https?:\/\//.test(i.jwksUri)) throw new ConfigError(`AUTH_ISSUERS[${n}].jwksUri: must be an http(s) URL`);
    });
  }
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
  let perTenant: Record<string, number> = {};
  if (env.RATE_LIMITS) {
    try {
      perTenant = JSON.parse(env.RATE_LIMITS) as Record<string, number>;
    } catch {
      throw new ConfigError('RATE_LIMITS: must be a JSON object such as {"tenant-a": 50}');
    }
    for (const [k, v] of Object.entries(perTenant)) {
      if (!Number.isInteger(v) || v < 1) throw new ConfigError(`RATE_LIMITS.${k}: must be a positive integer`);
    }
  }
  return {
    dataDir: env.DATA_DIR ?? ".data",
    signingKeys: env.FEDERATION_SIGNING_KEYS,
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
  if (!env.TLS_CERT && !env.TLS_KEY) return undefined;
  if (!env.TLS_CERT || !env.TLS_KEY) throw new ConfigError("TLS_CERT and TLS_KEY: set both, or neither");
  const clientAuth = env.TLS_CLIENT_AUTH ?? (env.TLS_CA ? "require" : "none");
  if (clientAuth !== "none" && clientAuth !== "request" && clientAuth !== "require") {
    throw new ConfigError(`TLS_CLIENT_AUTH: must be none, request or require, got "${clientAuth}"`);
  }
  if (clientAuth !== "none" && !env.TLS_CA) throw new ConfigError("TLS_CA: required when TLS_CLIENT_AUTH is not none");
  return { cert: env.TLS_CERT, key: env.TLS_KEY, ca: env.TLS_CA, clientAuth };
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

const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** Durations as "250ms", "30s", "5m", "1h", or a bare number of milliseconds. */
function duration(env: Env, name: string, fallbackMs: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw.trim());
  if (!m) throw new ConfigError(`${name}: must be a duration such as "30s" or "250ms", got "${raw}"`);
  return Math.round(Number(m[1]) * units[m[2] ?? "ms"]!);
}
