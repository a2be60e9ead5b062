import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody } from "./support/app.js";
import { startProcess, type ServiceProcess } from "./support/process.js";
import { startFerret, startRedis, type ManagedServer } from "./support/servers.js";

/**
 * One prober among replicas (issue 16, item 1): two service processes on
 * one FerretDB (the shared registry) and one Redis (the leader lease).
 * A real HTTP agent on loopback records which replica each probe came
 * from (the probe's User-Agent names it). Only one replica probes; when
 * that process is SIGKILLed, the other takes over within the lease's TTL.
 */

const LEASE_TTL_MS = 2_000;
const INTERVAL_MS = 250;

let redis: ManagedServer & { dispose(): Promise<void> };
let ferret: ManagedServer & { dispose(): Promise<void> };
const replicas: ServiceProcess[] = [];
let agent: http.Server;
let agentUrl = "";
/** Every probe the agent received: which replica, and when. */
const probes: { replica: string; at: number }[] = [];
/** The agent's /health answers 500 while true. */
let failing = false;

beforeAll(async () => {
  [redis, ferret] = await Promise.all([startRedis(), startFerret()]);
  agent = http.createServer((req, res) => {
    const m = /federation-core-probe \((.+)\)/.exec(String(req.headers["user-agent"] ?? ""));
    if (req.url === "/health" && m) probes.push({ replica: m[1]!, at: Date.now() });
    res.statusCode = failing ? 500 : 200;
    res.end(failing ? "broken" : "ok");
  });
  await new Promise<void>((r) => agent.listen(0, "127.0.0.1", () => r()));
  agentUrl = `http://127.0.0.1:${(agent.address() as net.AddressInfo).port}/execute`;
  const env = (replica: string) => ({
    MONGODB_URI: ferret.url,
    MONGODB_DB: `probes_${process.pid}`,
    REDIS_URL: redis.url,
    REDIS_PREFIX: `probes-${process.pid}`,
    REPLICA_ID: replica,
    LOG_LEVEL: "info",
    PROBES: "on",
    DISPATCH_ALLOW_LOOPBACK: "true",
    PROBE_INTERVAL: `${INTERVAL_MS}ms`,
    PROBE_TIMEOUT: "200ms",
    PROBE_LEADER_TTL: `${LEASE_TTL_MS}ms`,
  });
  replicas.push(...(await Promise.all([startProcess(env("replica-a")), startProcess(env("replica-b"))])));
}, 45_000);

afterAll(async () => {
  await Promise.all(replicas.map((r) => r.dispose()));
  agent?.close();
  await Promise.all([redis?.dispose(), ferret?.dispose()]);
});

async function waitServing(url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while ((await getJson(`${url}/health`).catch(() => undefined))?.json?.status !== "SERVING_STATUS_SERVING") {
    if (Date.now() > deadline) throw new Error(`${url} not serving`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("two replicas on one Redis", () => {
  it("only one probes; when it is killed the other takes over within the lease TTL, and recovers what the first degraded", async () => {
    await Promise.all(replicas.map((r) => waitServing(r.url)));
    const reg = await postJson(
      `${replicas[0]!.url}/agents/register`,
      registerBody({ name: "probed", endpoint: { url: agentUrl, transport: "TRANSPORT_HTTP_JSON" }, tools: [], leaseTtl: "3600s" }),
    );
    expect(reg.status, JSON.stringify(reg.json)).toBe(200);

    // Both replicas see the agent (one registry); over several intervals, one replica's probes arrive.
    const deadline = Date.now() + 10_000;
    while (probes.length === 0) {
      if (Date.now() > deadline) throw new Error("no probe arrived");
      await sleep(20);
    }
    const from = probes.length;
    await sleep(8 * INTERVAL_MS);
    const window = probes.slice(from);
    expect(window.length).toBeGreaterThanOrEqual(5);
    // About one probe per interval: a second prober would double it.
    expect(window.length).toBeLessThanOrEqual(11);
    const leaders = new Set(window.map((p) => p.replica));
    expect([...leaders]).toHaveLength(1);
    const leaderId = [...leaders][0]!;
    const leaderIndex = leaderId === "replica-a" ? 0 : 1;
    expect(replicas[leaderIndex]!.lines.some((l) => l.msg === "probe leader: this replica probes")).toBe(true);
    const follower = replicas[1 - leaderIndex]!;
    const followerId = leaderIndex === 0 ? "replica-b" : "replica-a";
    expect(follower.lines.some((l) => l.msg === "probe leader: this replica probes")).toBe(false);

    // The leader degrades the agent (3 failures in a row); the registry is shared, so the follower shows it.
    const id = reg.json.agent.id as string;
    const statusOn = async (r: ServiceProcess) => (await getJson(`${r.url}/agents/${id}`)).json.agent.status as string;
    failing = true;
    const degradeDeadline = Date.now() + 5_000;
    while ((await statusOn(follower)) !== "AGENT_STATUS_DEGRADED") {
      if (Date.now() > degradeDeadline) throw new Error("the leader never degraded the failing agent");
      await sleep(50);
    }

    // SIGKILL: no chance to hand the lease over; the follower waits the TTL out at most.
    const killedAt = replicas[leaderIndex]!.signal("SIGKILL");
    failing = false;
    await replicas[leaderIndex]!.exited;
    const takeoverDeadline = Date.now() + LEASE_TTL_MS + 3_000;
    while (!probes.some((p) => p.replica === followerId)) {
      if (Date.now() > takeoverDeadline) throw new Error(`${followerId} never probed after the leader died`);
      await sleep(10);
    }
    const first = probes.find((p) => p.replica === followerId)!;
    expect(first.at - killedAt).toBeLessThanOrEqual(LEASE_TTL_MS + 300);
    await follower.waitForLine((l) => l.msg === "probe leader: this replica probes", 1_000);
    // From then on the follower is the one prober.
    const after = probes.length;
    await sleep(4 * INTERVAL_MS);
    expect(probes.slice(after).every((p) => p.replica === followerId)).toBe(true);
    expect(probes.length - after).toBeGreaterThanOrEqual(2);
    // The new leader knew its predecessor had degraded the agent, so its passing probes recovered it.
    const recoverDeadline = Date.now() + 3_000;
    while ((await statusOn(follower)) !== "AGENT_STATUS_HEALTHY") {
      if (Date.now() > recoverDeadline) throw new Error("the new leader never recovered the agent its predecessor degraded");
      await sleep(50);
    }
  }, 40_000);
});
