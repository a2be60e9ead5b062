import { createHmac, timingSafeEqual } from "node:crypto";
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

/**
 * Checks a GET /fastmcp/manifest response body, as a third party would:
 * with the shared secret for HMAC-SHA256 (constant-time comparison), or
 * with the federation's published JWKS for a detached JWS.
 */
export async function verifyManifest(
  body: { manifest: unknown; signature: string; signatureAlgorithm: string },
  key: { hmacSecret: string } | { jwks: JSONWebKeySet },
): Promise<boolean> {
  const canonical = canonicalManifest(body.manifest);
  if (body.signatureAlgorithm === "HMAC-SHA256" && "hmacSecret" in key) {
    const expected = Buffer.from(hmac(key.hmacSecret, canonical));
    const given = Buffer.from(body.signature);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
  if (body.signatureAlgorithm === "EdDSA" && "jwks" in key) {
    const [protectedHeader, empty, signature] = body.signature.split(".");
    if (protectedHeader === undefined || empty !== "" || signature === undefined) return false;
    try {
      await flattenedVerify(
        { protected: protectedHeader, payload: base64url.encode(canonical), signature },
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
