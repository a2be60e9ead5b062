import { exportJWK, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";

/**
 * A test identity provider: its own ES256 key, trusted by the app through
 * AUTH_ISSUERS, minting good and hostile tokens.
 */
export class TestIdp {
  static readonly issuer = "https://idp.test";
  static readonly audience = "federation-core";

  private constructor(
    private readonly privateKey: CryptoKey,
    readonly publicJwk: JWK,
    private readonly otherKey: CryptoKey,
  ) {}

  static async create(): Promise<TestIdp> {
    const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
    const other = await generateKeyPair("ES256");
    return new TestIdp(privateKey, { ...(await exportJWK(publicKey)), kid: "idp-key-1", alg: "ES256" }, other.privateKey);
  }

  /** Environment that makes the app trust this IdP. */
  env(): Record<string, string> {
    return { AUTH_ISSUERS: JSON.stringify([{ issuer: TestIdp.issuer, jwks: { keys: [this.publicJwk] } }]) };
  }

  /** A valid token for `tenant` with `scopes`, unless claims/options say otherwise. */
  token(
    tenant: string,
    scopes: string[],
    o: { claims?: JWTPayload; expSec?: number; nbfSec?: number; kid?: string; key?: "own" | "other" } = {},
  ): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({ tenant, scope: scopes.join(" "), ...o.claims })
      .setProtectedHeader({ alg: "ES256", kid: o.kid ?? "idp-key-1" })
      .setIssuer(String(o.claims?.iss ?? TestIdp.issuer))
      .setAudience(o.claims?.aud ?? TestIdp.audience)
      .setSubject(`user@${tenant}`)
      .setIssuedAt(now)
      .setExpirationTime(now + (o.expSec ?? 600));
    if (o.nbfSec !== undefined) jwt.setNotBefore(now + o.nbfSec);
    return jwt.sign(o.key === "other" ? this.otherKey : this.privateKey);
  }

  /** `alg: none`. */
  unsigned(tenant: string, scopes: string[]): string {
    return new UnsecuredJWT({ tenant, scope: scopes.join(" ") })
      .setIssuer(TestIdp.issuer)
      .setAudience(TestIdp.audience)
      .setExpirationTime("10m")
      .encode();
  }

  /** HS256 "signed" with the public key as the secret: the key-confusion attack. */
  hs256WithPublicKey(tenant: string, scopes: string[]): Promise<string> {
    return new SignJWT({ tenant, scope: scopes.join(" ") })
      .setProtectedHeader({ alg: "HS256", kid: "idp-key-1" })
      .setIssuer(TestIdp.issuer)
      .setAudience(TestIdp.audience)
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(JSON.stringify(this.publicJwk)));
  }
}

/** The same token with its payload swapped (signature left as is). */
export function tamper(token: string, changes: Record<string, unknown>): string {
  const [h, p, s] = token.split(".");
  const payload = { ...JSON.parse(Buffer.from(p!, "base64url").toString()), ...changes };
  return `${h}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${s}`;
}

export const ALL_SCOPES = ["agents:read", "agents:write", "route", "events:read"];
