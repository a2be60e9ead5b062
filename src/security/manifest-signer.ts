import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import canonicalize from "canonicalize";
import { base64url, createLocalJWKSet, flattenedVerify, type JSONWebKeySet } from "jose";
import type { KeyStore } from "./key-store.js";

export type ManifestSigning = { readonly mode: "hmac"; readonly secret: string } | { readonly mode: "jws" } | { readonly mode: "none" };

export interface ManifestSignature {
  readonly signature: string;
  /** "HMAC-SHA256", "EdDSA" (a detached JWS), or "" when unsigned. */
  readonly algorithm: string;
  readonly keyId: string;
}

/**
 * Signs the manifest: the RFC 8785 canonical JSON of its proto3 JSON form
 * (implicit fields emitted, as GET /fastmcp/manifest returns it) is MACed
 * with HMAC-SHA256 under a shared secret, or signed as a detached JWS
 * (`<protected>..<signature>`) verifiable with /.well-known/jwks.json.
 */
export class ManifestSigner {
  constructor(
    private readonly signing: ManifestSigning,
    private readonly keys: KeyStore,
  ) {}

  /**
   * The key a signature made now would name ("" for HMAC or none): a
   * signature kept for a catalog version is made again once the key
   * rotated, before the old key retires.
   */
  signingKeyId(): string {
    return this.signing.mode === "jws" ? this.keys.currentKid() : "";
  }

  async sign(manifestJson: unknown): Promise<ManifestSignature> {
    const canonical = canonicalManifest(manifestJson);
    switch (this.signing.mode) {
      case "hmac":
        return { signature: hmac(this.signing.secret, canonical), algorithm: "HMAC-SHA256", keyId: "" };
      case "jws": {
        const { jws, kid } = await this.keys.signDetached(new TextEncoder().encode(canonical));
        return { signature: jws, algorithm: "EdDSA", keyId: kid };
      }
      case "none":
        return { signature: "", algorithm: "", keyId: "" };
    }
  }
}

export function canonicalManifest(manifestJson: unknown): string {
  return canonicalize(manifestJson) ?? "";
}

export type VerificationKey = { hmacSecret: string } | { jwks: JSONWebKeySet };

/**
 * Checks a GET /fastmcp/manifest response body, as a third party would:
 * with the shared secret for HMAC-SHA256 (constant-time comparison), or
 * with the federation's published JWKS for a detached JWS.
 */
export async function verifyManifest(
  body: { manifest: unknown; signature: string; signatureAlgorithm: string },
  key: VerificationKey,
): Promise<boolean> {
  return verifySignature(canonicalManifest(body.manifest), body.signature, body.signatureAlgorithm, key);
}

/** One agent's leaf of the catalog digest: SHA-256 of the canonical {"agent", "tools"} JSON. */
export function catalogLeaf(agentJson: unknown, toolsJson: readonly unknown[]): Buffer {
  return createHash("sha256").update(canonicalManifest({ agent: agentJson, tools: toolsJson })).digest();
}

/** The catalog digest: base64url SHA-256 of the leaves, concatenated in manifest order. */
export function catalogDigest(leaves: readonly Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const leaf of leaves) hash.update(leaf);
  return hash.digest("base64url");
}

interface ManifestPage {
  manifest: { agents: { id: string }[]; tools: { agentId: string }[] };
  etag: string;
  catalog: { agentCount: number; digest: string };
  catalogSignature: string;
  signatureAlgorithm: string;
}

/**
 * Checks a paged read of the manifest (GET /fastmcp/manifest?page_size=n,
 * following next_page_token), or a full one: every page of one catalog
 * version, each tool on a page belonging to an agent on that page, the
 * agents' leaves hashing to the catalog digest, the count matching, and
 * catalog_signature over the canonical JSON of `catalog` verifying.
 */
export async function verifyCatalog(pages: readonly ManifestPage[], key: VerificationKey): Promise<boolean> {
  const first = pages[0];
  if (!first) return false;
  const leaves: Buffer[] = [];
  for (const page of pages) {
    if (page.etag !== first.etag || canonicalManifest(page.catalog) !== canonicalManifest(first.catalog)) return false;
    const tools = new Map<string, unknown[]>();
    for (const agent of page.manifest.agents) tools.set(agent.id, []);
    for (const tool of page.manifest.tools) {
      const list = tools.get(tool.agentId);
      if (!list) return false;
      list.push(tool);
    }
    for (const agent of page.manifest.agents) leaves.push(catalogLeaf(agent, tools.get(agent.id)!));
  }
  if (leaves.length !== first.catalog.agentCount || catalogDigest(leaves) !== first.catalog.digest) return false;
  return verifySignature(canonicalManifest(first.catalog), first.catalogSignature, first.signatureAlgorithm, key);
}

async function verifySignature(canonical: string, signature: string, algorithm: string, key: VerificationKey): Promise<boolean> {
  if (algorithm === "HMAC-SHA256" && "hmacSecret" in key) {
    const expected = Buffer.from(hmac(key.hmacSecret, canonical));
    const given = Buffer.from(signature);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
  if (algorithm === "EdDSA" && "jwks" in key) {
    const [protectedHeader, empty, sig] = signature.split(".");
    if (protectedHeader === undefined || empty !== "" || sig === undefined) return false;
    try {
      await flattenedVerify(
        { protected: protectedHeader, payload: base64url.encode(canonical), signature: sig },
        createLocalJWKSet(key.jwks),
        { algorithms: ["EdDSA"] },
      );
      return true;
    } catch {
      return false;
    }
  }
  return false;
}

function hmac(secret: string, canonical: string): string {
  return createHmac("sha256", secret).update(canonical).digest("base64url");
}
