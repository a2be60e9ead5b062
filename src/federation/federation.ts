import { createHash } from "node:crypto";
import { create, fromBinary, toBinary, type Message } from "@bufbuild/protobuf";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";
import { DiscoverResponseSchema, SearchToolsResponseSchema, type ToolEntry } from "../../gen/federation/v1/directory_service_pb.js";
import { PeerProblem } from "../../gen/federation/v1/event_pb.js";
import { PeerStatus, type Peer } from "../../gen/federation/v1/federation_service_pb.js";
import { FederationScope, OriginSchema } from "../../gen/federation/v1/origin_pb.js";
import type { Clock } from "../clock.js";
import { errors } from "../errors.js";
import type { EventBus, EventType } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import { markImmutable } from "../message-hints.js";
import { CorePeerClient } from "./core-peer-client.js";
import { nextHop, type HopState } from "./hop-headers.js";
import { McpRegistryClient } from "./mcp-registry-client.js";
import { NoisyAnswer, PeerCheckFailed, type PeerCall, type PeerClient, type RemoteDiscover, type RemoteSearch } from "./peer-client.js";
import { permits, type PeerSpec } from "./peer-spec.js";
import { RemoteCache, type RemoteCacheOptions, type RemoteCacheStats } from "./remote-cache.js";
import { RemotePeer, type PeerBreakerOptions, type PeerChangeListener } from "./remote-peer.js";

export interface FederationOptions {
  /** Names this federation in x-federation-visited (replicas of one federation share it). */
  readonly instanceId: string;
  /** One federated read waits this long for its peers at most. */
  readonly timeoutMs: number;
  /** A request that has crossed this many federations is answered locally. */
  readonly maxHops: number;
  /** Federation Core peers' manifest signatures are checked again this often. */
  readonly verifyIntervalMs: number;
  readonly breakers: PeerBreakerOptions;
  /** Remote answers kept (remote-cache.ts); ttlMs 0: every federated read asks the peers. */
  readonly cache?: RemoteCacheOptions;
  /** A peer's answer over this many bytes counts against it (and is not used). */
  readonly maxAnswerBytes?: number;
  /** An answer slower than this is used but counts against the peer. */
  readonly slowAnswerMs?: number;
  /** The tenant of the federation.peer_* events (the operator's). */
  readonly eventTenant?: string;
}

/** What the federation counts, for /metrics. */
export interface FederationStats {
  readonly cache: RemoteCacheStats;
  /** Problems counted against peers since start, by PeerProblem. */
  readonly problems: ReadonlyMap<PeerProblem, number>;
}

/** How one kind of federated read is cached and checked. */
interface ReadKind<T> {
  readonly op: "discover" | "search";
  encode(items: T[]): Uint8Array;
  decode(bytes: Uint8Array): T[];
  /** Why a record is malformed, or undefined. */
  malformed(item: T): string | undefined;
}

const DISCOVER: ReadKind<Agent> = {
  op: "discover",
  encode: (agents) => toBinary(DiscoverResponseSchema, create(DiscoverResponseSchema, { agents })),
  decode: (bytes) => fromBinary(DiscoverResponseSchema, bytes).agents,
  malformed: (a) =>
    !a.id || a.id.length > 128
      ? "an agent without an id (or one over 128 characters)"
      : !a.name || a.name.length > 256
        ? `agent "${a.id.slice(0, 64)}" has no name (or one over 256 characters)`
        : a.capabilities.some((c) => !c.name)
          ? `agent "${a.id.slice(0, 64)}" has a capability without a name`
          : undefined,
};

const SEARCH: ReadKind<ToolEntry> = {
  op: "search",
  encode: (tools) => toBinary(SearchToolsResponseSchema, create(SearchToolsResponseSchema, { tools })),
  decode: (bytes) => fromBinary(SearchToolsResponseSchema, bytes).tools,
  malformed: (t) =>
    !t.toolId || t.toolId.length > 128
      ? "a tool entry without a tool_id (or one over 128 characters)"
      : !t.name || t.name.length > 128
        ? `tool entry "${t.toolId.slice(0, 64)}" has no name (or one over 128 characters)`
        : undefined,
};

const CACHE_OFF: RemoteCacheOptions = { maxBytes: 1, ttlMs: 0, staleMs: 0, hot: 0 };

/** What a federated read needs of its call: the caller's cancellation and deadline. */
export interface CallBudget {
  readonly signal?: AbortSignal;
  /** What is left of the caller's own deadline, when it set one. */
  readonly timeoutMs?: number;
}

/** Kept back from the caller's deadline so the merged answer still reaches it. */
const DEADLINE_MARGIN_MS = 20;
/** AddPeer waits this long for a check at most. */
const CHECK_TIMEOUT_MS = 10_000;

/**
 * The hook the Directory reads through: the remote half of a federated
 * Discover or SearchTools. `noFederation` is the null object (no peers).
 */
export interface FederatedReads {
  readonly instanceId: string;
  /** How many remote results to ask for (0: do not ask), from the scope and what was found here. */
  remoteWanted(scope: FederationScope, localCount: number, limit: number, hop: HopState): number;
  discover(tenant: string, q: RemoteDiscover, hop: HopState, budget: CallBudget): Promise<Agent[]>;
  searchTools(tenant: string, q: RemoteSearch, hop: HopState, budget: CallBudget): Promise<ToolEntry[]>;
}

export const noFederation: FederatedReads = {
  instanceId: "",
  remoteWanted: () => 0,
  discover: async () => [],
  searchTools: async () => [],
};

/**
 * The peers, held in memory by this process (a single replica: each
 * replica keeps its own list, seeded from FEDERATION_PEERS), and the
 * federate-on-demand reads: the permitted, trusted, not isolated peers are
 * asked in parallel under one deadline; answers that arrive in time are
 * merged by peer reputation (higher first), each result stamped with its
 * origin; the rest are cancelled and count as failures in their breakers.
 */
export class Federation implements FederatedReads {
  private readonly peers = new Map<string, RemotePeer>();
  private timer: NodeJS.Timeout | undefined;
  readonly cache: RemoteCache;
  private readonly problems = new Map<PeerProblem, number>();
  private readonly listener: PeerChangeListener = {
    changed: (peer, kind, problem, reason) => {
      if (this.peers.get(peer.spec.id) !== peer) return;
      this.log.info({ peer: peer.spec.id, change: kind, problem: PeerProblem[problem], reason }, `peer ${kind}`);
      this.announce(`federation.peer_${kind}`, peer, problem, reason);
    },
    counted: (problem) => void this.problems.set(problem, (this.problems.get(problem) ?? 0) + 1),
  };

  constructor(
    private readonly opts: FederationOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** Where federation.peer_* events go (none: not announced). */
    private readonly bus?: Pick<EventBus, "publish">,
  ) {
    this.cache = new RemoteCache(opts.cache ?? CACHE_OFF, clock, log.child({ component: "federation-cache" }), (id) =>
      this.peers.get(id)?.reputation() ?? 0,
    );
  }

  stats(): FederationStats {
    return { cache: this.cache.snapshot(), problems: this.problems };
  }

  get instanceId(): string {
    return this.opts.instanceId;
  }

  /** Seeded peers start PENDING and are checked in the background (a peer that is down must not stop start-up). */
  seed(specs: readonly PeerSpec[]): void {
    for (const spec of specs) {
      const peer = this.make(spec);
      this.replace(peer);
      this.announce("federation.peer_added", peer, PeerProblem.UNSPECIFIED, "seeded from FEDERATION_PEERS");
      void this.check(peer);
    }
  }

  /** Starts the periodic signature checks (unref'd). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      for (const peer of this.peers.values()) void this.check(peer);
    }, this.opts.verifyIntervalMs);
    this.timer.unref();
    this.cache.start().catch((err: Error) => this.log.warn({ err: err.message }, "the shared federation cache did not start"));
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    void this.cache.stop();
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
  }

  /**
   * Adds (or replaces) a peer once it checks out: a Federation Core's
   * manifest signature must verify against its JWKS; an MCP registry must
   * answer the registry API.
   */
  async add(spec: PeerSpec): Promise<Peer> {
    const peer = this.make(spec);
    try {
      peer.trusted(await peer.client.verify(AbortSignal.timeout(CHECK_TIMEOUT_MS)));
    } catch (err) {
      peer.close();
      const reason = err instanceof Error ? err.message : String(err);
      this.log.warn({ peer: spec.id, url: spec.url, reason }, "peer refused");
      if (err instanceof PeerCheckFailed && err.kind === "untrusted") throw errors.peerUntrusted(spec.id, reason);
      throw errors.peerUnreachable(spec.id, reason);
    }
    this.replace(peer);
    this.log.info({ peer: spec.id, url: spec.url, kind: spec.kind, instance: peer.instanceId }, "peer added");
    this.announce("federation.peer_added", peer, PeerProblem.UNSPECIFIED, "added through AddPeer");
    return peer.view();
  }

  remove(id: string): void {
    const peer = this.peers.get(id);
    if (!peer) throw errors.peerNotFound(id);
    this.peers.delete(id);
    this.announce("federation.peer_removed", peer, PeerProblem.UNSPECIFIED, "removed through RemovePeer");
    peer.close();
    this.cache.forgetPeer(id);
    this.log.info({ peer: id }, "peer removed");
  }

  list(): Peer[] {
    return [...this.peers.values()].sort((a, b) => (a.spec.id < b.spec.id ? -1 : 1)).map((p) => p.view());
  }

  remoteWanted(scope: FederationScope, localCount: number, limit: number, hop: HopState): number {
    if (scope !== FederationScope.FEDERATED && scope !== FederationScope.AUTO) return 0;
    if (this.peers.size === 0 || hop.hops >= this.opts.maxHops || hop.visited.includes(this.opts.instanceId)) return 0;
    if (scope === FederationScope.AUTO) return Math.max(0, limit - localCount);
    return limit;
  }

  async discover(tenant: string, q: RemoteDiscover, hop: HopState, budget: CallBudget): Promise<Agent[]> {
    return this.fanOut(tenant, hop, budget, q.limit, DISCOVER, q, (peer, call) => peer.client.discover(q, call), (agent, peer) => {
      agent.origin = create(OriginSchema, { peerId: peer.spec.id, peerUrl: peer.spec.url, remoteId: agent.origin?.remoteId || agent.id });
      // The peer's tenant is the one its token names for us: meaningless here.
      agent.tenant = "";
      return agent;
    });
  }

  async searchTools(tenant: string, q: RemoteSearch, hop: HopState, budget: CallBudget): Promise<ToolEntry[]> {
    return this.fanOut(tenant, hop, budget, q.limit, SEARCH, q, (peer, call) => peer.client.searchTools(q, call), (entry, peer) => {
      entry.origin = create(OriginSchema, { peerId: peer.spec.id, peerUrl: peer.spec.url, remoteId: entry.origin?.remoteId || entry.toolId });
      return entry;
    });
  }

  private async fanOut<T extends Message>(
    tenant: string,
    hop: HopState,
    budget: CallBudget,
    want: number,
    kind: ReadKind<T>,
    query: RemoteDiscover | RemoteSearch,
    ask: (peer: RemotePeer, call: PeerCall) => Promise<T[]>,
    stamp: (item: T, peer: RemotePeer) => T,
  ): Promise<T[]> {
    // The peer that asked (and every federation before it) is never asked back.
    const peers = [...this.peers.values()].filter(
      (p) => p.askable && permits(p.spec, tenant) && !(p.instanceId !== "" && hop.visited.includes(p.instanceId)),
    );
    if (peers.length === 0 || want <= 0) return [];
    const hopHeaders = nextHop(hop, this.opts.instanceId);
    const keys = this.cache.enabled ? peers.map((peer) => cacheKey(peer, kind.op, query, hopHeaders)) : undefined;
    const held = keys?.map((key) => this.cache.fresh<T>(key));
    // Every peer answered from memory: no deadline, no timer, no request.
    if (held?.every((items) => items !== undefined)) {
      return this.merge(peers.map((peer, i) => ({ peer, items: held[i]!.slice(0, want) })), want);
    }
    const timeoutMs = Math.floor(Math.min(this.opts.timeoutMs, (budget.timeoutMs ?? Infinity) - DEADLINE_MARGIN_MS));
    if (timeoutMs <= 0) return [];
    const controller = new AbortController();
    const onCallerAbort = () => controller.abort(budget.signal?.reason);
    budget.signal?.addEventListener("abort", onCallerAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        controller.abort(new Error(`no answer within the federation deadline (${timeoutMs} ms)`));
        resolve();
      }, timeoutMs);
      timer.unref();
    });
    const call: PeerCall = { signal: controller.signal, timeoutMs, hopHeaders };
    const answers: { peer: RemotePeer; items: T[] }[] = [];
    const calls = peers.map((peer, i) =>
      (held?.[i] ? Promise.resolve(held[i]) : this.answerOf(peer, kind, keys?.[i], want, hopHeaders, call, ask, stamp)).then(
        (items) => void answers.push({ peer, items: items.slice(0, want) }),
        (err: unknown) => {
          // A noisy answer counted against the peer; what of it may be shown still is.
          if (err instanceof NoisyAnswer && err.usable.length > 0) {
            answers.push({ peer, items: (err.usable as T[]).slice(0, want).map((item) => stamp(item, peer)) });
          }
          this.log.debug({ peer: peer.spec.id, err: (err as Error).message }, "peer did not answer soundly");
        },
      ),
    );
    try {
      // Whatever has arrived by the deadline; a peer that is still silent is cut off (and counts as failed).
      await Promise.race([Promise.all(calls), deadline]);
    } finally {
      clearTimeout(timer);
      budget.signal?.removeEventListener("abort", onCallerAbort);
      if (!controller.signal.aborted) controller.abort();
    }
    return this.merge(answers, want);
  }

  /** Local results come first (the caller's side); remote ones by their peer's reputation, `want` at most. */
  private merge<T>(answers: readonly { peer: RemotePeer; items: readonly T[] }[], want: number): T[] {
    const ranked = answers
      .map((a) => ({ ...a, reputation: a.peer.reputation() }))
      .sort((a, b) => b.reputation - a.reputation || (a.peer.spec.id < b.peer.spec.id ? -1 : 1));
    const out: T[] = [];
    for (const a of ranked) {
      for (const item of a.items) {
        if (out.length >= want) return out;
        out.push(item);
      }
    }
    return out;
  }

  /**
   * One peer's answer: from the cache when it holds one (fresh, or stale and
   * refreshed in the background), else asked through its breaker and
   * checked; only sound answers are cached.
   */
  private answerOf<T extends Message>(
    peer: RemotePeer,
    kind: ReadKind<T>,
    key: string | undefined,
    want: number,
    hopHeaders: Record<string, string>,
    call: PeerCall,
    ask: (peer: RemotePeer, call: PeerCall) => Promise<T[]>,
    stamp: (item: T, peer: RemotePeer) => T,
  ): Promise<readonly T[]> {
    const fetch = (c: PeerCall): Promise<T[]> =>
      peer.call(async () => {
        const started = this.clock.now();
        const items = await ask(peer, c);
        return this.judge(kind, items, want, this.clock.now() - started);
      });
    if (key === undefined) return fetch(call).then((items) => items.map((item) => stamp(item, peer)));
    let loaded: T[] | undefined;
    return this.cache
      .read(
        key,
        peer.spec.id,
        async () => kind.encode((loaded = await fetch(call))),
        async () => {
          // Outside any caller's request: the peer as it is now, under the federation's own deadline.
          if (this.peers.get(peer.spec.id) !== peer || !peer.askable) throw new Error(`peer "${peer.spec.id}" is not asked now`);
          const timeoutMs = this.opts.timeoutMs;
          return kind.encode(await fetch({ signal: AbortSignal.timeout(timeoutMs), timeoutMs, hopHeaders }));
        },
        // Decoded and stamped once per entry, then shared by every answer that holds it: never mutated again.
        (bytes) => (loaded ?? kind.decode(bytes)).map((item) => markImmutable(stamp(item, peer))),
      );
  }

  /** Throws NoisyAnswer for an answer that counts against its peer: too many results, malformed records, too slow. */
  private judge<T>(kind: ReadKind<T>, items: T[], want: number, ms: number): T[] {
    if (items.length > want) {
      throw new NoisyAnswer(PeerProblem.TOO_MANY_RESULTS, `answered ${items.length} results to a limit of ${want}`);
    }
    let reason: string | undefined;
    const sound = items.filter((item) => {
      const why = kind.malformed(item);
      reason ??= why;
      return why === undefined;
    });
    if (reason !== undefined) {
      throw new NoisyAnswer(PeerProblem.MALFORMED, `${items.length - sound.length} malformed record(s): ${reason}`, sound);
    }
    const slowMs = this.opts.slowAnswerMs ?? Infinity;
    if (ms > slowMs) throw new NoisyAnswer(PeerProblem.SLOW, `answered in ${Math.round(ms)} ms, slower than ${slowMs} ms`, items);
    return items;
  }

  private announce(type: EventType, peer: RemotePeer, problem: PeerProblem, reason: string): void {
    if (!this.bus) return;
    this.bus
      .publish({
        type,
        tenant: this.opts.eventTenant ?? "default",
        agentId: "",
        payload: {
          case: "peerChange",
          value: {
            peerId: peer.spec.id,
            url: peer.spec.url,
            kind: peer.spec.kind,
            breaker: peer.breakerState,
            reputation: peer.reputation(),
            problem,
            reason: reason.slice(0, 512),
          },
        },
      })
      .catch((err: Error) => this.log.warn({ err: err.message, type }, "a federation event was not published"));
  }

  private make(spec: PeerSpec): RemotePeer {
    const client: PeerClient =
      spec.kind === "mcp-registry"
        ? new McpRegistryClient(spec, this.log.child({ peer: spec.id }), this.opts.maxAnswerBytes)
        : new CorePeerClient(spec, this.opts.maxAnswerBytes);
    return new RemotePeer(spec, client, this.clock, this.opts.breakers, this.listener);
  }

  private replace(peer: RemotePeer): void {
    const old = this.peers.get(peer.spec.id);
    this.peers.set(peer.spec.id, peer);
    if (old && old !== peer) old.close();
  }

  /** A periodic (or first) check: a signature that stops verifying makes the peer UNTRUSTED; a peer that cannot be reached keeps its state. */
  private async check(peer: RemotePeer): Promise<void> {
    try {
      const identity = await peer.client.verify(AbortSignal.timeout(CHECK_TIMEOUT_MS));
      if (this.peers.get(peer.spec.id) !== peer) return;
      const wasUntrusted = peer.status === PeerStatus.UNTRUSTED;
      peer.trusted(identity);
      if (wasUntrusted) this.listener.changed(peer, "recovered", PeerProblem.UNSPECIFIED, "its manifest verifies again");
    } catch (err) {
      const reason = (err as Error).message;
      if (err instanceof PeerCheckFailed && err.kind === "untrusted") {
        // An unsigned manifest or a bad signature counts against the peer, in its breaker too.
        peer.countFailure(err.problem, reason);
        peer.distrusted(reason);
        this.log.warn({ peer: peer.spec.id, reason }, "peer distrusted: its manifest no longer verifies");
      } else {
        peer.lastError = reason;
        this.log.info({ peer: peer.spec.id, reason }, "peer check failed");
      }
    }
  }
}

/**
 * The cache key of one question to one peer: the peer (id, URL, and a hash
 * of the token, whose tenant the peer answers as), the read, its query and
 * the hop headers (a peer may federate further), hashed — the same on
 * every replica, so a shared cache lines up.
 */
function cacheKey(peer: RemotePeer, op: string, query: RemoteDiscover | RemoteSearch, hop: Record<string, string>): string {
  return createHash("sha256")
    .update(JSON.stringify([op, peer.spec.id, peer.spec.url, peer.tokenHash, query, hop]))
    .digest("base64url");
}
