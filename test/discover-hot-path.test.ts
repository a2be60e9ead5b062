import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FileKeyStore } from "../src/security/key-store.js";
import { RateLimits } from "../src/security/rate-limits.js";
import { RequestGuard } from "../src/security/request-guard.js";
import { TokenIssuer } from "../src/security/token-issuer.js";
import { RecentMap } from "../src/recent-map.js";
import { postJson, startApp, type TestApp } from "./support/app.js";
import { bearer, grpc, loadGrpcPackage, unary } from "./support/grpc-client.js";
import { ManualClock } from "./support/manual-clock.js";
import { federationVerifier } from "./support/registries.js";

/**
 * The caches on Discover's hot path: a repeated request's bytes map to one
 * frozen parsed request (and its query), a repeated Authorization header to
 * its verified principal. Each must answer what is true now: the
 * directory's current agents, the caller's own tenant, a credential that
 * has not expired.
 */
describe("Discover's request cache on the lean gRPC path", () => {
  let t: TestApp;
  let directory: any;
  let registry: any;

  beforeAll(async () => {
    t = await startApp();
    const pkg = loadGrpcPackage();
    directory = new pkg.federation.v1.DirectoryService(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    registry = new pkg.federation.v1.RegistryService(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
  });
  afterAll(async () => {
    directory?.close();
    registry?.close();
    await t.close();
  });

  const register = (name: string, capability: string, md = bearer()) =>
    unary(registry, "Register", { name, endpoint: { url: "http://127.0.0.1:1" }, capabilities: [{ name: capability }], version: "1" }, md);
  const names = (res: { agents: { name: string }[] }) => res.agents.map((a) => a.name).sort();

  it("answers a repeated request from the directory as it is now: agents added and removed between the calls", async () => {
    const fast = t.app.server.fastPath!;
    const ask = { capabilities: ["cache.probe"], limit: 10 };
    const a = await register("probe-a", "cache.probe");
    expect(names(await unary(directory, "Discover", ask))).toEqual(["probe-a"]);
    const reused = fast.reusedRequests;
    await register("probe-b", "cache.probe");
    expect(names(await unary(directory, "Discover", ask))).toEqual(["probe-a", "probe-b"]);
    await unary(registry, "Unregister", { agent_id: a.agent.id });
    expect(names(await unary(directory, "Discover", ask))).toEqual(["probe-b"]);
    // The same bytes each time: parsed once, the later calls reused it.
    expect(fast.reusedRequests).toBe(reused + 2);
    // A different question is its own request.
    expect(names(await unary(directory, "Discover", { capabilities: ["cache.probe"], limit: 1 }))).toEqual(["probe-b"]);
    expect(fast.reusedRequests).toBe(reused + 2);
  });

  it("answers the same request bytes from two tenants each with its own tenant's agents", async () => {
    const tokenOf = async (tenant: string) => {
      const minted = await postJson(`${t.url}/admin/tokens`, { tenant, scopes: ["agents:read", "agents:write"], subject: tenant });
      expect(minted.status).toBe(200);
      return bearer(minted.json.token as string);
    };
    const [red, blue] = [await tokenOf("red"), await tokenOf("blue")];
    await register("red-agent", "tenant.probe", red);
    await register("blue-agent", "tenant.probe", blue);
    const ask = { capabilities: ["tenant.probe"], limit: 10 };
    for (let i = 0; i < 2; i++) {
      expect(names(await unary(directory, "Discover", ask, red))).toEqual(["red-agent"]);
      expect(names(await unary(directory, "Discover", ask, blue))).toEqual(["blue-agent"]);
    }
  });

  it("still refuses a bad request every time it is repeated", async () => {
    for (let i = 0; i < 2; i++) {
      await expect(unary(directory, "Discover", { capabilities: ["not a capability!"] })).rejects.toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
      });
    }
  });
});

describe("the guard's remembered credentials", () => {
  let dir: string;
  let clock: ManualClock;
  let keys: FileKeyStore;
  let issuer: TokenIssuer;
  let guard: RequestGuard;
  let limits: RateLimits;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "fc-guard-cache-"));
    clock = new ManualClock();
    keys = await FileKeyStore.open({ dataDir: dir, fromEnv: undefined, clock, retireAfterMs: 3_600_000 });
    issuer = new TokenIssuer(keys, clock, { issuer: "fed", audience: "fed", passportTtlMs: 60_000 });
    const verifier = federationVerifier(keys, clock);
    limits = await RateLimits.create({ tenantPerWindow: 1_000_000, perTenant: {}, heartbeatsPerWindow: 10, windowSec: 1 }, undefined);
    guard = new RequestGuard(verifier, limits, { trustDomain: undefined, defaultTenant: "default" });
  });
  afterEach(() => {
    limits.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const discover = (authorization: string | null) => ({
    service: "federation.v1.DirectoryService",
    method: "Discover",
    header: { get: (name: string) => (name === "authorization" ? authorization : null) },
    peer: undefined,
    message: undefined,
  });

  it("answers a repeated header at once, until the token expires", async () => {
    const { token } = await issuer.mint("t1", ["agents:read"], "svc", 30_000);
    const header = `Bearer ${token}`;
    const first = guard.admit(discover(header));
    expect(first).toBeInstanceOf(Promise);
    expect((await first).tenant).toBe("t1");
    // Remembered: no promise, the same principal.
    const again = guard.admit(discover(header));
    expect(again).not.toBeInstanceOf(Promise);
    expect(again).toBe(await first);
    clock.advance(30_001);
    const expired = guard.admit(discover(header));
    expect(expired).toBeInstanceOf(Promise);
    await expect(expired).rejects.toMatchObject({ rawMessage: "token expired" });
  });

  it("remembers a token again once it was checked again after the remembering ran out", async () => {
    const { token } = await issuer.mint("t1", ["agents:read"], "svc", 3_600_000);
    const header = `Bearer ${token}`;
    await guard.admit(discover(header));
    expect(guard.admit(discover(header))).not.toBeInstanceOf(Promise);
    clock.advance(61_000); // past the verifier's 60 s
    const checked = guard.admit(discover(header));
    expect(checked).toBeInstanceOf(Promise);
    expect((await checked).tenant).toBe("t1");
    expect(guard.admit(discover(header))).not.toBeInstanceOf(Promise);
  });

  it("checks a header it has not seen, even carrying a remembered token", async () => {
    const { token } = await issuer.mint("t1", ["agents:read"], "svc", 30_000);
    await guard.admit(discover(`Bearer ${token}`));
    // The same token in another header form is parsed (and verified) on its own.
    expect((await guard.admit(discover(`bearer   ${token} `))).tenant).toBe("t1");
    expect(() => guard.admit(discover(`Basic ${token}`))).toThrow(/Bearer <token>/);
    expect(() => guard.admit(discover(`Bearer ${token} extra`))).toThrow(/Bearer <token>/);
    expect(() => guard.admit(discover(null))).toThrow(/missing bearer token/);
    // A forged token is refused every time (nothing remembered).
    const forged = `Bearer ${token.slice(0, -4)}AAAA`;
    for (let i = 0; i < 2; i++) await expect(guard.admit(discover(forged))).rejects.toMatchObject({ code: 16 });
  });
});

describe("RecentMap", () => {
  it("holds at most its size, keeping the entries read since the last turnover", () => {
    const m = new RecentMap<string, number>(4);
    for (let i = 0; i < 100; i++) {
      m.set(`k${i}`, i);
      expect(m.get("hot")).toBe(i === 0 ? undefined : 0);
      if (i === 0) m.set("hot", 0);
      expect(m.size).toBeLessThanOrEqual(4);
    }
    expect(m.get("k99")).toBe(99);
    expect(m.get("k0")).toBeUndefined();
  });

  it("add() after a miss behaves as set(): bounded, turned over, and each key held once", () => {
    const m = new RecentMap<string, number>(6);
    const model = new RecentMap<string, number>(6);
    for (let i = 0; i < 200; i++) {
      const key = `k${(i * 7) % 23}`;
      for (const map of [m, model]) {
        if (map.get(key) === undefined) {
          if (map === m) m.add(key, i);
          else model.set(key, i);
        }
      }
      expect(m.size).toBe(model.size);
      expect(m.size).toBeLessThanOrEqual(6);
      for (let k = 0; k < 23; k++) expect(m.get(`k${k}`)).toBe(model.get(`k${k}`));
    }
  });
});
