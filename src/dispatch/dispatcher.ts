import type { JsonObject } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { Transport } from "../../gen/federation/v1/agent_pb.js";
import { AttemptOutcome, TaskStatus } from "../../gen/federation/v1/task_pb.js";
import type { Clock } from "../clock.js";
import type { DispatchConfig } from "../config.js";
import { errors } from "../errors.js";
import type { EventBus, EventType } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import type { AgentRecord } from "../registry/agent-record.js";
import type { RouteDecision } from "../router/router.js";
import type { RouteInput } from "../validation/requests.js";
import { AddressGuard, DispatchRefused, systemLookup, type Lookup } from "./address-guard.js";
import { GrpcAgentClient, HttpJsonClient, type ConnectionReuse } from "./agent-clients.js";
import { AttemptFailed, type AgentClient } from "./attempt.js";
import { McpAgentClient } from "./mcp-client.js";
import { ignoreOutcomes, type OutcomeSink } from "./outcomes.js";
import type { SpanContext } from "@opentelemetry/api";
import type { RouteTickets } from "./route-ticket.js";
import { FIRST_HOP, type HopState } from "../federation/hop-headers.js";
import { isRemoteAgent } from "../federation/remote-agents.js";
import { noRemoteDispatch, type RemoteDispatch } from "./remote-dispatch.js";
import type { AttemptRecord, TaskRecord, TaskStore } from "./task-store.js";

/** What Route answers besides the decision. */
export interface TaskAnswer {
  readonly taskId: string;
  /** The ticket for the agent that answered (dispatch) or was chosen (route only). */
  readonly ticket: string;
  readonly agent: AgentRecord;
  readonly attempts: readonly AttemptRecord[];
  readonly result: JsonObject | undefined;
}

/** What a dispatch is given by its Route call. */
export interface DispatchCall {
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
  readonly async?: boolean;
  readonly trace?: SpanContext;
  /** The Route's hop headers, passed on when a remote agent's home federation is asked. */
  readonly hop?: HopState;
}

/**
 * An attempt's signal: aborts with a TimeoutError after `ms`, or with the
 * caller's reason when `caller` aborts. One controller and one timer,
 * cleared by done() — AbortSignal.any with AbortSignal.timeout cost a weak
 * reference, a finalizer and a timer per attempt that outlived it.
 */
function attemptSignal(caller: AbortSignal | undefined, ms: number): { readonly signal: AbortSignal; done(): void } {
  const c = new AbortController();
  if (caller?.aborted) {
    c.abort(caller.reason);
    return { signal: c.signal, done() {} };
  }
  const onCaller = () => c.abort(caller!.reason);
  caller?.addEventListener("abort", onCaller, { once: true });
  const timer = setTimeout(() => c.abort(new DOMException(`no answer within ${ms}ms`, "TimeoutError")), ms);
  timer.unref(); // as AbortSignal.timeout's: a pending attempt does not hold the process open
  return {
    signal: c.signal,
    done() {
      clearTimeout(timer);
      caller?.removeEventListener("abort", onCaller);
    },
  };
}

/** A task not dispatched has no attempts (shared: nobody mutates it). */
const NO_ATTEMPTS: readonly AttemptRecord[] = Object.freeze([]);

/** The port a URL without one means. */
const DEFAULT_PORT: Record<string, number> = { "http:": 80, "https:": 443, "grpc:": 80, "grpcs:": 443 };
/** Largest result (as JSON) an async task's task.completed carries; GetTask has larger ones. */
const MAX_EVENT_RESULT_BYTES = 16 * 1024;
/**
 * Connections kept per transport (keep-alive HTTP agents, HTTP/2 sessions,
 * MCP sessions), by pinned target, and how long an unused one stays open.
 */
const REUSE: ConnectionReuse = { max: 256, idleMs: 30_000 };

/**
 * Carries a routed task to the chosen agent and, when an attempt fails or
 * times out, to the next candidates, within the task's deadline. Every
 * attempt connects only to an address the AddressGuard checked, carries a
 * route ticket naming that agent, and is reported to the OutcomeSink (where
 * reputation and breakers will learn) and on the feed (task.dispatched);
 * the task ends in one task.completed or task.failed, and GetTask reads it
 * from the TaskStore.
 */
export class Dispatcher {
  private readonly guard: AddressGuard;
  /** Async dispatches in flight, aborted by stop(). */
  private readonly inFlight = new Set<AbortController>();
  /** The span of each task being dispatched. */
  private readonly traces = new Map<string, SpanContext>();
  private readonly http: HttpJsonClient;
  private readonly grpc: GrpcAgentClient;
  /** MCP tools/call over Streamable HTTP; its sessions are open for tests to count. */
  readonly mcp: McpAgentClient;
  /** The transports dispatch speaks. */
  private readonly clients: Partial<Record<Transport, AgentClient>>;
  /** Remote agents (with an origin) go through their home federation (app.ts sets the Federation). */
  remote: RemoteDispatch = noRemoteDispatch;

  constructor(
    private readonly config: DispatchConfig,
    private readonly tickets: RouteTickets,
    private readonly tasks: TaskStore,
    private readonly bus: EventBus,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly opts: { readonly lookup?: Lookup; readonly outcomes?: OutcomeSink; readonly reuse?: ConnectionReuse } = {},
  ) {
    this.guard = new AddressGuard({ loopback: config.allowLoopback, private: config.allowPrivate }, opts.lookup ?? systemLookup);
    const reuse = opts.reuse ?? REUSE;
    this.http = new HttpJsonClient(reuse);
    this.grpc = new GrpcAgentClient(reuse);
    this.mcp = new McpAgentClient({ maxSessions: reuse.max, idleMs: reuse.idleMs, maxResponseBytes: config.maxResponseBytes });
    this.clients = {
      [Transport.HTTP_JSON]: this.http.execute,
      [Transport.GRPC]: this.grpc.execute,
      [Transport.MCP_STREAMABLE_HTTP]: this.mcp.execute,
    };
  }

  /** A task routed without dispatch: its ticket names the chosen agent; GetTask says ROUTED. */
  async routed(d: RouteDecision, input: RouteInput, tenant: string): Promise<TaskAnswer> {
    const ticket = await this.tickets.issue({ taskId: d.routeId, tenant, capabilities: input.capabilities, agentId: d.agent.id });
    const now = this.clock.now();
    // Written out (no spread of a blank record): one object per routed task, kept for GetTask.
    this.tasks.put({
      taskId: d.routeId,
      tenant,
      capabilities: input.capabilities,
      status: TaskStatus.ROUTED,
      agentId: d.agent.id,
      attempts: NO_ATTEMPTS,
      result: undefined,
      resultBytes: 0,
      error: "",
      createdAt: now,
      finishedAt: now,
    });
    return { taskId: d.routeId, ticket, agent: d.agent, attempts: NO_ATTEMPTS, result: undefined };
  }

  /**
   * Starts dispatching and answers at once (RouteRequest.dispatch_async):
   * the outcome is on the feed (task.completed carries the result) and in
   * GetTask. The dispatch runs on without the call, bounded by its own budget.
   */
  async start(d: RouteDecision, input: RouteInput, tenant: string, trace?: SpanContext, hop: HopState = FIRST_HOP): Promise<TaskAnswer> {
    const ticket = await this.tickets.issue({ taskId: d.routeId, tenant, capabilities: input.capabilities, agentId: d.agent.id });
    const stop = new AbortController();
    this.inFlight.add(stop);
    this.dispatch(d, input, tenant, { signal: stop.signal, async: true, trace, hop })
      .catch(() => {}) // its end is on the feed and in the task store
      .finally(() => this.inFlight.delete(stop));
    return { taskId: d.routeId, ticket, agent: d.agent, attempts: [], result: undefined };
  }

  /**
   * Shutdown: async dispatches still running end as task.failed
   * (UNAVAILABLE: shutting down), and pooled connections close (one still
   * in use when its call ends).
   */
  stop(): void {
    for (const c of this.inFlight) c.abort(errors.shuttingDown());
    this.http.close();
    this.grpc.close();
    this.mcp.close();
  }

  /**
   * Dispatches the task: candidates in the decision's order (the chosen one
   * first), at most DISPATCH_MAX_ATTEMPTS, each attempt given at most
   * DISPATCH_ATTEMPT_TIMEOUT of what is left of the budget. Throws
   * FAILED_PRECONDITION when every attempt was refused before sending,
   * DEADLINE_EXCEEDED when the budget ran out, UNAVAILABLE otherwise.
   */
  async dispatch(
    d: RouteDecision,
    input: RouteInput,
    tenant: string,
    call: DispatchCall = {},
  ): Promise<TaskAnswer> {
    const taskId = d.routeId;
    // The Route call's span, for the agents and the task events (async dispatches keep it after the call has answered).
    if (call.trace) this.traces.set(taskId, call.trace);
    try {
      return await this.dispatchTraced(d, input, tenant, call);
    } finally {
      this.traces.delete(taskId);
    }
  }

  private async dispatchTraced(
    d: RouteDecision,
    input: RouteInput,
    tenant: string,
    call: DispatchCall,
  ): Promise<TaskAnswer> {
    const taskId = d.routeId;
    const started = this.clock.now();
    const budgetMs = Math.min(input.timeoutMs ?? this.config.timeoutMs, this.config.maxTimeoutMs, call.timeoutMs ?? Infinity);
    const deadline = started + budgetMs;
    // Defence in depth: the router only offers the tenant's own and shared agents.
    const candidates: AgentRecord[] = [];
    for (const c of d.candidates) {
      if (candidates.length >= this.config.maxAttempts) break;
      if (c.agent.tenant === tenant || c.agent.shared) candidates.push(c.agent);
    }
    const attempts: AttemptRecord[] = [];
    const base = this.blank(taskId, tenant, input, started);
    this.tasks.put(this.record(base, TaskStatus.RUNNING, candidates[0]?.id ?? "", NO_ATTEMPTS));

    let lastAgent = d.agent;
    /** The last attempt had all that was left of the budget and timed out. */
    let budgetSpent = false;
    for (const agent of candidates) {
      const left = deadline - this.clock.now();
      if (left <= 0) break;
      const attempt = attempts.length + 1;
      const attemptMs = Math.min(left, this.config.attemptTimeoutMs);
      const ticket = await this.tickets.issue({ taskId, tenant, capabilities: input.capabilities, agentId: agent.id });
      lastAgent = agent;
      const t0 = performance.now();
      let outcome = AttemptOutcome.OK;
      let detail = "";
      let result: JsonObject | undefined;
      let bytes = 0;
      /** Who answered: a remote attempt names the home federation's agent that served it. */
      let served = agent;
      try {
        if (isRemoteAgent(agent)) {
          const signal = call.signal ? AbortSignal.any([call.signal, AbortSignal.timeout(attemptMs)]) : AbortSignal.timeout(attemptMs);
          const relayed = await this.remote.execute(
            agent,
            {
              taskId,
              tenant,
              capabilities: input.capabilities,
              payload: input.task,
              ticket,
              timeoutMs: attemptMs,
              signal,
              maxResponseBytes: this.config.maxResponseBytes,
              trace: call.trace,
            },
            call.hop ?? FIRST_HOP,
          );
          ({ result, bytes, servedBy: served, detail } = relayed);
        } else {
          const client = this.clients[agent.endpoint.transport];
          if (!client) {
            throw new DispatchRefused(
              `dispatch refused: agent transport ${Transport[agent.endpoint.transport]} is not dispatched (HTTP_JSON, GRPC and MCP_STREAMABLE_HTTP are)`,
            );
          }
          const url = agent.endpoint.url;
          const port = DEFAULT_PORT[url.slice(0, url.indexOf(":") + 1)] ?? 80;
          const target = this.guard.cached(url, port) ?? (await this.guard.pin(url, port));
          const timer = attemptSignal(call.signal, attemptMs);
          try {
            const answer = await client(target, {
              taskId,
              tenant,
              capabilities: input.capabilities,
              payload: input.task,
              ticket,
              timeoutMs: attemptMs,
              signal: timer.signal,
              maxResponseBytes: this.config.maxResponseBytes,
              trace: call.trace,
            });
            result = answer.result;
            bytes = answer.bytes;
          } finally {
            timer.done();
          }
        }
      } catch (err) {
        if (err instanceof DispatchRefused) {
          outcome = AttemptOutcome.REFUSED;
        } else if (err instanceof AttemptFailed) {
          outcome = err.outcome;
        } else if (err instanceof ConnectError) {
          // The caller cancelled (or the server is stopping): no failover, nobody is waiting.
          const record: AttemptRecord = { attempt, agentId: agent.id, outcome: AttemptOutcome.UNSPECIFIED, latencyMs: performance.now() - t0, detail: err.rawMessage };
          attempts.push(record);
          this.finishFailed(base, attempts, agent.id, err.rawMessage);
          this.publish("task.failed", tenant, taskId, input.capabilities, record);
          throw err;
        } else {
          outcome = AttemptOutcome.ERROR;
          this.log.warn({ err, taskId, agentId: agent.id }, "dispatch attempt failed unexpectedly");
        }
        detail = (err as Error).message;
      }
      const latencyMs = performance.now() - t0;
      const record: AttemptRecord = { attempt, agentId: served.id, outcome, latencyMs, detail };
      attempts.push(record);
      this.report(tenant, taskId, input.capabilities, record, bytes, served.tenant);
      this.publish("task.dispatched", tenant, taskId, input.capabilities, record);
      budgetSpent = outcome === AttemptOutcome.TIMEOUT && attemptMs >= left;
      if (outcome !== AttemptOutcome.OK) {
        this.tasks.put(this.record(base, TaskStatus.RUNNING, agent.id, [...attempts]));
      } else {
        this.tasks.put(this.record(base, TaskStatus.COMPLETED, served.id, attempts, result, bytes, "", this.clock.now()));
        const forFeed = call.async && result && bytes <= MAX_EVENT_RESULT_BYTES ? result : undefined;
        this.publish("task.completed", tenant, taskId, input.capabilities, record, record.detail, forFeed);
        return { taskId, ticket, agent: served, attempts, result };
      }
    }

    const summary = attempts.map((a) => `attempt ${a.attempt} agent ${a.agentId}: ${AttemptOutcome[a.outcome]} ${a.detail}`.trim()).join("; ");
    let error: ConnectError;
    if (attempts.length > 0 && attempts.every((a) => a.outcome === AttemptOutcome.REFUSED)) {
      error = errors.dispatchRefused(taskId, summary);
    } else if (budgetSpent || this.clock.now() >= deadline) {
      error = errors.dispatchDeadline(taskId, budgetMs, summary || "no attempt made");
    } else {
      error = errors.dispatchFailed(taskId, summary || "no candidate");
    }
    const last = attempts.at(-1);
    this.finishFailed(base, attempts, last?.agentId ?? "", error.rawMessage);
    this.publish(
      "task.failed",
      tenant,
      taskId,
      input.capabilities,
      last ?? { attempt: 0, agentId: lastAgent.id, outcome: AttemptOutcome.UNSPECIFIED, latencyMs: 0, detail: error.rawMessage },
      error.rawMessage,
    );
    throw error;
  }

  /** A recent task of the tenant (NOT_FOUND for another tenant's). */
  async task(tenant: string, taskId: string): Promise<TaskRecord> {
    const t = await this.tasks.get(tenant, taskId);
    if (!t) throw errors.taskNotFound(taskId);
    return t;
  }

  private blank(taskId: string, tenant: string, input: RouteInput, now: number): TaskRecord {
    return {
      taskId,
      tenant,
      capabilities: input.capabilities,
      status: TaskStatus.UNSPECIFIED,
      agentId: "",
      attempts: [],
      result: undefined,
      resultBytes: 0,
      error: "",
      createdAt: now,
      finishedAt: undefined,
    };
  }

  private finishFailed(base: TaskRecord, attempts: AttemptRecord[], agentId: string, error: string): void {
    this.tasks.put(this.record(base, TaskStatus.FAILED, agentId, attempts, undefined, 0, error, this.clock.now()));
  }

  /** A task's record at a step, written out field by field (a spread of `base` made records of another shape, and cost more). */
  private record(
    base: TaskRecord,
    status: TaskStatus,
    agentId: string,
    attempts: readonly AttemptRecord[],
    result?: JsonObject,
    resultBytes = 0,
    error = "",
    finishedAt?: number,
  ): TaskRecord {
    return {
      taskId: base.taskId,
      tenant: base.tenant,
      capabilities: base.capabilities,
      status,
      agentId,
      attempts,
      result,
      resultBytes,
      error,
      createdAt: base.createdAt,
      finishedAt,
    };
  }

  private report(tenant: string, taskId: string, capabilities: readonly string[], a: AttemptRecord, bytes: number, agentTenant: string): void {
    try {
      (this.opts.outcomes ?? ignoreOutcomes).attemptFinished({
        taskId,
        tenant,
        agentId: a.agentId,
        agentTenant,
        capabilities,
        attempt: a.attempt,
        outcome: a.outcome,
        latencyMs: a.latencyMs,
        responseBytes: bytes,
      });
    } catch (err) {
      this.log.error({ err }, "outcome sink failed");
    }
  }

  /**
   * Publishes a task event. Not awaited: a bus takes an event synchronously
   * (the memory ring, or the Redis XADD queue) before its promise settles,
   * so the feed's order is the call order without a promise hop per event.
   */
  private publish(
    type: EventType,
    tenant: string,
    taskId: string,
    capabilities: readonly string[],
    a: AttemptRecord,
    detail = a.detail,
    result?: JsonObject,
  ): void {
    try {
      this.bus
        .publish({
          type,
          tenant,
          agentId: a.agentId,
          payload: {
            case: "taskProgress",
            value: {
              taskId,
              // The task's list (never changed after parsing), not a copy per event.
              capabilities: capabilities as string[],
              attempt: a.attempt,
              outcome: a.outcome,
              latency: durationFromMs(Math.round(a.latencyMs)),
              detail,
              result,
              traceId: this.traces.get(taskId)?.traceId ?? "",
            },
          },
        })
        .catch(this.publishFailed);
    } catch (err) {
      this.publishFailed(err);
    }
  }

  private readonly publishFailed = (err: unknown): void => this.log.error({ err }, "event publish failed");
}
