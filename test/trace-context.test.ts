import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetFleetHealthRequestSchema, HealthService } from "../gen/federation/v1/health_service_pb.js";
import { RouteRequestSchema, RouterService } from "../gen/federation/v1/router_service_pb.js";
import { formatTraceparent, parseTraceparent } from "../src/transport/trace-context.js";
import { ADMIN_TOKEN, AUTH, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { killAgents, startAgent } from "./support/dispatch-agents.js";
import { openWs, type WsFeed } from "./support/feeds.js";

/**
 * W3C trace context (issue 16, item 5): `traceparent` accepted on every
 * protocol, a trace id per call (a new one when absent or invalid), named
 * in the request log line and in task events, and forwarded to the agent
 * on dispatch with a child span id.
 */

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`;

describe("parseTraceparent", () => {
  it("accepts valid headers and ignores invalid ones", () => {
    expect(parseTraceparent(TRACEPARENT)).toMatchObject({ traceId: TRACE_ID, spanId: PARENT_ID, traceFlags: 1, isRemote: true });
    expect(parseTraceparent(`00-${TRACE_ID}-${PARENT_ID}-00`)).toMatchObject({ traceFlags: 0 });
    // A later version may add fields; version 00 may not.
    expect(parseTraceparent(`01-${TRACE_ID}-${PARENT_ID}-01-extra`)).toMatchObject({ traceId: TRACE_ID });
    for (const bad of [
      undefined,
      null,
      "",
      "garbage",
      `00-${TRACE_ID}-${PARENT_ID}-01-extra`,
      `ff-${TRACE_ID}-${PARENT_ID}-01`,
      `00-${"0".repeat(32)}-${PARENT_ID}-01`,
      `00-${TRACE_ID}-${"0".repeat(16)}-01`,
      `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`,
      `00-${TRACE_ID.slice(1)}-${PARENT_ID}-01`,
      `00-${TRACE_ID}-${PARENT_ID}-1`,
    ]) {
      expect(parseTraceparent(bad), String(bad)).toBeUndefined();
    }
    expect(formatTraceparent(parseTraceparent(TRACEPARENT)!)).toBe(TRACEPARENT);
  });
});

/** The service's request log lines. */
function recorder() {
  const lines: Record<string, any>[] = [];
  const logger = pino(
    { level: "info" },
    new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line));
        done();
      },
    }),
  );
  const lineOf = async (requestId: string) => {
    for (let i = 0; i < 100; i++) {
      const found = lines.find((l) => l.msg === "request" && l.reqId === requestId);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`no request line for ${requestId}`);
  };
  return { logger, lineOf };
}

let t: TestApp;
let ws: WsFeed;
const rec = recorder();

beforeAll(async () => {
  t = await startApp({ DISPATCH_ALLOW_LOOPBACK: "true", DISPATCH_ATTEMPT_TIMEOUT: "2s" }, { logger: rec.logger });
  ws = await openWs(t.port, "?types=task.dispatched,task.completed,task.failed");
});

afterAll(async () => {
  killAgents();
  ws?.close();
  await t?.close();
});

describe("traceparent on every protocol", () => {
  const method = "federation.v1.HealthService/GetFleetHealth";

  async function callOver(protocol: string, requestId: string, traceparent: string | undefined): Promise<void> {
    const headers: Record<string, string> = { ...AUTH, "x-request-id": requestId };
    if (traceparent !== undefined) headers.traceparent = traceparent;
    if (protocol === "grpc fast path") {
      const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(headers)) md.set(k, v);
      const body = toBinary(GetFleetHealthRequestSchema, create(GetFleetHealthRequestSchema));
      await new Promise<void>((resolve, reject) =>
        client.makeUnaryRequest(`/${method}`, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, body, md, (err) => {
          client.close();
          if (err) reject(err);
          else resolve();
        }),
      );
    } else if (protocol === "rest") {
      expect((await fetch(`${t.url}/health/fleet`, { headers })).status).toBe(200);
    } else {
      const transport =
        protocol === "grpc gzip"
          ? createGrpcTransport({ baseUrl: t.url, sendCompression: compressionGzip, acceptCompression: [compressionGzip], compressMinBytes: 0 })
          : createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" });
      await createClient(HealthService, transport).getFleetHealth({}, { headers });
    }
  }

  for (const protocol of ["grpc fast path", "grpc gzip", "connect", "rest"]) {
    it(`${protocol}: the caller's trace id in the log line; a new one when absent or invalid`, async () => {
      const id = `trace-${protocol.replace(/ /g, "-")}`;
      await callOver(protocol, `${id}-given`, TRACEPARENT);
      expect(await rec.lineOf(`${id}-given`)).toMatchObject({ traceId: TRACE_ID, method });

      await callOver(protocol, `${id}-none`, undefined);
      const fresh = (await rec.lineOf(`${id}-none`)).traceId as string;
      expect(fresh).toMatch(/^[0-9a-f]{32}$/);
      expect(fresh).not.toBe(TRACE_ID);

      await callOver(protocol, `${id}-bad`, `00-${"0".repeat(32)}-${PARENT_ID}-01`);
      const replaced = (await rec.lineOf(`${id}-bad`)).traceId as string;
      expect(replaced).toMatch(/^[0-9a-f]{32}$/);
      expect(replaced).not.toBe("0".repeat(32));
      expect(replaced).not.toBe(fresh);
    });
  }

  it("a refused call has its trace id too", async () => {
    const res = await fetch(`${t.url}/health/fleet`, { headers: { traceparent: TRACEPARENT, "x-request-id": "trace-refused" } });
    expect(res.status).toBe(401);
    expect(await rec.lineOf("trace-refused")).toMatchObject({ traceId: TRACE_ID, status: 401 });
  });
});

describe("trace context through dispatch", () => {
  let n = 0;
  async function agentFor(kind: "http" | "grpc"): Promise<{ capability: string; agent: Awaited<ReturnType<typeof startAgent>> }> {
    const capability = `trace.cap${++n}`;
    const agent = await startAgent(kind, `trace-${kind}-${n}`);
    const url = kind === "http" ? `http://127.0.0.1:${agent.port}/execute` : `grpc://127.0.0.1:${agent.port}`;
    const r = await postJson(
      `${t.url}/agents/register`,
      registerBody({
        name: `trace-${kind}-${n}`,
        endpoint: { url, transport: kind === "http" ? "TRANSPORT_HTTP_JSON" : "TRANSPORT_GRPC" },
        capabilities: [{ name: capability }],
        tools: [],
      }),
    );
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    return { capability, agent };
  }

  async function eventsOf(taskId: string, types: string[]): Promise<any[]> {
    const end = Date.now() + 3_000;
    for (;;) {
      const found = ws.events.items.filter((e) => e.taskProgress?.taskId === taskId);
      if (types.every((type) => found.some((e) => e.type === type)) || Date.now() > end) return found;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  for (const kind of ["http", "grpc"] as const) {
    it(`forwards the caller's trace to a ${kind} agent with a child span id, and names it in the task events`, async () => {
      const { capability, agent } = await agentFor(kind);
      const r = await postJson(
        `${t.url}/route`,
        { capabilities: [capability], dispatch: true, task: { q: 1 } },
        { headers: { traceparent: TRACEPARENT, "x-request-id": `trace-route-${kind}` } },
      );
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      const [seen] = await agent.tasks.waitFor(1);
      const forwarded = parseTraceparent(seen.traceparent);
      expect(forwarded, seen.traceparent).toBeDefined();
      expect(forwarded!.traceId).toBe(TRACE_ID);
      expect(forwarded!.spanId).not.toBe(PARENT_ID);
      expect(forwarded!.traceFlags).toBe(1);
      expect(await rec.lineOf(`trace-route-${kind}`)).toMatchObject({ traceId: TRACE_ID, method: "federation.v1.RouterService/Route" });
      const events = await eventsOf(r.json.taskId, ["task.dispatched", "task.completed"]);
      expect(events.map((e) => e.type)).toEqual(["task.dispatched", "task.completed"]);
      for (const e of events) expect(e.taskProgress.traceId).toBe(TRACE_ID);
    });
  }

  it("forwards the trace of a Route call made over gRPC (lean path and connect-node) and Connect", async () => {
    const { capability, agent } = await agentFor("grpc");
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${ADMIN_TOKEN}`);
    md.set("traceparent", `00-${"a".repeat(32)}-${PARENT_ID}-01`);
    const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    const body = toBinary(RouteRequestSchema, create(RouteRequestSchema, { capabilities: [capability], dispatch: true }));
    await new Promise<void>((resolve, reject) =>
      client.makeUnaryRequest("/federation.v1.RouterService/Route", (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, body, md, (err) => {
        client.close();
        if (err) reject(err);
        else resolve();
      }),
    );
    const gzip = createGrpcTransport({ baseUrl: t.url, sendCompression: compressionGzip, acceptCompression: [compressionGzip], compressMinBytes: 0 });
    const connect = createConnectTransport({ baseUrl: t.url, httpVersion: "1.1" });
    for (const [transport, digit] of [[gzip, "b"], [connect, "c"]] as const) {
      await createClient(RouterService, transport).route(
        { capabilities: [capability], dispatch: true },
        { headers: { ...AUTH, traceparent: `00-${digit.repeat(32)}-${PARENT_ID}-01` } },
      );
    }
    const seen = await agent.tasks.waitFor(3);
    expect(seen.map((s) => parseTraceparent(s.traceparent)?.traceId)).toEqual(["a".repeat(32), "b".repeat(32), "c".repeat(32)]);
  });

  it("keeps the trace for an async dispatch, and starts one when the caller sent none", async () => {
    const { capability, agent } = await agentFor("http");
    const r = await postJson(`${t.url}/route`, { capabilities: [capability], dispatchAsync: true }, { headers: { "x-request-id": "trace-async" } });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const traceId = (await rec.lineOf("trace-async")).traceId as string;
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    const [seen] = await agent.tasks.waitFor(1);
    expect(parseTraceparent(seen.traceparent)?.traceId).toBe(traceId);
    const events = await eventsOf(r.json.taskId, ["task.completed"]);
    expect(events.find((e) => e.type === "task.completed")?.taskProgress.traceId).toBe(traceId);
  });

  it("does not leak one call's trace into the next call's dispatch", async () => {
    const { capability, agent } = await agentFor("grpc");
    const first = await postJson(`${t.url}/route`, { capabilities: [capability], dispatch: true }, { headers: { traceparent: TRACEPARENT } });
    const second = await postJson(`${t.url}/route`, { capabilities: [capability], dispatch: true }, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect([first.status, second.status]).toEqual([200, 200]);
    const [a, b] = await agent.tasks.waitFor(2);
    expect(parseTraceparent(a.traceparent)?.traceId).toBe(TRACE_ID);
    expect(parseTraceparent(b.traceparent)?.traceId).not.toBe(TRACE_ID);
  });
});
