import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetTaskResponseSchema, ReportOutcomeResponseSchema, RouteResponseSchema, RouterService, type ScoreBreakdown } from "../../../gen/federation/v1/router_service_pb.js";
import type { TaskAttempt } from "../../../gen/federation/v1/task_pb.js";
import type { Dispatcher } from "../../dispatch/dispatcher.js";
import { traceKey } from "../trace-context.js";
import type { AttemptRecord } from "../../dispatch/task-store.js";
import { toAgentMessage } from "../../registry/agent-message.js";
import type { Breakdown, Router } from "../../router/router.js";
import { principalKey } from "../../security/principal.js";
import { parseGetTask, parseReportOutcome, parseRoute } from "../../validation/requests.js";

function attemptMessages(attempts: readonly AttemptRecord[]): Omit<TaskAttempt, "$typeName" | "$unknown">[] {
  return attempts.map((a) => ({
    attempt: a.attempt,
    agentId: a.agentId,
    outcome: a.outcome,
    latency: durationFromMs(Math.round(a.latencyMs)),
    detail: a.detail,
  }));
}

function breakdownMessage(b: Breakdown | undefined): Omit<ScoreBreakdown, "$typeName" | "$unknown"> | undefined {
  if (!b) return undefined;
  return {
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

export function routerService(router: Router, dispatcher: Dispatcher): ServiceImpl<typeof RouterService> {
  return {
    async route(req, ctx) {
      const input = parseRoute(req);
      const tenant = ctx.values.get(principalKey).tenant;
      const d = await router.route(input, tenant);
      const trace = ctx.values.get(traceKey)?.trace;
      const t = input.dispatchAsync
        ? await dispatcher.start(d, input, tenant, trace)
        : input.dispatch
          ? await dispatcher.dispatch(d, input, tenant, { signal: ctx.signal, timeoutMs: ctx.timeoutMs(), trace })
          : await dispatcher.routed(d, input, tenant);
      return create(RouteResponseSchema, {
        agent: toAgentMessage(t.agent),
        candidates: d.candidates.map((c) => ({ agentId: c.agent.id, score: c.score, breakdown: breakdownMessage(c.breakdown) })),
        reason: d.reason,
        routeId: d.routeId,
        taskId: t.taskId,
        ticket: t.ticket,
        attempts: attemptMessages(t.attempts),
        result: t.result,
      });
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
