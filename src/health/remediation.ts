import { randomUUID } from "node:crypto";
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { AlertSeverity, AlertState } from "../../gen/federation/v1/event_pb.js";
import { RemediationStatus } from "../../gen/federation/v1/health_service_pb.js";
import type { Clock } from "../clock.js";
import type { RemediationConfig } from "../config.js";
import type { AddressGuard } from "../dispatch/address-guard.js";
import type { HttpJsonClient } from "../dispatch/agent-clients.js";
import type { Dispatcher } from "../dispatch/dispatcher.js";
import type { EventBus } from "../events/event-bus.js";
import type { Logger } from "../logger.js";
import type { Router } from "../router/router.js";
import type { RouteInput } from "../validation/requests.js";
import { MemoryRemediationLedger, type RemediationLedger } from "./alert-state.js";
import { alertEvent, fmtMs, type SloAlert } from "./slo.js";

/** The capability a Guard offers. */
export const REMEDIATION_CAPABILITY = "remediation";

/** One entry of the audit trail. */
export interface RemediationRecord {
  readonly remediationId: string;
  readonly alert: SloAlert;
  status: RemediationStatus;
  /** "agent" (a Guard), "webhook", or "" (nothing was sent). */
  targetKind: "agent" | "webhook" | "";
  /** The Guard's agent id, or the webhook's origin. */
  target: string;
  taskId: string;
  readonly createdAt: number;
  finishedAt: number | undefined;
  detail: string;
  result: JsonObject | undefined;
}

/** Remediation as the app sees it. */
export interface Remediation {
  /** Acts on an alert (FIRING only); never throws, never waits for the Guard. */
  handle(alert: SloAlert): void;
  /** The tenant's audit trail, newest first. */
  list(tenant: string, limit: number): Promise<readonly RemediationRecord[]>;
  /** Aborts remediations in flight (they end ESCALATED: shutting down). */
  stop(): void;
}

/** REMEDIATION=off (or SLO=off): alerts are events only. */
export const noRemediation: Remediation = { handle: () => undefined, list: async () => [], stop: () => undefined };

export interface RemediationDeps {
  readonly router: Router;
  readonly dispatcher: Dispatcher;
  readonly bus: EventBus;
  /** Dispatch's SSRF guard, for the webhook. */
  readonly guard: AddressGuard;
  /** Posts to the webhook as to an HTTP/JSON agent. */
  readonly http: HttpJsonClient;
  readonly clock: Clock;
  readonly log: Logger;
  /** Dedup, cooldown, rate and the audit trail (absent: this process's memory). */
  readonly ledger?: RemediationLedger;
}

const DEFAULT_PORT: Readonly<Record<string, number>> = { "http:": 80, "https:": 443 };
/** A webhook's answer is read up to this. */
const MAX_WEBHOOK_ANSWER = 64 * 1024;

/**
 * The Praetorian Guard: a firing SLO alert becomes a remediation task,
 * routed and dispatched (src/dispatch) to an agent of the alert's tenant
 * offering capability "remediation" — never the alert's own agent — or,
 * when the tenant has none that can take it, POSTed to
 * REMEDIATION_WEBHOOK_URL through dispatch's SSRF guard (the same
 * ExecuteRequest JSON an HTTP agent gets). Each alert is acted on once; a
 * subject gets one remediation per REMEDIATION_COOLDOWN (later alerts about
 * it are recorded as SUPPRESSED); at most REMEDIATION_MAX_PER_MINUTE are
 * sent. A remediation that fails — or that nobody could take, or that the
 * rate bound held back — is not retried: it escalates
 * (health.remediation_escalated) for a human. Every step is in the audit
 * trail (GET /health/remediations). Dedup, cooldown, rate and the trail
 * are a RemediationLedger (alert-state.ts): with Redis, shared by the
 * replicas, so a new leader neither remediates again within the cooldown
 * nor loses its predecessor's trail.
 */
export class PraetorianGuard implements Remediation {
  private readonly stopping = new AbortController();
  private readonly ledger: RemediationLedger;

  constructor(
    private readonly config: RemediationConfig,
    private readonly deps: RemediationDeps,
  ) {
    this.ledger = deps.ledger ?? new MemoryRemediationLedger(config.auditSize);
  }

  handle(alert: SloAlert): void {
    if (alert.state !== AlertState.FIRING) return;
    void this.admit(alert).catch((err: unknown) => this.deps.log.error({ err }, "remediation failed unexpectedly"));
  }

  list(tenant: string, limit: number): Promise<readonly RemediationRecord[]> {
    return this.ledger.list(tenant, limit);
  }

  stop(): void {
    this.stopping.abort(new ConnectError("shutting down", Code.Unavailable));
    this.deps.http.close();
    // Remediations aborted just now still write their ESCALATED entry.
    setTimeout(() => this.ledger.close(), 500).unref();
  }

  /** Dedup, cooldown and rate in one step of the ledger (shared by the replicas with Redis), then the send. */
  private async admit(alert: SloAlert): Promise<void> {
    const now = this.deps.clock.now();
    const record: RemediationRecord = {
      remediationId: `rem-${randomUUID()}`,
      alert,
      status: RemediationStatus.DISPATCHED,
      targetKind: "",
      target: "",
      taskId: "",
      createdAt: now,
      finishedAt: undefined,
      detail: "",
      result: undefined,
    };
    let verdict;
    try {
      verdict = await this.ledger.admit({
        alertId: alert.alertId,
        subject: `${alert.tenant}\u0000${alert.kind}\u0000${alert.subject}`,
        remediationId: record.remediationId,
        now,
        cooldownMs: this.config.cooldownMs,
        maxPerMinute: this.config.maxPerMinute,
      });
    } catch (err) {
      // Unknown whether another replica acted on it: a human looks (no retry).
      return this.escalate(record, `not sent: the remediation state did not answer (${(err as Error).message})`, true);
    }
    switch (verdict.kind) {
      case "duplicate":
        return;
      case "cooldown":
        record.status = RemediationStatus.SUPPRESSED;
        record.finishedAt = now;
        record.detail = `cooldown: ${alert.kind} ${alert.subject} was remediated ${fmtMs(now - verdict.last)} ago (REMEDIATION_COOLDOWN ${fmtMs(this.config.cooldownMs)})`;
        return this.save(record, true);
      case "rate":
        return this.escalate(record, `not sent: ${this.config.maxPerMinute} remediations in the last minute (REMEDIATION_MAX_PER_MINUTE)`, true);
      case "send":
        await this.save(record, true);
        return this.run(record);
    }
  }

  private async save(record: RemediationRecord, isNew = false): Promise<void> {
    try {
      await this.ledger.save(record, isNew);
    } catch (err) {
      this.deps.log.warn({ err, remediationId: record.remediationId }, "remediation audit entry not saved");
    }
  }

  /** To a Guard of the tenant; to the webhook when none can take it; else escalated. */
  private async run(record: RemediationRecord): Promise<void> {
    const { alert } = record;
    const task = payloadOf(record);
    const input: RouteInput = {
      capabilities: [REMEDIATION_CAPABILITY],
      // An agent does not heal itself.
      excludeAgentIds: new Set(alert.kind === "agent" ? [alert.subject] : []),
      task,
      dispatch: true,
      timeoutMs: this.config.timeoutMs,
    };
    let decision;
    try {
      decision = await this.deps.router.route(input, alert.tenant);
    } catch (err) {
      const noGuard = err instanceof ConnectError && (err.code === Code.FailedPrecondition || err.code === Code.Unavailable);
      if (!noGuard) return this.escalate(record, `routing failed: ${(err as Error).message}`);
      if (!this.config.webhookUrl) {
        const why = `no agent of tenant "${alert.tenant}" can take capability "${REMEDIATION_CAPABILITY}" (${(err as ConnectError).rawMessage})`;
        return this.escalate(record, `${why} and REMEDIATION_WEBHOOK_URL is not set`);
      }
      return this.webhook(record, task, this.config.webhookUrl);
    }
    record.targetKind = "agent";
    record.target = decision.agent.id;
    record.taskId = decision.routeId;
    await this.dispatched(record);
    try {
      const call = { signal: this.stopping.signal, timeoutMs: this.config.timeoutMs };
      const answer = await this.deps.dispatcher.dispatch(decision, input, alert.tenant, call);
      record.target = answer.agent.id;
      await this.succeeded(record, answer.result);
    } catch (err) {
      await this.escalate(record, `the Guard failed: ${err instanceof ConnectError ? err.rawMessage : (err as Error).message}`);
    }
  }

  private async webhook(record: RemediationRecord, task: JsonObject, url: string): Promise<void> {
    record.targetKind = "webhook";
    record.target = new URL(url).origin;
    record.taskId = record.remediationId;
    await this.dispatched(record);
    try {
      const protocol = url.slice(0, url.indexOf(":") + 1);
      const target = await this.deps.guard.pin(url, DEFAULT_PORT[protocol] ?? 80);
      const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.config.timeoutMs)]);
      const answer = await this.deps.http.execute(target, {
        taskId: record.remediationId,
        tenant: record.alert.tenant,
        capabilities: [REMEDIATION_CAPABILITY],
        payload: task,
        ticket: "",
        timeoutMs: this.config.timeoutMs,
        signal,
        maxResponseBytes: MAX_WEBHOOK_ANSWER,
      });
      await this.succeeded(record, answer.result);
    } catch (err) {
      await this.escalate(record, `the webhook failed: ${err instanceof ConnectError ? err.rawMessage : (err as Error).message}`);
    }
  }

  private async succeeded(record: RemediationRecord, result: JsonObject | undefined): Promise<void> {
    record.status = RemediationStatus.SUCCEEDED;
    record.finishedAt = this.deps.clock.now();
    record.result = result;
    await this.save(record);
    this.deps.log.info({ remediationId: record.remediationId, alertId: record.alert.alertId, target: record.target }, "remediation succeeded");
  }

  private async dispatched(record: RemediationRecord): Promise<void> {
    await this.save(record);
    const message = `remediation ${record.remediationId} of alert ${record.alert.alertId} sent to ${record.targetKind} ${record.target}`;
    await this.publish("health.remediation_dispatched", record, message);
  }

  private async escalate(record: RemediationRecord, why: string, isNew = false): Promise<void> {
    record.status = RemediationStatus.ESCALATED;
    record.finishedAt = this.deps.clock.now();
    record.detail = why.slice(0, 1_000);
    await this.save(record, isNew);
    this.deps.log.warn({ remediationId: record.remediationId, alertId: record.alert.alertId }, `remediation escalated: ${record.detail}`);
    const message = `remediation ${record.remediationId} of alert ${record.alert.alertId} escalated: ${record.detail}`;
    await this.publish("health.remediation_escalated", record, message);
  }

  private async publish(
    type: "health.remediation_dispatched" | "health.remediation_escalated",
    record: RemediationRecord,
    message: string,
  ): Promise<void> {
    try {
      await this.deps.bus.publish(alertEvent(type, record.alert, { message, remediationId: record.remediationId }));
    } catch (err) {
      this.deps.log.error({ err, type }, "event publish failed");
    }
  }
}

/** What the Guard (or the webhook) receives as the task's payload. */
function payloadOf(record: RemediationRecord): JsonObject {
  const a = record.alert;
  return {
    kind: "slo-alert",
    remediationId: record.remediationId,
    alertId: a.alertId,
    slo: a.slo,
    severity: a.severity === AlertSeverity.PAGE ? "page" : "ticket",
    subjectKind: a.kind,
    subject: a.subject,
    tenant: a.tenant,
    burnRate: a.burnRate,
    shortBurnRate: a.shortBurnRate,
    burnRateThreshold: a.threshold,
    longWindowMs: a.longWindowMs,
    shortWindowMs: a.shortWindowMs,
    objective: a.objective,
    firedAt: new Date(a.firedAt).toISOString(),
    message: a.message,
  };
}
