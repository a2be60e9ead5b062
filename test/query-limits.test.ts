import http2 from "node:http2";
import { Readable } from "node:stream";
import { createContextValues } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { Call, Pipeline } from "../src/transport/pipeline.js";
import { createRestTranscoder, MAX_QUERY_LENGTH, MAX_QUERY_PARAMETERS } from "../src/transport/rest/rest-transcoder.js";
import type { NodeRequest, NodeResponse } from "../src/transport/node-types.js";
import { startApp, type TestApp } from "./support/app.js";

/** `n` distinct keys, each once, with no value: the smallest query a client can send per key. */
const distinctKeys = (n: number) => Array.from({ length: n }, (_, i) => i.toString(36)).join("&");

/**
 * The transcoder on its own (HTTP/2's header list limit, ~64 KiB by
 * default, and HTTP/1.1's 16 KiB stop a 20,000-key URL before it): a stub
 * Discover, a pipeline with no links, a fake request and response.
 */
async function transcode(path: string): Promise<{ status: number; body: string; handled: number }> {
  let handled = 0;
  const rest = createRestTranscoder(
    [{ service: DirectoryService, impl: { discover: () => (handled++, { agents: [] }) } }],
    {
      maxBodyBytes: 1024,
      shutdownSignal: new AbortController().signal,
      contextValues: () => createContextValues(),
      pipeline: new Pipeline([{ before: (call) => void (call.principal = { tenant: "t", via: "token" } as never) }]),
      callOf: () => new Call("r1", "rest", path),
    },
  );
  const req = Object.assign(Readable.from([]), { url: path, method: "GET", headers: {} }) as unknown as NodeRequest;
  let status = 0;
  let body = "";
  const res = Object.assign(Readable.from([]), {
    headersSent: false,
    setHeader() {},
    writeHead(s: number) {
      status = s;
      return res;
    },
    end(b?: string) {
      body = b ?? "";
    },
  }) as unknown as NodeResponse;
  await rest(req, res);
  return { status, body, handled };
}

describe("REST query strings: linear and capped before authentication", () => {
  it("refuses a query of 20,000 distinct keys quickly by the cap, naming the limit", async () => {
    const before = process.cpuUsage();
    const r = await transcode(`/agents/discover?${distinctKeys(20_000)}`);
    const cpu = process.cpuUsage(before);
    expect(r.handled).toBe(0);
    expect([400, 414]).toContain(r.status);
    const err = JSON.parse(r.body);
    expect(err.code).toBe(3);
    expect(err.message).toMatch(new RegExp(`^query: .*(${MAX_QUERY_LENGTH}|${MAX_QUERY_PARAMETERS})`));
    // A sanity bound only, generous (it was ~1 s of CPU); speed goals are the benchmark's.
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(100);
  });

  it(`answers 200 distinct keys (unknown ones ignored), and refuses ${MAX_QUERY_PARAMETERS + 1} parameters with 400`, async () => {
    const ok = await transcode(`/agents/discover?${distinctKeys(199)}&limit=5`);
    expect(ok.status).toBe(200);
    expect(ok.handled).toBe(1);
    // Repeated keys count as parameters too.
    const many = await transcode(`/agents/discover?${"capabilities=a&".repeat(MAX_QUERY_PARAMETERS + 1)}`);
    expect(many.status).toBe(400);
    expect(JSON.parse(many.body)).toEqual({ code: 3, message: `query: more than ${MAX_QUERY_PARAMETERS} parameters`, details: [] });
    const long = await transcode(`/agents/discover?q=${"x".repeat(MAX_QUERY_LENGTH)}`);
    expect(long.status).toBe(414);
    expect(JSON.parse(long.body)).toMatchObject({ code: 3, message: `query: longer than ${MAX_QUERY_LENGTH} characters` });
  });
});

describe("on a live server, without a credential", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(() => t.close());

  /** One GET over HTTP/2 (prior knowledge), no authorization header. */
  function h2get(path: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(t.url);
      session.on("error", reject);
      const req = session.request({ ":method": "GET", ":path": path });
      let body = "";
      let status = 0;
      req.setEncoding("utf8");
      req.on("response", (h) => (status = Number(h[":status"])));
      req.on("data", (c: string) => (body += c));
      req.on("end", () => {
        session.close();
        resolve({ status, body });
      });
      req.on("error", reject);
      req.end();
    });
  }

  it("refuses 10,000 distinct keys (what fits in HTTP/2's header limit) before authentication", async () => {
    const before = process.cpuUsage();
    const r = await h2get(`/agents/discover?${distinctKeys(10_000)}`);
    const cpu = process.cpuUsage(before);
    expect(r.status).toBe(414);
    expect(JSON.parse(r.body).code).toBe(3);
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(150);
    // Within the bounds, the guard answers as before.
    expect((await h2get(`/agents/discover?${distinctKeys(200)}`)).status).toBe(401);
  });
});
