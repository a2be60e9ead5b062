import { create, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { DirectoryService, GetManifestResponseSchema } from "../gen/federation/v1/directory_service_pb.js";
import { verifyCatalog, verifyManifest } from "../src/security/manifest-signer.js";
import { AUTH, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

const withToken: Interceptor = (next) => (req) => {
  req.header.set("authorization", AUTH.authorization);
  return next(req);
};

describe("the manifest: one signature per catalog version, etags, pages", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(() => t.close());

  const jwks = async () => ({ jwks: (await getJson(`${t.url}/.well-known/jwks.json`)).json });
  const manifest = (query = "", headers: Record<string, string> = {}) => getJson(`${t.url}/fastmcp/manifest${query}`, { headers });
  const register = async (name: string) => {
    const r = await postJson(`${t.url}/agents/register`, registerBody({ name }));
    expect(r.status).toBe(200);
    return r.json as { agent: { id: string }; passport: string };
  };
  const heartbeat = (id: string, body: Record<string, unknown>) => postJson(`${t.url}/agents/${id}/heartbeat`, body);

  /** Every page of the current version, following next_page_token. */
  async function readPages(pageSize: number) {
    const pages = [];
    let token = "";
    do {
      const r = await manifest(`?page_size=${pageSize}${token ? `&page_token=${token}` : ""}`);
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      pages.push(r.json);
      token = r.json.nextPageToken;
    } while (token !== "");
    return pages;
  }

  it("keeps its etag while only load and lease times change, and changes it on register, status change and unregister", async () => {
    const a = await register("etag-a");
    const first = await manifest();
    const etag = first.headers.get("etag")!;
    expect(etag).toMatch(/^W\/"[A-Za-z0-9_-]{43}"$/);
    expect(first.json.etag).toBe(etag);
    // Heartbeats move load and lease times, which the manifest does not show.
    expect((await heartbeat(a.agent.id, { load: 0.7 })).status).toBe(200);
    expect((await heartbeat(a.agent.id, { load: 0.2 })).status).toBe(200);
    const after = await manifest();
    expect(after.headers.get("etag")).toBe(etag);
    expect(after.json).toEqual(first.json);
    const shown = first.json.manifest.agents.find((x: { id: string }) => x.id === a.agent.id);
    expect(shown).toMatchObject({ status: "AGENT_STATUS_HEALTHY", load: 0, revision: "0", name: "etag-a" });
    expect(shown.lastHeartbeatAt).toBeUndefined();

    const b = await register("etag-b");
    const registered = (await manifest()).headers.get("etag");
    expect(registered).not.toBe(etag);
    expect((await heartbeat(b.agent.id, { status: "AGENT_STATUS_DEGRADED" })).status).toBe(200);
    const degraded = await manifest();
    expect(degraded.headers.get("etag")).not.toBe(registered);
    expect(degraded.json.manifest.agents.find((x: { id: string }) => x.id === b.agent.id).status).toBe("AGENT_STATUS_DEGRADED");
    expect((await getJson(`${t.url}/agents/${b.agent.id}`, { method: "DELETE" })).status).toBe(200);
    const removed = await manifest();
    expect(removed.headers.get("etag")).not.toBe(degraded.headers.get("etag"));
    // The etag is the catalog digest: the same catalog again is the same etag.
    expect(removed.headers.get("etag")).toBe(etag);
    expect(removed.json.manifest.agents.map((x: { id: string }) => x.id)).not.toContain(b.agent.id);
  });

  it("answers If-None-Match with 304 and no body over REST, and 200 once the catalog changed", async () => {
    await register("conditional");
    const full = await manifest();
    const etag = full.headers.get("etag")!;
    const res = await fetch(`${t.url}/fastmcp/manifest`, { headers: { ...AUTH, "if-none-match": etag } });
    expect(res.status).toBe(304);
    expect(res.headers.get("etag")).toBe(etag);
    expect(await res.text()).toBe("");
    // A list of tags, and the strong form of the same tag, match too (weak comparison).
    const listed = await fetch(`${t.url}/fastmcp/manifest`, { headers: { ...AUTH, "if-none-match": `"other", ${etag.slice(2)}` } });
    expect(listed.status).toBe(304);
    expect((await manifest("", { "if-none-match": `W/"stale"` })).status).toBe(200);
    await register("conditional-2");
    const changed = await manifest("", { "if-none-match": etag });
    expect(changed.status).toBe(200);
    expect(changed.headers.get("etag")).not.toBe(etag);
  });

  it("answers if_none_match with not_modified and no manifest over gRPC and Connect, with the etag in the response metadata", async () => {
    await register("rpc-etag");
    for (const transport of [
      createGrpcTransport({ baseUrl: t.url, interceptors: [withToken] }),
      createConnectTransport({ baseUrl: t.url, httpVersion: "1.1", interceptors: [withToken] }),
    ]) {
      const client = createClient(DirectoryService, transport);
      let header: string | null = null;
      const full = await client.getManifest({}, { onHeader: (h) => (header = h.get("etag")) });
      expect(full.etag).toMatch(/^W\//);
      expect(header).toBe(full.etag);
      expect(full.manifest?.agents.length).toBeGreaterThan(0);
      const same = await client.getManifest({ ifNoneMatch: full.etag });
      expect(same.notModified).toBe(true);
      expect(same.etag).toBe(full.etag);
      expect(same.manifest).toBeUndefined();
      expect(same.signature).toBe("");
      const other = await client.getManifest({ ifNoneMatch: `W/"something-else"` });
      expect(other.notModified).toBe(false);
      expect(other.manifest?.agents.length).toBe(full.manifest?.agents.length);
    }
  });

  it("pages cover every agent exactly once, and the signed catalog digest verifies the paged read", async () => {
    for (let i = 0; i < 7; i++) await register(`paged-${i}`);
    const full = await manifest();
    expect(await verifyManifest(full.json, await jwks())).toBe(true);
    expect(await verifyCatalog([full.json], await jwks())).toBe(true);

    const pages = await readPages(3);
    expect(pages.length).toBe(Math.ceil(full.json.manifest.agents.length / 3));
    const ids = pages.flatMap((p) => p.manifest.agents.map((a: { id: string }) => a.id));
    expect(ids).toEqual(full.json.manifest.agents.map((a: { id: string }) => a.id));
    expect(new Set(ids).size).toBe(ids.length);
    expect(pages.flatMap((p) => p.manifest.tools)).toEqual(full.json.manifest.tools);
    for (const p of pages) {
      expect(p.signature).toBe("");
      expect(p.etag).toBe(full.json.etag);
      expect(p.catalog).toEqual(full.json.catalog);
    }
    expect(pages[0].catalog.agentCount).toBe(ids.length);
    expect(await verifyCatalog(pages, await jwks())).toBe(true);

    // A changed page, a missing page, or a forged catalog does not verify.
    const tampered = structuredClone(pages);
    tampered[1].manifest.agents[0].name = "evil";
    expect(await verifyCatalog(tampered, await jwks())).toBe(false);
    expect(await verifyCatalog(pages.slice(1), await jwks())).toBe(false);
    const forged = structuredClone(pages).map((p) => ({ ...p, catalog: { ...p.catalog, agentCount: 1 } }));
    expect(await verifyCatalog(forged, await jwks())).toBe(false);

    // A page token outlives its version: ABORTED (409), read again from the first page.
    await register("paged-late");
    const stale = await manifest(`?page_size=3&page_token=${pages[0].nextPageToken}`);
    expect(stale.status).toBe(409);
    expect(stale.json.code).toBe(Code.Aborted);
    expect((await manifest("?page_token=bm90LWEtdG9rZW4")).status).toBe(400);
  });

  it("keeps the documented signature check of the full form true, over REST and in the RPC message's JSON", async () => {
    const rest = await manifest();
    expect(await verifyManifest(rest.json, await jwks())).toBe(true);
    const forged = { ...rest.json, manifest: { ...rest.json.manifest, name: "evil" } };
    expect(await verifyManifest(forged, await jwks())).toBe(false);
    const client = createClient(DirectoryService, createGrpcTransport({ baseUrl: t.url, interceptors: [withToken] }));
    const rpc = await client.getManifest({});
    const json = toJson(GetManifestResponseSchema, create(GetManifestResponseSchema, rpc), { alwaysEmitImplicit: true });
    expect(await verifyManifest(json as never, await jwks())).toBe(true);
    expect(await verifyCatalog([json as never], await jwks())).toBe(true);
  });

  it("signs once per catalog version, not per request, on every form", async () => {
    const a = await register("counted");
    const sign = vi.spyOn(t.app.keys, "signDetached");
    try {
      await manifest();
      await readPages(2);
      const perVersion = sign.mock.calls.length;
      expect(perVersion).toBe(2); // the catalog digest and the full form
      const client = createClient(DirectoryService, createGrpcTransport({ baseUrl: t.url, interceptors: [withToken] }));
      for (let i = 0; i < 20; i++) {
        await manifest();
        await manifest("?page_size=2");
        await client.getManifest({});
        await heartbeat(a.agent.id, { load: (i % 10) / 10 });
      }
      await readPages(2);
      expect(sign.mock.calls.length).toBe(perVersion);
      // Concurrent readers of a new version share one build.
      await register("counted-2");
      await Promise.all(Array.from({ length: 16 }, () => manifest()));
      expect(sign.mock.calls.length).toBe(perVersion + 2);
      // Another view (anonymous: shared agents only) is a version of its own.
      const anon = await manifest("", { authorization: "" });
      expect(anon.status).toBe(200);
      expect(anon.json.manifest.agents).toEqual([]);
      expect(sign.mock.calls.length).toBe(perVersion + 4);
    } finally {
      sign.mockRestore();
    }
  });

  it("refuses a page_size over 1000 naming the field", async () => {
    const r = await manifest("?page_size=1001");
    expect(r.status).toBe(400);
    expect(r.json.message).toMatch(/^page_size/);
    const client = createClient(DirectoryService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1", interceptors: [withToken] }));
    await expect(client.getManifest({ pageSize: -1 })).rejects.toSatisfy((e) => ConnectError.from(e).code === Code.InvalidArgument);
  });
});
