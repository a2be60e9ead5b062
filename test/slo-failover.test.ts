import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody } from "./support/app.js";
import { killAgents, startAgent, type AgentProcess } from "./support/dispatch-agents.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { startProcess, type ServiceProcess } from "./support/process.js";
import { closer, listen, startFerret, startRedis, type ManagedServer } from "./support/servers.js";

/**
 * No duplicate alerts when the probe leader dies (issue 16: "two replicas
 * on Redis: one probes; kill it; the other takes over within the lease
 * time; no duplicate alerts"). Two service processes share a registry
 * (FerretDB) and Redis (lease, events, alert state). An HTTP agent's
 * /health fails on cue; the leader's probes burn its availability budget,
 * the page fires and one remediation goes to a Guard agent process. The
 * leader is SIGKILLed while the burn goes on: the survivor takes the lease
 * over, adopts the firing alerts from Redis — it neither fires them again
 * nor remediates again — resolves them under their original ids when the
 * agent recovers, and serves the audit trail the dead leader wrote.
 */

const LEASE_TTL_MS = 2_000;

let redis: ManagedServer & { dispose(): Promise<void> };
let ferret: ManagedServer & { dispose(): Promise<void> };
const replicas: ServiceProcess[] = [];
const closers: (() => Promise<unknown> | void)[] = [];
let feed: WsFeed | undefined;
let guard: AgentProcess;
let agentUrl = "";
/** The agent's /health answers 500 while true. */
let failing = false;
/** Probes the agent got, by the replica that sent them (the probe's User-Agent names it). */
const probesFrom = new Map<string, number>();

beforeAll(async () => {
  [redis, ferret] = await Promise.all([startRedis(), startFerret()]);
  const agent = http.createServer((req, res) => {
    const m = /federation-core-probe \((.+)\)/.exec(String(req.headers["user-agent"] ?? ""));
    if (m) probesFrom.set(m[1]!, (probesFrom.get(m[1]!) ?? 0) + 1);
    res.statusCode = failing ? 500 : 200;
    res.end(failing ? "broken" : "ok");
  });
  agentUrl = `http://127.0.0.1:${await listen(agent)}/execute`;
  closers.push(closer(agent));
  guard = await startAgent("http", "guard");
  const env = (replica: string) => ({
    MONGODB_URI: ferret.url,
    MONGODB_DB: `slofail_${process.pid}`,
    REDIS_URL: redis.url,
    REDIS_PREFIX: `slofail-${process.pid}`,
    REPLICA_ID: replica,
    DISPATCH_ALLOW_LOOPBACK: "true",
    RATE_LIMIT_TENANT: "1000000",
    PROBES: "on",
    PROBE_INTERVAL: "150ms",
    PROBE_TIMEOUT: "150ms",
    PROBE_LEADER_TTL: `${LEASE_TTL_MS}ms`,
    SLO: "on",
    SLO_AVAILABILITY_TARGET: "0.9",
    SLO_FAST_LONG_WINDOW: "4s",
    SLO_FAST_SHORT_WINDOW: "1s",
    SLO_FAST_BURN_RATE: "5",
    SLO_SLOW_LONG_WINDOW: "8s",
    SLO_SLOW_SHORT_WINDOW: "2s",
    SLO_SLOW_BURN_RATE: "3",
    SLO_EVALUATION_INTERVAL: "100ms",
    SLO_MIN_EVENTS: "3",
    REMEDIATION: "on",
    REMEDIATION_COOLDOWN: "60s",
    REMEDIATION_TIMEOUT: "5s",
  });
  replicas.push(...(await Promise.all([startProcess(env("replica-a")), startProcess(env("replica-b"))])));
}, 45_000);

afterAll(async () => {
  feed?.close();
  await Promise.all(replicas.map((r) => r.dispose()));
  killAgents();
  for (const c of closers) await c();
  await Promise.all([redis?.dispose(), ferret?.dispose()]);
});

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const serving = async (r: ServiceProcess) => (await getJson(`${r.url}/health`).catch(() => undefined))?.json?.status === "SERVING_STATUS_SERVING";
const evaluates = async (r: ServiceProcess) => (await getJson(`${r.url}/health/fleet`)).json?.sloEvaluator === true;
const of = (type: string, state?: string) =>
  feed!.events.items.filter((e) => e.type === type && (state === undefined || e.healthAlert.state === state));
const keyOf = (e: any) => `${e.healthAlert.slo}|${e.healthAlert.agentId ?? ""}${e.healthAlert.capability ?? ""}|${e.healthAlert.severity}`;
/** Tasks the Guard received (its health probes reach it too, without a task id). */
const guardTasks = () => guard.tasks.items.filter((t) => t.taskId);
const trail = async (r: ServiceProcess) => ((await getJson(`${r.url}/health/remediations`)).json.remediations ?? []) as any[];

describe("SLO alerts across a probe leader's death", () => {
  it("the survivor adopts the firing alerts: one FIRING per SLO and subject, one remediation, RESOLVED under the original id, the same audit trail", async () => {
    await until("both replicas serving", async () => (await Promise.all(replicas.map(serving))).every(Boolean), 15_000);
    await until("one evaluating replica", async () => (await Promise.all(replicas.map(evaluates))).filter(Boolean).length === 1);
    const leaderIndex = (await evaluates(replicas[0]!)) ? 0 : 1;
    const leader = replicas[leaderIndex]!;
    const survivor = replicas[1 - leaderIndex]!;
    const survivorId = leaderIndex === 0 ? "replica-b" : "replica-a";
    feed = await openWs(survivor.port, "?types=health.alert,health.remediation_dispatched,health.remediation_escalated");

    const register = async (body: Record<string, unknown>) => {
      const r = await postJson(`${leader.url}/agents/register`, registerBody({ leaseTtl: "3600s", tools: [], ...body }));
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return r.json.agent.id as string;
    };
    const guardId = await register({
      name: "guard",
      endpoint: { url: `http://127.0.0.1:${guard.port}/remediate`, transport: "TRANSPORT_HTTP_JSON" },
      capabilities: [{ name: "remediation" }],
    });
    const id = await register({ name: "flaky", endpoint: { url: agentUrl, transport: "TRANSPORT_HTTP_JSON" }, capabilities: [{ name: "flaky.cap" }] });

    // The agent fails its probes: its availability pages, and the Guard remediates once (and answers).
    failing = true;
    const page = (e: any) => e.healthAlert.slo === "agent-availability" && e.healthAlert.severity === "ALERT_SEVERITY_PAGE" && e.agentId === id;
    await until("the availability page", () => of("health.alert", "ALERT_STATE_FIRING").some(page));
    const alertId = of("health.alert", "ALERT_STATE_FIRING").find(page)!.healthAlert.alertId as string;
    let seen: any[] = [];
    await until("the Guard's answer in the trail (read on the survivor)", async () =>
      (seen = await trail(survivor)).some((r) => r.status === "REMEDIATION_STATUS_SUCCEEDED"),
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(seen)}; events ${JSON.stringify(feed!.events.items.map((e) => [e.type, e.healthAlert?.message]))}`);
    });
    expect(guardTasks()).toHaveLength(1);
    const before = await trail(survivor);
    const sent = before.filter((r) => r.status !== "REMEDIATION_STATUS_SUPPRESSED");
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ status: "REMEDIATION_STATUS_SUCCEEDED", targetKind: "agent", target: guardId, taskId: guardTasks()[0].taskId });
    expect(sent[0].alert).toMatchObject({ alertId, agentId: id });
    // Both replicas serve the same trail (Redis), not only the one that wrote it.
    expect(await trail(leader)).toEqual(before);

    // SIGKILL while the agent still fails: the survivor takes the lease over within its TTL...
    const killedAt = leader.signal("SIGKILL");
    await leader.exited;
    await until("the survivor evaluating", () => evaluates(survivor), LEASE_TTL_MS + 3_000);
    expect(Date.now() - killedAt).toBeLessThan(LEASE_TTL_MS + 2_000);
    // ...and probes on: 20 failed probes (3 s at 150 ms) are past SLO_MIN_EVENTS, the fast short window (1 s)
    // and the slow one (2 s) — it would have fired again by now had it not adopted the alerts.
    const base = probesFrom.get(survivorId) ?? 0;
    await until("20 failed probes from the survivor", () => (probesFrom.get(survivorId) ?? 0) >= base + 20);
    const fleet = (await getJson(`${survivor.url}/health/fleet`)).json;
    expect(fleet.firingAlerts.some((a: any) => a.alertId === alertId), JSON.stringify(fleet.firingAlerts)).toBe(true);

    // Recovery: every alert resolves under the id it fired with.
    failing = false;
    await until("every alert resolved", () => of("health.alert", "ALERT_STATE_RESOLVED").length >= new Set(of("health.alert", "ALERT_STATE_FIRING").map(keyOf)).size, 15_000);

    // Exactly one FIRING per SLO × subject on the shared feed, over both leaders.
    const firing = of("health.alert", "ALERT_STATE_FIRING");
    const byKey = new Map<string, any[]>();
    for (const e of firing) byKey.set(keyOf(e), [...(byKey.get(keyOf(e)) ?? []), e]);
    for (const [key, fired] of byKey) expect(fired, `${key} fired ${fired.length} times`).toHaveLength(1);
    expect(byKey.has(`agent-availability|${id}|ALERT_SEVERITY_PAGE`)).toBe(true);
    for (const e of firing) expect(e.agentId).toBe(id);
    const resolved = of("health.alert", "ALERT_STATE_RESOLVED");
    expect(resolved.map((e) => e.healthAlert.alertId).sort()).toEqual(firing.map((e) => e.healthAlert.alertId).sort());
    expect(resolved.find((e) => keyOf(e) === `agent-availability|${id}|ALERT_SEVERITY_PAGE`)!.healthAlert.alertId).toBe(alertId);

    // One remediation dispatched in total; the survivor's trail still shows the one the dead leader sent.
    expect(of("health.remediation_dispatched")).toHaveLength(1);
    expect(of("health.remediation_escalated")).toHaveLength(0);
    expect(guardTasks()).toHaveLength(1);
    const after = await trail(survivor);
    expect(after.filter((r) => r.status !== "REMEDIATION_STATUS_SUPPRESSED")).toEqual(sent);
    expect(after.filter((r) => r.status === "REMEDIATION_STATUS_SUPPRESSED").every((r) => r.alert.agentId === id)).toBe(true);
    expect((await getJson(`${survivor.url}/health/fleet`)).json.firingAlerts).toEqual([]);
  }, 60_000);
});
