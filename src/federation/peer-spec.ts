/**
 * What configures a peer, from FEDERATION_PEERS or AddPeer, checked in one
 * place so both name the same fields in their errors.
 */
export type PeerKindName = "federation-core" | "mcp-registry";

export interface PeerSpec {
  readonly id: string;
  /** Base URL without a trailing slash. */
  readonly url: string;
  readonly kind: PeerKindName;
  /** Bearer token the peer minted for us; "" for none (an open MCP registry). */
  readonly token: string;
  /** Our tenants that may see its results; "*" is every tenant. Empty: none. */
  readonly tenants: readonly string[];
}

export const PEER_KINDS: readonly PeerKindName[] = ["federation-core", "mcp-registry"];
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const TENANT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const MAX_TENANTS = 1_000;
const MAX_TOKEN = 16 * 1024;

/** A problem with one field of a spec: the field's name and why. */
export interface PeerSpecProblem {
  readonly field: "peer_id" | "url" | "kind" | "token" | "tenants";
  readonly reason: string;
}

export interface PeerSpecInput {
  readonly id?: unknown;
  readonly url?: unknown;
  readonly kind?: unknown;
  readonly token?: unknown;
  readonly tenants?: unknown;
}

/** The checked spec, or the first problem found. */
export function checkPeerSpec(input: PeerSpecInput): PeerSpec | PeerSpecProblem {
  if (typeof input.url !== "string" || input.url === "") return { field: "url", reason: "is required (the peer's base URL)" };
  if (input.url.length > 2048) return { field: "url", reason: "must be at most 2048 characters" };
  let parsed: URL;
  try {
    parsed = new URL(input.url);
  } catch {
    return { field: "url", reason: "is not a valid URL" };
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return { field: "url", reason: "must be an http or https URL" };
  if (parsed.username || parsed.password) return { field: "url", reason: "must not carry credentials (give the token instead)" };
  if (parsed.search || parsed.hash) return { field: "url", reason: "must not have a query or fragment" };
  const url = parsed.href.replace(/\/+$/, "");

  const kind = input.kind === undefined || input.kind === "" ? "federation-core" : input.kind;
  if (typeof kind !== "string" || !(PEER_KINDS as readonly string[]).includes(kind)) {
    return { field: "kind", reason: `must be one of ${PEER_KINDS.join(", ")}` };
  }

  const token = input.token ?? "";
  if (typeof token !== "string") return { field: "token", reason: "must be a string" };
  if (token.length > MAX_TOKEN) return { field: "token", reason: `must be at most ${MAX_TOKEN} characters` };
  if (/[\s\0]/.test(token)) return { field: "token", reason: "must not contain whitespace" };
  if (kind === "federation-core" && token === "") {
    return { field: "token", reason: "is required for a federation-core peer (mint one on the peer: AdminService/MintToken)" };
  }

  const tenants = input.tenants ?? [];
  if (!Array.isArray(tenants)) return { field: "tenants", reason: 'must be a list of tenant names, or ["*"]' };
  if (tenants.length > MAX_TENANTS) return { field: "tenants", reason: `at most ${MAX_TENANTS}` };
  for (let i = 0; i < tenants.length; i++) {
    const t: unknown = tenants[i];
    if (t === "*") continue;
    if (typeof t !== "string" || !TENANT.test(t)) return { field: "tenants", reason: `[${i}] must be "*" or match ${TENANT.source}` };
  }

  const id = input.id === undefined || input.id === "" ? idFromUrl(parsed) : input.id;
  if (typeof id !== "string" || !ID.test(id)) return { field: "peer_id", reason: `must match ${ID.source}` };
  return { id, url, kind: kind as PeerKindName, token, tenants: [...new Set(tenants as string[])] };
}

export function isPeerSpecProblem(v: PeerSpec | PeerSpecProblem): v is PeerSpecProblem {
  return "field" in v && "reason" in v;
}

/** A readable default id: the URL's host and port, e.g. "registry-example-com-443". */
function idFromUrl(u: URL): string {
  const port = u.port || (u.protocol === "https:" ? "443" : "80");
  return `${u.hostname}-${port}`.replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64) || "peer";
}

/** Whether the peer's results may reach this tenant. */
export function permits(spec: PeerSpec, tenant: string): boolean {
  return spec.tenants.includes("*") || spec.tenants.includes(tenant);
}
