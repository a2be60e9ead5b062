import http from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, startApp, type TestApp } from "./support/app.js";

/** An identity provider publishing its keys at a JWKS URL on loopback. */
describe("a remote JWKS issuer", () => {
  let served: JWK[] = [];
  let fetches = 0;
  let idp: http.Server;
  let t: TestApp;

  beforeAll(async () => {
    idp = http.createServer((_req, res) => {
      fetches++;
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: served }));
    });
    await new Promise<void>((r) => idp.listen(0, "127.0.0.1", r));
    const jwksUri = `http://127.0.0.1:${(idp.address() as AddressInfo).port}/jwks.json`;
    t = await startApp({
      AUTH_ISSUERS: JSON.stringify([{ issuer: "https://remote.idp", jwksUri }]),
      AUTH_JWKS_COOLDOWN: "0s",
    });
  });
  afterAll(async () => {
    await t.close();
    idp.close();
  });

  const key = async (kid: string) => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256" } };
  };
  const token = (k: Awaited<ReturnType<typeof key>>) =>
    new SignJWT({ tenant: "remote", scope: "agents:read" })
      .setProtectedHeader({ alg: "ES256", kid: k.kid })
      .setIssuer("https://remote.idp")
      .setAudience("federation-core")
      .setExpirationTime("5m")
      .sign(k.privateKey);
  const call = async (tok: string) => (await getJson(`${t.url}/agents`, { headers: { authorization: `Bearer ${tok}` } })).status;

  it("fetches the key set, caches it, and refetches when a token names an unknown kid", async () => {
    const k1 = await key("k1");
    served = [k1.jwk];
    expect(await call(await token(k1))).toBe(200);
    expect(await call(await token(k1))).toBe(200);
    expect(fetches).toBe(1);

    const k2 = await key("k2");
    served = [k1.jwk, k2.jwk];
    expect(await call(await token(k2))).toBe(200);
    expect(fetches).toBe(2);

    const stranger = await key("k3");
    expect(await call(await token(stranger))).toBe(401);
  });
});
