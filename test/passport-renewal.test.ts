import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileKeyStore } from "../src/security/key-store.js";
import { TokenIssuer } from "../src/security/token-issuer.js";
import { agent } from "./contracts/agent-store.contract.js";
import { ManualClock } from "./support/manual-clock.js";
import { federationVerifier } from "./support/registries.js";

const TTL = 15 * 60_000;

describe("passport renewal on heartbeat", () => {
  let dir: string;
  let clock: ManualClock;
  let keys: FileKeyStore;
  let issuer: TokenIssuer;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "fc-passport-"));
    clock = new ManualClock();
    keys = await FileKeyStore.open({ dataDir: dir, fromEnv: undefined, clock, retireAfterMs: 3_600_000 });
    issuer = new TokenIssuer(keys, clock, { issuer: "fed", audience: "fed", passportTtlMs: TTL });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("answers with the current passport while half its life is left, then with a new one", async () => {
    const a = agent("a1");
    const first = await issuer.renewedPassport(a);
    clock.advance(TTL / 2 - 1_000);
    expect((await issuer.renewedPassport({ ...a, load: 0.4, revision: 2 })).token).toBe(first.token);
    clock.advance(2_000);
    const second = await issuer.renewedPassport({ ...a, revision: 3 });
    expect(second.token).not.toBe(first.token);
    expect(decodeJwt(second.token).exp! * 1000).toBe(second.expiresAt);
    expect(second.expiresAt).toBeGreaterThan(first.expiresAt);
  });

  it("issues a new passport when the registration, capabilities or signing key change", async () => {
    const a = agent("a1");
    const first = await issuer.renewedPassport(a);
    const reRegistered = await issuer.renewedPassport({ ...a, registeredAt: a.registeredAt + 1 });
    expect(reRegistered.token).not.toBe(first.token);
    expect(decodeJwt(reRegistered.token).reg).toBe(a.registeredAt + 1);

    const newCaps = await issuer.renewedPassport({ ...a, registeredAt: a.registeredAt + 1, capabilities: [{ name: "other", tags: [] }] });
    expect(newCaps.token).not.toBe(reRegistered.token);
    expect(decodeJwt(newCaps.token).cap_hash).not.toBe(decodeJwt(reRegistered.token).cap_hash);

    const kid = await keys.rotate();
    const rotated = await issuer.renewedPassport({ ...a, registeredAt: a.registeredAt + 1, capabilities: [{ name: "other", tags: [] }] });
    expect(rotated.token).not.toBe(newCaps.token);
    expect(decodeProtectedHeader(rotated.token).kid).toBe(kid);
  });

  it("answers the heartbeats after a registration with the registration's passport", async () => {
    const a = agent("a1");
    const registered = await issuer.passport(a);
    clock.advance(60_000);
    expect((await issuer.renewedPassport({ ...a, revision: 2 })).token).toBe(registered.token);
    // A new registration always gets a new passport.
    expect((await issuer.passport({ ...a, revision: 3 })).token).not.toBe(registered.token);
  });

  it("rebuilds a passport that gave up its whole token byte for byte, and it still verifies", async () => {
    // Two passports hold their whole token: a third one's makes the least recently used give its up.
    const small = new TokenIssuer(keys, clock, { issuer: "fed", audience: "fed", passportTtlMs: TTL, recentTokens: 2 });
    const verifier = federationVerifier(keys, clock);
    const agents = ["r1", "r2", "r3", "r4"].map((id) => agent(id));
    const issued = [];
    for (const a of agents) issued.push(await small.passport(a));
    clock.advance(60_000);
    for (const [i, a] of agents.entries()) {
      // r1 and r2 gave theirs up (rebuilt: an equal string, a new object); r3 and r4 hold theirs (the same object).
      const again = await small.renewedPassport({ ...a, revision: 2 });
      expect(again.token).toBe(issued[i]!.token);
      expect(again.expiresAt).toBe(issued[i]!.expiresAt);
      if (i < 2) expect(again).not.toBe(issued[i]);
      const claims = decodeJwt(again.token);
      expect(claims.jti).toBe(decodeJwt(issued[i]!.token).jti);
      expect((await verifier.verify(again.token)).subject).toBe(a.id);
    }
    // Used again, the rebuilt ones are the recent ones now: answered with the very same object.
    const r4 = await small.renewedPassport({ ...agents[3]!, revision: 3 });
    const r4again = await small.renewedPassport({ ...agents[3]!, revision: 4 });
    expect(r4again).toBe(r4);
    expect(r4again.token).toBe(issued[3]!.token);
  });

  it("keeps agents' passports apart", async () => {
    const p1 = await issuer.renewedPassport(agent("a1"));
    const p2 = await issuer.renewedPassport(agent("a2"));
    expect(decodeJwt(p1.token).sub).toBe("a1");
    expect(decodeJwt(p2.token).sub).toBe("a2");
    expect((await issuer.renewedPassport(agent("a1"))).token).toBe(p1.token);
  });

  it("serves a verified token from the cache only until it expires", async () => {
    const verifier = federationVerifier(keys, clock);
    const minted = await issuer.mint("t1", ["agents:read"], "svc", 30_000);
    expect((await verifier.verify(minted.token)).tenant).toBe("t1");
    clock.advance(20_000);
    expect((await verifier.verify(minted.token)).subject).toBe("svc");
    clock.advance(11_000);
    await expect(verifier.verify(minted.token)).rejects.toMatchObject({ code: 16 });
  });
});
