import { createHash, randomUUID } from "node:crypto";
import canonicalize from "canonicalize";
import { LRUCache } from "lru-cache";
import type { Clock } from "../clock.js";
import type { AgentRecord } from "../registry/agent-record.js";
import type { KeyStore } from "./key-store.js";
import type { Scope } from "./principal.js";
import { PASSPORT_TYP, TOKEN_TYP } from "./token-verifier.js";

export interface IssuedToken {
  readonly token: string;
  readonly expiresAt: number;
}

/**
 * An agent's current passport, kept as what it cannot be rebuilt from: its
 * id, times and signature. The claims are rewritten from the agent record
 * by the same function that wrote the signed ones, so the token comes back
 * byte for byte (one per agent of the fleet: the whole token was ~580 bytes,
 * a third of a 100k-agent heap's strings). The binding fields say what it
 * was issued for (registration, tenant, capabilities, key).
 */
interface CachedPassport {
  readonly jti: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** The token's first segment, one string per signing key. */
  readonly header: string;
  readonly signature: string;
  readonly registeredAt: number;
  readonly tenant: string;
  readonly capHash: string;
  readonly kid: string;
}

/** Tokens the federation signs itself: tenant tokens (admin-minted) and agent passports. */
export class TokenIssuer {
  /** The last passport of each agent (bounded), reused while half its life is left. */
  private readonly passports = new LRUCache<string, CachedPassport>({ max: 100_000 });
  /**
   * The whole token of the most recently renewed passports (bounded, unlike
   * `passports`: ~600 bytes each), so a heartbeat answers with the very
   * same object — and its answer's encoding can be kept with it — instead
   * of a token rebuilt from its parts.
   */
  private readonly recent = new LRUCache<string, { of: CachedPassport; issued: IssuedToken }>({ max: 10_000 });
  /** Protected header segment by kid: the same for every passport one key signs. */
  private readonly headers = new Map<string, string>();

  constructor(
    private readonly keys: KeyStore,
    private readonly clock: Clock,
    private readonly opts: { issuer: string; audience: string; passportTtlMs: number },
  ) {}

  /**
   * A passport binds agent id (`sub`), tenant, the registration it belongs
   * to (`reg`, so unregistering revokes it) and a hash of the registered
   * capabilities. Short-lived: a heartbeat answers with the agent's current
   * passport while at least half its lifetime is left, and with a new one
   * after that, or as soon as the registration, capabilities or signing key
   * change. (Signing on every heartbeat made the EdDSA signature most of a
   * heartbeat's cost.)
   */
  async renewedPassport(agent: AgentRecord): Promise<IssuedToken> {
    const cached = this.passports.get(agent.id);
    if (
      cached &&
      cached.registeredAt === agent.registeredAt &&
      cached.tenant === agent.tenant &&
      cached.capHash === capabilityHash(agent) &&
      cached.kid === this.keys.currentKid() &&
      cached.expiresAt - this.clock.now() >= this.opts.passportTtlMs / 2
    ) {
      const known = this.recent.get(agent.id);
      if (known?.of === cached) return known.issued;
      const claims = this.claims(agent, cached.jti, cached.issuedAt, cached.expiresAt);
      const issued = { token: `${cached.header}.${claims.toString("base64url")}.${cached.signature}`, expiresAt: cached.expiresAt };
      this.recent.set(agent.id, { of: cached, issued });
      return issued;
    }
    return this.passport(agent);
  }

  /**
   * A new passport (registration always gets one). It is remembered, so
   * the heartbeats that follow a registration answer with it.
   */
  async passport(agent: AgentRecord): Promise<IssuedToken> {
    const issuedAt = wholeSeconds(this.clock.now());
    const expiresAt = wholeSeconds(this.clock.now() + this.opts.passportTtlMs);
    const jti = randomUUID();
    const kid = this.keys.currentKid();
    const token = await this.keys.signCompact(this.claims(agent, jti, issuedAt, expiresAt), PASSPORT_TYP);
    const first = token.indexOf(".");
    let header = this.headers.get(kid);
    if (header === undefined || token.slice(0, first) !== header) {
      // Flat copies: a slice would keep the whole token alive.
      header = flat(token.slice(0, first));
      this.headers.set(kid, header);
    }
    const cached: CachedPassport = {
      jti,
      issuedAt,
      expiresAt,
      header,
      signature: flat(token.slice(token.lastIndexOf(".") + 1)),
      registeredAt: agent.registeredAt,
      tenant: agent.tenant,
      capHash: capabilityHash(agent),
      kid,
    };
    const issued = { token, expiresAt };
    this.passports.set(agent.id, cached);
    this.recent.set(agent.id, { of: cached, issued });
    return issued;
  }

  /** A passport's claims as signed: written only here, for signing and for rebuilding. */
  private claims(agent: AgentRecord, jti: string, issuedAt: number, expiresAt: number): Buffer {
    return Buffer.from(
      JSON.stringify({
        iss: this.opts.issuer,
        aud: this.opts.audience,
        sub: agent.id,
        jti,
        tenant: agent.tenant,
        reg: agent.registeredAt,
        cap_hash: capabilityHash(agent),
        iat: issuedAt / 1000,
        exp: expiresAt / 1000,
      }),
    );
  }

  async mint(tenant: string, scopes: readonly Scope[], subject: string, ttlMs: number): Promise<IssuedToken> {
    const expiresAt = wholeSeconds(this.clock.now() + ttlMs);
    const token = await this.keys.signJwt(
      {
        iss: this.opts.issuer,
        aud: this.opts.audience,
        sub: subject,
        jti: randomUUID(),
        tenant,
        scope: scopes.join(" "),
      },
      expiresAt,
      TOKEN_TYP,
    );
    return { token, expiresAt };
  }
}

const capabilityHashes = new WeakMap<object, string>();

/**
 * SHA-256 (base64url) of the RFC 8785 canonical JSON of the capabilities,
 * sorted by name; remembered per capabilities array (records share it
 * across heartbeats).
 */
export function capabilityHash(agent: Pick<AgentRecord, "capabilities">): string {
  let hash = capabilityHashes.get(agent.capabilities);
  if (hash === undefined) capabilityHashes.set(agent.capabilities, (hash = computeCapabilityHash(agent)));
  return hash;
}

function computeCapabilityHash(agent: Pick<AgentRecord, "capabilities">): string {
  const caps = [...agent.capabilities]
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map((c) => ({ name: c.name, tags: [...c.tags].sort() }));
  return createHash("sha256").update(canonicalize(caps)!).digest("base64url");
}

/** JWT times are whole seconds; the expiry we report must be the one in the token. */
function wholeSeconds(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}

function flat(s: string): string {
  return Buffer.from(s, "latin1").toString("latin1");
}
