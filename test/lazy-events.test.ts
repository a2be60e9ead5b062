import { toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../gen/federation/v1/event_pb.js";
import { ManualClock } from "./support/manual-clock.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import type { EventInput, PublishedEvent } from "../src/events/event-bus.js";
import { newAgentId } from "../src/registry/agent-id.js";
import { AgentStatus } from "../src/registry/agent-record.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { Registry } from "../src/registry/registry.js";
import { Router } from "../src/router/router.js";
import type { Principal } from "../src/security/principal.js";
import type { RegisterInput } from "../src/validation/requests.js";
import { Transport } from "../gen/federation/v1/agent_pb.js";
import { pino } from "pino";

/**
 * Agent events carry a lazy payload (event-bus.ts LazyPayload): the memory
 * bus's history holds the record, and the message is made when a
 * subscriber reads the event. What a subscriber reads must not depend on
 * when: a replay reads the same bytes a live subscriber was sent.
 */
const caller = (tenant: string): Principal => ({ subject: "s", tenant, scopes: new Set(["admin"]), via: "token" }) as unknown as Principal;
const input = (name: string, agentId = ""): RegisterInput =>
  ({
    agentId,
    name,
    version: "1",
    endpoint: { url: "grpc://127.0.0.1:1", transport: Transport.GRPC },
    capabilities: [{ name: "c", tags: ["t"] }],
    tools: [{ name: "tool", description: "d", inputSchema: { type: "object" } }],
    labels: { zone: "a" },
    leaseTtlMs: 30_000,
  }) as unknown as RegisterInput;

function setup(retention = 100) {
  const clock = new ManualClock(1_000);
  const bus = new MemoryEventBus(clock, retention);
  const store = new MemoryAgentStore();
  const registry = new Registry(store, bus, clock, { graceMs: 10_000 } as never, pino({ level: "silent" }));
  return { clock, bus, store, registry };
}

const all = { tenant: "t1", types: new Set<string>(), agentId: "" };
const bytes = (e: PublishedEvent) => Buffer.from(toBinary(EventSchema, e.message)).toString("hex");

describe("agent events made on demand", () => {
  it("replays every agent event with the bytes live subscribers got, through re-registration, status changes, sharing and removal", async () => {
    const { clock, bus, registry } = setup();
    const live: PublishedEvent[] = [];
    bus.subscribe(all, undefined, (e) => live.push(e));
    const a = await registry.register(input("a"), caller("t1"));
    clock.advance(5);
    await registry.register(input("a", a.id), caller("t1"));
    await registry.heartbeat({ agentId: a.id, status: AgentStatus.DEGRADED, load: 0.3 } as never, caller("t1"));
    await registry.share(a.id, true, caller("t1"));
    clock.advance(5);
    await registry.heartbeat({ agentId: a.id, status: AgentStatus.HEALTHY } as never, caller("t1"));
    await registry.unregister(a.id, caller("t1"));
    expect(live.map((e) => e.message.type)).toEqual([
      "agent.registered",
      "agent.updated",
      "agent.status_changed",
      "agent.updated",
      "agent.status_changed",
      "agent.unregistered",
    ]);
    const change = live[2]!.message.payload;
    expect(change.case === "agentChange" && change.value.agent?.status).toBe(AgentStatus.DEGRADED);
    expect(change.case === "agentChange" && change.value.previousStatus).toBe(AgentStatus.HEALTHY);
    expect(change.case === "agentChange" && change.value.reason).toBe("heartbeat");

    const replayed: PublishedEvent[] = [];
    bus.subscribe(all, 0n, (e) => replayed.push(e));
    expect(replayed.map(bytes)).toEqual(live.map(bytes));
    // And from the middle, after the agent's message cache moved on to newer records.
    const later: PublishedEvent[] = [];
    bus.subscribe(all, live[1]!.id, (e) => later.push(e));
    expect(later.map(bytes)).toEqual(live.slice(2).map(bytes));
  });

  it("lets other tenants see an event about a shared agent, before the message is made", async () => {
    const { bus, registry } = setup();
    const other: PublishedEvent[] = [];
    bus.subscribe({ ...all, tenant: "t2" }, undefined, (e) => other.push(e));
    const a = await registry.register(input("a"), caller("t1"));
    await registry.share(a.id, true, caller("t1"));
    await registry.heartbeat({ agentId: a.id, status: AgentStatus.DRAINING } as never, caller("t1"));
    expect(other.map((e) => e.message.type)).toEqual(["agent.updated", "agent.status_changed"]);
    const replay: PublishedEvent[] = [];
    bus.subscribe({ ...all, tenant: "t2" }, 0n, (e) => replay.push(e));
    expect(replay.map(bytes)).toEqual(other.map(bytes));
  });

  it("makes the payload once, when a subscriber first reads the message, and not at all when none does", async () => {
    const clock = new ManualClock(1_000);
    const bus = new MemoryEventBus(clock, 10);
    let made = 0;
    const publish = (tenant: string) =>
      bus.publish({
        type: "agent.registered",
        tenant,
        agentId: "x",
        lazyPayload: {
          shared: false,
          agentStatus: AgentStatus.DEGRADED,
          make: () => (made++, { case: "agentChange", value: { $typeName: "federation.v1.AgentChange", agent: { $typeName: "federation.v1.Agent", status: AgentStatus.DEGRADED } } }),
        },
      } as EventInput);
    await publish("t1");
    expect(made).toBe(0);
    const got: PublishedEvent[][] = [[], []];
    bus.subscribe(all, undefined, (e) => got[0]!.push(e));
    bus.subscribe(all, undefined, (e) => got[1]!.push(e));
    bus.subscribe({ ...all, tenant: "t9" }, undefined, () => expect.unreachable("another tenant's event"));
    await publish("t1");
    const e = got[0]![0]!;
    expect(got[1]![0]).toBe(e);
    // What the input says is read without the payload.
    expect([e.id, e.type, e.tenant, e.agentId, e.agentStatus, e.aboutShared]).toEqual([2n, "agent.registered", "t1", "x", AgentStatus.DEGRADED, false]);
    expect(made).toBe(0);
    expect(e.message.payload.case).toBe("agentChange");
    expect(got[1]![0]!.message).toBe(e.message);
    expect(made).toBe(1);
    // A message's own fields say the same.
    const built = new (e.constructor as new (m: typeof e.message) => PublishedEvent)(e.message);
    expect([built.id, built.type, built.tenant, built.agentId, built.agentStatus, built.aboutShared]).toEqual([2n, "agent.registered", "t1", "x", AgentStatus.DEGRADED, false]);
  });

  it("the router follows agents' status from the events without making their payloads", async () => {
    const clock = new ManualClock(1_000_000);
    const bus = new MemoryEventBus(clock, 10);
    const store = new MemoryAgentStore();
    const router = new Router(store, bus, clock, pino({ level: "silent" }));
    let made = 0;
    const lazy = (status: AgentStatus) => ({ shared: false, agentStatus: status, make: () => (made++, { case: undefined }) });
    await bus.publish({ type: "agent.registered", tenant: "t1", agentId: "a", lazyPayload: lazy(AgentStatus.HEALTHY) } as EventInput);
    await bus.publish({ type: "agent.status_changed", tenant: "t1", agentId: "a", lazyPayload: lazy(AgentStatus.UNHEALTHY) } as EventInput);
    clock.advance(60_000);
    expect(made).toBe(0);
    // Down for the last minute of a ten-minute window.
    expect(router.reputation.standing("a", undefined, clock.now()).uptime).toBeCloseTo(0.9, 6);
    await bus.publish({ type: "agent.status_changed", tenant: "t1", agentId: "a", lazyPayload: lazy(AgentStatus.DEGRADED) } as EventInput);
    clock.advance(60_000);
    expect(router.reputation.standing("a", undefined, clock.now()).uptime).toBeCloseTo(0.9, 6);
    expect(made).toBe(0);
    router.stop();
  });
});

describe("agent ids", () => {
  it("are random version 4 UUIDs, distinct, every hex digit used in every random position", () => {
    const seen = new Set<string>();
    const digits = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 20_000; i++) {
      const id = newAgentId();
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      seen.add(id);
      for (let k = 0; k < 36; k++) digits[k]!.add(id[k]!);
    }
    expect(seen.size).toBe(20_000);
    for (let k = 0; k < 36; k++) {
      const want = [8, 13, 18, 23].includes(k) ? 1 : k === 14 ? 1 : k === 19 ? 4 : 16;
      expect(digits[k]!.size, `position ${k}`).toBe(want);
    }
  });

  it("name new agents the registry registers", async () => {
    const { registry } = setup();
    const a = await registry.register(input("a"), caller("t1"));
    const b = await registry.register(input("b"), caller("t1"));
    expect(a.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(b.id).not.toBe(a.id);
  });
});
