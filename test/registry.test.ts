import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { beforeEach, describe, expect, it } from "vitest";
import { RegisterRequestSchema } from "../gen/federation/v1/registry_service_pb.js";
import { loadConfig } from "../src/config.js";
import type { PublishedEvent } from "../src/events/event-bus.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { AgentStatus } from "../src/registry/agent-record.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { Registry } from "../src/registry/registry.js";
import { Router } from "../src/router/router.js";
import { parseRegister, parseRoute } from "../src/validation/requests.js";
import { create as createRoute } from "./support/route-request.js";
import { ManualClock } from "./support/manual-clock.js";
import type { Principal } from "../src/security/principal.js";
import { memoryRegistry } from "./support/registries.js";

const caller: Principal = { subject: "test", tenant: "t1", scopes: new Set(["admin"]), via: "token" };

const lease = loadConfig({ LEASE_TTL_DEFAULT: "10s", LEASE_GRACE: "5s" }).lease;
const log = pino({ level: "silent" });

function input(overrides: Record<string, unknown> = {}) {
  return parseRegister(
    create(RegisterRequestSchema, {
      name: "a",
      endpoint: { url: "http://127.0.0.1:1" },
      capabilities: [{ name: "code" }],
      ...overrides,
    }),
    lease,
  );
}

describe("registry leases", () => {
  let clock: ManualClock;
  let store: MemoryAgentStore;
  let registry: Registry;
  let events: PublishedEvent[];

  beforeEach(() => {
    ({ clock, store, registry, events } = memoryRegistry(lease, log));
  });

  it("keeps an agent healthy while it heartbeats within its lease", async () => {
    const a = await registry.register(input(), caller);
    for (let i = 0; i < 5; i++) {
      clock.advance(9_000);
      await registry.heartbeat({ agentId: a.id, status: AgentStatus.UNSPECIFIED, load: undefined }, caller);
      await registry.sweep();
    }
    expect((await registry.get(a.id, caller)).status).toBe(AgentStatus.HEALTHY);
    expect(events.map((e) => e.message.type)).toEqual(["agent.registered"]);
  });

  it("turns an agent that misses its lease UNHEALTHY, then expires it after the grace period", async () => {
    const a = await registry.register(input(), caller);
    clock.advance(10_000);
    await registry.sweep();
    await registry.sweep();
    expect((await registry.get(a.id, caller)).status).toBe(AgentStatus.UNHEALTHY);
    clock.advance(5_000);
    await registry.sweep();
    await expect(registry.get(a.id, caller)).rejects.toThrow(/not found/);
    expect(events.map((e) => e.message.type)).toEqual(["agent.registered", "agent.status_changed", "agent.expired"]);
  });

  it("revives an UNHEALTHY agent that heartbeats within the grace period", async () => {
    const a = await registry.register(input(), caller);
    clock.advance(11_000);
    await registry.sweep();
    const back = await registry.heartbeat({ agentId: a.id, status: AgentStatus.UNSPECIFIED, load: 0.5 }, caller);
    expect(back.status).toBe(AgentStatus.HEALTHY);
    expect(back.leaseExpiresAt).toBe(clock.now() + 10_000);
    expect(events.map((e) => e.message.type)).toEqual(["agent.registered", "agent.status_changed", "agent.status_changed"]);
  });

  it("answers NOT_FOUND to a heartbeat after the grace period, even before the reaper ran", async () => {
    const a = await registry.register(input(), caller);
    clock.advance(15_000);
    await expect(
      registry.heartbeat({ agentId: a.id, status: AgentStatus.UNSPECIFIED, load: undefined }, caller),
    ).rejects.toMatchObject({ code: 5 });
  });

  it("emits exactly one expiry when two reapers race", async () => {
    const a = await registry.register(input(), caller);
    clock.advance(20_000);
    const other = new Registry(store, new MemoryEventBus(clock, 10), clock, lease, log);
    await Promise.all([registry.sweep(), other.sweep(), registry.sweep()]);
    expect(events.filter((e) => e.message.type === "agent.expired" && e.message.agentId === a.id)).toHaveLength(1);
  });

  it("keeps the id and registration time when an agent registers again with its id", async () => {
    const a = await registry.register(input(), caller);
    clock.advance(1_000);
    const b = await registry.register(input({ agentId: a.id, version: "2" }), caller);
    expect(b.id).toBe(a.id);
    expect(b.registeredAt).toBe(a.registeredAt);
    expect(b.revision).toBe(2);
    expect((await store.counts("t1")).total).toBe(1);
    expect(events.map((e) => e.message.type)).toEqual(["agent.registered", "agent.updated"]);
  });
});

describe("router", () => {
  let clock: ManualClock;
  let registry: Registry;
  let router: Router;

  beforeEach(() => {
    clock = new ManualClock();
    const store = new MemoryAgentStore();
    const bus = new MemoryEventBus(clock, 100);
    registry = new Registry(store, bus, clock, lease, log);
    router = new Router(store, bus, clock, log);
  });

  const withLoad = async (name: string, load: number, status = AgentStatus.HEALTHY) => {
    const a = await registry.register(input({ name }), caller);
    return registry.heartbeat({ agentId: a.id, status, load }, caller);
  };

  it("prefers the agent with the most spare capacity", async () => {
    await withLoad("busy", 0.9);
    const idle = await withLoad("idle", 0.1);
    await withLoad("half", 0.5);
    const d = await router.route(parseRoute(createRoute({ capabilities: ["code"] })), "t1");
    expect(d.agent.id).toBe(idle.id);
    expect(d.candidates.map((c) => c.agent.name)).toEqual(["idle", "half", "busy"]);
  });

  it("routes to a DEGRADED agent only when nothing healthy is near, and never to a DRAINING one", async () => {
    const degraded = await withLoad("degraded", 0, AgentStatus.DEGRADED);
    await withLoad("draining", 0, AgentStatus.DRAINING);
    const loaded = await withLoad("loaded", 0.6);
    expect((await router.route(parseRoute(createRoute({ capabilities: ["code"] })), "t1")).agent.id).toBe(loaded.id);
    const d = await router.route(parseRoute(createRoute({ capabilities: ["code"], excludeAgentIds: [loaded.id] })), "t1");
    expect(d.agent.id).toBe(degraded.id);
  });

  it("spreads tasks over equally good agents", async () => {
    await withLoad("x", 0);
    await withLoad("y", 0);
    const picks = new Set<string>();
    for (let i = 0; i < 4; i++) picks.add((await router.route(parseRoute(createRoute({ capabilities: ["code"] })), "t1")).agent.name);
    expect(picks).toEqual(new Set(["x", "y"]));
  });

  it("names the capability nobody offers, and says when no capable agent can take work", async () => {
    await withLoad("draining", 0, AgentStatus.DRAINING);
    await expect(router.route(parseRoute(createRoute({ capabilities: ["code", "fly"] })), "t1")).rejects.toMatchObject({
      code: 9,
      rawMessage: 'no registered agent offers capability "fly"',
    });
    await expect(router.route(parseRoute(createRoute({ capabilities: ["code"] })), "t1")).rejects.toMatchObject({ code: 14 });
  });
});

describe("a late reaper pass", () => {
  it("still reports the status change before the expiry", async () => {
    const clock = new ManualClock();
    const store = new MemoryAgentStore();
    const bus = new MemoryEventBus(clock, 100);
    const events: string[] = [];
    bus.subscribe({ tenant: "t1", types: new Set(), agentId: "" }, undefined, (e) => events.push(e.message.type));
    const registry = new Registry(store, bus, clock, lease, log);
    await registry.register(input(), caller);
    clock.advance(60_000);
    await registry.sweep();
    expect(events).toEqual(["agent.registered", "agent.status_changed", "agent.expired"]);
    expect((await store.counts("t1")).total).toBe(0);
  });
});
