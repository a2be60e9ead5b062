import type { Logger } from "pino";
import type { LeaseConfig } from "../../src/config.js";
import type { PublishedEvent } from "../../src/events/event-bus.js";
import { MemoryEventBus } from "../../src/events/memory-event-bus.js";
import { MemoryAgentStore } from "../../src/registry/memory-agent-store.js";
import { Registry } from "../../src/registry/registry.js";
import type { KeyStore } from "../../src/security/key-store.js";
import { TokenVerifier } from "../../src/security/token-verifier.js";
import { ManualClock } from "./manual-clock.js";

/** A registry on the memory store and bus with a manual clock, and the events tenant t1 sees, in order. */
export function memoryRegistry(lease: LeaseConfig, log: Logger) {
  const clock = new ManualClock();
  const store = new MemoryAgentStore();
  const bus = new MemoryEventBus(clock, 100);
  const events: PublishedEvent[] = [];
  bus.subscribe({ tenant: "t1", types: new Set(), agentId: "" }, undefined, (e) => events.push(e));
  return { clock, store, events, registry: new Registry(store, bus, clock, lease, log) };
}

/** A verifier of the federation's own tokens (issuer and audience "fed", EdDSA, no skew, no bootstrap token). */
export function federationVerifier(keys: KeyStore, clock: ManualClock): TokenVerifier {
  return new TokenVerifier(
    {
      federationIssuer: "fed",
      audience: "fed",
      issuers: [],
      algorithms: ["EdDSA"],
      clockSkewSec: 0,
      jwksCooldownMs: 30_000,
      maxTokenBytes: 8192,
      bootstrapToken: undefined,
      bootstrapTenant: "default",
    },
    keys,
    clock,
  );
}
