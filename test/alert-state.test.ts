import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AlertSeverity, AlertState } from "../gen/federation/v1/event_pb.js";
import { RemediationStatus } from "../gen/federation/v1/health_service_pb.js";
import {
  AlertRedisConnection,
  MemoryFiringAlerts,
  MemoryRemediationLedger,
  RedisFiringAlerts,
  RedisRemediationLedger,
  type FiringAlerts,
  type RemediationLedger,
} from "../src/health/alert-state.js";
import type { RemediationRecord } from "../src/health/remediation.js";
import type { SloAlert } from "../src/health/slo.js";
import { startRedis, type ManagedServer } from "./support/servers.js";

/**
 * The alerting state a new probe leader inherits (issue 16, "no duplicate
 * alerts"), one behavioural suite over both implementations: memory, and
 * Redis (a real redis-server) — firing alerts adopted by key, and the
 * Guard's dedup, cooldown, rate and bounded audit trail.
 */

let redis: ManagedServer & { dispose(): Promise<void> };
const connections: AlertRedisConnection[] = [];
let n = 0;

beforeAll(async () => {
  redis = await startRedis();
}, 20_000);

afterAll(async () => {
  for (const c of connections) c.close();
  await redis?.dispose();
});

const AUDIT_SIZE = 5;

const impls: { name: string; make(): { firing: FiringAlerts; ledger: RemediationLedger } }[] = [
  { name: "memory", make: () => ({ firing: new MemoryFiringAlerts(), ledger: new MemoryRemediationLedger(AUDIT_SIZE) }) },
  {
    name: "redis",
    make: () => {
      const conn = new AlertRedisConnection(redis.url, pino({ level: "silent" }));
      connections.push(conn.retain());
      const prefix = `alerts-${process.pid}-${n++}`;
      return { firing: new RedisFiringAlerts(conn, prefix, 60_000), ledger: new RedisRemediationLedger(conn, prefix, AUDIT_SIZE, 60_000) };
    },
  },
];

function alert(id: string, tenant = "t1", subject = "agent-1"): SloAlert {
  return {
    alertId: id,
    state: AlertState.FIRING,
    severity: AlertSeverity.PAGE,
    slo: "agent-availability",
    tenant,
    kind: "agent",
    subject,
    burnRate: 10,
    shortBurnRate: 12,
    threshold: 5,
    longWindowMs: 4_000,
    shortWindowMs: 1_000,
    objective: 0.9,
    firedAt: 1_000,
    message: "burning",
  };
}

function record(id: string, a: SloAlert, status = RemediationStatus.DISPATCHED): RemediationRecord {
  return { remediationId: id, alert: a, status, targetKind: "", target: "", taskId: "", createdAt: 1_000, finishedAt: undefined, detail: "", result: undefined };
}

const T0 = 1_800_000_000_000;
const admission = (alertId: string, subject: string, now: number, maxPerMinute = 3) => ({
  alertId,
  subject: `t1\u0000agent\u0000${subject}`,
  remediationId: `rem-${alertId}`,
  now,
  cooldownMs: 60_000,
  maxPerMinute,
});

describe.each(impls)("alert state ($name)", ({ make }) => {
  it("keeps the firing alerts by key until they resolve, for a successor to adopt", async () => {
    const { firing } = make();
    await firing.put("k1", alert("alert-1"));
    await firing.put("k2", alert("alert-2", "t2", "cap.x"));
    await firing.delete("k1");
    const listed = await firing.list();
    expect([...listed.keys()]).toEqual(["k2"]);
    expect(listed.get("k2")).toEqual(alert("alert-2", "t2", "cap.x"));
  });

  it("acts on an alert once, once per subject within the cooldown, and within the rate", async () => {
    const { ledger } = make();
    expect(await ledger.admit(admission("a1", "s1", T0))).toEqual({ kind: "send" });
    // The same alert again (a second replica, a replayed event): dropped.
    expect(await ledger.admit(admission("a1", "s1", T0 + 1))).toEqual({ kind: "duplicate" });
    // Another alert about the same subject within the cooldown: suppressed, naming when it was sent.
    expect(await ledger.admit(admission("a2", "s1", T0 + 10))).toEqual({ kind: "cooldown", last: T0 });
    expect(await ledger.admit(admission("a3", "s2", T0 + 20))).toEqual({ kind: "send" });
    expect(await ledger.admit(admission("a4", "s3", T0 + 30))).toEqual({ kind: "send" });
    // Three sends in the last minute: the fourth subject is held back.
    expect(await ledger.admit(admission("a5", "s4", T0 + 40))).toEqual({ kind: "rate" });
    // A minute on: the rate has room again, and the first subject's cooldown is over.
    expect(await ledger.admit(admission("a6", "s1", T0 + 60_001))).toEqual({ kind: "send" });
  });

  it("keeps the audit trail newest first per tenant, bounded, with updates", async () => {
    const { ledger } = make();
    const records = Array.from({ length: 7 }, (_, i) => record(`rem-${i}`, alert(`alert-${i}`, i === 3 ? "t2" : "t1")));
    for (const r of records) await ledger.save(r, true);
    // The oldest two went (REMEDIATION_AUDIT_SIZE 5): t1 keeps 2, 4, 5, 6; t2 keeps 3.
    expect((await ledger.list("t1", 10)).map((r) => r.remediationId)).toEqual(["rem-6", "rem-5", "rem-4", "rem-2"]);
    expect((await ledger.list("t2", 10)).map((r) => r.remediationId)).toEqual(["rem-3"]);
    expect((await ledger.list("t1", 2)).map((r) => r.remediationId)).toEqual(["rem-6", "rem-5"]);
    records[5]!.status = RemediationStatus.SUCCEEDED;
    records[5]!.result = { ok: true };
    await ledger.save(records[5]!, false);
    // An update of an entry already dropped is not written back.
    records[0]!.status = RemediationStatus.ESCALATED;
    await ledger.save(records[0]!, false);
    const [, five] = await ledger.list("t1", 10);
    expect(five).toMatchObject({ remediationId: "rem-5", status: RemediationStatus.SUCCEEDED, result: { ok: true }, alert: { alertId: "alert-5" } });
    expect((await ledger.list("t1", 10)).map((r) => r.remediationId)).toEqual(["rem-6", "rem-5", "rem-4", "rem-2"]);
  });
});
