import { create } from "@bufbuild/protobuf";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";
import type { ToolEntry } from "../../gen/federation/v1/directory_service_pb.js";
import type { Peer } from "../../gen/federation/v1/federation_service_pb.js";
import { FederationScope, OriginSchema } from "../../gen/federation/v1/origin_pb.js";
import type { Clock } from "../clock.js";
import { errors } from "../errors.js";
import type { Logger } from "../logger.js";
import { CorePeerClient } from "./core-peer-client.js";
import { nextHop, type HopState } from "./hop-headers.js";
import { McpRegistryClient } from "./mcp-registry-client.js";
import { PeerCheckFailed, type PeerCall, type PeerClient, type RemoteDiscover, type RemoteSearch } from "./peer-client.js";
import { permits, type PeerSpec } from "./peer-spec.js";
import { RemotePeer, type PeerBreakerOptions } from "./remote-peer.js";

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
}

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

  constructor(
    private readonly opts: FederationOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  get instanceId(): string {
    return this.opts.instanceId;
  }

  /** Seeded peers start PENDING and are checked in the background (a peer that is down must not stop start-up). */
  seed(specs: readonly PeerSpec[]): void {
    for (const spec of specs) {
      const peer = this.make(spec);
      this.replace(peer);
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
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
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
    return peer.view();
  }

  remove(id: string): void {
    const peer = this.peers.get(id);
    if (!peer) throw errors.peerNotFound(id);
    this.peers.delete(id);
    peer.close();
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
    return this.fanOut(tenant, hop, budget, q.limit, (peer, call) => peer.client.discover(q, call), (agent, peer) => {
      agent.origin = create(OriginSchema, { peerId: peer.spec.id, peerUrl: peer.spec.url, remoteId: agent.origin?.remoteId || agent.id });
      // The peer's tenant is the one its token names for us: meaningless here.
      agent.tenant = "";
      return agent;
    });
  }

  async searchTools(tenant: string, q: RemoteSearch, hop: HopState, budget: CallBudget): Promise<ToolEntry[]> {
    return this.fanOut(tenant, hop, budget, q.limit, (peer, call) => peer.client.searchTools(q, call), (entry, peer) => {
      entry.origin = create(OriginSchema, { peerId: peer.spec.id, peerUrl: peer.spec.url, remoteId: entry.origin?.remoteId || entry.toolId });
      return entry;
    });
  }

  private async fanOut<T>(
    tenant: string,
    hop: HopState,
    budget: CallBudget,
    want: number,
    ask: (peer: RemotePeer, call: PeerCall) => Promise<T[]>,
    stamp: (item: T, peer: RemotePeer) => T,
  ): Promise<T[]> {
    // The peer that asked (and every federation before it) is never asked back.
    const peers = [...this.peers.values()].filter(
      (p) => p.askable && permits(p.spec, tenant) && !(p.instanceId !== "" && hop.visited.includes(p.instanceId)),
    );
    if (peers.length === 0 || want <= 0) return [];
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
    const call: PeerCall = { signal: controller.signal, timeoutMs, hopHeaders: nextHop(hop, this.opts.instanceId) };
    const answers: { peer: RemotePeer; items: T[] }[] = [];
    const calls = peers.map((peer) =>
      peer.call(() => ask(peer, call)).then(
        (items) => void answers.push({ peer, items: items.slice(0, want) }),
        (err: unknown) => this.log.debug({ peer: peer.spec.id, err: (err as Error).message }, "peer did not answer"),
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
    // Local results come first (the caller's side); remote ones by their peer's reputation.
    const ranked = answers
      .map((a) => ({ ...a, reputation: a.peer.reputation() }))
      .sort((a, b) => b.reputation - a.reputation || (a.peer.spec.id < b.peer.spec.id ? -1 : 1));
    const out: T[] = [];
    for (const a of ranked) {
      for (const item of a.items) {
        if (out.length >= want) return out;
        out.push(stamp(item, a.peer));
      }
    }
    return out;
  }

  private make(spec: PeerSpec): RemotePeer {
    const client: PeerClient =
      spec.kind === "mcp-registry" ? new McpRegistryClient(spec, this.log.child({ peer: spec.id })) : new CorePeerClient(spec);
    return new RemotePeer(spec, client, this.clock, this.opts.breakers);
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
      if (this.peers.get(peer.spec.id) === peer) peer.trusted(identity);
    } catch (err) {
      const reason = (err as Error).message;
      if (err instanceof PeerCheckFailed && err.kind === "untrusted") {
        peer.distrusted(reason);
        this.log.warn({ peer: peer.spec.id, reason }, "peer distrusted: its manifest no longer verifies");
      } else {
        peer.lastError = reason;
        this.log.info({ peer: peer.spec.id, reason }, "peer check failed");
      }
    }
  }
}
