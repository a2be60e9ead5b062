import http from "node:http";
import type net from "node:net";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import type { ProbeLeadership } from "../src/health/probes-leader.js";
import { SLO_WORST, SloEngine } from "../src/health/slo.js";
import type { AgentRecord } from "../src/registry/agent-record.js";
import { postJson, registerBody, startApp, waitServing } from "./support/app.js";
import { ManualClock } from "./support/manual-clock.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

/**
 * Issue 16, item 6: the fleet telemetry on `<prefix>:telemetry` carries the
 * last probe round (probed, ok, failures by outcome, p50/p99 latency, the
 * worst agents) and the SLOs (worst burners per SLO, alerts firing by
 * severity), bounded whatever the fleet's size.
 */

const closers: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function httpAgent(status: number): Promise<string> {
  const server = http.createServer((req, res) => res.writeHead(req.url === "/health" ? status : 404).end("x"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  server.on("connection", (s) => closers.push(() => void s.destroy()));
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/execute`;
}

interface Telemetry {
  replica: string;
  probes?: {
    probed: number;
    ok: number;
    failed: Record<string, number>;
    latency_ms: { p50: number; p99: number };
    worst: { agent_id: string; outcome: string; latency_ms: number; transport: string }[];
  };
  slos?: {
    evaluating: boolean;
    windows_ms: { fast: number[]; slow: number[] };
    objectives: { slo: string; firing: { page: number; ticket: number }; worst: { subject: string; burn_rate: number; fast: number[] }[] }[];
  };
}

describe("fleet telemetry on Redis", () => {
  let redis: ManagedServer & { dispose(): Promise<void> };
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => redis?.dispose());

  it("carries the last probe round and the SLOs' worst burners and firing alerts, naming only the worst few agents", async () => {
    const prefix = `telemetry-probes-${process.pid}`;
    const t = await startApp({
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix,
      REPLICA_ID: "replica-p",
      TELEMETRY_INTERVAL: "200ms",
      PROBES: "on",
      DISPATCH_ALLOW_LOOPBACK: "true",
      PROBE_INTERVAL: "500ms",
      PROBE_TIMEOUT: "500ms",
      RATE_LIMIT_TENANT: "1000000",
      SLO: "on",
      SLO_AVAILABILITY_TARGET: "0.9",
      SLO_FAST_LONG_WINDOW: "6s",
      SLO_FAST_SHORT_WINDOW: "3s",
      SLO_FAST_BURN_RATE: "5",
      SLO_SLOW_LONG_WINDOW: "12s",
      SLO_SLOW_SHORT_WINDOW: "4s",
      SLO_SLOW_BURN_RATE: "3",
      SLO_EVALUATION_INTERVAL: "100ms",
      SLO_MIN_EVENTS: "3",
    });
    closers.push(() => t.close());
    const sub = new Redis(redis.url);
    closers.push(() => sub.disconnect());
    const messages: { text: string; m: Telemetry }[] = [];
    sub.on("message", (_channel, text: string) => messages.push({ text, m: JSON.parse(text) as Telemetry }));
    await sub.subscribe(`${prefix}:telemetry`);
    await waitServing(t);

    const [good, bad] = await Promise.all([httpAgent(200), httpAgent(500)]);
    const register = async (name: string, url: string) => {
      const r = await postJson(
        `${t.url}/agents/register`,
        registerBody({ name, endpoint: { url, transport: "TRANSPORT_HTTP" }, capabilities: [{ name: "telemetry.test" }], tools: [], leaseTtl: "3600s" }),
      );
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      return r.json.agent.id as string;
    };
    const goodIds = await Promise.all([0, 1, 2].map((i) => register(`good-${i}`, good)));
    const badIds = new Set(await Promise.all(Array.from({ length: 12 }, (_, i) => register(`bad-${i}`, bad))));

    // Every bad agent fails every probe: each pages once it has SLO_MIN_EVENTS in the short window.
    const page = (m: Telemetry) => m.slos?.objectives.find((o) => o.slo === "agent-availability")?.firing.page ?? 0;
    const ticket = (m: Telemetry) => m.slos?.objectives.find((o) => o.slo === "agent-availability")?.firing.ticket ?? 0;
    const deadline = Date.now() + 20_000;
    let last: { text: string; m: Telemetry } | undefined;
    while (Date.now() < deadline) {
      last = messages.findLast((x) => x.m.probes?.probed === 15 && page(x.m) === 12 && ticket(x.m) === 12);
      if (last) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(last, JSON.stringify(messages.at(-1)?.m)).toBeDefined();
    const { probes, slos } = last!.m;

    expect(probes).toMatchObject({ probed: 15, ok: 3, failed: { error: 12, timeout: 0, missing_tool: 0, refused: 0 } });
    expect(probes!.latency_ms.p50).toBeGreaterThan(0);
    expect(probes!.latency_ms.p99).toBeGreaterThanOrEqual(probes!.latency_ms.p50);
    expect(probes!.latency_ms.p99).toBeLessThan(500);
    // Bounded: the ten worst of fifteen, all of them failures (a failure is worse than any pass).
    expect(probes!.worst).toHaveLength(10);
    for (const w of probes!.worst) {
      expect(badIds.has(w.agent_id), w.agent_id).toBe(true);
      expect(w).toMatchObject({ outcome: "error", transport: "http_json" });
    }
    expect(goodIds.some((id) => probes!.worst.some((w) => w.agent_id === id))).toBe(false);

    expect(slos).toMatchObject({ evaluating: true, windows_ms: { fast: [6_000, 3_000], slow: [12_000, 4_000] } });
    expect(slos!.objectives.map((o) => o.slo)).toEqual(["agent-availability", "agent-latency", "capability-availability", "capability-latency"]);
    const availability = slos!.objectives[0]!;
    expect(availability.worst).toHaveLength(SLO_WORST);
    for (const b of availability.worst) {
      expect(badIds.has(b.subject), b.subject).toBe(true);
      // Every event failed: burning the whole budget ten times over (1 / (1 − 0.9)).
      expect(b.burn_rate).toBeCloseTo(10);
      expect(b.fast).toEqual([10, 10]);
    }
    expect(availability.firing.ticket).toBe(12);
    // Probes are fast and none succeeded slowly: no latency burn, nothing firing there.
    expect(slos!.objectives[1]).toMatchObject({ worst: [], firing: { page: 0, ticket: 0 } });
    expect(last!.text.length).toBeLessThan(8_000);
  }, 40_000);
});

describe("SLO summary", () => {
  const leader: ProbeLeadership = { leading: true, start: () => undefined, stop: async () => undefined };

  it("ranks the worst burners first and keeps only SLO_WORST of them", () => {
    const clock = new ManualClock();
    const config = loadConfig({
      SLO: "on",
      SLO_AVAILABILITY_TARGET: "0.9",
      SLO_FAST_LONG_WINDOW: "60s",
      SLO_FAST_SHORT_WINDOW: "10s",
      SLO_SLOW_LONG_WINDOW: "120s",
      SLO_SLOW_SHORT_WINDOW: "30s",
    }).slo;
    const slo = new SloEngine(config, { bus: new MemoryEventBus(clock, 100), clock, log: pino({ level: "silent" }), leadership: leader, campaigns: false });
    expect(slo.summary()).toBeUndefined();
    // Agent i fails i of its 10 probes: its burn rate is i (a tenth failing spends the budget once).
    for (let step = 0; step < 10; step++) {
      for (let i = 0; i <= 8; i++) {
        const agent = { id: `a${i}`, tenant: "t1" } as AgentRecord;
        slo.probed({ agent, transport: "http", outcome: step < i ? "error" : "ok", latencyMs: 1, detail: "" });
      }
      clock.advance(500);
    }
    slo.evaluate();
    const availability = slo.summary()!.slos.find((s) => s.slo === "agent-availability")!;
    expect(availability.worst.map((b) => b.subject)).toEqual(["a8", "a7", "a6", "a5", "a4"]);
    expect(availability.worst.map((b) => Math.round(b.burnRate))).toEqual([8, 7, 6, 5, 4]);
    expect(slo.summary()!.subjects).toBe(9);
  });
});
