import type { Logger } from "../logger.js";
import type { Registry } from "./registry.js";

/**
 * Runs Registry.sweep on an interval. Passes never overlap, and the timer is
 * unref()ed so it never holds the process open.
 */
export class LeaseReaper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.tick(), this.intervalMs).unref();
  }

  /** One pass, unless one is already running. */
  tick(): Promise<void> {
    this.running ??= this.registry
      .sweep()
      .catch((err: unknown) => this.log.error({ err }, "lease sweep failed"))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
