import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  GetTaskResponseSchema,
  ReportOutcomeResponseSchema,
  RouterService,
  type RouteCandidate,
  type RouteResponse,
  type ScoreBreakdown,
} from "../../../gen/federation/v1/router_service_pb.js";
import type { TaskAttempt } from "../../../gen/federation/v1/task_pb.js";
import type { Dispatcher } from "../../dispatch/dispatcher.js";
import { traceKey } from "../trace-context.js";
import type { AttemptRecord } from "../../dispatch/task-store.js";
import { toAgentMessage } from "../../registry/agent-message.js";
import type { Breakdown, Candidate, RouteDecision, Router } from "../../router/router.js";
import { markImmutable } from "../../message-hints.js";
import { principalKey } from "../../security/principal.js";
import { parseGetTask, parseReportOutcome, parseRoute, parseScope, type RouteInput } from "../../validation/requests.js";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { FederationScope } from "../../../gen/federation/v1/origin_pb.js";
import type { CallBudget } from "../../federation/federation.js";
import { TICKET_HEADER, hopsOf, type HopState } from "../../federation/hop-headers.js";

/** One request header, from the raw headers when the transport kept them (as hopsOf reads them). */
function headerOf(ctx: HandlerContext, name: string): string | null {
  return ((ctx as { readonly rawHeader?: Pick<Headers, "get"> }).rawHeader ?? ctx.requestHeader).get(name);
}
import { remoteAgentMessage } from "../../federation/remote-agents.js";
import type { AgentRecord } from "../../registry/agent-record.js";

function attemptMessages(attempts: readonly AttemptRecord[]): TaskAttempt[] {
  return attempts.map((a) => ({
    $typeName: "federation.v1.TaskAttempt",
    attempt: a.attempt,
    agentId: a.agentId,
    outcome: a.outcome,
    latency: durationFromMs(Math.round(a.latencyMs)),
    detail: a.detail,
  }));
}

function breakdownMessage(b: Breakdown | undefined): ScoreBreakdown | undefined {
  if (!b) return undefined;
  // Written out as the message itself (every field, as create makes it): create's walk over an init object cost more than the fields.
  return {
    $typeName: "federation.v1.ScoreBreakdown",
    capacity: b.capacity,
    quality: b.quality,
    latency: b.latency,
    uptime: b.uptime,
    circuit: b.circuit,
    circuitState: b.circuitState,
    latencyEwmaMs: b.latencyEwmaMs,
    latencyP95Ms: b.latencyP95Ms,
    latencyP99Ms: b.latencyP99Ms,
    evidence: b.evidence,
    labels: b.labels,
    locality: b.locality,
    context: b.context,
    overMaxLatency: b.overMaxLatency,
  };
}

/** Candidates' messages kept (one per agent, the latest). */
const MAX_KEPT_CANDIDATES = 4096;

/**
 * RouteCandidate messages, one per agent, reused while its score and
 * breakdown stay the same: a reused message is immutable (message-hints.ts),
 * so the transport writes its cached encoding instead of encoding ten
 * candidates of fourteen factors again for every Route (a tenth of a
 * Route's CPU). Scores move with load, lease freshness (in steps of 1e-4)
 * and outcomes; between those the same agents are shown with the same
 * figures. Compared field by field: a changed one builds a new message.
 */
export class CandidateMessages {
  private readonly byAgent = new Map<string, RouteCandidate>();

  message(c: Candidate): RouteCandidate {
    const known = this.byAgent.get(c.agent.id);
    if (known && known.score === c.score && sameBreakdown(known.breakdown, c.breakdown)) return known;
    const m: RouteCandidate = markImmutable({
      $typeName: "federation.v1.RouteCandidate",
      agentId: c.agent.id,
      score: c.score,
      breakdown: breakdownMessage(c.breakdown),
    });
    if (known) this.byAgent.delete(c.agent.id);
    else if (this.byAgent.size >= MAX_KEPT_CANDIDATES) this.byAgent.delete(this.byAgent.keys().next().value!);
    this.byAgent.set(c.agent.id, m);
    return m;
  }

  messages(candidates: readonly Candidate[]): RouteCandidate[] {
    const out: RouteCandidate[] = new Array(candidates.length);
    for (let i = 0; i < candidates.length; i++) out[i] = this.message(candidates[i]!);
    return out;
  }
}

function sameBreakdown(m: ScoreBreakdown | undefined, b: Breakdown | undefined): boolean {
  if (!m || !b) return m === undefined && b === undefined;
  return (
    m.capacity === b.capacity &&
    m.quality === b.quality &&
    m.latency === b.latency &&
    m.uptime === b.uptime &&
    m.circuit === b.circuit &&
    m.circuitState === b.circuitState &&
    m.latencyEwmaMs === b.latencyEwmaMs &&
    m.latencyP95Ms === b.latencyP95Ms &&
    m.latencyP99Ms === b.latencyP99Ms &&
    m.evidence === b.evidence &&
    m.labels === b.labels &&
    m.locality === b.locality &&
    m.context === b.context &&
    m.overMaxLatency === b.overMaxLatency
  );
}

/** What Route needs of the federation: its remote candidates (federation.ts). */
export interface RemoteCandidates {
  remoteWanted(scope: FederationScope, localCount: number, limit: number, hop: HopState): number;
  routeCandidates(tenant: string, capabilities: readonly string[], hop: HopState, budget: CallBudget): Promise<readonly AgentRecord[]>;
  /** Checks a forwarded Route's ticket (x-federation-ticket) in the background: logged and counted, never refused (federation.ts). */
  checkTicket?(hop: HopState, ticket: string, taskId: string, capabilities: readonly string[]): Promise<void>;
}

const noRemoteCandidates: RemoteCandidates = { remoteWanted: () => 0, routeCandidates: async () => [] };

export function routerService(router: Router, dispatcher: Dispatcher, federation: RemoteCandidates = noRemoteCandidates): ServiceImpl<typeof RouterService> {
  const candidates = new CandidateMessages();
  /**
   * The decision for a scope: LOCAL reads no header and asks nobody; FEDERATED
   * adds the peers' agents to the local ones; AUTO asks the peers only when
   * no local agent can serve. The peers are asked under the federation's
   * deadline (cut to the call's), which leaves the rest to dispatch.
   */
  async function decide(input: RouteInput, scope: FederationScope, tenant: string, ctx: HandlerContext): Promise<RouteDecision> {
    if (scope === FederationScope.LOCAL) return router.route(input, tenant);
    const hop = hopsOf(ctx);
    if (federation.remoteWanted(scope, 0, 1, hop) === 0) return router.route(input, tenant);
    const remote = () => federation.routeCandidates(tenant, input.capabilities, hop, { signal: ctx.signal, timeoutMs: ctx.timeoutMs() });
    if (scope === FederationScope.FEDERATED) return router.route(input, tenant, await remote());
    // AUTO: the local agents are read once; the peers are asked only when none of them can serve.
    return router.route(input, tenant, remote);
  }

  return {
    async route(req, ctx) {
      const input = parseRoute(req);
      const scope = req.scope === FederationScope.UNSPECIFIED ? FederationScope.LOCAL : parseScope(req.scope);
      const tenant = ctx.values.get(principalKey).tenant;
      // A Route another federation forwarded (cross-federation dispatch) carries its ticket: checked alongside, not awaited.
      const ticket = input.dispatch || input.dispatchAsync ? headerOf(ctx, TICKET_HEADER) : null;
      if (ticket && federation.checkTicket) void federation.checkTicket(hopsOf(ctx), ticket.slice(0, 8192), req.taskId, input.capabilities);
      const d = await decide(input, scope, tenant, ctx);
      const trace = ctx.values.get(traceKey)?.trace;
      // A remote pick's dispatch carries the hop headers on to its home federation.
      const hop = scope === FederationScope.LOCAL ? undefined : hopsOf(ctx);
      const t = input.dispatchAsync
        ? await dispatcher.start(d, input, tenant, trace, hop)
        : input.dispatch
          ? await dispatcher.dispatch(d, input, tenant, { signal: ctx.signal, timeoutMs: ctx.timeoutMs(), trace, hop })
          : await dispatcher.routed(d, input, tenant);
      // The message itself, not an init object for create (whose walk over ten candidates cost as much as encoding them).
      const answer: RouteResponse = {
        $typeName: "federation.v1.RouteResponse",
        agent: remoteAgentMessage(t.agent) ?? toAgentMessage(t.agent),
        candidates: candidates.messages(d.candidates),
        reason: d.reason,
        routeId: d.routeId,
        taskId: t.taskId,
        ticket: t.ticket,
        attempts: t.attempts.length === 0 ? [] : attemptMessages(t.attempts),
        result: t.result,
      };
      return answer;
    },

    async reportOutcome(req, ctx) {
      const o = parseReportOutcome(req);
      const b = await router.reportOutcome(ctx.values.get(principalKey).tenant, o);
      return create(ReportOutcomeResponseSchema, { breakdown: breakdownMessage(b) });
    },

    async getTask(req, ctx) {
      const t = await dispatcher.task(ctx.values.get(principalKey).tenant, parseGetTask(req));
      return create(GetTaskResponseSchema, {
        task: {
          taskId: t.taskId,
          capabilities: [...t.capabilities],
          status: t.status,
          agentId: t.agentId,
          attempts: attemptMessages(t.attempts),
          result: t.result,
          error: t.error,
          createdAt: timestampFromMs(t.createdAt),
          finishedAt: t.finishedAt === undefined ? undefined : timestampFromMs(t.finishedAt),
        },
      });
    },
  };
}
