// Issue 21: a heartbeat's path — one record per beat (the store hands back
// what it stored) and no promise on the memory store's path.
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { RegisterRequestSchema } from "../gen/federation/v1/registry_service_pb.js";
import { loadConfig } from "../src/config.js";
import type { PublishedEvent } from "../src/events/event-bus.js";
import { AgentStatus, patched } from "../src/registry/agent-record.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { MongoAgentStore } from "../src/registry/mongo-agent-store.js";
import { Registry } from "../src/registry/registry.js";
import type { Principal } from "../src/security/principal.js";
import { parseRegister } from "../src/validation/requests.js";
import { agent } from "./contracts/agent-store.contract.js";
import { ManualClock } from "./support/manual-clock.js";
import { startFerret, type ManagedServer } from "./support/servers.js";
import { memoryRegistry } from "./support/registries.js";

const caller: Principal = { subject: "test", tenant: "t1", scopes: new Set(["admin"]), via: "token" };
const lease = loadConfig({ LEASE_TTL_DEFAULT: "10s", LEASE_GRACE: "5s" }).lease;
const log = pino({ level: "silent" });
const input = () =>
  parseRegister(create(RegisterRequestSchema, { name: "a", endpoint: { url: "http://127.0.0.1:1" }, capabilities: [{ name: "code" }] }), lease);
const beat = (agentId: string, status = AgentStatus.UNSPECIFIED, load?: number) => ({ agentId, status, load });

/** What a synchronous call threw (the memory path refuses without a promise). */
function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  throw new Error("did not throw");
}

describe("heartbeat on the memory store", () => {
  let clock: ManualClock;
  let store: MemoryAgentStore;
  let registry: Registry;
  let events: PublishedEvent[];

  beforeEach(() => {
    ({ clock, store, registry, events } = memoryRegistry(lease, log));
  });

  it("updated() stores the patched record and hands back that very record; a stale revision writes nothing", () => {
    const a = agent("x");
    void store.put(a, 0);
    const patch = { load: 0.4, lastHeartbeatAt: 7, leaseExpiresAt: 99, revision: a.revision + 1 };
    const written = store.updated(a, patch);
    expect(written).toEqual(patched(a, patch));
    expect(store.peek("x")).toBe(written);
    expect(store.updated(a, { load: 0.9, revision: a.revision + 1 })).toBeUndefined();
    expect(store.peek("x")).toBe(written);
  });

  it("answers a beat that keeps its status synchronously, with the record the store kept", async () => {
    const a = await registry.register(input(), caller);
    clock.advance(1_000);
    const answer = registry.heartbeatNow(beat(a.id, AgentStatus.UNSPECIFIED, 0.3), caller);
    expect(answer).not.toBeInstanceOf(Promise);
    expect(store.peek(a.id)).toBe(answer);
    expect(answer).toMatchObject({ revision: 2, load: 0.3, lastHeartbeatAt: a.lastHeartbeatAt + 1_000, leaseExpiresAt: a.leaseExpiresAt + 1_000 });
  });

  it("publishes a status change before answering it (the asynchronous path)", async () => {
    const a = await registry.register(input(), caller);
    const answer = registry.heartbeatNow(beat(a.id, AgentStatus.DEGRADED), caller);
    expect(answer).toBeInstanceOf(Promise);
    const record = await answer;
    expect(store.peek(a.id)).toBe(record);
    expect(events.map((e) => e.message.type)).toEqual(["agent.registered", "agent.status_changed"]);
  });

  it("refuses synchronously: another tenant's agent, a revoked passport, a passport of another agent, past the grace period", async () => {
    const a = await registry.register(input(), caller);
    expect(thrown(() => registry.heartbeatNow(beat(a.id), { ...caller, tenant: "t2" }))).toMatchObject({ code: Code.NotFound });
    const passport = (agentId: string, epoch: number): Principal => ({ ...caller, via: "passport", passport: { agentId, epoch } as never });
    expect(thrown(() => registry.heartbeatNow(beat(a.id), passport(a.id, a.registeredAt + 1)))).toMatchObject({ code: Code.Unauthenticated });
    expect(thrown(() => registry.heartbeatNow(beat(a.id), passport("other", a.registeredAt)))).toMatchObject({ code: Code.PermissionDenied });
    expect(registry.heartbeatNow(beat(a.id), passport(a.id, a.registeredAt))).toMatchObject({ revision: 2 });
    clock.advance(15_001);
    expect(thrown(() => registry.heartbeatNow(beat(a.id), caller))).toMatchObject({ code: Code.NotFound });
    // heartbeat() itself still answers with a promise that rejects.
    await expect(registry.heartbeat(beat(a.id), caller)).rejects.toMatchObject({ code: Code.NotFound });
  });
});

describe("MongoAgentStore.updated on FerretDB", () => {
  let ferret: ManagedServer & { dispose(): Promise<void> };
  let store: MongoAgentStore;

  beforeAll(async () => {
    ferret = await startFerret({ backend: "sqlite" });
    store = new MongoAgentStore({ uri: ferret.url, database: `hbpath_${process.pid}`, timeoutMs: 2_000, log });
    await store.start();
  }, 120_000);
  afterAll(async () => {
    await store?.close();
    await ferret?.dispose();
  });

  it("hands back the stored record, and undefined (writing nothing) when another write won", async () => {
    const a = agent("m");
    expect(await store.put(a, 0)).toBe(true);
    const patch = { status: AgentStatus.DEGRADED, load: 0.6, lastHeartbeatAt: 5, leaseExpiresAt: 50_000, revision: 2 };
    const written = await store.updated(a, patch);
    expect(written).toEqual(patched(a, patch));
    expect(await store.get("m")).toEqual(written);
    expect(await store.updated(a, { load: 0.1, revision: 2 })).toBeUndefined();
    expect(await store.get("m")).toEqual(written);
  });
});
