/**
 * Loop prevention for federated reads. A federated request to a peer says
 * how many federations it has crossed (`x-federation-hops`) and which ones
 * (`x-federation-visited`, their instance ids, comma-separated). A
 * federation answers a request that arrives at the hop limit, or that has
 * already visited it, from its local results only, and never sends a
 * request to a peer whose instance id is in the visited set — so the peer
 * that asked is never asked back, and a cycle ends at the hop limit even
 * between federations that do not know each other's ids.
 */
export const HOPS_HEADER = "x-federation-hops";
export const VISITED_HEADER = "x-federation-visited";
/**
 * A forwarded Route (cross-federation dispatch) carries the route ticket
 * the forwarding federation issued for the task (a compact JWS, kid on its
 * JWKS; aud the remote agent's key there, "<peer id>/<agent id>"): the home
 * federation may check where the task came from. It is not logged.
 */
export const TICKET_HEADER = "x-federation-ticket";
/** Sent on GetManifest answers, so a peer learns which instance id is ours. */
export const INSTANCE_HEADER = "x-federation-instance";

/** Instance ids kept from a visited header at most (a longer one is cut: the hop limit still holds). */
const MAX_VISITED = 32;
const INSTANCE = /^[A-Za-z0-9_.:-]{1,128}$/;

export interface HopState {
  /** Federations crossed before reaching us (0: the caller is a client, not a peer). */
  readonly hops: number;
  /** Instance ids already visited, ours not included unless we were visited before. */
  readonly visited: readonly string[];
}

export const FIRST_HOP: HopState = Object.freeze({ hops: 0, visited: Object.freeze([]) as readonly string[] });

/**
 * The hop state of a call: read by name from the lean path's and REST's
 * raw headers when the context has them (transport/call-context.ts), so
 * no Headers object is built; else from connect's Headers.
 */
export function hopsOf(ctx: { readonly requestHeader: Headers }): HopState {
  return readHops((ctx as { readonly rawHeader?: Pick<Headers, "get"> }).rawHeader ?? ctx.requestHeader);
}

/** Reads the headers of an incoming request; a malformed hop count counts as past any limit. */
export function readHops(headers: Pick<Headers, "get">): HopState {
  const rawHops = headers.get(HOPS_HEADER);
  const rawVisited = headers.get(VISITED_HEADER);
  if (rawHops === null && rawVisited === null) return FIRST_HOP;
  const n = rawHops === null ? 0 : /^\d{1,4}$/.test(rawHops.trim()) ? Number(rawHops.trim()) : Number.MAX_SAFE_INTEGER;
  const visited = (rawVisited ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => INSTANCE.test(s))
    .slice(0, MAX_VISITED);
  return { hops: n, visited };
}

/** The headers to send on: one more hop, and our instance added to the visited set. */
export function nextHop(state: HopState, instanceId: string): Record<string, string> {
  const visited = state.visited.includes(instanceId) ? state.visited : [...state.visited, instanceId];
  return { [HOPS_HEADER]: String(state.hops + 1), [VISITED_HEADER]: visited.join(",") };
}

export function isInstanceId(s: string): boolean {
  return INSTANCE.test(s);
}
