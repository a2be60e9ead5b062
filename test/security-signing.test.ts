import { createHash, createHmac } from "node:crypto";
import { statSync } from "node:fs";
import path from "node:path";
import canonicalize from "canonicalize";
import { base64url, createLocalJWKSet, decodeProtectedHeader, flattenedVerify, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyManifest } from "../src/security/manifest-signer.js";
import { getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

const anonymous = { headers: { authorization: "" } };
const bearerOf = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

describe("passports, minted tokens and the JWS-signed manifest", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(() => t.close());

  const jwks = async () => {
    const res = await getJson(`${t.url}/.well-known/jwks.json`, anonymous);
    expect(res.status).toBe(200);
    return res.json as { keys: Record<string, unknown>[] };
  };

  it("issues a passport that a plain jose call verifies with the served JWKS", async () => {
    const reg = await postJson(`${t.url}/agents/register`, registerBody());
    const keys = await jwks();
    const { payload, protectedHeader } = await jwtVerify(reg.json.passport, createLocalJWKSet(keys as never), {
      issuer: "federation-core",
      audience: "federation-core",
    });
    expect(protectedHeader.alg).toBe("EdDSA");
    expect(protectedHeader.typ).toBe("passport+jwt");
    expect(payload.sub).toBe(reg.json.agent.id);
    expect(payload.tenant).toBe("default");
    const caps = canonicalize([{ name: "code.generate", tags: ["fast", "python"] }])!;
    expect(payload.cap_hash).toBe(createHash("sha256").update(caps).digest("base64url"));
    expect(new Date(reg.json.passportExpiresAt).getTime()).toBe(payload.exp! * 1000);
  });

  it("signs the manifest with a detached JWS that a plain jose call verifies", async () => {
    await postJson(`${t.url}/agents/register`, registerBody({ name: "listed" }));
    const res = await getJson(`${t.url}/fastmcp/manifest`);
    expect(res.json.signatureAlgorithm).toBe("EdDSA");
    const [protectedHeader, detached, signature] = res.json.signature.split(".");
    expect(detached).toBe("");
    const verified = await flattenedVerify(
      { protected: protectedHeader, payload: base64url.encode(canonicalize(res.json.manifest)!), signature },
      createLocalJWKSet((await jwks()) as never),
    );
    expect(verified.protectedHeader?.kid).toBe(res.json.keyId);
    expect(await verifyManifest(res.json, { jwks: (await jwks()) as never })).toBe(true);
    const forged = { ...res.json, manifest: { ...res.json.manifest, name: "evil" } };
    expect(await verifyManifest(forged, { jwks: (await jwks()) as never })).toBe(false);
  });

  it("keeps old passports valid after a key rotation, and signs new ones with the new kid", async () => {
    const before = await postJson(`${t.url}/agents/register`, registerBody({ name: "rotating" }));
    const oldKid = decodeProtectedHeader(before.json.passport).kid;
    const rotated = await postJson(`${t.url}/admin/keys:rotate`, {});
    expect(rotated.status).toBe(200);
    expect(rotated.json.keyId).not.toBe(oldKid);
    expect(rotated.json.activeKeyIds).toEqual(expect.arrayContaining([oldKid, rotated.json.keyId]));

    const keys = createLocalJWKSet((await jwks()) as never);
    await expect(jwtVerify(before.json.passport, keys, { audience: "federation-core" })).resolves.toBeDefined();
    const hb = await postJson(`${t.url}/agents/${before.json.agent.id}/heartbeat`, {}, bearerOf(before.json.passport));
    expect(hb.status).toBe(200);
    expect(decodeProtectedHeader(hb.json.passport).kid).toBe(rotated.json.keyId);
    await expect(jwtVerify(hb.json.passport, keys, { audience: "federation-core" })).resolves.toBeDefined();
  });

  it("mints tenant tokens from the bootstrap token, limited to their scopes", async () => {
    const minted = await postJson(`${t.url}/admin/tokens`, { tenant: "acme", scopes: ["agents:read"], ttl: "600s" });
    expect(minted.status).toBe(200);
    expect((await getJson(`${t.url}/agents`, bearerOf(minted.json.token))).status).toBe(200);
    const denied = await postJson(`${t.url}/agents/register`, registerBody(), bearerOf(minted.json.token));
    expect(denied.status).toBe(403);
    expect(denied.json.message).toContain("agents:write");
    const bad = await postJson(`${t.url}/admin/tokens`, { tenant: "acme", scopes: ["root"] });
    expect(bad.status).toBe(400);
    expect(bad.json.message).toMatch(/^scopes\[0\]/);
  });

  it("publishes only shared agents to anonymous callers, and a shared agent to every tenant", async () => {
    const own = await postJson(`${t.url}/agents/register`, registerBody({ name: "to-share", capabilities: [{ name: "shared.cap" }] }));
    const anon = await getJson(`${t.url}/fastmcp/manifest`, anonymous);
    expect(anon.json.manifest.agents).toEqual([]);
    const other = (await postJson(`${t.url}/admin/tokens`, { tenant: "other", scopes: ["agents:read", "route"] })).json.token;
    expect((await getJson(`${t.url}/agents/discover?capabilities=shared.cap`, bearerOf(other))).json.agents).toEqual([]);

    const shared = await postJson(`${t.url}/admin/agents/${own.json.agent.id}:share`, { shared: true });
    expect(shared.json.agent.shared).toBe(true);
    const found = await getJson(`${t.url}/agents/discover?capabilities=shared.cap`, bearerOf(other));
    expect(found.json.agents.map((a: { id: string }) => a.id)).toEqual([own.json.agent.id]);
    const routed = await postJson(`${t.url}/route`, { capabilities: ["shared.cap"] }, bearerOf(other));
    expect(routed.json.agent.id).toBe(own.json.agent.id);
    expect((await getJson(`${t.url}/fastmcp/manifest`, anonymous)).json.manifest.agents).toHaveLength(1);
    // Sharing is read and route only: the other tenant still cannot unregister it.
    const del = await getJson(`${t.url}/agents/${own.json.agent.id}`, { method: "DELETE", ...bearerOf(other) });
    expect(del.status).toBe(403);
  });

  it("keeps its keys in a 0600 file in the data directory", () => {
    const file = path.join(t.app.config.security.dataDir, "signing-keys.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });
});

describe("HMAC-SHA256 manifest signing", () => {
  const secret = "a-shared-secret-that-is-long-enough-1234";
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp({ MANIFEST_HMAC_SECRET: secret });
  });
  afterAll(() => t.close());

  it("signs the canonical JSON so a third party can check it with the secret", async () => {
    const res = await getJson(`${t.url}/fastmcp/manifest`);
    expect(res.json.signatureAlgorithm).toBe("HMAC-SHA256");
    const expected = createHmac("sha256", secret).update(canonicalize(res.json.manifest)!).digest("base64url");
    expect(res.json.signature).toBe(expected);
    expect(await verifyManifest(res.json, { hmacSecret: secret })).toBe(true);
    expect(await verifyManifest(res.json, { hmacSecret: `${secret}x` })).toBe(false);
  });
});
