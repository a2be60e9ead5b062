import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "../logger.js";
import type { Registry } from "./registry.js";

/**
 * Runs Registry.sweep on an interval. Passes never overlap, and the timer is
 * unref()ed so it never holds the process open.
 *
 * A store that is unavailable reports that itself (once, in its own log line
 * and on /health); a sweep failing for that reason is logged at debug only,
 * so a store that is down at start-up is not one error per interval.
 */
export class LeaseReaper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly registry: Registry,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.stopped) return;
    this.timer ??= setInterval(() => void this.tick(), this.intervalMs).unref();
  }

  /** One pass, unless one is already running (none once stopped). */
  tick(): Promise<void> {
    if (this.stopped) return this.running ?? Promise.resolve();
    this.running ??= this.registry
      .sweep()
      .catch((err: unknown) => {
        if (err instanceof ConnectError && err.code === Code.Unavailable) {
          this.log.debug({ err: err.rawMessage }, "lease sweep skipped: store unavailable");
        } else {
          this.log.error({ err }, "lease sweep failed");
        }
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  /**
   * No more passes; waits for the one in flight `waitMs` at most. A pass cut
   * short is harmless: every transition is a compare-and-set, and the next
   * pass (another replica's, or this one's after a restart) does the rest.
   */
  async stop(waitMs = Infinity): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    const running = this.running;
    if (!running) return;
    if (!Number.isFinite(waitMs)) return running;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([running, new Promise((r) => (timer = setTimeout(r, waitMs).unref()))]);
    clearTimeout(timer);
  }
}
