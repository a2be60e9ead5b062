import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import canonicalize from "canonicalize";
import {
  base64url,
  CompactSign,
  compactVerify,
  createLocalJWKSet,
  decodeProtectedHeader,
  FlattenedSign,
  flattenedVerify,
  importJWK,
  type JSONWebKeySet,
  jwtVerify,
  SignJWT,
} from "jose";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { ConfigError } from "../src/config.js";
import { FileKeyStore } from "../src/security/key-store.js";
import { getJson, postJson, registerBody, startApp } from "./support/app.js";
import { ManualClock } from "./support/manual-clock.js";

// The key store signs with node:crypto's synchronous Ed25519 and writes the
// compact serialization itself; everything here verifies with plain jose.

const dirs: string[] = [];
afterAll(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempDir = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), "fc-keys-"));
  dirs.push(d);
  return d;
};

/** One character of a base64url segment changed (to another valid character). */
const flip = (segment: string, at = Math.floor(segment.length / 2)) =>
  segment.slice(0, at) + (segment[at] === "A" ? "B" : "A") + segment.slice(at + 1);
const tamper = (jws: string, part: 0 | 1 | 2) => {
  const parts = jws.split(".");
  parts[part] = flip(parts[part]!);
  return parts.join(".");
};

const RETIRE_MS = 3_600_000;
const PASSPORT_BYTES = new TextEncoder().encode(JSON.stringify({ iss: "federation-core", sub: "agent-1", iat: 1767225600, exp: 1767229200 }));

describe("FileKeyStore signing (node:crypto Ed25519, verified by jose)", () => {
  let clock: ManualClock;
  let dir: string;
  let keys: FileKeyStore;
  beforeEach(async () => {
    clock = new ManualClock();
    dir = tempDir();
    keys = await FileKeyStore.open({ dataDir: dir, fromEnv: undefined, clock, retireAfterMs: RETIRE_MS });
  });
  const jwks = () => createLocalJWKSet(keys.jwks());
  const at = () => new Date(clock.now());
  /** The current key's private JWK, as stored (for signing the same input with jose). */
  const storedPrivateKey = () => {
    const doc = JSON.parse(readFileSync(path.join(dir, "signing-keys.json"), "utf8")) as { keys: { kid: string; privateJwk: object }[] };
    return importJWK(doc.keys.find((k) => k.kid === keys.currentKid())!.privateJwk as never, "EdDSA");
  };

  it("signCompact: verifies with compactVerify, header exactly {alg, kid, typ}, the same bytes jose's CompactSign writes", async () => {
    const jws = await keys.signCompact(PASSPORT_BYTES, "passport+jwt");
    const { payload, protectedHeader } = await compactVerify(jws, jwks());
    expect(payload).toEqual(PASSPORT_BYTES);
    expect(JSON.parse(Buffer.from(jws.split(".")[0]!, "base64url").toString())).toEqual({ alg: "EdDSA", kid: keys.currentKid(), typ: "passport+jwt" });
    expect(protectedHeader).toEqual({ alg: "EdDSA", kid: keys.currentKid(), typ: "passport+jwt" });
    // Ed25519 is deterministic: the same key and input give the same token as jose's signer.
    const byJose = await new CompactSign(PASSPORT_BYTES)
      .setProtectedHeader({ alg: "EdDSA", kid: keys.currentKid(), typ: "passport+jwt" })
      .sign(await storedPrivateKey());
    expect(jws).toBe(byJose);
  });

  it("signJwt: verifies with jwtVerify (typ, iat, exp), the same bytes jose's SignJWT writes", async () => {
    const claims = { iss: "federation-core", aud: "agent-7", task_id: "t-1", tenant: "acme", capabilities: ["a", "b"] };
    const expiresAtMs = clock.now() + 60_500;
    const jwt = await keys.signJwt(claims, expiresAtMs, "fc-route-ticket+jwt");
    const { payload, protectedHeader } = await jwtVerify(jwt, jwks(), {
      issuer: "federation-core",
      audience: "agent-7",
      typ: "fc-route-ticket+jwt",
      currentDate: at(),
    });
    expect(protectedHeader).toEqual({ alg: "EdDSA", kid: keys.currentKid(), typ: "fc-route-ticket+jwt" });
    expect(payload).toEqual({ ...claims, iat: clock.now() / 1000, exp: Math.floor(expiresAtMs / 1000) });
    const byJose = await new SignJWT(claims)
      .setProtectedHeader({ alg: "EdDSA", kid: keys.currentKid(), typ: "fc-route-ticket+jwt" })
      .setIssuedAt(Math.floor(clock.now() / 1000))
      .setExpirationTime(Math.floor(expiresAtMs / 1000))
      .sign(await storedPrivateKey());
    expect(jwt).toBe(byJose);
    // Expiry is still enforced by the verifier.
    await expect(jwtVerify(jwt, jwks(), { currentDate: new Date(expiresAtMs + 2_000) })).rejects.toMatchObject({ code: "ERR_JWT_EXPIRED" });
    await expect(keys.signJwt(claims, Number.NaN, "x+jwt")).rejects.toThrow(/exp/);
  });

  it("signDetached: header..signature over the payload, verifies with flattenedVerify, the same bytes jose's FlattenedSign writes", async () => {
    const doc = new TextEncoder().encode('{"agents":[],"name":"federation"}');
    const { jws, kid } = await keys.signDetached(doc);
    expect(kid).toBe(keys.currentKid());
    const [protectedHeader, empty, signature] = jws.split(".");
    expect(empty).toBe("");
    expect(decodeProtectedHeader(jws)).toEqual({ alg: "EdDSA", kid });
    const verified = await flattenedVerify({ protected: protectedHeader!, payload: base64url.encode(doc), signature: signature! }, jwks());
    expect(verified.payload).toEqual(doc);
    const byJose = await new FlattenedSign(doc).setProtectedHeader({ alg: "EdDSA", kid }).sign(await storedPrivateKey());
    expect(jws).toBe(`${byJose.protected}..${byJose.signature}`);
    const other = new TextEncoder().encode('{"agents":[],"name":"evil"}');
    await expect(flattenedVerify({ protected: protectedHeader!, payload: base64url.encode(other), signature: signature! }, jwks())).rejects.toMatchObject({
      code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
    });
  });

  it("across a rotation: old and new signatures verify until the old key retires; tampered ones never do", async () => {
    const oldKid = keys.currentKid();
    const oldToken = await keys.signCompact(PASSPORT_BYTES, "passport+jwt");
    const oldJwt = await keys.signJwt({ sub: "s" }, clock.now() + RETIRE_MS * 2, "access+jwt");
    const newKid = await keys.rotate();
    expect(newKid).not.toBe(oldKid);
    const newToken = await keys.signCompact(PASSPORT_BYTES, "passport+jwt");
    const newJwt = await keys.signJwt({ sub: "s" }, clock.now() + RETIRE_MS * 2, "access+jwt");
    expect(decodeProtectedHeader(newToken).kid).toBe(newKid);
    expect(decodeProtectedHeader(newJwt).kid).toBe(newKid);
    expect(keys.jwks().keys.map((k) => k.kid)).toEqual([oldKid, newKid]);

    for (const token of [oldToken, newToken]) {
      await expect(compactVerify(token, jwks())).resolves.toBeDefined();
      for (const part of [0, 1, 2] as const) {
        await expect(compactVerify(tamper(token, part), jwks())).rejects.toThrow();
      }
      await expect(compactVerify(tamper(token, 1), jwks())).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
    }
    for (const jwt of [oldJwt, newJwt]) {
      await expect(jwtVerify(jwt, jwks(), { currentDate: at(), typ: "access+jwt" })).resolves.toBeDefined();
      await expect(jwtVerify(tamper(jwt, 2), jwks(), { currentDate: at() })).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
    }
    // A signature is only good under the key that made it: the new key's header on an old signature fails.
    const [, payload, oldSignature] = oldToken.split(".");
    const relabelled = `${newToken.split(".")[0]}.${payload}.${oldSignature}`;
    await expect(compactVerify(relabelled, jwks())).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });

    // Once the old key retires it leaves the JWKS: its tokens stop verifying, the new key's keep verifying.
    clock.advance(RETIRE_MS + 1);
    expect(keys.jwks().keys.map((k) => k.kid)).toEqual([newKid]);
    await expect(compactVerify(oldToken, jwks())).rejects.toMatchObject({ code: "ERR_JWKS_NO_MATCHING_KEY" });
    await expect(compactVerify(newToken, jwks())).resolves.toBeDefined();
  });

  it("a store loaded from the saved key set (a replica) signs what this one verifies, and refuses a mismatched key", async () => {
    await keys.rotate();
    const text = readFileSync(path.join(dir, "signing-keys.json"), "utf8");
    const replica = await FileKeyStore.open({ dataDir: tempDir(), fromEnv: text, clock, retireAfterMs: RETIRE_MS });
    expect(replica.currentKid()).toBe(keys.currentKid());
    const token = await replica.signCompact(PASSPORT_BYTES, "passport+jwt");
    expect(token).toBe(await keys.signCompact(PASSPORT_BYTES, "passport+jwt"));
    await expect(compactVerify(token, jwks())).resolves.toBeDefined();
    const detached = await replica.signDetached(PASSPORT_BYTES);
    const [h, , s] = detached.jws.split(".");
    await expect(flattenedVerify({ protected: h!, payload: base64url.encode(PASSPORT_BYTES), signature: s! }, jwks())).resolves.toBeDefined();

    const doc = JSON.parse(text) as { keys: { privateJwk: { d: string } }[] };
    const otherDir = tempDir();
    await FileKeyStore.open({ dataDir: otherDir, fromEnv: undefined, clock, retireAfterMs: RETIRE_MS });
    const other = JSON.parse(readFileSync(path.join(otherDir, "signing-keys.json"), "utf8"));
    doc.keys[0]!.privateJwk = { ...doc.keys[0]!.privateJwk, d: other.keys[0].privateJwk.d };
    const opening = FileKeyStore.open({ dataDir: tempDir(), fromEnv: JSON.stringify(doc), clock, retireAfterMs: RETIRE_MS });
    await expect(opening).rejects.toBeInstanceOf(ConfigError);
    await expect(opening).rejects.toThrow(/is not the private key of "publicJwk"/);
    doc.keys[0]!.privateJwk = { ...doc.keys[0]!.privateJwk, d: "!!" };
    await expect(FileKeyStore.open({ dataDir: tempDir(), fromEnv: JSON.stringify(doc), clock, retireAfterMs: RETIRE_MS })).rejects.toThrow(
      /is not a usable Ed25519 private key/,
    );
  });
});

describe("every token kind, before and after a rotation, against the served /.well-known/jwks.json", () => {
  it("passports, minted tokens, route tickets and the manifest signature verify with plain jose; tampered ones do not", async () => {
    const t = await startApp();
    try {
      const served = async (): Promise<JSONWebKeySet> => (await getJson(`${t.url}/.well-known/jwks.json`, { headers: { authorization: "" } })).json;
      const issue = async (name: string) => {
        const reg = await postJson(`${t.url}/agents/register`, registerBody({ name, capabilities: [{ name: `sign.${name}` }] }));
        expect(reg.status, JSON.stringify(reg.json)).toBe(200);
        const minted = await postJson(`${t.url}/admin/tokens`, { tenant: "acme", scopes: ["agents:read"], ttl: "600s" });
        expect(minted.status).toBe(200);
        const routed = await postJson(`${t.url}/route`, { capabilities: [`sign.${name}`] });
        expect(routed.status, JSON.stringify(routed.json)).toBe(200);
        const manifest = await getJson(`${t.url}/fastmcp/manifest`);
        expect(manifest.json.signatureAlgorithm).toBe("EdDSA");
        return { agentId: reg.json.agent.id as string, passport: reg.json.passport as string, minted: minted.json.token as string, ticket: routed.json.ticket as string, manifest: manifest.json };
      };
      const check = async (s: Awaited<ReturnType<typeof issue>>, set: JSONWebKeySet) => {
        const jwks = createLocalJWKSet(set);
        const kinds: [string, Parameters<typeof jwtVerify>[2]][] = [
          [s.passport, { issuer: "federation-core", audience: "federation-core", typ: "passport+jwt" }],
          [s.minted, { issuer: "federation-core", audience: "federation-core" }],
          [s.ticket, { issuer: "federation-core", audience: s.agentId, typ: "fc-route-ticket+jwt" }],
        ];
        for (const [token, options] of kinds) {
          const { protectedHeader } = await jwtVerify(token, jwks, options);
          expect(protectedHeader.alg).toBe("EdDSA");
          expect(set.keys.map((k) => k.kid)).toContain(protectedHeader.kid);
          await expect(jwtVerify(tamper(token, 1), jwks, options)).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
          await expect(jwtVerify(tamper(token, 2), jwks, options)).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
        }
        const [h, , sig] = (s.manifest.signature as string).split(".");
        const canonical = canonicalize(s.manifest.manifest)!;
        const verified = await flattenedVerify({ protected: h!, payload: base64url.encode(canonical), signature: sig! }, jwks);
        expect(verified.protectedHeader?.kid).toBe(s.manifest.keyId);
        await expect(
          flattenedVerify({ protected: h!, payload: base64url.encode(`${canonical} `), signature: sig! }, jwks),
        ).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
      };

      const before = await issue("before");
      await check(before, await served());
      const rotated = await postJson(`${t.url}/admin/keys:rotate`, {});
      expect(rotated.status).toBe(200);
      const after = await issue("after");
      for (const token of [after.passport, after.minted, after.ticket]) expect(decodeProtectedHeader(token).kid).toBe(rotated.json.keyId);
      expect(after.manifest.keyId).toBe(rotated.json.keyId);
      const set = await served();
      await check(before, set);
      await check(after, set);
    } finally {
      await t.close();
    }
  });
});
