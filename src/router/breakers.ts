import CircuitBreaker from "opossum";
import { CircuitState } from "../../gen/federation/v1/event_pb.js";
import type { EventBus, EventType } from "../events/event-bus.js";
import type { Logger } from "../logger.js";

export interface BreakerOptions {
  /** Failed share of the rolling window's outcomes above which the breaker opens (default 50). */
  readonly errorThresholdPercentage: number;
  /** Outcomes in the window before the error rate counts (default 5). */
  readonly volumeThreshold: number;
  /** The rolling window (default 10 s). */
  readonly rollingWindowMs: number;
  /** Cool-down before the half-open trial (default 30 s). */
  readonly resetTimeoutMs: number;
}

export const defaultBreakers: BreakerOptions = {
  errorThresholdPercentage: 50,
  volumeThreshold: 5,
  rollingWindowMs: 10_000,
  resetTimeoutMs: 30_000,
};

/** Breakers kept; the least recently created closed one goes first beyond it. */
const MAX_BREAKERS = 10_000;

interface Entry {
  readonly breaker: CircuitBreaker<[boolean, string], void>;
  readonly tenant: string;
  /** A half-open trial was handed out and has not reported yet, until this time. */
  trialUntil: number;
  /** A state change being applied from another replica's event: not published again. */
  remote: boolean;
  /**
   * Open because another replica opened it: the half-open that follows from
   * this replica's own timer is not published either (the opener's is).
   */
  followed: boolean;
}

/** How the router may use an agent. */
export type Admission = "closed" | "trial" | "open";

const EVENT: Record<CircuitState, EventType | undefined> = {
  [CircuitState.UNSPECIFIED]: undefined,
  [CircuitState.CLOSED]: "agent.circuit_closed",
  [CircuitState.OPEN]: "agent.circuit_opened",
  [CircuitState.HALF_OPEN]: "agent.circuit_half_open",
};

/**
 * One opossum circuit breaker per agent, fed with outcomes rather than
 * wrapping the calls (dispatch and callers who call agents themselves both
 * report): the breaker's action resolves or rejects with the outcome, so
 * opossum's rolling window, error threshold, cool-down timer and half-open
 * trial do the rest. Every state change this replica's evidence causes is
 * published (agent.circuit_*, carrying its replica id); another replica's
 * agent.circuit_opened / closed opens / closes the local breaker too,
 * silently, so the shared feed shows each change once. A followed open
 * half-opens on this replica's own timer (also silently): each replica may
 * then hand out one trial, and whichever outcome comes first closes or
 * reopens the breaker everywhere.
 */
export class Breakers {
  private readonly opts: BreakerOptions;
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly bus: EventBus,
    private readonly replicaId: string,
    private readonly log: Logger,
    opts: Partial<BreakerOptions> = {},
  ) {
    this.opts = { ...defaultBreakers, ...opts };
  }

  /** Feeds one outcome into the agent's breaker. */
  record(agentId: string, tenant: string, success: boolean, reason: string): void {
    const e = this.entry(agentId, tenant);
    e.trialUntil = 0;
    // Open: opossum rejects without counting; the evidence is already in.
    e.breaker.fire(success, reason).catch(() => {});
  }

  state(agentId: string): CircuitState {
    const b = this.entries.get(agentId)?.breaker;
    if (!b || b.closed) return CircuitState.CLOSED;
    return b.halfOpen ? CircuitState.HALF_OPEN : CircuitState.OPEN;
  }

  /** Open, or half-open with its trial out: not chosen while another can serve. */
  admits(agentId: string, now: number): Admission {
    const e = this.entries.get(agentId);
    if (!e || e.breaker.closed) return "closed";
    if (e.breaker.halfOpen && e.trialUntil <= now) return "trial";
    return "open";
  }

  /** The router handed out the half-open trial; another waits for its outcome (or the cool-down). */
  takeTrial(agentId: string, now: number): void {
    const e = this.entries.get(agentId);
    if (e) e.trialUntil = now + this.opts.resetTimeoutMs;
  }

  /** Another replica's breaker changed: follow it (open and closed; half-open comes from our own timer). */
  applyRemote(agentId: string, tenant: string, state: CircuitState): void {
    if (state !== CircuitState.OPEN && state !== CircuitState.CLOSED) return;
    const e = state === CircuitState.OPEN ? this.entry(agentId, tenant) : this.entries.get(agentId);
    if (!e || this.state(agentId) === state) return;
    e.remote = true;
    try {
      if (state === CircuitState.OPEN) e.breaker.open();
      else e.breaker.close();
    } finally {
      e.remote = false;
    }
  }

  /** Agents whose breaker is not closed, for fleet health. */
  notClosed(tenant: string): { agentId: string; state: CircuitState }[] {
    const out: { agentId: string; state: CircuitState }[] = [];
    for (const [agentId, e] of this.entries) {
      if (e.tenant === tenant && !e.breaker.closed) out.push({ agentId, state: this.state(agentId) });
    }
    return out;
  }

  stop(): void {
    for (const e of this.entries.values()) e.breaker.shutdown();
    this.entries.clear();
  }

  private entry(agentId: string, tenant: string): Entry {
    const found = this.entries.get(agentId);
    if (found) return found;
    if (this.entries.size >= MAX_BREAKERS) {
      for (const [id, old] of this.entries) {
        if (old.breaker.closed) {
          old.breaker.shutdown();
          this.entries.delete(id);
          break;
        }
      }
    }
    const breaker = new CircuitBreaker<[boolean, string], void>(
      async (success: boolean, reason: string) => {
        if (!success) throw new Error(reason);
      },
      {
        timeout: false, // outcomes arrive finished; timeouts are reported as failures
        errorThresholdPercentage: this.opts.errorThresholdPercentage,
        volumeThreshold: this.opts.volumeThreshold,
        rollingCountTimeout: this.opts.rollingWindowMs,
        rollingCountBuckets: 10,
        resetTimeout: this.opts.resetTimeoutMs,
      },
    );
    const e: Entry = { breaker, tenant, trialUntil: 0, remote: false, followed: false };
    let last = CircuitState.CLOSED;
    const changed = (state: CircuitState, why: () => string) => {
      const previous = last;
      last = state;
      if (state !== CircuitState.HALF_OPEN) e.followed = e.remote && state === CircuitState.OPEN;
      if (e.remote || (e.followed && state === CircuitState.HALF_OPEN)) {
        this.log.info({ agentId, state: CircuitState[state], reason: why() }, "circuit breaker follows another replica");
      } else {
        this.publish(agentId, e.tenant, state, previous, why());
      }
    };
    breaker.on("open", () => {
      const s = breaker.stats;
      changed(CircuitState.OPEN, () =>
        e.remote ? "opened on another replica" : `${s.failures} of ${s.fires} outcomes failed in the last ${this.opts.rollingWindowMs} ms`,
      );
    });
    breaker.on("halfOpen", () => {
      e.trialUntil = 0;
      changed(CircuitState.HALF_OPEN, () => `cool-down of ${this.opts.resetTimeoutMs} ms over: one trial task decides`);
    });
    breaker.on("close", () => changed(CircuitState.CLOSED, () => (e.remote ? "closed on another replica" : "trial succeeded")));
    this.entries.set(agentId, e);
    return e;
  }

  /** A change from this replica's evidence: other replicas follow it. */
  private publish(agentId: string, tenant: string, state: CircuitState, previous: CircuitState, reason: string): void {
    this.log.info({ agentId, state: CircuitState[state], reason }, "circuit breaker changed");
    this.bus
      .publish({
        type: EVENT[state]!,
        tenant,
        agentId,
        payload: {
          case: "circuitChange",
          value: { state, previousState: previous, reason, replicaId: this.replicaId },
        },
      })
      .catch((err: unknown) => this.log.error({ err }, "event publish failed"));
  }
}
