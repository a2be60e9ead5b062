import { Code, ConnectError } from "@connectrpc/connect";
import type { HistoryGap } from "./events/event-bus.js";

/**
 * The error catalogue. Domain code throws ConnectError through these helpers,
 * so every transport maps one code to its own status (see
 * transport/rest/http-status.ts) and messages read the same everywhere.
 */
export const errors = {
  /** Bad input; the message starts with the field path. */
  invalidArgument: (field: string, reason: string) =>
    new ConnectError(`${field}: ${reason}`, Code.InvalidArgument),
  /** Also the answer for another tenant's agent: existence is not revealed. */
  agentNotFound: (id: string) =>
    new ConnectError(`agent "${id}" not found; register again`, Code.NotFound),
  noAgentOffers: (capability: string) =>
    new ConnectError(`no registered agent offers capability "${capability}"`, Code.FailedPrecondition),
  noHealthyAgent: (capabilities: readonly string[], registered: number) =>
    new ConnectError(
      `no healthy agent can take capabilities [${capabilities.join(", ")}] now ` +
        `(${registered} capable agent(s) registered, none healthy or all excluded)`,
      Code.Unavailable,
    ),
  /** The one slow-subscriber rule, on every protocol: too many bytes unsent. */
  subscriberTooSlow: (unsentBytes: number, limitBytes: number) =>
    new ConnectError(
      `subscriber too slow: ${unsentBytes} bytes unsent, over the ${limitBytes}-byte bound (SUBSCRIBER_BUFFER_BYTES); resume with after_id`,
      Code.ResourceExhausted,
    ),
  /**
   * A resume (`after_id`) whose events are not all held any more (trimmed
   * past EVENT_RETENTION, a bus that restarted empty, an id the bus never
   * issued): OUT_OF_RANGE, as etcd answers a watch from a compacted
   * revision — the request's position is outside what can be served and
   * retrying it cannot help; the client re-reads state and watches anew.
   * A replay that could not be read loses nothing known: UNAVAILABLE, retry
   * as is. The instruction comes first: /ws close reasons are cut at 123 bytes.
   */
  eventHistoryGap: (gap: HistoryGap) =>
    gap.reason === "unreadable"
      ? new ConnectError(`after_id ${gap.afterId}: event replay failed, retry with the same after_id (${gap.detail})`, Code.Unavailable)
      : new ConnectError(
          `after_id ${gap.afterId} cannot be resumed: re-read state, then watch without after_id (${gap.detail})`,
          Code.OutOfRange,
        ),
  /** Another writer kept winning the compare-and-set; the client may retry. */
  conflict: (id: string) =>
    new ConnectError(`agent "${id}" was changed concurrently; retry`, Code.Aborted),
  /** A manifest page token of a catalog version that is no longer current. */
  manifestChanged: () =>
    new ConnectError("page_token: the manifest changed since the first page; read it again from the first page", Code.Aborted),
  unauthenticated: (reason: string) =>
    new ConnectError(reason, Code.Unauthenticated, {
      "www-authenticate": `Bearer realm="federation-core", error="invalid_token"`,
    }),
  permissionDenied: (reason: string) => new ConnectError(reason, Code.PermissionDenied),
  rateLimited: (retryAfterSec: number, what: string) =>
    new ConnectError(`${what} rate limit exceeded; retry in ${retryAfterSec}s`, Code.ResourceExhausted, {
      "retry-after": String(retryAfterSec),
    }),
  toolNotFound: (id: string) => new ConnectError(`tool ${id} not found`, Code.NotFound),
  catalogLoading: () => new ConnectError("tool catalog is loading from the store; retry shortly", Code.Unavailable),
  shuttingDown: () => new ConnectError("server is shutting down", Code.Unavailable),
  /** Dispatch: every candidate was refused before anything was sent (the SSRF guard, a redirect, the transport). */
  dispatchRefused: (taskId: string, rules: string) =>
    new ConnectError(`task ${taskId}: ${rules}`, Code.FailedPrecondition),
  /** Dispatch: the deadline passed before an agent answered. */
  dispatchDeadline: (taskId: string, budgetMs: number, what: string) =>
    new ConnectError(`task ${taskId}: no result within the ${budgetMs}ms dispatch deadline (${what})`, Code.DeadlineExceeded),
  /** Dispatch: every attempt failed. */
  dispatchFailed: (taskId: string, what: string) => new ConnectError(`task ${taskId}: every attempt failed (${what})`, Code.Unavailable),
  taskNotFound: (taskId: string) =>
    new ConnectError(`task "${taskId}" not found (unknown, expired from TASK_RETENTION, or routed by another replica)`, Code.NotFound),
  /** AddPeer: the peer answered, but what it says cannot be believed. */
  peerUntrusted: (peerId: string, reason: string) => new ConnectError(`peer "${peerId}" refused: ${reason}`, Code.FailedPrecondition),
  /** AddPeer: no usable answer from the peer. */
  peerUnreachable: (peerId: string, reason: string) => new ConnectError(`peer "${peerId}" could not be checked: ${reason}`, Code.Unavailable),
  peerNotFound: (peerId: string) => new ConnectError(`peer "${peerId}" not found`, Code.NotFound),
} as const;
