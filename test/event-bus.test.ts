import { pino } from "pino";
import { afterAll, beforeAll } from "vitest";
import { systemClock } from "../src/clock.js";
import { MemoryEventBus } from "../src/events/memory-event-bus.js";
import { RedisEventBus } from "../src/events/redis-event-bus.js";
import { eventBusContract } from "./contracts/event-bus.contract.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

let redis: ManagedServer & { dispose(): Promise<void> };
let n = 0;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis.dispose());

eventBusContract("memory", async () => new MemoryEventBus(systemClock, 1_000));

eventBusContract("redis", async () => {
  const bus = new RedisEventBus(systemClock, {
    url: redis.url,
    prefix: `contract-${n++}`,
    retention: 1_000,
    maxPending: 1_000,
    log: pino({ level: "silent" }),
  });
  bus.start();
  return bus;
});
