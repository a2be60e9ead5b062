import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.js";
import { nextHop, readHops } from "../src/federation/hop-headers.js";

const config = (peers: string) => () => loadConfig({ FEDERATION_PEERS: peers, FEDERATION_BOOTSTRAP_TOKEN: "x" });

describe("FEDERATION_PEERS", () => {
  it("reads a list of peers with safe defaults (federation-core, no tenant)", () => {
    const c = loadConfig({
      FEDERATION_PEERS: JSON.stringify([
        { url: "http://peer-b:9405/", token: "tok" },
        { id: "mcp", url: "https://registry.example", kind: "mcp-registry", tenants: ["*"] },
      ]),
    });
    expect(c.federation.peers).toEqual([
      { id: "peer-b-9405", url: "http://peer-b:9405", kind: "federation-core", token: "tok", tenants: [] },
      { id: "mcp", url: "https://registry.example", kind: "mcp-registry", token: "", tenants: ["*"] },
    ]);
    expect(c.federation.timeoutMs).toBe(800);
    expect(c.federation.maxHops).toBe(2);
  });

  it.each([
    ["not json", "FEDERATION_PEERS: is not valid JSON"],
    ['{"url": "http://x"}', "FEDERATION_PEERS: must be a JSON array"],
    ["[3]", "FEDERATION_PEERS: entry 0 must be an object"],
    ['[{"token": "t"}]', 'FEDERATION_PEERS: entry 0 "url" is required'],
    ['[{"url": "http://x", "token": "t", "kind": "gopher"}]', 'FEDERATION_PEERS: entry 0 "kind" must be one of federation-core, mcp-registry'],
    ['[{"url": "http://x"}]', 'FEDERATION_PEERS: entry 0 "token" is required for a federation-core peer'],
    ['[{"url": "http://x", "token": "t", "tenants": "all"}]', 'FEDERATION_PEERS: entry 0 "tenants" must be a list'],
    ['[{"url": "http://u:p@x", "token": "t"}]', 'FEDERATION_PEERS: entry 0 "url" must not carry credentials'],
    ['[{"url": "http://x", "token": "t"}, {"url": "http://x:80", "token": "t"}]', 'FEDERATION_PEERS: entry 1 "id": "x-80" appears twice'],
  ])("refuses %s, naming the field", (raw, message) => {
    expect(config(raw)).toThrow(ConfigError);
    expect(config(raw)).toThrow(message);
  });

  it("checks FEDERATION_TIMEOUT and FEDERATION_INSTANCE_ID", () => {
    expect(() => loadConfig({ FEDERATION_TIMEOUT: "soon" })).toThrow("FEDERATION_TIMEOUT:");
    expect(() => loadConfig({ FEDERATION_INSTANCE_ID: "a b" })).toThrow("FEDERATION_INSTANCE_ID:");
    expect(loadConfig({ FEDERATION_INSTANCE_ID: "fed-1" }).federation.instanceId).toBe("fed-1");
  });

  it("keeps remote answers 5 s by default; FEDERATION_CACHE_TTL=0 turns the cache off", () => {
    expect(loadConfig({}).federation.cache.ttlMs).toBe(5_000);
    expect(loadConfig({ FEDERATION_CACHE_TTL: "0" }).federation.cache.ttlMs).toBe(0);
    expect(() => loadConfig({ FEDERATION_CACHE_TTL: "-1s" })).toThrow("FEDERATION_CACHE_TTL:");
  });
});

describe("hop headers", () => {
  it("start at zero hops and add our instance to the visited set once", () => {
    const first = readHops(new Headers());
    expect(first).toEqual({ hops: 0, visited: [] });
    const sent = nextHop(first, "fed-a");
    expect(sent).toEqual({ "x-federation-hops": "1", "x-federation-visited": "fed-a" });
    const there = readHops(new Headers(sent));
    expect(nextHop(there, "fed-b")).toEqual({ "x-federation-hops": "2", "x-federation-visited": "fed-a,fed-b" });
    expect(nextHop(there, "fed-a")["x-federation-visited"]).toBe("fed-a");
  });

  it("read a malformed hop count as past any limit and drop malformed instance ids", () => {
    expect(readHops(new Headers({ "x-federation-hops": "-1" })).hops).toBe(Number.MAX_SAFE_INTEGER);
    expect(readHops(new Headers({ "x-federation-visited": "ok, bad id ,,x" })).visited).toEqual(["ok", "x"]);
  });
});
