import { createContextKey } from "@connectrpc/connect";

/** `metrics` reads GET /metrics (Prometheus); `admin` implies every scope. */
export const SCOPES = ["agents:read", "agents:write", "route", "events:read", "metrics", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

/** Who is calling, once authenticated. */
export interface Principal {
  readonly subject: string;
  readonly tenant: string;
  readonly scopes: ReadonlySet<Scope>;
  readonly via: "bootstrap" | "token" | "passport" | "certificate" | "anonymous";
  /** Passports only: the agent it was issued to, and that registration's epoch. */
  readonly passport?: { readonly agentId: string; readonly epoch: number };
  /** Client certificates only: the agent name the certificate names. */
  readonly agentName?: string;
  /** When the credential stops being valid (tokens and passports). */
  readonly expiresAt?: number;
}

export const ANONYMOUS: Principal = {
  subject: "",
  tenant: "",
  scopes: new Set(),
  via: "anonymous",
};

/** Set by the authentication step for every request, read by the service adapters. */
export const principalKey = createContextKey<Principal>(ANONYMOUS, { description: "authenticated principal" });

/** The verified client certificate of the connection, if any (set per request by the transport). */
export interface PeerCertificate {
  readonly authorized: boolean;
  readonly authorizationError: string | undefined;
  readonly subjectCN: string | undefined;
  readonly uris: readonly string[];
}

export const peerKey = createContextKey<PeerCertificate | undefined>(undefined, { description: "TLS peer" });
