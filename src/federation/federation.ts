import { createHash } from "node:crypto";
import { jwtVerify, type createLocalJWKSet } from "jose";
import { ROUTE_TICKET_TYP } from "../dispatch/route-ticket.js";
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
import { Code, ConnectError } from "@connectrpc/connect";
import { RouteStrategy, type RouteResponse } from "../../gen/federation/v1/router_service_pb.js";
import { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import { DispatchRefused } from "../dispatch/address-guard.js";
import { AttemptFailed, cancelled, timedOut, type ExecuteCall } from "../dispatch/attempt.js";
import type { RelayedAnswer, RemoteDispatch } from "../dispatch/remote-dispatch.js";
import type { AgentRecord } from "../registry/agent-record.js";
import { CorePeerClient } from "./core-peer-client.js";
import { isRemoteAgent, remoteAgentRecord, type RemoteAgentRecord } from "./remote-agents.js";
import { FIRST_HOP, nextHop, type HopState } from "./hop-headers.js";
import { McpRegistryClient } from "./mcp-registry-client.js";
import {
  NoisyAnswer,
  PeerCheckFailed,
  type PeerCall,
  type PeerClient,
  type RemoteDiscover,
  type RemoteRoute,
  type RemoteSearch,
} from "./peer-client.js";
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
  /** Tickets of Routes forwarded to us (x-federation-ticket), by verdict (checkTicket). */
  readonly tickets: TicketCounts;
}

/** Forwarded Routes' tickets: verified against the asking peer's JWKS, refused by it, or not checked (the asker is not our peer). */
export interface TicketCounts {
  verified: number;
  bad: number;
  unchecked: number;
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

/** Remote candidates asked for per Route (the router shows ten). */
const ROUTE_CANDIDATES = 10;
/** A forwarded Route's dispatch budget is this much under our attempt's time, so the peer's answer still arrives. */
const RELAY_MARGIN_MS = 50;

/** How a task the home federation answered with an error went, as an attempt of ours. */
function relayedOutcome(code: Code): AttemptOutcome {
  switch (code) {
    case Code.DeadlineExceeded:
      return AttemptOutcome.TIMEOUT;
    // Not sent there: our token's scope, the tenant, the dispatch guard, no agent offering it.
    case Code.PermissionDenied:
    case Code.Unauthenticated:
    case Code.FailedPrecondition:
    case Code.InvalidArgument:
      return AttemptOutcome.REFUSED;
    default:
      return AttemptOutcome.ERROR;
  }
}

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
export class Federation implements FederatedReads, RemoteDispatch {
  private readonly peers = new Map<string, RemotePeer>();
  private timer: NodeJS.Timeout | undefined;
  readonly cache: RemoteCache;
  private readonly problems = new Map<PeerProblem, number>();
  private readonly questions = new QuestionKeys();
  /** The hop headers of a client's call (FIRST_HOP), made once. */
  private firstHop: Record<string, string> | undefined;
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
    return { cache: this.cache.snapshot(), problems: this.problems, tickets: { ...this.tickets } };
  }

  private readonly tickets: TicketCounts = { verified: 0, bad: 0, unchecked: 0 };

  /**
   * Checks the ticket (x-federation-ticket) of a Route another federation
   * forwarded to us (cross-federation dispatch), in the background: when
   * the asking federation (the last instance in x-federation-visited) is
   * one of our trusted Federation Core peers, the ticket must verify
   * against its JWKS (read with its manifest check) as a route ticket
   * (typ fc-route-ticket+jwt, EdDSA, not expired) for this task id and
   * these capabilities. A bad one is logged (never its content), counted
   * (federation_peer_problems_total{problem="bad_signature"}) and named in
   * the peer's last_error; the Route is not refused for it (a ticket is
   * evidence of where a task came from, the token is what admits it).
   * Resolves once checked (tests wait on it; the router does not).
   */
  checkTicket(hop: HopState, ticket: string, taskId: string, capabilities: readonly string[]): Promise<void> {
    const asker = hop.visited.at(-1);
    let peer: RemotePeer | undefined;
    for (const p of this.peers.values()) if (asker !== undefined && p.instanceId === asker && p.ticketKeys) peer = p;
    if (!peer || peer.status !== PeerStatus.ACTIVE) {
      this.tickets.unchecked++;
      return Promise.resolve();
    }
    const from = peer;
    return verifyForwardedTicket(ticket, from.ticketKeys!, taskId, capabilities).then(
      () => void this.tickets.verified++,
      (err: unknown) => {
        const reason = `a forwarded Route's ticket did not verify against its JWKS: ${(err as Error).message}`.slice(0, 512);
        this.tickets.bad++;
        this.listener.counted(PeerProblem.BAD_SIGNATURE);
        from.lastError = reason;
        this.log.warn({ peer: from.spec.id, taskId: taskId.slice(0, 64), reason }, "forwarded Route with a bad ticket");
      },
    );
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
    return this.fanOut(tenant, hop, budget, q.limit, DISCOVER, q, (peer, call) => peer.client.discover(q, call), (agent, peer) => this.stampAgent(agent, peer));
  }

  private stampAgent(agent: Agent, peer: RemotePeer): Agent {
    agent.origin = create(OriginSchema, { peerId: peer.spec.id, peerUrl: peer.spec.url, remoteId: agent.origin?.remoteId || agent.id });
    // The peer's tenant is the one its token names for us: meaningless here.
    agent.tenant = "";
    return agent;
  }

  /**
   * Remote candidates for a Route (scope FEDERATED or AUTO): the agents the
   * permitted Federation Core peers offer for the capabilities — their own
   * only (asked with scope LOCAL), read like a federated Discover (same
   * deadline, breakers and cache) — as router records keyed
   * "<peer id>/<id there>" (remote-agents.ts).
   */
  async routeCandidates(tenant: string, capabilities: readonly string[], hop: HopState, budget: CallBudget): Promise<RemoteAgentRecord[]> {
    const q: RemoteDiscover = { capabilities, tags: [], statuses: [], limit: ROUTE_CANDIDATES, scope: FederationScope.LOCAL };
    const agents = await this.fanOut(
      tenant,
      hop,
      budget,
      q.limit,
      DISCOVER,
      q,
      (peer, call) => peer.client.discover(q, call),
      (agent, peer) => this.stampAgent(agent, peer),
      (peer) => peer.client.route !== undefined,
    );
    const now = this.clock.now();
    return agents.map((agent) => remoteAgentRecord(agent, tenant, now));
  }

  /**
   * One dispatch attempt to a remote agent, through its home federation: a
   * Route with dispatch forwarded to the peer (its breaker around it), with
   * our task id, our ticket (x-federation-ticket), the hop headers and the
   * attempt's time. The peer counts as having answered whenever it sent an
   * answer — the task's own failure there (no agent, the agent failed)
   * is the agent's, not the peer's; no answer, or a cut-off, is the peer's.
   */
  async execute(agent: AgentRecord, call: ExecuteCall, hop: HopState): Promise<RelayedAnswer> {
    const peerId = isRemoteAgent(agent) ? agent.origin.peerId : "";
    const peer = this.peers.get(peerId);
    if (!peer?.client.route || peer.status !== PeerStatus.ACTIVE) {
      throw new DispatchRefused(`dispatch refused: peer "${peerId}" is ${peer ? `not a trusted Federation Core (${PeerStatus[peer.status]})` : "not configured"}`);
    }
    if (hop.hops >= this.opts.maxHops || hop.visited.includes(this.opts.instanceId)) {
      throw new DispatchRefused(`dispatch refused: the request has crossed ${hop.hops} federation(s) (FEDERATION_MAX_HOPS ${this.opts.maxHops}) or visited us`);
    }
    const route = peer.client.route.bind(peer.client);
    const q: RemoteRoute = {
      capabilities: call.capabilities,
      task: call.payload,
      taskId: call.taskId,
      // The home federation answers DEADLINE_EXCEEDED itself a little before our attempt is cut off.
      timeoutMs: Math.max(1, call.timeoutMs - RELAY_MARGIN_MS),
      strategy: RouteStrategy.UNSPECIFIED,
      ticket: call.ticket,
    };
    const peerCall: PeerCall = { signal: call.signal, timeoutMs: call.timeoutMs, hopHeaders: nextHop(hop, this.opts.instanceId) };
    let answer: RouteResponse | ConnectError;
    try {
      answer = await peer.call(() =>
        route(q, peerCall).catch((err: unknown) => {
          const e = ConnectError.from(err);
          // An error the peer sent (its response headers came with it) is an answer.
          if (e.metadata.has("content-type") && !call.signal.aborted) return e;
          throw e;
        }),
      );
    } catch (err) {
      if (call.signal.aborted && !timedOut(call.signal)) throw cancelled(call.signal);
      // Our attempt's time ran out (the transport's own timer may fire first, with the same time).
      if (call.signal.aborted || (err instanceof ConnectError && err.code === Code.DeadlineExceeded)) {
        throw new AttemptFailed(AttemptOutcome.TIMEOUT, `via peer "${peerId}": no answer within the attempt's time`);
      }
      const why = err instanceof ConnectError ? err.rawMessage : (err as Error).message;
      throw new AttemptFailed(AttemptOutcome.UNREACHABLE, `via peer "${peerId}": ${why}`);
    }
    if (answer instanceof ConnectError) {
      throw new AttemptFailed(relayedOutcome(answer.code), `via peer "${peerId}": ${Code[answer.code]} ${answer.rawMessage}`.slice(0, 1024));
    }
    const bytes = answer.result ? JSON.stringify(answer.result).length : 0;
    if (bytes > call.maxResponseBytes) {
      throw new AttemptFailed(AttemptOutcome.BAD_RESPONSE, `via peer "${peerId}": a result of ${bytes} bytes, over ${call.maxResponseBytes}`);
    }
    const served = answer.agent ? this.stampAgent(answer.agent, peer) : undefined;
    const servedBy = served ? remoteAgentRecord(served, agent.tenant, this.clock.now()) : agent;
    const detail = `via peer "${peerId}"${peer.instanceId ? ` (${peer.instanceId})` : ""}: remote task ${answer.taskId}, agent ${served?.id ?? "?"}, ${answer.attempts.length} attempt(s) there`;
    return { result: answer.result, bytes, servedBy, detail };
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
    only?: (peer: RemotePeer) => boolean,
  ): Promise<T[]> {
    // The peer that asked (and every federation before it) is never asked back.
    const peers: RemotePeer[] = [];
    for (const p of this.peers.values()) {
      if (p.askable && permits(p.spec, tenant) && !(p.instanceId !== "" && hop.visited.includes(p.instanceId)) && (only === undefined || only(p))) {
        peers.push(p);
      }
    }
    if (peers.length === 0 || want <= 0) return [];
    // A client's call (no hop headers) sends the same headers every time.
    const hopHeaders = hop === FIRST_HOP ? (this.firstHop ??= nextHop(FIRST_HOP, this.opts.instanceId)) : nextHop(hop, this.opts.instanceId);
    let keys: string[] | undefined;
    let held: (readonly T[] | undefined)[] | undefined;
    if (this.cache.enabled) {
      const question = this.questions.key(kind.op, query, hopHeaders);
      keys = [];
      held = [];
      let all = true;
      for (const peer of peers) {
        const key = `${peer.cacheId}.${question}`;
        const items = this.cache.fresh<T>(key);
        keys.push(key);
        held.push(items);
        all &&= items !== undefined;
      }
      // Every peer answered from memory: no deadline, no timer, no request.
      if (all) return this.merge(peers.map((peer, i) => ({ peer, items: held![i]! })), want);
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
    // Fetched answers are encoded for the cache once this read is over (its answer merged and returned).
    let over!: () => void;
    const done = new Promise<void>((resolve) => (over = resolve));
    const calls = peers.map((peer, i) =>
      (held?.[i] ? Promise.resolve(held[i]) : this.answerOf(peer, kind, keys?.[i], want, hopHeaders, call, ask, stamp, done)).then(
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
    let allAnswered = false;
    try {
      // Whatever has arrived by the deadline; a peer that is still silent is cut off (and counts as failed).
      await Promise.race([Promise.all(calls).then(() => (allAnswered = true)), deadline]);
    } finally {
      clearTimeout(timer);
      budget.signal?.removeEventListener("abort", onCallerAbort);
      // Only calls still in flight need cutting off (an abort builds a DOMException: not for nothing).
      if (!allAnswered && !controller.signal.aborted) controller.abort();
      over();
    }
    return this.merge(answers, want);
  }

  /** Local results come first (the caller's side); remote ones by their peer's reputation, `want` at most. */
  private merge<T>(answers: { peer: RemotePeer; items: readonly T[]; reputation?: number }[], want: number): T[] {
    for (const a of answers) a.reputation = a.peer.reputation();
    const ranked = answers.sort((a, b) => b.reputation! - a.reputation! || (a.peer.spec.id < b.peer.spec.id ? -1 : 1));
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
    /** Settles when the federated read is over: the answer is encoded for the cache after it. */
    after?: Promise<void>,
  ): Promise<readonly T[]> {
    const fetch = (c: PeerCall): Promise<T[]> =>
      peer.call(async () => {
        const started = this.clock.now();
        const items = await ask(peer, c);
        return this.judge(kind, items, want, this.clock.now() - started);
      });
    if (key === undefined) return fetch(call).then((items) => items.map((item) => stamp(item, peer)));
    return this.cache
      .read(
        key,
        peer.spec.id,
        // Stamped now and shared from then on (never mutated again); encoded for the cache once the caller has its answer.
        async () => {
          const items = (await fetch(call)).map((item) => markImmutable(stamp(item, peer)));
          return { items, encode: () => kind.encode(items), after };
        },
        async () => {
          // Outside any caller's request: the peer as it is now, under the federation's own deadline.
          if (this.peers.get(peer.spec.id) !== peer || !peer.askable) throw new Error(`peer "${peer.spec.id}" is not asked now`);
          const timeoutMs = this.opts.timeoutMs;
          return kind.encode(await fetch({ signal: AbortSignal.timeout(timeoutMs), timeoutMs, hopHeaders }));
        },
        // Decoded and stamped once per entry, then shared by every answer that holds it: never mutated again.
        (bytes) => kind.decode(bytes).map((item) => markImmutable(stamp(item, peer))),
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
 * The cache key of one question to one peer is `<peer.cacheId>.<this>`:
 * the peer (id, URL, and a hash of the token, whose tenant the peer answers
 * as; hashed once per peer), then the read, its query and the hop headers
 * (a peer may federate further), hashed once per read for all its peers —
 * the same on every replica, so a shared cache lines up.
 */
class QuestionKeys {
  /** Hashes of recent questions by their JSON: a question asked again is not hashed again (bounded). */
  private readonly hashes = new Map<string, string>();

  key(op: string, query: RemoteDiscover | RemoteSearch, hop: Record<string, string>): string {
    const json = JSON.stringify([op, query, hop]);
    let hash = this.hashes.get(json);
    if (hash === undefined) {
      hash = createHash("sha256").update(json).digest("base64url");
      if (this.hashes.size >= MAX_QUESTIONS_HELD) this.hashes.delete(this.hashes.keys().next().value!);
      this.hashes.set(json, hash);
    }
    return hash;
  }
}

const MAX_QUESTIONS_HELD = 4_096;

/** A forwarded Route's ticket: a route ticket of the asking federation's (its JWKS) for this task and these capabilities. */
async function verifyForwardedTicket(
  ticket: string,
  keys: ReturnType<typeof createLocalJWKSet>,
  taskId: string,
  capabilities: readonly string[],
): Promise<void> {
  const { payload } = await jwtVerify(ticket, keys, {
    typ: ROUTE_TICKET_TYP,
    algorithms: ["EdDSA"],
    clockTolerance: 5,
  });
  if (taskId !== "" && payload.task_id !== taskId) throw new Error("it names another task");
  const named = Array.isArray(payload.capabilities) ? (payload.capabilities as unknown[]) : [];
  if (!capabilities.every((c) => named.includes(c))) throw new Error("it names other capabilities");
}
