import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody } from "./support/app.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { startProcess, type ServiceProcess } from "./support/process.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

/**
 * One alerting replica (issue 16, item 2 with several replicas): two
 * service processes on one Redis. Every dispatch outcome reaches both
 * through the shared event stream, so both count the same burn — yet only
 * the holder of the probe leader's lease evaluates, so each alert fires
 * once on the shared feed. When the leader is killed, the other replica
 * takes the lease over and evaluates within its TTL. PROBES=off here: the
 * SLO engine campaigns for the same lease itself.
 */

const LEASE_TTL_MS = 2_000;

let redis: ManagedServer & { dispose(): Promise<void> };
const replicas: ServiceProcess[] = [];
let agent: http.Server;
let agentUrl = "";
const feeds: WsFeed[] = [];

beforeAll(async () => {
  redis = await startRedis();
  // An HTTP agent whose every task fails (its outcomes are the evidence; nothing probes it).
  agent = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(500, { "content-type": "text/plain" }).end("failing on cue"));
  });
  await new Promise<void>((r) => agent.listen(0, "127.0.0.1", () => r()));
  agentUrl = `http://127.0.0.1:${(agent.address() as net.AddressInfo).port}/execute`;
  const env = (replica: string) => ({
    REDIS_URL: redis.url,
    REDIS_PREFIX: `slo-${process.pid}`,
    REPLICA_ID: replica,
    DISPATCH_ALLOW_LOOPBACK: "true",
    PROBE_LEADER_TTL: `${LEASE_TTL_MS}ms`,
    RATE_LIMIT_TENANT: "1000000",
    SLO: "on",
    REMEDIATION: "off",
    SLO_AVAILABILITY_TARGET: "0.9",
    SLO_FAST_LONG_WINDOW: "4s",
    SLO_FAST_SHORT_WINDOW: "1s",
    SLO_FAST_BURN_RATE: "5",
    SLO_SLOW_LONG_WINDOW: "8s",
    SLO_SLOW_SHORT_WINDOW: "2s",
    SLO_SLOW_BURN_RATE: "3",
    SLO_EVALUATION_INTERVAL: "100ms",
    SLO_MIN_EVENTS: "3",
  });
  replicas.push(...(await Promise.all([startProcess(env("replica-a")), startProcess(env("replica-b"))])));
}, 45_000);

afterAll(async () => {
  for (const f of feeds) f.close();
  await Promise.all(replicas.map((r) => r.dispose()));
  agent?.close();
  await redis?.dispose();
});

async function waitServing(url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while ((await getJson(`${url}/health`).catch(() => undefined))?.json?.status !== "SERVING_STATUS_SERVING") {
    if (Date.now() > deadline) throw new Error(`${url} not serving`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const evaluates = async (r: ServiceProcess) => (await getJson(`${r.url}/health/fleet`)).json?.sloEvaluator === true;
const firing = (f: WsFeed) => f.events.items.filter((e) => e.type === "health.alert" && e.healthAlert.state === "ALERT_STATE_FIRING");
const keyOf = (e: any) => `${e.healthAlert.slo}|${e.healthAlert.agentId ?? ""}${e.healthAlert.capability ?? ""}|${e.healthAlert.severity}`;

/** A task for the failing agent through this replica (it fails: 503). */
const task = (r: ServiceProcess) => postJson(`${r.url}/route`, { capabilities: ["fail.cap"], dispatch: true, timeout: "2s" });

describe("SLO alerts with two replicas on one Redis", () => {
  it("alerts once per SLO and subject although both replicas count the burn; the survivor evaluates when the leader dies", async () => {
    await Promise.all(replicas.map((r) => waitServing(r.url)));
    await until("one evaluating replica", async () => (await Promise.all(replicas.map(evaluates))).filter(Boolean).length === 1);
    const leader = (await evaluates(replicas[0]!)) ? replicas[0]! : replicas[1]!;
    const follower = leader === replicas[0] ? replicas[1]! : replicas[0]!;
    feeds.push(await openWs(follower.port, "?types=health.alert"));
    const [feed] = feeds;

    // The agent is registered on the leader's registry (memory store); its outcomes reach both replicas on the stream.
    const reg = await postJson(
      `${leader.url}/agents/register`,
      registerBody({ name: "failing", endpoint: { url: agentUrl, transport: "TRANSPORT_HTTP_JSON" }, capabilities: [{ name: "fail.cap" }], tools: [], leaseTtl: "3600s" }),
    );
    expect(reg.status, JSON.stringify(reg.json)).toBe(200);
    const id = reg.json.agent.id as string;
    for (let i = 0; i < 15; i++) {
      expect((await task(leader)).status).toBe(503);
      await new Promise((r) => setTimeout(r, 100));
    }
    await until("the availability page", () => firing(feed!).some((e) => e.healthAlert.slo === "agent-availability" && e.agentId === id));
    // The follower counted the same outcomes from the stream (were it to evaluate, each alert would fire twice)...
    expect(await evaluates(follower)).toBe(false);
    // ...and every alert fired once on the shared feed.
    await new Promise((r) => setTimeout(r, 1_000));
    const byKey = new Map<string, number>();
    for (const e of firing(feed!)) byKey.set(keyOf(e), (byKey.get(keyOf(e)) ?? 0) + 1);
    expect([...byKey.values()].every((n) => n === 1), JSON.stringify([...byKey])).toBe(true);
    expect(byKey.get(`agent-availability|${id}|ALERT_SEVERITY_PAGE`)).toBe(1);
    expect(byKey.get("capability-availability|fail.cap|ALERT_SEVERITY_PAGE")).toBe(1);

    // The leader dies: the follower takes the lease over within its TTL and evaluates.
    const killedAt = leader.signal("SIGKILL");
    await until("the follower evaluating", () => evaluates(follower), LEASE_TTL_MS + 3_000);
    expect(Date.now() - killedAt).toBeLessThan(LEASE_TTL_MS + 2_000);
  }, 50_000);
});
