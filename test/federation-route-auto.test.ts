import { create } from "@bufbuild/protobuf";
import { createContextValues, createHandlerContext } from "@connectrpc/connect";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { FederationScope } from "../gen/federation/v1/origin_pb.js";
import { RouteRequestSchema, RouterService } from "../gen/federation/v1/router_service_pb.js";
import type { Dispatcher } from "../src/dispatch/dispatcher.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { remoteAgentRecord } from "../src/federation/remote-agents.js";
import type { AgentRecord } from "../src/registry/agent-record.js";
import type { AgentStore } from "../src/registry/agent-store.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { Router } from "../src/router/router.js";
import { principalKey } from "../src/security/principal.js";
import { routerService, type RemoteCandidates } from "../src/transport/services/router-service.js";
import { AgentSchema } from "../gen/federation/v1/agent_pb.js";
import { agent } from "./contracts/agent-store.contract.js";
import { ManualClock } from "./support/manual-clock.js";

/**
 * Route with scope AUTO (issue 17): the local agents are read once; the
 * peers are asked only when none of them can serve, and their agents are
 * ranked in that same decision (no second read of the local ones).
 */
describe("Route with scope AUTO", () => {
  const clock = new ManualClock(1_000_000);
  async function setup() {
    const base = new MemoryAgentStore();
    await base.put({ ...agent("local-1", { caps: [["here.cap", []]] }), leaseExpiresAt: clock.now() + 60_000 }, 0);
    let walks = 0;
    const store = Object.create(base) as AgentStore;
    store.routable = (tenant, capabilities) => {
      walks++;
      return base.routable(tenant, capabilities);
    };
    const router = new Router(store, new MemoryEventBus(clock, 10), clock, pino({ level: "silent" }));
    let asked = 0;
    const remote: AgentRecord = remoteAgentRecord(
      create(AgentSchema, { id: "far-1", name: "far", version: "1", status: 1, capabilities: [{ name: "far.cap" }], origin: { peerId: "c", peerUrl: "http://c", remoteId: "far-1" } }),
      "t1",
      clock.now() + 60_000,
    );
    const federation: RemoteCandidates = {
      remoteWanted: () => 1,
      routeCandidates: async (_t, caps) => {
        asked++;
        return caps.includes("far.cap") ? [remote] : [];
      },
    };
    const dispatcher = {
      routed: async (d: { routeId: string; agent: AgentRecord }) => ({ taskId: d.routeId, ticket: "", agent: d.agent, attempts: [], result: undefined }),
    } as unknown as Dispatcher;
    const svc = routerService(router, dispatcher, federation);
    const call = (capability: string) => {
      const ctx = createHandlerContext({
        service: RouterService,
        method: RouterService.method.route,
        protocolName: "connect",
        requestMethod: "POST",
        url: "http://localhost/federation.v1.RouterService/Route",
        contextValues: createContextValues().set(principalKey, { subject: "t", tenant: "t1", scopes: new Set(["route"] as const), via: "token" }),
      });
      return svc.route!(create(RouteRequestSchema, { capabilities: [capability], scope: FederationScope.AUTO }), ctx) as Promise<{ agent?: { id: string; origin?: { peerId: string } } }>;
    };
    return { call, walks: () => walks, asked: () => asked };
  }

  it("reads the local agents once and asks no peer when a local agent serves", async () => {
    const s = await setup();
    expect((await s.call("here.cap")).agent?.id).toBe("local-1");
    expect([s.walks(), s.asked()]).toEqual([1, 0]);
  });

  it("reads the local agents once when it falls back to the peers, and picks the remote agent", async () => {
    const s = await setup();
    const picked = (await s.call("far.cap")).agent;
    expect([picked?.origin?.peerId, picked?.id]).toEqual(["c", "far-1"]);
    expect([s.walks(), s.asked()]).toEqual([1, 1]);
  });

  it("still answers that nobody offers the capability when the peers have no agent for it", async () => {
    const s = await setup();
    await expect(s.call("nobody.cap")).rejects.toThrow(/nobody\.cap/);
    expect([s.walks(), s.asked()]).toEqual([1, 1]);
  });
});
