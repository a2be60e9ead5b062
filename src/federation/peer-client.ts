import type { JsonObject } from "@bufbuild/protobuf";
import type { JSONWebKeySet } from "jose";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";
import type { RouteResponse, RouteStrategy } from "../../gen/federation/v1/router_service_pb.js";
import type { ToolEntry } from "../../gen/federation/v1/directory_service_pb.js";
import type { FederationScope } from "../../gen/federation/v1/origin_pb.js";
import type { AgentStatus } from "../../gen/federation/v1/agent_pb.js";
import { PeerProblem } from "../../gen/federation/v1/event_pb.js";

/**
 * What a peer is asked, whatever it speaks. Answers are generated messages
 * as the peer gave them (ids are the peer's); the Federation stamps their
 * origin.
 */
export interface PeerClient {
  /**
   * Checks that the peer may be believed: a Federation Core's manifest
   * signature against its JWKS. Throws PeerCheckFailed.
   */
  verify(signal: AbortSignal): Promise<PeerIdentity>;
  discover(q: RemoteDiscover, call: PeerCall): Promise<Agent[]>;
  searchTools(q: RemoteSearch, call: PeerCall): Promise<ToolEntry[]>;
  /**
   * Forwards a Route with dispatch to the peer (its own agents only): only
   * a Federation Core can; an MCP registry's agents are not routed to.
   * Throws the peer's ConnectError as it came.
   */
  route?(q: RemoteRoute, call: PeerCall): Promise<RouteResponse>;
  /** Lets go of pooled connections. */
  close(): void;
}

export interface PeerIdentity {
  /** The peer's instance id ("" when it does not say). */
  readonly instanceId: string;
  /** The key that signed its manifest ("" for an MCP registry). */
  readonly keyId: string;
  /** Its JWKS as read for the check (a Federation Core): forwarded Routes' tickets are verified against it. */
  readonly jwks?: JSONWebKeySet;
}

/** One request to one peer. */
export interface PeerCall {
  readonly signal: AbortSignal;
  /** What is left of the federated read's deadline. */
  readonly timeoutMs: number;
  /** x-federation-hops and x-federation-visited for this request. */
  readonly hopHeaders: Record<string, string>;
}

export interface RemoteDiscover {
  readonly capabilities: readonly string[];
  readonly tags: readonly string[];
  readonly statuses: readonly AgentStatus[];
  readonly limit: number;
  /** Passed on, so a peer may federate further (within the hop limit). */
  readonly scope: FederationScope;
}

export interface RemoteSearch {
  readonly text: string;
  readonly capabilities: readonly string[];
  readonly tags: readonly string[];
  readonly labels: readonly string[];
  readonly healthyOnly: boolean;
  readonly limit: number;
  readonly providerPageSize: number;
  readonly scope: FederationScope;
}

/** A task forwarded to its home federation (RouterService/Route, dispatch, scope LOCAL). */
export interface RemoteRoute {
  readonly capabilities: readonly string[];
  readonly task: JsonObject | undefined;
  /** Ours: the home federation's task has the same id (its agents deduplicate on it). */
  readonly taskId: string;
  /** The dispatch budget the home federation gets (RouteRequest.timeout), a little under our own. */
  readonly timeoutMs: number;
  readonly strategy: RouteStrategy;
  /** Our route ticket for the task, sent as x-federation-ticket. */
  readonly ticket: string;
}

/**
 * A peer check that failed: `untrusted` (it answered, but what it says
 * cannot be believed — a bad signature, an unsigned manifest, not the
 * registry API) or `unreachable` (no usable answer).
 */
export class PeerCheckFailed extends Error {
  override name = "PeerCheckFailed";
  constructor(
    readonly kind: "untrusted" | "unreachable",
    message: string,
    /** What counts against the peer: an unsigned manifest or a bad signature (else a failure). */
    readonly problem: PeerProblem = kind === "untrusted" ? PeerProblem.BAD_SIGNATURE : PeerProblem.FAILED,
  ) {
    super(message);
  }
}

/**
 * An answer that counts against the peer (its breaker and reputation
 * record a failure): too many results, oversized, slow, malformed records.
 * `usable` is what may still be shown (a slow answer's results, the
 * well-formed records of a partly malformed one); it is never cached.
 */
export class NoisyAnswer<T = unknown> extends Error {
  override name = "NoisyAnswer";
  constructor(
    readonly problem: PeerProblem,
    message: string,
    readonly usable: readonly T[] = [],
  ) {
    super(message);
  }
}
