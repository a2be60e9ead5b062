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
 *
 * While it is one of the recent ones (TokenIssuer.recent) it holds the
 * whole token instead of its id and signature: both are in the token, and
 * copies of them beside it were ~160 bytes per agent. They are taken back
 * out of it (flat copies) when it leaves the recent ones (dropped()).
 */
interface CachedPassport {
  /** The passport's id, or undefined while `issued` holds it (see jtiOf). */
  jti: string | undefined;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** The token's first segment, one string per signing key. */
  readonly header: string;
  /** The token's third segment, or undefined while `issued` holds it. */
  signature: string | undefined;
  readonly registeredAt: number;
  readonly tenant: string;
  readonly capHash: string;
  readonly kid: string;
  /** The whole token, while this is one of the recent ones. */
  issued: IssuedToken | undefined;
}

/** Tokens the federation signs itself: tenant tokens (admin-minted) and agent passports. */
export class TokenIssuer {
  /** The last passport of each agent (bounded), reused while half its life is left. */
  private readonly passports = new LRUCache<string, CachedPassport>({ max: 100_000 });
  /**
   * The passports that hold their whole token (`issued`; bounded, unlike
   * `passports`: ~600 bytes each), the most recently used, so a heartbeat
   * answers with the very same object — and its answer's encoding can be
   * kept with it — instead of a token rebuilt from its parts. One leaving
   * gives its token up (dropped()).
   */
  private readonly recent: LRUCache<string, CachedPassport>;
  /** Protected header segment by kid: the same for every passport one key signs. */
  private readonly headers = new Map<string, string>();

  constructor(
    private readonly keys: KeyStore,
    private readonly clock: Clock,
    private readonly opts: {
      issuer: string;
      audience: string;
      passportTtlMs: number;
      /** How many passports hold their whole token (the most recently used); 10,000 unless set. */
      recentTokens?: number;
    },
  ) {
    this.recent = new LRUCache<string, CachedPassport>({
      max: opts.recentTokens ?? 10_000,
      // Replaced: by the agent's next passport, which `passports` holds instead.
      noDisposeOnSet: true,
      dispose: (p) => dropped(p),
    });
  }

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
      if (cached.issued) {
        this.recent.get(agent.id); // it is used: the last to leave
        return cached.issued;
      }
      const claims = this.claims(agent, cached.jti!, cached.issuedAt, cached.expiresAt);
      const issued = { token: `${cached.header}.${claims.toString("base64url")}.${cached.signature!}`, expiresAt: cached.expiresAt };
      held(cached, issued);
      this.recent.set(agent.id, cached);
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
    const issued = { token, expiresAt };
    const cached: CachedPassport = {
      jti: undefined,
      issuedAt,
      expiresAt,
      header,
      signature: undefined,
      registeredAt: agent.registeredAt,
      tenant: agent.tenant,
      capHash: capabilityHash(agent),
      kid,
      issued,
    };
    this.passports.set(agent.id, cached);
    this.recent.set(agent.id, cached);
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

/** The passport holds its whole token: its id and signature are read from it when it leaves the recent ones. */
function held(p: CachedPassport, issued: IssuedToken): void {
  p.issued = issued;
  p.jti = p.signature = undefined;
}

/**
 * The passport gives up its whole token (no longer one of the recent ones):
 * its id and signature, flat copies (a slice would keep the whole token
 * alive), are what it is rebuilt from.
 */
function dropped(p: CachedPassport): void {
  const token = p.issued?.token;
  if (token === undefined) return;
  const first = token.indexOf("."), last = token.lastIndexOf(".");
  p.jti = flat((JSON.parse(Buffer.from(token.slice(first + 1, last), "base64url").toString("utf8")) as { jti: string }).jti);
  p.signature = flat(token.slice(last + 1));
  p.issued = undefined;
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
