import type { EventBus } from "../events/event-bus.js";

export type Counter = "registrations" | "heartbeats" | "unregistrations" | "routes" | "route_failures";

/** Where the domains count what they do. */
export interface Counters {
  count(counter: Counter): void;
}

/**
 * Fleet telemetry: counts per interval, published as one JSON message on
 * the bus's telemetry channel (Redis: `<prefix>:telemetry`, readable with
 * `redis-cli SUBSCRIBE fc:telemetry`), with totals since start for
 * /health/fleet.
 */
export class FleetTelemetry implements Counters {
  private window = newWindow();
  private readonly totals = newWindow();
  private timer: NodeJS.Timeout | undefined;
  private windowStart = Date.now();

  constructor(
    private readonly bus: EventBus,
    private readonly replicaId: string,
    private readonly intervalMs: number,
  ) {}

  count(counter: Counter): void {
    this.window[counter]++;
    this.totals[counter]++;
  }

  start(): void {
    this.timer ??= setInterval(() => this.flush(), this.intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  total(counter: Counter): number {
    return this.totals[counter];
  }

  flush(): void {
    const now = Date.now();
    this.bus.publishTelemetry(
      JSON.stringify({ replica: this.replicaId, at: new Date(now).toISOString(), window_ms: now - this.windowStart, ...this.window }),
    );
    this.window = newWindow();
    this.windowStart = now;
  }
}

function newWindow(): Record<Counter, number> {
  return { registrations: 0, heartbeats: 0, unregistrations: 0, routes: 0, route_failures: 0 };
}

/** For components built without telemetry (unit tests of a domain alone). */
export const noCounters: Counters = { count: () => undefined };
