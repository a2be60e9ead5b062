import type { AgentRecord } from "../registry/agent-record.js";
import type { HopState } from "../federation/hop-headers.js";
import { DispatchRefused } from "./address-guard.js";
import type { ExecuteAnswer, ExecuteCall } from "./attempt.js";

/** What a remote attempt answers: the result, and who served it where. */
export interface RelayedAnswer extends ExecuteAnswer {
  /** The home federation's agent that answered (it picks among its own), as a remote record. */
  readonly servedBy: AgentRecord;
  /** The hop, for the attempt and its task events: the peer, the remote task id and agent. */
  readonly detail: string;
}

/**
 * The seam through which dispatch carries an attempt to a remote agent (one
 * with an origin): through its home federation, never to its endpoint.
 * Throws AttemptFailed (the outcome says how), or the caller's ConnectError
 * when the caller gave up.
 */
export interface RemoteDispatch {
  execute(agent: AgentRecord, call: ExecuteCall, hop: HopState): Promise<RelayedAnswer>;
}

/** Without federation: a remote agent is never sent to. */
export const noRemoteDispatch: RemoteDispatch = {
  execute: async () => {
    throw new DispatchRefused("dispatch refused: a remote agent is dispatched through its home federation, and this process has none");
  },
};
