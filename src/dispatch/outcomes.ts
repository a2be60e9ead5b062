import type { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";

/** One dispatch attempt as it ended. */
export interface AttemptReport {
  readonly taskId: string;
  /** The caller's tenant. */
  readonly tenant: string;
  readonly agentId: string;
  /** The agent's own tenant (another one's for a shared agent): its breaker events go there. */
  readonly agentTenant?: string;
  readonly capabilities: readonly string[];
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly outcome: AttemptOutcome;
  readonly latencyMs: number;
  /** Bytes of the agent's answer (0 when none). */
  readonly responseBytes: number;
}

/**
 * Where dispatch hands every attempt's outcome: the seam the reputation
 * engine and the circuit breakers (issue 15, items 1 and 3) plug into.
 * It must not block or throw; dispatch does not wait for it.
 */
export interface OutcomeSink {
  attemptFinished(report: AttemptReport): void;
}

/** Today's sink: nothing learns from outcomes yet. */
export const ignoreOutcomes: OutcomeSink = { attemptFinished() {} };
