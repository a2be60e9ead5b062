import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CircuitState } from "../gen/federation/v1/event_pb.js";
import { AgentStatus, Transport, type AgentRecord } from "../src/registry/agent-record.js";
import type { Candidate } from "../src/router/router.js";
import { isImmutable } from "../src/message-hints.js";
import { CandidateMessages } from "../src/transport/services/router-service.js";
import { postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { grpcClients, unary, type GrpcClients } from "./support/grpc-client.js";

const record = { id: "a1", tenant: "default", status: AgentStatus.HEALTHY, endpoint: { url: "http://127.0.0.1:1/", transport: Transport.HTTP_JSON } } as unknown as AgentRecord;

function candidate(score: number, quality: number): Candidate {
  return {
    agent: record,
    score,
    capacity: 1,
    trial: false,
    labels: 1,
    locality: 1,
    context: 1,
    slow: false,
    breakdown: {
      capacity: 1,
      quality,
      latency: 1,
      uptime: 1,
      latencyEwmaMs: 0,
      latencyP95Ms: 0,
      latencyP99Ms: 0,
      evidence: 0,
      circuit: 1,
      circuitState: CircuitState.CLOSED,
      labels: 1,
      locality: 1,
      context: 1,
      overMaxLatency: false,
    },
  };
}

describe("Route's candidate messages", () => {
  it("reuse one immutable message per agent while its score and breakdown stay, and build a new one when a figure moves", () => {
    const messages = new CandidateMessages();
    const first = messages.message(candidate(0.9, 1));
    expect(isImmutable(first)).toBe(true);
    expect(messages.message(candidate(0.9, 1))).toBe(first);
    const lower = messages.message(candidate(0.9, 0.5));
    expect(lower).not.toBe(first);
    expect(lower.breakdown?.quality).toBe(0.5);
    expect(first.breakdown?.quality).toBe(1); // a shown message is never changed
    const rescored = messages.message(candidate(0.8, 0.5));
    expect(rescored.score).toBe(0.8);
    expect(messages.message(candidate(0.8, 0.5))).toBe(rescored);
  });

  describe("over gRPC and REST", () => {
    let t: TestApp;
    let c: GrpcClients;
    const ids: string[] = [];

    beforeAll(async () => {
      t = await startApp({ LEASE_TTL_DEFAULT: "3600s" });
      c = grpcClients(t.port);
      for (let i = 0; i < 3; i++) {
        const res = await postJson(`${t.url}/agents/register`, registerBody({ name: `calc-${i}`, capabilities: [{ name: "calc" }], leaseTtl: "3600s" }));
        expect(res.status).toBe(200);
        const id = (res.json as { agent: { id: string } }).agent.id;
        await postJson(`${t.url}/agents/${id}/heartbeat`, { load: 0 });
        ids.push(id);
      }
    });
    afterAll(async () => {
      c?.close();
      await t?.close();
    });

    const shown = async (via: "grpc" | "rest", id: string) => {
      if (via === "grpc") {
        const res = await unary<any>(c.router, "Route", { capabilities: ["calc"] });
        return res.candidates.find((x: any) => x.agent_id === id).breakdown;
      }
      const res = await postJson(`${t.url}/route`, { capabilities: ["calc"] });
      expect(res.status).toBe(200);
      const json = res.json as { candidates: { agentId: string; breakdown: Record<string, any> }[] };
      return json.candidates.find((x) => x.agentId === id)!.breakdown;
    };

    it("show an outcome in the next Route's breakdown: a kept message never goes stale", async () => {
      const id = ids[0]!;
      for (const via of ["grpc", "rest"] as const) {
        const before = await shown(via, id);
        expect(before.evidence ?? 0).toBe(0);
        expect(await shown(via, id)).toEqual(before);
      }
      await unary(c.router, "ReportOutcome", { agent_id: id, capabilities: ["calc"], success: false, latency: { seconds: 0, nanos: 300_000_000 } });
      const grpcAfter = await shown("grpc", id);
      expect(grpcAfter.evidence).toBeGreaterThan(0);
      expect(grpcAfter.quality).toBeLessThan(1);
      expect(grpcAfter.latency_ewma_ms).toBeCloseTo(300, 0);
      const restAfter = await shown("rest", id);
      expect(restAfter.evidence).toBeGreaterThan(0);
      expect(restAfter.latencyEwmaMs).toBeCloseTo(300, 0);
      // The others are shown as before.
      expect((await shown("grpc", ids[1]!)).evidence ?? 0).toBe(0);
    });
  });
});
