import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { SpanContext } from "@opentelemetry/api";
import type { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import type { PinnedTarget } from "./address-guard.js";

/** What one attempt carries to the agent. */
export interface ExecuteCall {
  readonly taskId: string;
  readonly tenant: string;
  readonly capabilities: readonly string[];
  readonly payload: JsonObject | undefined;
  readonly ticket: string;
  /** This attempt's time. */
  readonly timeoutMs: number;
  /** Aborts when the attempt's time is up or the caller gave up. */
  readonly signal: AbortSignal;
  /** An answer over this many bytes fails the attempt. */
  readonly maxResponseBytes: number;
  /** The Route call's span: the agent gets a child of it (W3C traceparent). */
  readonly trace?: SpanContext;
}

export interface ExecuteAnswer {
  readonly result: JsonObject | undefined;
  readonly bytes: number;
}

/** A transport that carries a task to an agent at a checked address. */
export type AgentClient = (target: PinnedTarget, call: ExecuteCall) => Promise<ExecuteAnswer>;

/** The attempt reached (or tried to reach) the agent and failed: the outcome says how. */
export class AttemptFailed extends Error {
  override name = "AttemptFailed";
  constructor(
    readonly outcome: AttemptOutcome,
    message: string,
  ) {
    super(message);
  }
}

/** The caller gave up (or the server is stopping): the task stops, no failover. */
export function cancelled(signal: AbortSignal): ConnectError {
  return signal.reason instanceof ConnectError ? signal.reason : new ConnectError("the caller cancelled the task", Code.Canceled);
}

/** The attempt's own time ran out (rather than the caller giving up). */
export const timedOut = (signal: AbortSignal): boolean => (signal.reason as Error | undefined)?.name === "TimeoutError";
