import { timingSafeEqual, createHash } from "node:crypto";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import type { Clock } from "../clock.js";
import { RecentMap } from "../recent-map.js";
import { errors } from "../errors.js";
import type { KeyStore } from "./key-store.js";
import { SCOPES, type Principal, type Scope } from "./principal.js";

/** An external identity provider whose tokens we accept. */
export interface IssuerConfig {
  readonly issuer: string;
  /** A JWKS URL, fetched and cached by jose; refetched when an unknown kid shows up. */
  readonly jwksUri?: string;
  /** Or a fixed key set. */
  readonly jwks?: JSONWebKeySet;
}

export interface TokenVerifierOptions {
  readonly federationIssuer: string;
  readonly audience: string;
  readonly issuers: readonly IssuerConfig[];
  readonly algorithms: readonly string[];
  readonly clockSkewSec: number;
  readonly jwksCooldownMs: number;
  readonly maxTokenBytes: number;
  /** Opaque dev-mode root token (compared in constant time), or undefined. */
  readonly bootstrapToken: string | undefined;
  readonly bootstrapTenant: string;
}

const tenantPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * Verifies bearer credentials with jose and nothing hand-written: the
 * algorithm allow-list excludes `none` and every HMAC algorithm (so a public
 * key can never be used as an HMAC secret), `iss`, `aud`, `exp` and `nbf`
 * are checked with a small clock tolerance, and key sets come only from
 * configuration — jose never follows `jku`/`x5u`/embedded keys.
 */
export class TokenVerifier {
  private readonly external = new Map<string, JWTVerifyGetKey>();
  private readonly bootstrapDigest: Buffer | undefined;
  /** Entries expire by our clock (checked on read), so the cache itself keeps no timers or TTLs. */
  private readonly cache = new RecentMap<string, Remembered>(10_000);
  /**
   * The entries last read, by the last TAIL characters of their key (of a
   * JWT: its signature's). A credential arrives as a new string on every
   * call, and a Map lookup by the whole of it hashes hundreds of
   * characters each time; this hashes the tail, then compares the whole
   * key with the one entry found. Only a caller who already has a key's
   * tail — the secret part of a token — gets as far as that comparison.
   */
  private readonly recent = new Map<string, Remembered>();
  private bootstrapPrincipal: Principal | undefined;

  constructor(
    private readonly opts: TokenVerifierOptions,
    private readonly keys: KeyStore,
    private readonly clock: Clock,
  ) {
    for (const i of opts.issuers) {
      this.external.set(
        i.issuer,
        i.jwksUri
          ? createRemoteJWKSet(new URL(i.jwksUri), {
              cooldownDuration: opts.jwksCooldownMs,
              cacheMaxAge: 600_000,
              timeoutDuration: 5_000,
            })
          : createLocalJWKSet(i.jwks ?? { keys: [] }),
      );
    }
    this.bootstrapDigest = opts.bootstrapToken ? digest(opts.bootstrapToken) : undefined;
  }

  /**
   * Verified tokens are remembered for up to CACHE_MS (never past their
   * `exp`), so a client sending the same token on every call pays for one
   * signature check, not one per call. `key` is what it is remembered by:
   * the token, or the whole Authorization header value that carried it
   * (the guard then finds a repeated header with `remembered`, one Map
   * lookup, without parsing it again).
   */
  verify(token: string, key: string = token): Principal | Promise<Principal> {
    const now = this.clock.now();
    const cached = this.lookup(key, now);
    // A remembered token is answered at once: no promise on the hot path.
    if (cached) return cached.principal;
    return this.verifyUncached(token).then((principal) => {
      const until = principal.via === "bootstrap" ? now + CACHE_MS : Math.min(now + CACHE_MS, principal.expiresAt ?? 0);
      if (until > now) this.remember({ key, principal, until });
      return principal;
    });
  }

  /** The principal of a credential verified under `key` (see `verify`) and not expired since; undefined otherwise. */
  remembered(key: string): Principal | undefined {
    return this.lookup(key, this.clock.now())?.principal;
  }

  private remember(e: Remembered): void {
    this.cache.set(e.key, e);
    // Its tail may still find an expired entry of the same key.
    this.recent.delete(tailOf(e.key));
  }

  /** The entry remembered under `key` if it has not expired: by its tail, else from the cache (then also by its tail). */
  private lookup(key: string, now: number): Remembered | undefined {
    const tail = tailOf(key);
    let e = this.recent.get(tail);
    if (e === undefined || e.key !== key) {
      e = this.cache.get(key);
      if (e === undefined) return undefined;
      if (this.recent.size >= MAX_RECENT) this.recent.clear();
      this.recent.set(tail, e);
    }
    return e.until > now ? e : undefined;
  }

  private async verifyUncached(token: string): Promise<Principal> {
    if (Buffer.byteLength(token) > this.opts.maxTokenBytes) {
      throw errors.unauthenticated(`token larger than ${this.opts.maxTokenBytes} bytes`);
    }
    if (this.bootstrapDigest && timingSafeEqual(digest(token), this.bootstrapDigest)) {
      return (this.bootstrapPrincipal ??= { subject: "bootstrap", tenant: this.opts.bootstrapTenant, scopes: new Set(SCOPES), via: "bootstrap" });
    }
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      throw errors.unauthenticated("token is not a JWT");
    }
    const ownIssuer = unverified.iss === this.opts.federationIssuer;
    const getKey = ownIssuer ? createLocalJWKSet(this.keys.jwks()) : this.external.get(String(unverified.iss));
    if (!getKey) throw errors.unauthenticated("token issuer is not trusted");
    let payload: JWTPayload;
    let typ: string | undefined;
    try {
      const res = await jwtVerify(token, getKey, {
        issuer: String(unverified.iss),
        audience: this.opts.audience,
        algorithms: [...this.opts.algorithms],
        clockTolerance: this.opts.clockSkewSec,
        currentDate: new Date(this.clock.now()),
        requiredClaims: ["exp"],
      });
      payload = res.payload;
      typ = res.protectedHeader.typ;
    } catch (err) {
      throw errors.unauthenticated(reason(err));
    }
    const tenant = payload.tenant;
    if (typeof tenant !== "string" || !tenantPattern.test(tenant)) {
      throw errors.unauthenticated("token has no valid tenant claim");
    }
    const subject = typeof payload.sub === "string" ? payload.sub : "";
    const expiresAt = payload.exp! * 1000;
    if (ownIssuer && typ === PASSPORT_TYP) {
      if (typeof payload.reg !== "number" || subject === "") throw errors.unauthenticated("malformed passport");
      return { subject, tenant, scopes: new Set(), via: "passport", passport: { agentId: subject, epoch: payload.reg }, expiresAt };
    }
    return { subject, tenant, scopes: scopesOf(payload), via: "token", expiresAt };
  }
}

interface Remembered {
  readonly key: string;
  readonly principal: Principal;
  /** Not past this (ms since the epoch, by the verifier's clock). */
  readonly until: number;
}

/** Characters of a key's end that find its recent entry (32 of a JWT's base64url signature: 192 bits). */
const TAIL = 32;
const tailOf = (key: string): string => (key.length > TAIL ? key.slice(-TAIL) : key);

/** Recent entries held by their tails (then forgotten all at once; the cache still has them). */
const MAX_RECENT = 1_024;

/** How long a verified token is remembered (its own expiry still applies). */
const CACHE_MS = 60_000;

export const PASSPORT_TYP = "passport+jwt";
export const TOKEN_TYP = "JWT";

function scopesOf(payload: JWTPayload): Set<Scope> {
  const raw = typeof payload.scope === "string" ? payload.scope.split(" ") : Array.isArray(payload.scp) ? payload.scp : [];
  return new Set(raw.filter((s): s is Scope => (SCOPES as readonly unknown[]).includes(s)));
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** A reason safe to return: never the token, never key material. */
function reason(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return "token expired";
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === "nbf") return "token not yet valid";
    return `token claim "${err.claim}" is invalid`;
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return "token algorithm not allowed";
  if (err instanceof joseErrors.JWKSNoMatchingKey) return "no trusted key matches the token (unknown kid)";
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "token signature is invalid";
  if (err instanceof joseErrors.JWKSTimeout) return "token issuer keys unavailable";
  if (err instanceof joseErrors.JOSEError) return "token is invalid";
  return "token is invalid";
}
