import { errors } from "../errors.js";
import { requirementOf, type Requirement } from "./access-policy.js";
import { principalFromCertificate } from "./client-certificate.js";
import { ANONYMOUS, type PeerCertificate, type Principal } from "./principal.js";
import type { RateLimits } from "./rate-limits.js";
import type { TokenVerifier } from "./token-verifier.js";

export interface GuardedCall {
  readonly service: string;
  readonly method: string;
  /** Request headers (a Headers object, or anything that reads one by name). */
  readonly header: Pick<Headers, "get">;
  readonly peer: PeerCertificate | undefined;
  /** The request message of a unary call (for per-agent quotas). */
  readonly message: unknown;
  /** A token from somewhere other than the Authorization header (WebSocket handshakes). */
  readonly token?: string;
  /** A non-RPC HTTP route's own access-policy entry (declared in its route table). */
  readonly requirement?: Requirement;
}

export interface GuardOptions {
  readonly trustDomain: string | undefined;
  readonly defaultTenant: string;
}

/**
 * The one door every call passes, on every protocol: who is calling
 * (verified client certificate, else bearer token), may they call this RPC
 * (access-policy.ts), and is their tenant within its quota. Errors are
 * UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED; the messages
 * never echo a credential.
 */
export class RequestGuard {
  constructor(
    private readonly verifier: TokenVerifier,
    private readonly limits: RateLimits,
    private readonly opts: GuardOptions,
  ) {}

  /**
   * The caller's principal, or a refusal. Synchronous as far as it can be
   * (a remembered token, a certificate): only the quota check and a first
   * signature check are promises, on the path every call takes.
   */
  admit(call: GuardedCall): Principal | Promise<Principal> {
    const requirement = call.requirement ?? requirementOf(call.service, call.method);
    if (!requirement) throw errors.permissionDenied(`${call.service}/${call.method} is not open to callers`);
    const principal = this.authenticate(call);
    return principal instanceof Promise ? principal.then((p) => this.permit(call, requirement, p)) : this.permit(call, requirement, principal);
  }

  private permit(call: GuardedCall, requirement: Requirement, principal: Principal): Principal | Promise<Principal> {
    if (requirement !== "public") {
      if (principal.via === "anonymous") throw errors.unauthenticated("missing bearer token");
      authorize(principal, requirement);
    }
    let quota: Promise<void> | undefined;
    if (principal.via !== "anonymous") quota = this.limits.tenant(principal.tenant);
    if (call.method === "Heartbeat" && call.service === "federation.v1.RegistryService") {
      const agentId = (call.message as { agentId?: unknown } | undefined)?.agentId;
      if (typeof agentId === "string" && agentId !== "") {
        // After the tenant's quota: a refused call spends no heartbeat.
        const tenant = principal.tenant;
        quota = quota ? quota.then(() => this.limits.agentHeartbeat(tenant, agentId)) : this.limits.agentHeartbeat(tenant, agentId);
      }
    }
    return quota ? quota.then(() => principal) : principal;
  }

  /**
   * One heartbeat on a stream that was admitted when it opened
   * (HeartbeatStream): counted as a unary Heartbeat would be — the
   * credential still valid, the tenant's quota, then the agent's
   * heartbeat rate.
   */
  streamedHeartbeat(principal: Principal, agentId: string, now: number): Promise<void> {
    if (principal.expiresAt !== undefined && now >= principal.expiresAt) {
      throw errors.unauthenticated("the credential that opened this stream expired: reopen it with the renewed passport");
    }
    const tenant = principal.tenant;
    const quota = this.limits.tenant(tenant);
    return quota ? quota.then(() => this.limits.agentHeartbeat(tenant, agentId)) : this.limits.agentHeartbeat(tenant, agentId);
  }

  private authenticate(call: GuardedCall): Principal | Promise<Principal> {
    if (call.peer) {
      if (!call.peer.authorized) {
        throw errors.unauthenticated(`client certificate not trusted (${call.peer.authorizationError ?? "unverified"})`);
      }
      const identity = principalFromCertificate(call.peer, this.opts.trustDomain, this.opts.defaultTenant);
      if (!identity) throw errors.unauthenticated("client certificate names no identity");
      return identity;
    }
    if (call.token !== undefined) return this.verifier.verify(call.token);
    const header = call.header.get("authorization");
    if (header === null) return ANONYMOUS;
    // A header seen before (a client's every call): its principal by the header itself, no parsing.
    const known = this.verifier.remembered(header);
    if (known !== undefined) return known;
    const token = bearer(header);
    return token === undefined ? ANONYMOUS : this.verifier.verify(token, header);
  }
}

function bearer(header: string | null): string | undefined {
  if (header === null || header.trim() === "") return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) throw errors.unauthenticated("authorization header must be 'Bearer <token>'");
  return m[1];
}

function authorize(p: Principal, requirement: Exclude<ReturnType<typeof requirementOf>, undefined | "public">): void {
  if (p.scopes.has("admin")) return;
  if (requirement === "agent") {
    // Passports and certificates act for one agent; the registry checks which.
    if (p.via === "passport" || p.via === "certificate" || p.scopes.has("agents:write")) return;
    throw errors.permissionDenied('requires scope "agents:write" or the agent\'s passport');
  }
  if (p.via === "passport") throw errors.permissionDenied("a passport may only heartbeat or unregister its agent");
  if (!p.scopes.has(requirement)) throw errors.permissionDenied(`requires scope "${requirement}"`);
}
