import type http from "node:http";
import { LRUCache } from "lru-cache";
import CircuitBreaker from "opossum";
import type { AddressGuard } from "../dispatch/address-guard.js";
import { keepAliveAgent, pinnedKey } from "../dispatch/pinned-connection.js";
import { pinnedFetch } from "../dispatch/pinned-fetch.js";
import type { Logger } from "../logger.js";

/**
 * Ranking hints from a context server (CONTEXT_SERVER_URL), the seam where
 * something that knows more about a task than the registry (a session, a
 * user's history, data locality) can steer the router. The contract:
 *
 *   POST <CONTEXT_SERVER_URL>  {"tenant": "...", "capabilities": ["..."], "candidates": ["agent-id", ...]}
 *   200 {"boosts": {"agent-id": 0.9, ...}}   (each boost 0..1; others may be left out)
 *
 * A boost b becomes the factor 0.5 + 0.5·b; an agent the answer leaves out
 * gets 0.5. Answers are kept per (tenant, capability set) for
 * CONTEXT_SERVER_CACHE_TTL, so the hot path pays a round trip about once a
 * TTL per key (concurrent misses share one request). The server is called
 * through dispatch's AddressGuard (the same SSRF rules, pinned address, no
 * redirects) and an opossum breaker with a short timeout; when it is slow,
 * down, open-circuited or answers nonsense, routing goes on without hints
 * and the decision's reason says why.
 */

export interface ContextAnswer {
  /** Agent id → factor in [0.5, 1] (absent: 0.5); undefined: no hints for this decision. */
  readonly factors: ReadonlyMap<string, number> | undefined;
  /** Why there are no hints (for the reason), when a server is configured but did not help. */
  readonly unavailable?: string;
}

/** Where the router gets ranking hints. A cached answer comes back synchronously. */
export interface ContextSource {
  readonly enabled: boolean;
  hints(tenant: string, capabilities: readonly string[], candidates: readonly string[]): ContextAnswer | Promise<ContextAnswer>;
  close(): void;
}

const NONE: ContextAnswer = { factors: undefined };

/** No context server configured: no hints, at no cost. */
export const noContext: ContextSource = {
  enabled: false,
  hints: () => NONE,
  close: () => {},
};

export interface ContextServerOptions {
  readonly url: string;
  /** One request's whole budget (CONTEXT_SERVER_TIMEOUT, default 50 ms). */
  readonly timeoutMs: number;
  /** How long an answer is reused per (tenant, capability set) (CONTEXT_SERVER_CACHE_TTL, default 1 s; 0: never). */
  readonly cacheTtlMs: number;
  /** Breaker tunables (tests shorten them). */
  readonly breaker?: { readonly volumeThreshold?: number; readonly resetTimeoutMs?: number; readonly rollingWindowMs?: number };
}

/** A factor is 0.5 + 0.5 × boost: a hint moves a score by at most half. */
export const contextFactor = (boost: number): number => 0.5 + 0.5 * boost;
/** The factor of an agent the answer leaves out. */
export const UNMENTIONED = contextFactor(0);
const MAX_ANSWER_BYTES = 256 * 1024;
const MAX_CACHED = 10_000;
/** Agents named per request at most (the router asks about its shortlist, tens). */
const MAX_ASKED = 256;

export class ContextServer implements ContextSource {
  readonly enabled = true;
  private readonly cache: LRUCache<string, ReadonlyMap<string, number>> | undefined;
  private readonly inFlight = new Map<string, Promise<ContextAnswer>>();
  private readonly breaker: CircuitBreaker<[string, readonly string[], readonly string[]], ReadonlyMap<string, number>>;
  private readonly agents = new Map<string, http.Agent>();

  constructor(
    private readonly opts: ContextServerOptions,
    private readonly guard: AddressGuard,
    private readonly log: Logger,
  ) {
    this.cache = opts.cacheTtlMs > 0 ? new LRUCache({ max: MAX_CACHED, ttl: opts.cacheTtlMs }) : undefined;
    this.breaker = new CircuitBreaker((tenant: string, caps: readonly string[], ids: readonly string[]) => this.ask(tenant, caps, ids), {
      // ask() aborts its own request at the same time; this bounds the pin (DNS) too.
      timeout: opts.timeoutMs,
      errorThresholdPercentage: 50,
      volumeThreshold: opts.breaker?.volumeThreshold ?? 5,
      rollingCountTimeout: opts.breaker?.rollingWindowMs ?? 10_000,
      resetTimeout: opts.breaker?.resetTimeoutMs ?? 5_000,
    });
    this.breaker.on("open", () => this.log.warn({ url: opts.url }, "context server circuit opened: routing without hints"));
    this.breaker.on("close", () => this.log.info({ url: opts.url }, "context server circuit closed"));
  }

  /** The breaker's state, for tests and operators. */
  get state(): "closed" | "open" | "half-open" {
    return this.breaker.opened ? "open" : this.breaker.halfOpen ? "half-open" : "closed";
  }

  hints(tenant: string, capabilities: readonly string[], candidates: readonly string[]): ContextAnswer | Promise<ContextAnswer> {
    const key = `${tenant}\u0000${[...capabilities].sort().join("\u0000")}`;
    const cached = this.cache?.get(key);
    if (cached) return { factors: cached };
    if (this.breaker.opened) return { factors: undefined, unavailable: "context server unavailable (circuit open)" };
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.breaker
        .fire(tenant, capabilities, candidates.slice(0, MAX_ASKED))
        .then(
          (factors): ContextAnswer => {
            this.cache?.set(key, factors);
            return { factors };
          },
          (err: unknown): ContextAnswer => ({ factors: undefined, unavailable: `context server unavailable (${this.why(err)})` }),
        )
        .finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  close(): void {
    this.breaker.shutdown();
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
  }

  private why(err: unknown): string {
    const code = (err as { code?: string }).code;
    if (code === "ETIMEDOUT" || (err as Error).name === "AbortError") return `no answer within ${this.opts.timeoutMs}ms`;
    if (code === "EOPENBREAKER") return "circuit open";
    return ((err as Error).message ?? String(err)).slice(0, 200);
  }

  private async ask(tenant: string, capabilities: readonly string[], candidates: readonly string[]): Promise<ReadonlyMap<string, number>> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.opts.timeoutMs).unref();
    try {
      const target = await this.guard.pin(this.opts.url, new URL(this.opts.url).protocol === "https:" ? 443 : 80);
      const k = pinnedKey(target);
      let agent = this.agents.get(k);
      if (!agent) {
        // A new address (DNS changed): the old sockets go.
        for (const a of this.agents.values()) a.destroy();
        this.agents.clear();
        this.agents.set(k, (agent = keepAliveAgent(target)));
      }
      const res = await pinnedFetch(target, { agent, maxResponseBytes: MAX_ANSWER_BYTES })(target.url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ tenant, capabilities, candidates }),
        signal: controller.signal,
      });
      if (res.status !== 200) {
        await res.body?.cancel();
        throw new Error(`HTTP ${res.status}`);
      }
      return parseBoosts(JSON.parse(await res.text()));
    } finally {
      clearTimeout(timer);
    }
  }
}

/** `{"boosts": {id: 0..1}}` → id → factor; anything else is an error (the server is treated as unavailable). */
export function parseBoosts(body: unknown): ReadonlyMap<string, number> {
  const boosts = (body as { boosts?: unknown } | null)?.boosts;
  if (typeof boosts !== "object" || boosts === null || Array.isArray(boosts)) throw new Error('answer has no "boosts" object');
  const out = new Map<string, number>();
  for (const [id, b] of Object.entries(boosts)) {
    if (typeof b !== "number" || !(b >= 0 && b <= 1)) throw new Error(`boost of ${JSON.stringify(id.slice(0, 64))} is not a number 0..1`);
    out.set(id, contextFactor(b));
  }
  return out;
}
