import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  HealthService,
  WatchFleetHealthRequestSchema,
  WatchFleetHealthResponseSchema,
  type WatchFleetHealthResponse,
} from "../gen/federation/v1/health_service_pb.js";
import { ADMIN_TOKEN, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

/**
 * Issue 16, item 2: the streamed fleet view. WatchFleetHealth sends the
 * GetFleetHealth snapshot at once, then a changed one no sooner than
 * FLEET_WATCH_INTERVAL after the last, and nothing while nothing changes;
 * over gRPC (grpc-js, through connect-node) and REST (NDJSON).
 */

const INTERVAL_MS = 800;
const PATH = `/${HealthService.typeName}/${HealthService.method.watchFleetHealth.name}`;

interface Received {
  at: number;
  total: number;
  names: string[];
}

let t: TestApp;
let client: grpc.Client;
beforeAll(async () => {
  t = await startApp({ FLEET_WATCH_INTERVAL: `${INTERVAL_MS}ms`, RATE_LIMIT_TENANT: "1000000" });
  client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
});
afterAll(async () => {
  client?.close();
  await t?.close();
});

function grpcWatch(token: string | undefined, maxAgents = 0) {
  const md = new grpc.Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  const call = client.makeServerStreamRequest(
    PATH,
    (b: Uint8Array) => Buffer.from(b),
    (b: Buffer) => fromBinary(WatchFleetHealthResponseSchema, b),
    toBinary(WatchFleetHealthRequestSchema, create(WatchFleetHealthRequestSchema, { maxAgents })),
    md,
  );
  const received: Received[] = [];
  const ended = new Promise<grpc.ServiceError | undefined>((resolve) => {
    call.on("error", (err: grpc.ServiceError) => resolve(err));
    call.on("end", () => resolve(undefined));
  });
  call.on("data", (m: WatchFleetHealthResponse) =>
    received.push({ at: Date.now(), total: m.fleet!.totalAgents, names: m.fleet!.agents.map((a) => a.name) }),
  );
  return { call, received, ended };
}

async function restWatch(maxAgents: number) {
  const abort = new AbortController();
  const res = await fetch(`${t.url}/health/fleet/watch?max_agents=${maxAgents}`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    signal: abort.signal,
  });
  const received: Received[] = [];
  const lines: string[] = [];
  void (async () => {
    const decoder = new TextDecoder();
    let buffered = "";
    try {
      for await (const chunk of res.body!) {
        buffered += decoder.decode(chunk as Uint8Array, { stream: true });
        for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          lines.push(line);
          const fleet = (JSON.parse(line) as { result: { fleet: { totalAgents: number; agents: { name: string }[] } } }).result.fleet;
          received.push({ at: Date.now(), total: fleet.totalAgents, names: fleet.agents.map((a) => a.name) });
        }
      }
    } catch {
      // aborted
    }
  })();
  return { res, received, lines, close: () => abort.abort() };
}

async function until(what: string, pred: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function register(name: string): Promise<void> {
  const r = await postJson(`${t.url}/agents/register`, registerBody({ name, leaseTtl: "3600s" }));
  expect(r.status, JSON.stringify(r.json)).toBe(200);
}

describe("WatchFleetHealth", () => {
  it("over gRPC: the snapshot at once, a changed one no sooner than the interval, nothing while nothing changes", async () => {
    const before = (await postJson(`${t.url}/agents/register`, registerBody({ name: "before", leaseTtl: "3600s" }))).json.agent.id as string;
    expect(before).toBeTruthy();
    const opened = Date.now();
    const w = grpcWatch(ADMIN_TOKEN);
    try {
      await until("the first snapshot", () => w.received.length >= 1);
      expect(w.received[0]!.at - opened).toBeLessThan(INTERVAL_MS / 2);
      const first = w.received[0]!;
      await register("during");
      await until("the changed snapshot", () => w.received.length >= 2);
      const second = w.received[1]!;
      expect(second.total).toBe(first.total + 1);
      expect(second.names).toContain("during");
      // Not before the interval since the last snapshot sent (timer slack of a few ms allowed). Measured
      // from when the call opened: the first was sent after that, and a late arrival of the first
      // (a loaded machine) must not make an on-time second look early.
      expect(second.at - opened).toBeGreaterThanOrEqual(INTERVAL_MS - 20);
      // A quiet fleet: nothing more for well over an interval.
      await sleep(INTERVAL_MS * 2.5);
      expect(w.received).toHaveLength(2);
      // A change long after the interval passed goes out within the poll period, not an interval late plus.
      const changedAt = Date.now();
      await register("later");
      await until("the third snapshot", () => w.received.length >= 3, 3_000);
      expect(w.received[2]!.at - changedAt).toBeLessThan(1_500);
      expect(w.received[2]!.total).toBe(first.total + 2);
    } finally {
      w.call.cancel();
    }
  }, 15_000);

  it("over gRPC: needs the same credentials as GetFleetHealth", async () => {
    const w = grpcWatch(undefined);
    const err = await w.ended;
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(w.received).toHaveLength(0);
  });

  it("over REST: GET /health/fleet/watch streams the snapshots as NDJSON, max_agents bounding the list", async () => {
    const opened = Date.now();
    const w = await restWatch(1);
    try {
      expect(w.res.status).toBe(200);
      expect(w.res.headers.get("content-type")).toBe("application/x-ndjson");
      await until("the first snapshot", () => w.received.length >= 1);
      const first = w.received[0]!;
      expect(first.total).toBeGreaterThanOrEqual(1);
      expect(first.names).toHaveLength(1);
      expect(JSON.parse(w.lines[0]!).result.fleet).toMatchObject({ agentsTruncated: first.total > 1, sloEvaluator: false });
      await register("rest-change");
      await until("the changed snapshot", () => w.received.length >= 2);
      expect(w.received[1]!.total).toBe(first.total + 1);
      // From the request (the first snapshot went out after it), as over gRPC.
      expect(w.received[1]!.at - opened).toBeGreaterThanOrEqual(INTERVAL_MS - 20);
    } finally {
      w.close();
    }
  }, 10_000);

  it("over REST: an anonymous watcher is refused before the stream starts", async () => {
    const res = await fetch(`${t.url}/health/fleet/watch`);
    expect(res.status).toBe(401);
    await res.body?.cancel();
  });
});
