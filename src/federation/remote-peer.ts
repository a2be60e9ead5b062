import { createHash } from "node:crypto";
import CircuitBreaker from "opossum";
import { createLocalJWKSet } from "jose";
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CircuitState, PeerProblem } from "../../gen/federation/v1/event_pb.js";
import { PeerKind, PeerSchema, PeerStatus, type Peer } from "../../gen/federation/v1/federation_service_pb.js";
import type { Clock } from "../clock.js";
import { NoisyAnswer, type PeerClient, type PeerIdentity } from "./peer-client.js";
import type { PeerSpec } from "./peer-spec.js";

export interface PeerBreakerOptions {
  readonly errorThresholdPercentage: number;
  readonly volumeThreshold: number;
  readonly rollingWindowMs: number;
  readonly resetTimeoutMs: number;
  /** Half-life of the evidence behind a peer's reputation. */
  readonly halfLifeMs: number;
}

/** The breaker refused the call: the peer is isolated until its cool-down ends. */
export class PeerIsolated extends Error {
  override name = "PeerIsolated";
}

/** What happened to a peer, for the federation.peer_* events. */
export type PeerChangeKind = "degraded" | "isolated" | "recovered";
export interface PeerChangeListener {
  changed(peer: RemotePeer, kind: PeerChangeKind, problem: PeerProblem, reason: string): void;
  /** Every problem counted against a peer. */
  counted(problem: PeerProblem): void;
}

const noListener: PeerChangeListener = { changed: () => undefined, counted: () => undefined };

/** A degraded (not isolated) peer has recovered once its reputation is back to this. */
const RECOVERED_REPUTATION = 0.9;

/** Weight of the prior (one success per unit) in the reputation, as the router's k. */
const PRIOR = 2;

/**
 * One peer as this process knows it: its spec, client, trust, an opossum
 * breaker around every request to it (timeouts and errors count; open:
 * not asked), and its reputation — the decayed share of requests it
 * answered in time, (Σ w·ok + k) / (Σ w + k), weights halving every
 * half-life, 1 without evidence — plus a latency moving average.
 */
export class RemotePeer {
  status: PeerStatus;
  instanceId = "";
  keyId = "";
  verifiedAt = 0;
  lastContactAt = 0;
  lastError = "";
  /** Its JWKS (from its last good check), for the tickets of the Routes it forwards to us. */
  ticketKeys: ReturnType<typeof createLocalJWKSet> | undefined;
  requests = 0;
  failures = 0;
  private okWeight = 0;
  private weight = 0;
  private weighedAt = 0;
  private latencyMs = 0;
  /** A problem was counted against it since it was last well (degraded was announced). */
  private degraded = false;
  private isolated = false;
  /** A hash of its token, for cache keys (the peer answers as that token's tenant). */
  readonly tokenHash: string;
  /** Its part of remote-cache keys: a hash of its id, URL and token hash. */
  readonly cacheId: string;
  /** Problems counted against it, by PeerProblem. */
  readonly problems = new Map<PeerProblem, number>();
  private readonly breaker: CircuitBreaker<[() => Promise<unknown>], unknown>;

  constructor(
    readonly spec: PeerSpec,
    readonly client: PeerClient,
    private readonly clock: Clock,
    private readonly opts: PeerBreakerOptions,
    private readonly listener: PeerChangeListener = noListener,
  ) {
    this.status = spec.kind === "mcp-registry" ? PeerStatus.ACTIVE : PeerStatus.PENDING;
    this.tokenHash = createHash("sha256").update(spec.token).digest("base64url");
    this.cacheId = createHash("sha256").update(JSON.stringify([spec.id, spec.url, this.tokenHash])).digest("base64url");
    this.breaker = new CircuitBreaker(async (work: () => Promise<unknown>) => work(), {
      timeout: false, // the federated read's deadline aborts the request itself
      errorThresholdPercentage: opts.errorThresholdPercentage,
      volumeThreshold: opts.volumeThreshold,
      rollingCountTimeout: opts.rollingWindowMs,
      rollingCountBuckets: 10,
      resetTimeout: opts.resetTimeoutMs,
    });
    this.breaker.on("open", () => {
      if (this.isolated) return;
      this.isolated = this.degraded = true;
      this.listener.changed(this, "isolated", PeerProblem.UNSPECIFIED, this.lastError);
    });
    this.breaker.on("close", () => {
      if (!this.isolated) return;
      this.isolated = this.degraded = false;
      this.listener.changed(this, "recovered", PeerProblem.UNSPECIFIED, "its breaker closed after a successful trial");
    });
  }

  /** Asked by federated reads: trusted, and not isolated by its breaker. */
  get askable(): boolean {
    return this.status === PeerStatus.ACTIVE && !this.breaker.opened;
  }

  get breakerState(): CircuitState {
    if (this.breaker.closed) return CircuitState.CLOSED;
    return this.breaker.halfOpen ? CircuitState.HALF_OPEN : CircuitState.OPEN;
  }

  /** 0..1, 1 without evidence. */
  reputation(): number {
    this.decay();
    return (this.okWeight + PRIOR) / (this.weight + PRIOR);
  }

  /** One request through the breaker; its outcome counts in the reputation. */
  async call<T>(work: () => Promise<T>): Promise<T> {
    const started = this.clock.now();
    this.requests++;
    try {
      const result = (await this.breaker.fire(work)) as T;
      this.record(true, this.clock.now() - started, "");
      return result;
    } catch (err) {
      // Refused by the breaker (open, or half-open with its trial out): no new evidence.
      if ((err as { code?: string }).code === "EOPENBREAKER") {
        this.failures++;
        throw new PeerIsolated(`peer "${this.spec.id}" is isolated by its circuit breaker`);
      }
      this.record(false, this.clock.now() - started, (err as Error).message);
      this.penalize(err instanceof NoisyAnswer ? err.problem : PeerProblem.FAILED, (err as Error).message);
      throw err;
    }
  }

  /**
   * Counts a problem found outside a federated read (its manifest stopped
   * verifying) as a failure, in its breaker and its reputation.
   */
  countFailure(problem: PeerProblem, reason: string): void {
    void this.call(() => Promise.reject(new NoisyAnswer(problem, reason))).catch(() => undefined);
  }

  /** Counts a problem; the first since the peer was last well is announced (degraded). */
  private penalize(problem: PeerProblem, reason: string): void {
    this.problems.set(problem, (this.problems.get(problem) ?? 0) + 1);
    this.listener.counted(problem);
    if (this.degraded) return;
    this.degraded = true;
    this.listener.changed(this, "degraded", problem, reason);
  }

  trusted(identity: PeerIdentity): void {
    this.status = PeerStatus.ACTIVE;
    this.instanceId = identity.instanceId;
    this.keyId = identity.keyId;
    if (identity.jwks) this.ticketKeys = createLocalJWKSet(identity.jwks);
    this.verifiedAt = this.lastContactAt = this.clock.now();
    this.lastError = "";
  }

  distrusted(reason: string): void {
    this.status = PeerStatus.UNTRUSTED;
    this.lastContactAt = this.clock.now();
    this.lastError = reason;
  }

  view(): Peer {
    return create(PeerSchema, {
      peerId: this.spec.id,
      url: this.spec.url,
      kind: this.spec.kind === "mcp-registry" ? PeerKind.MCP_REGISTRY : PeerKind.FEDERATION_CORE,
      tenants: [...this.spec.tenants],
      status: this.status,
      breaker: this.breakerState,
      reputation: this.reputation(),
      latency: durationFromMs(Math.round(this.latencyMs)),
      lastContactAt: this.lastContactAt ? timestampFromMs(this.lastContactAt) : undefined,
      verifiedAt: this.verifiedAt ? timestampFromMs(this.verifiedAt) : undefined,
      lastError: this.lastError.slice(0, 512),
      instanceId: this.instanceId,
      requests: BigInt(this.requests),
      failures: BigInt(this.failures),
    });
  }

  close(): void {
    this.breaker.removeAllListeners();
    this.breaker.shutdown();
    this.client.close();
  }

  private record(ok: boolean, ms: number, error: string): void {
    this.decay();
    this.weight += 1;
    if (ok) {
      this.okWeight += 1;
      this.latencyMs = this.latencyMs === 0 ? ms : 0.7 * this.latencyMs + 0.3 * ms;
      this.lastContactAt = this.clock.now();
      this.lastError = "";
      if (this.degraded && !this.isolated && (this.okWeight + PRIOR) / (this.weight + PRIOR) >= RECOVERED_REPUTATION) {
        this.degraded = false;
        this.listener.changed(this, "recovered", PeerProblem.UNSPECIFIED, "its answers are sound again");
      }
    } else {
      this.failures++;
      this.lastError = error;
    }
  }

  private decay(): void {
    const now = this.clock.now();
    if (this.weighedAt !== 0 && now > this.weighedAt) {
      const f = 2 ** (-(now - this.weighedAt) / this.opts.halfLifeMs);
      this.okWeight *= f;
      this.weight *= f;
    }
    this.weighedAt = now;
  }
}
