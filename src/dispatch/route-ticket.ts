import type { Clock } from "../clock.js";
import type { KeyStore } from "../security/key-store.js";

/** The `typ` of a route ticket's protected header: an agent checks it, so no other token of ours passes for one. */
export const ROUTE_TICKET_TYP = "fc-route-ticket+jwt";

/** What a route ticket says (claim names as signed). */
export interface RouteTicketClaims {
  readonly taskId: string;
  readonly tenant: string;
  readonly capabilities: readonly string[];
  readonly agentId: string;
}

/**
 * Route tickets: a short-lived compact JWS (EdDSA, signed through the
 * KeyStore, `kid` in /.well-known/jwks.json) naming the task, its tenant,
 * the capabilities asked for and the agent it was routed to. `aud` is the
 * agent id, so a ticket is only good at the agent it names, and never as a
 * bearer token here (whose audience is AUTH_AUDIENCE). An agent verifies it
 * offline with any JOSE library and the served JWKS:
 *
 *   jwtVerify(ticket, createRemoteJWKSet(jwksUrl),
 *             { issuer, audience: myAgentId, typ: "fc-route-ticket+jwt" })
 */
export class RouteTickets {
  constructor(
    private readonly keys: KeyStore,
    private readonly clock: Clock,
    private readonly opts: { readonly issuer: string; readonly ttlMs: number },
  ) {}

  issue(c: RouteTicketClaims): Promise<string> {
    return this.keys.signJwt(
      {
        iss: this.opts.issuer,
        aud: c.agentId,
        task_id: c.taskId,
        tenant: c.tenant,
        capabilities: c.capabilities,
        agent_id: c.agentId,
      },
      this.clock.now() + this.opts.ttlMs,
      ROUTE_TICKET_TYP,
    );
  }
}
