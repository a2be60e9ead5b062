import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { AUTH, startApp, type TestApp } from "./support/app.js";

/**
 * CORS as a browser's preflight sees it, header by header (test/browser-cors.test.ts
 * runs the same in real Chromium).
 */
const ALLOWED = "http://app.example.test:8080";

function preflight(t: TestApp, path: string, origin: string, method = "POST", headers = "content-type, authorization") {
  return fetch(`${t.url}${path}`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": method, "access-control-request-headers": headers },
  });
}

describe("CORS with an allow-list", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp({ CORS_ALLOWED_ORIGINS: `${ALLOWED}, https://other.example.test` });
  });
  afterAll(() => t.close());

  for (const [what, path, method] of [
    ["a Connect/gRPC-Web RPC path", "/federation.v1.DirectoryService/Discover", "POST"],
    ["a REST route", "/agents/discover", "GET"],
    ["a REST route with a path variable", "/agents/some-id", "DELETE"],
  ] as const) {
    it(`answers the preflight of ${what} for a listed origin`, async () => {
      const res = await preflight(t, path, ALLOWED, method);
      expect(res.status).toBe(204);
      expect(res.headers.get("access-control-allow-origin")).toBe(ALLOWED);
      expect(res.headers.get("access-control-allow-credentials")).toBe("true");
      expect(res.headers.get("access-control-allow-methods")!.split(", ")).toEqual(expect.arrayContaining(["GET", "POST", "DELETE"]));
      const allowed = res.headers.get("access-control-allow-headers")!.toLowerCase().split(", ");
      for (const h of ["authorization", "content-type", "connect-protocol-version", "connect-timeout-ms", "x-grpc-web", "grpc-timeout", "x-request-id"]) {
        expect(allowed, h).toContain(h);
      }
      expect(Number(res.headers.get("access-control-max-age"))).toBeGreaterThan(0);
      expect(res.headers.get("vary")).toMatch(/Origin/);
    });
  }

  it("exposes the headers gRPC-Web and Connect clients read on the actual response", async () => {
    const res = await fetch(`${t.url}/health`, { headers: { origin: ALLOWED } });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe(ALLOWED);
    const exposed = res.headers.get("access-control-expose-headers")!.toLowerCase();
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"]) expect(exposed).toContain(h);
    expect(res.headers.get("vary")).toMatch(/Origin/);
  });

  it("refuses the preflight of an origin not on the list, and gives its requests no CORS headers", async () => {
    const res = await preflight(t, "/federation.v1.DirectoryService/Discover", "https://evil.example.test");
    expect(res.status).toBe(403);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const actual = await fetch(`${t.url}/health`, { headers: { origin: "https://evil.example.test" } });
    expect(actual.headers.get("access-control-allow-origin")).toBeNull();
    // Callers without an Origin (curl, gRPC stubs) are not browsers: nothing changes for them.
    expect((await fetch(`${t.url}/agents`, { headers: AUTH })).status).toBe(200);
  });
});

describe("CORS configuration", () => {
  it("allows every origin with *, without credentials", async () => {
    const t = await startApp({ CORS_ALLOWED_ORIGINS: "*" });
    try {
      const res = await preflight(t, "/agents/discover", "https://anywhere.example.test", "GET");
      expect(res.status).toBe(204);
      expect(res.headers.get("access-control-allow-origin")).toBe("*");
      expect(res.headers.get("access-control-allow-credentials")).toBeNull();
    } finally {
      await t.close();
    }
  });

  it("has no origins by default: a browser preflight is refused", async () => {
    const t = await startApp();
    try {
      expect((await preflight(t, "/agents/discover", ALLOWED, "GET")).status).toBe(403);
    } finally {
      await t.close();
    }
  });

  it("names CORS_ALLOWED_ORIGINS when an entry is not an origin", () => {
    for (const bad of ["app.example.test", "https://app.example.test/path", "*, https://a.test", "ftp://"]) {
      expect(() => loadConfig({ CORS_ALLOWED_ORIGINS: bad }), bad).toThrow(/^CORS_ALLOWED_ORIGINS: /);
    }
    expect(loadConfig({ CORS_ALLOWED_ORIGINS: "https://a.test/, http://b.test:81" }).corsAllowedOrigins).toEqual(["https://a.test", "http://b.test:81"]);
  });
});
