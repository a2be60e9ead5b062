import * as grpc from "@grpc/grpc-js";
import { toBinary, create } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import parsePrometheusTextFormat, { type PromFamily } from "parse-prometheus-text-format";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetFleetHealthRequestSchema, HealthService } from "../gen/federation/v1/health_service_pb.js";
import { ADMIN_TOKEN, AUTH, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

/**
 * GET /metrics (issue 16, item 4): the text a Prometheus server scrapes,
 * read with a Prometheus text-format parser (parse-prometheus-text-format,
 * not prom-client's own reader), its RED counters matching the calls this
 * test made on each protocol, and its scope enforced.
 */

const METHOD = "federation.v1.HealthService/GetFleetHealth";

let t: TestApp;
let metricsToken: string;
let readToken: string;
let grpcClient: grpc.Client;

let lastText = "";

async function scrape(token = ADMIN_TOKEN): Promise<PromFamily[]> {
  const res = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  lastText = await res.text();
  return parsePrometheusTextFormat(lastText);
}

function family(families: PromFamily[], name: string): PromFamily {
  const f = families.find((x) => x.name === name);
  if (!f) throw new Error(`no ${name} in /metrics`);
  return f;
}

/** The value of the sample whose labels include `labels` (0 when there is none). */
function valueOf(families: PromFamily[], name: string, labels: Record<string, string>): number {
  const sample = family(families, name).metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample ? Number(sample.value) : 0;
}

const calls = (families: PromFamily[], protocol: string, code = "OK", method = METHOD) =>
  valueOf(families, "federation_calls_total", { method, protocol, code });

function grpcJs(path: string, body: Uint8Array, token?: string): Promise<number> {
  const md = new grpc.Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  return new Promise((resolve) =>
    grpcClient.makeUnaryRequest(path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, body, md, (err) => resolve(err ? err.code : 0)),
  );
}

async function until(check: () => Promise<boolean>, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  t = await startApp();
  grpcClient = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
  const mint = async (scopes: string[]) => (await postJson(`${t.url}/admin/tokens`, { tenant: "default", scopes, subject: "metrics-test" })).json.token as string;
  metricsToken = await mint(["metrics"]);
  readToken = await mint(["agents:read", "agents:write", "route", "events:read"]);
});

afterAll(async () => {
  grpcClient?.close();
  await t?.close();
});

describe("GET /metrics", () => {
  it("needs scope metrics: 401 without a token, 403 with a token lacking it, 200 with it or with admin", async () => {
    expect((await fetch(`${t.url}/metrics`)).status).toBe(401);
    const denied = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${readToken}` } });
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { message: string }).message).toMatch(/metrics/);
    await scrape(metricsToken);
    await scrape(ADMIN_TOKEN);
  });

  it("counts the calls made on each protocol, per method × protocol × code, with a duration histogram", async () => {
    const before = await scrape();
    const body = toBinary(GetFleetHealthRequestSchema, create(GetFleetHealthRequestSchema));
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
    // gRPC on the lean path (grpc-js, uncompressed): 3.
    for (let i = 0; i < 3; i++) expect(await grpcJs(`/${METHOD}`, body, ADMIN_TOKEN)).toBe(0);
    // gRPC through connect-node (compressed): 2, and one refused (no token): UNAUTHENTICATED.
    const grpcGzip = createClient(
      HealthService,
      createGrpcTransport({ baseUrl: t.url, sendCompression: compressionGzip, acceptCompression: [compressionGzip], compressMinBytes: 0 }),
    );
    for (let i = 0; i < 2; i++) await grpcGzip.getFleetHealth({}, { headers });
    await expect(grpcGzip.getFleetHealth({})).rejects.toMatchObject({ code: 16 });
    // gRPC-Web: 2.
    const web = createClient(HealthService, createGrpcWebTransport({ baseUrl: t.url, httpVersion: "1.1" }));
    for (let i = 0; i < 2; i++) await web.getFleetHealth({}, { headers });
    // Connect, JSON and binary: 4, and one with a token lacking the scope: PERMISSION_DENIED.
    const json = createClient(HealthService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
    const binary = createClient(HealthService, createConnectTransport({ baseUrl: t.url, httpVersion: "2", useBinaryFormat: true }));
    for (let i = 0; i < 2; i++) await json.getFleetHealth({}, { headers });
    for (let i = 0; i < 2; i++) await binary.getFleetHealth({}, { headers });
    const denied = await json.getFleetHealth({}, { headers: { authorization: `Bearer ${metricsToken}` } }).catch((e: unknown) => ConnectError.from(e));
    expect(denied).toMatchObject({ code: 7 });
    // REST: 5.
    for (let i = 0; i < 5; i++) expect((await fetch(`${t.url}/health/fleet`, { headers: AUTH })).status).toBe(200);
    // An RPC nobody serves, and a path nobody serves: the one "unknown" method.
    expect(await grpcJs("/no.such.Service/Nope", body, ADMIN_TOKEN)).toBe(12);
    expect((await fetch(`${t.url}/no/such/path/${Date.now()}`, { headers: AUTH })).status).toBe(404);
    // /ws: one connection, counted when it closes.
    const ws = new WebSocket(`ws://127.0.0.1:${t.port}/ws`, { headers: AUTH });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.close();
    await new Promise((resolve) => ws.once("close", resolve));

    let after: PromFamily[] = [];
    await until(async () => {
      after = await scrape();
      return valueOf(after, "federation_calls_total", { method: "/ws", protocol: "ws" }) > valueOf(before, "federation_calls_total", { method: "/ws", protocol: "ws" });
    });
    const delta = (protocol: string, code = "OK", method = METHOD) => calls(after, protocol, code, method) - calls(before, protocol, code, method);
    expect(family(after, "federation_calls_total").type).toBe("COUNTER");
    expect(delta("grpc")).toBe(5);
    expect(delta("grpc", "UNAUTHENTICATED")).toBe(1);
    expect(delta("grpc-web")).toBe(2);
    expect(delta("connect")).toBe(4);
    expect(delta("connect", "PERMISSION_DENIED")).toBe(1);
    expect(delta("rest")).toBe(5);
    expect(delta("ws", "OK", "/ws")).toBe(1);
    expect(delta("grpc", "UNIMPLEMENTED", "unknown")).toBe(1);
    expect(delta("rest", "NOT_FOUND", "unknown") + delta("http", "NOT_FOUND", "unknown")).toBe(1);
    // Earlier scrapes are calls too.
    expect(calls(after, "http", "OK", "/metrics")).toBeGreaterThanOrEqual(3);

    // Bounded labels: known methods, "unknown", no paths, ids or tenants.
    const samples = family(after, "federation_calls_total").metrics;
    for (const s of samples) {
      expect(Object.keys(s.labels ?? {}).sort()).toEqual(["code", "method", "protocol"]);
      expect(s.labels!.method).toMatch(/^(unknown|\/ws|\/metrics|[\w.]+\/\w+)$/);
    }
    expect(samples.some((s) => s.labels!.method.includes("no/such"))).toBe(false);
    expect(family(after, "federation_call_duration_seconds").type).toBe("HISTOGRAM");
    // (The parser keeps no labels on histogram samples: the histogram's series are read from the text.)
    const labels = `method="${METHOD}",protocol="rest",code="OK"`;
    const histogramLine = (suffix: string, extra = "") =>
      Number(new RegExp(`^federation_call_duration_seconds_${suffix}\\{${labels.replace(/[.]/g, "\\.")}${extra}\\} (\\S+)$`, "m").exec(lastText)?.[1]);
    expect(histogramLine("count")).toBe(calls(after, "rest"));
    expect(histogramLine("bucket", ',le="\\+Inf"')).toBe(calls(after, "rest"));
    expect(histogramLine("sum")).toBeGreaterThan(0);
  });

  it("reads the registry size by status, event-feed subscribers and process metrics when scraped", async () => {
    const r = await postJson(`${t.url}/agents/register`, registerBody({ name: "metrics-agent" }));
    expect(r.status).toBe(200);
    const before = await scrape();
    expect(family(before, "federation_agents").type).toBe("GAUGE");
    expect(valueOf(before, "federation_agents", { status: "healthy" }) + valueOf(before, "federation_agents", { status: "degraded" })).toBeGreaterThanOrEqual(1);
    expect(valueOf(before, "federation_agents", { status: "draining" })).toBe(0);
    expect(valueOf(before, "federation_event_subscribers", { feed: "ws" })).toBe(0);
    expect(valueOf(before, "federation_event_subscribers", { feed: "rpc" })).toBe(0);
    expect(Number(family(before, "process_cpu_user_seconds_total").metrics[0]!.value)).toBeGreaterThan(0);
    expect(family(before, "nodejs_eventloop_lag_seconds").type).toBe("GAUGE");

    // One /ws client and one WatchEvents stream (Connect).
    const ws = new WebSocket(`ws://127.0.0.1:${t.port}/ws`, { headers: AUTH });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const abort = new AbortController();
    const health = createClient(HealthService, createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" }));
    const stream = (async () => {
      try {
        for await (const _ of health.watchEvents({}, { headers: AUTH, signal: abort.signal }));
      } catch {
        /* aborted */
      }
    })();
    await until(async () => {
      const now = await scrape();
      return valueOf(now, "federation_event_subscribers", { feed: "ws" }) === 1 && valueOf(now, "federation_event_subscribers", { feed: "rpc" }) === 1;
    });
    ws.close();
    abort.abort();
    await stream;
    await until(async () => {
      const now = await scrape();
      return valueOf(now, "federation_event_subscribers", { feed: "ws" }) === 0 && valueOf(now, "federation_event_subscribers", { feed: "rpc" }) === 0;
    });
  });

  it("is absent with METRICS=off", async () => {
    const off = await startApp({ METRICS: "off" });
    try {
      expect(off.app.metrics).toBeUndefined();
      expect((await fetch(`${off.url}/metrics`, { headers: AUTH })).status).toBe(404);
    } finally {
      await off.close();
    }
  });
});
