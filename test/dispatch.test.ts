import { base64url, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../src/config.js";
import { AddressGuard, PIN_CACHE_MS, systemLookup, type Lookup } from "../src/dispatch/address-guard.js";
import { MemoryTaskStore } from "../src/dispatch/task-store.js";
import { ADMIN_TOKEN, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { killAgents, startAgent } from "./support/dispatch-agents.js";
import { openWs, type WsFeed } from "./support/feeds.js";

/**
 * Dispatch (issue 15, items 5-8) against real agent processes on loopback:
 * HTTP/JSON agents (node:http) and gRPC agents (@grpc/grpc-js, stubs from
 * the .proto at run time), one slow, one failing on cue, one that dies
 * mid-task. Names resolve through an injected lookup (AppDeps.dispatchLookup):
 * "agent.test" → 127.0.0.1, "metadata.test" → 169.254.169.254, so no DNS or
 * /etc/hosts is needed to show a name that resolves to the metadata address.
 */

const lookup: Lookup = async (host) => {
  if (host === "agent.test") return [{ address: "127.0.0.1", family: 4 }];
  if (host === "metadata.test") return [{ address: "169.254.169.254", family: 4 }];
  if (host === "mixed.test") return [{ address: "127.0.0.1", family: 4 }, { address: "169.254.169.254", family: 4 }];
  return systemLookup(host);
};

let t: TestApp;
let ws: WsFeed;
let otherToken: string;
let capN = 0;
const cap = () => `dispatch.cap${++capN}`;

async function register(
  name: string,
  url: string,
  capability: string,
  load: number,
  opts: { transport?: string; token?: string } = {},
): Promise<string> {
  const headers: Record<string, string> = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
  const r = await postJson(
    `${t.url}/agents/register`,
    registerBody({
      name,
      endpoint: { url, transport: opts.transport ?? (url.startsWith("grpc") ? "TRANSPORT_GRPC" : "TRANSPORT_HTTP_JSON") },
      capabilities: [{ name: capability }],
      tools: [],
    }),
    { headers },
  );
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  const id = r.json.agent.id as string;
  const hb = await postJson(`${t.url}/agents/${id}/heartbeat`, { load }, { headers });
  expect(hb.status, JSON.stringify(hb.json)).toBe(200);
  return id;
}

function route(capability: string, extra: Record<string, unknown> = {}, token = ADMIN_TOKEN) {
  return postJson(
    `${t.url}/route`,
    { capabilities: [capability], dispatch: true, task: { question: "6*7" }, ...extra },
    { headers: { authorization: `Bearer ${token}` } },
  );
}

const eventsOf = (taskId: string) => ws.events.items.filter((e) => (e.taskRouted?.routeId ?? e.taskProgress?.taskId) === taskId);
async function waitEvents(taskId: string, n: number, ms = 3_000): Promise<any[]> {
  const until = Date.now() + ms;
  while (eventsOf(taskId).length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  return eventsOf(taskId);
}

beforeAll(async () => {
  t = await startApp({ DISPATCH_ALLOW_LOOPBACK: "true", DISPATCH_ATTEMPT_TIMEOUT: "1s" }, { dispatchLookup: lookup });
  ws = await openWs(t.port, "?types=task.routed,task.dispatched,task.completed,task.failed");
  const minted = await postJson(`${t.url}/admin/tokens`, { tenant: "other", scopes: ["agents:write", "agents:read", "route"], subject: "other" });
  otherToken = minted.json.token;
});

afterAll(async () => {
  killAgents();
  ws?.close();
  await t?.close();
});

describe("dispatch over HTTP/JSON and gRPC", () => {
  it("carries the task to an HTTP agent by name, pinned to the checked address, with a ticket that verifies with plain jose", async () => {
    const c = cap();
    const echo = await startAgent("http", "echo");
    const agentId = await register("echo", `http://agent.test:${echo.port}/execute?v=1`, c, 0);

    const r = await route(c);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.taskId).toBe(r.json.routeId);
    expect(r.json.result).toEqual({ agent: "echo", taskId: r.json.taskId, echo: { question: "6*7" } });
    expect(r.json.attempts).toMatchObject([{ attempt: 1, agentId, outcome: "ATTEMPT_OUTCOME_OK" }]);

    // What the agent saw: the name in Host (connected to 127.0.0.1), the task id to deduplicate on, the ticket.
    const [seen] = await echo.tasks.waitFor(1);
    expect(seen).toMatchObject({
      taskId: r.json.taskId,
      idempotencyKey: r.json.taskId,
      host: `agent.test:${echo.port}`,
      path: "/execute?v=1",
      tenant: "default",
      capabilities: [c],
      ticket: r.json.ticket,
    });

    // An agent verifies offline: plain jose, the served JWKS, its own id as audience.
    const jwks = createRemoteJWKSet(new URL(`${t.url}/.well-known/jwks.json`));
    const v = await jwtVerify(seen.ticket, jwks, { issuer: "federation-core", audience: agentId, typ: "fc-route-ticket+jwt" });
    expect(v.payload).toMatchObject({ task_id: r.json.taskId, tenant: "default", capabilities: [c], agent_id: agentId });
    expect(v.payload.exp! - v.payload.iat!).toBe(60);
    const served = (await getJson(`${t.url}/.well-known/jwks.json`)).json.keys.map((k: any) => k.kid);
    expect(served).toContain(v.protectedHeader.kid);

    // Tampered (another tenant written into the claims): refused.
    const [h, , s] = seen.ticket.split(".");
    const forged = base64url.encode(JSON.stringify({ ...decodeJwt(seen.ticket), tenant: "other" }));
    await expect(jwtVerify(`${h}.${forged}.${s}`, jwks, { issuer: "federation-core", audience: agentId })).rejects.toMatchObject({
      code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
    });
    // Expired: the same ticket a second after its exp.
    await expect(
      jwtVerify(seen.ticket, jwks, { issuer: "federation-core", audience: agentId, currentDate: new Date((v.payload.exp! + 1) * 1000) }),
    ).rejects.toMatchObject({ code: "ERR_JWT_EXPIRED" });
    // Not for another agent.
    await expect(jwtVerify(seen.ticket, jwks, { issuer: "federation-core", audience: "someone-else" })).rejects.toMatchObject({
      code: "ERR_JWT_CLAIM_VALIDATION_FAILED",
    });
    expect(decodeProtectedHeader(r.json.ticket).alg).toBe("EdDSA");
    // A ticket is no bearer token here (its audience is the agent, not AUTH_AUDIENCE).
    expect((await getJson(`${t.url}/agents`, { headers: { authorization: `Bearer ${seen.ticket}` } })).status).toBe(401);
  });

  it("fails over from an agent that dies mid-task to a gRPC agent: one success, both attempts on the feed, one task.completed", async () => {
    const c = cap();
    const dying = await startAgent("http", "dying", { MODE: "die" });
    const steady = await startAgent("grpc", "steady");
    const dyingId = await register("dying", `http://127.0.0.1:${dying.port}/`, c, 0);
    const steadyId = await register("steady", `grpc://127.0.0.1:${steady.port}`, c, 0.5);

    const r = await route(c, { timeout: "5s" });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const taskId = r.json.taskId;
    expect(r.json.agent.id).toBe(steadyId);
    expect(r.json.result).toEqual({ agent: "steady", taskId, echo: { question: "6*7" } });
    expect(r.json.attempts).toMatchObject([
      { attempt: 1, agentId: dyingId, outcome: "ATTEMPT_OUTCOME_UNREACHABLE" },
      { attempt: 2, agentId: steadyId, outcome: "ATTEMPT_OUTCOME_OK" },
    ]);
    expect(await dying.exited).toBe(3);
    // Both received the same task id (to deduplicate on), each with its own ticket.
    expect((await dying.tasks.waitFor(1))[0].taskId).toBe(taskId);
    const [got] = await steady.tasks.waitFor(1);
    expect(got).toMatchObject({ taskId, idempotencyKey: taskId, tenant: "default" });
    expect(got.ticket).toBe(r.json.ticket);
    expect(decodeJwt(got.ticket).aud).toBe(steadyId);

    const events = await waitEvents(taskId, 4);
    expect(events.map((e) => [e.type, e.agentId, e.taskProgress?.attempt ?? 0, e.taskProgress?.outcome ?? ""])).toEqual([
      ["task.routed", dyingId, 0, ""],
      ["task.dispatched", dyingId, 1, "ATTEMPT_OUTCOME_UNREACHABLE"],
      ["task.dispatched", steadyId, 2, "ATTEMPT_OUTCOME_OK"],
      ["task.completed", steadyId, 2, "ATTEMPT_OUTCOME_OK"],
    ]);
    expect(events[3].taskProgress).toMatchObject({ taskId, capabilities: [c] });
    expect(events[3].taskProgress.latency).toMatch(/^\d+(\.\d+)?s$/);

    // GetTask (REST GET /tasks/{id}) tells the same story; another tenant cannot see it.
    const g = await getJson(`${t.url}/tasks/${taskId}`);
    expect(g.status).toBe(200);
    expect(g.json.task).toMatchObject({
      taskId,
      status: "TASK_STATUS_COMPLETED",
      agentId: steadyId,
      capabilities: [c],
      result: { agent: "steady" },
      attempts: [{ outcome: "ATTEMPT_OUTCOME_UNREACHABLE" }, { outcome: "ATTEMPT_OUTCOME_OK" }],
    });
    const other = await getJson(`${t.url}/tasks/${taskId}`, { headers: { authorization: `Bearer ${otherToken}` } });
    expect(other.status).toBe(404);
  });

  it("fails over from a slow agent after its attempt time and from one failing on cue, within the deadline", async () => {
    const c = cap();
    const slow = await startAgent("grpc", "slow", { MODE: "slow", DELAY_MS: "5000" });
    const flaky = await startAgent("http", "flaky");
    const steady = await startAgent("grpc", "steady2");
    const slowId = await register("slow", `grpc://agent.test:${slow.port}`, c, 0);
    const flakyId = await register("flaky", `http://127.0.0.1:${flaky.port}/`, c, 0.2);
    const steadyId = await register("steady2", `grpc://127.0.0.1:${steady.port}`, c, 0.6);

    // The slow agent gets its attempt's share (DISPATCH_ATTEMPT_TIMEOUT=1s), the flaky one answers.
    let started = Date.now();
    let r = await route(c, { timeout: "4s" });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(Date.now() - started).toBeLessThan(2_500);
    expect(r.json.attempts.map((a: any) => [a.agentId, a.outcome])).toEqual([
      [slowId, "ATTEMPT_OUTCOME_TIMEOUT"],
      [flakyId, "ATTEMPT_OUTCOME_OK"],
    ]);

    // On cue, the flaky one fails: the task goes on to the third.
    await flaky.setMode("fail");
    started = Date.now();
    r = await route(c, { timeout: "4s" });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(r.json.result.agent).toBe("steady2");
    // Reputation learned from the first task: the slow agent's timeout moves it behind the others.
    expect(r.json.attempts.map((a: any) => [a.agentId, a.outcome])).toEqual([
      [flakyId, "ATTEMPT_OUTCOME_ERROR"],
      [steadyId, "ATTEMPT_OUTCOME_OK"],
    ]);
    expect(r.json.attempts[0].detail).toContain("HTTP 500: flaky fails on cue");
    const events = await waitEvents(r.json.taskId, 4);
    expect(events.filter((e) => e.type === "task.dispatched")).toHaveLength(2);
    expect(events.filter((e) => e.type === "task.completed")).toHaveLength(1);
  });

  it("answers DEADLINE_EXCEEDED within the deadline when no agent answers in time, and the task ends in task.failed", async () => {
    const c = cap();
    const slow = await startAgent("http", "slow-only", { MODE: "slow", DELAY_MS: "5000" });
    const slowId = await register("slow-only", `http://127.0.0.1:${slow.port}/`, c, 0);
    const started = Date.now();
    const r = await route(c, { timeout: "0.4s" });
    const took = Date.now() - started;
    expect(r.status).toBe(504);
    expect(took).toBeGreaterThanOrEqual(350);
    expect(took).toBeLessThan(1_500);
    expect(r.json.message).toMatch(/no result within the 400ms dispatch deadline/);
    const taskId = /task (\S+):/.exec(r.json.message)![1]!;
    const events = await waitEvents(taskId, 3);
    expect(events.map((e) => [e.type, e.agentId, e.taskProgress?.outcome ?? ""])).toEqual([
      ["task.routed", slowId, ""],
      ["task.dispatched", slowId, "ATTEMPT_OUTCOME_TIMEOUT"],
      ["task.failed", slowId, "ATTEMPT_OUTCOME_TIMEOUT"],
    ]);
    const g = await getJson(`${t.url}/tasks/${taskId}`);
    expect(g.json.task).toMatchObject({ status: "TASK_STATUS_FAILED", attempts: [{ outcome: "ATTEMPT_OUTCOME_TIMEOUT" }] });
  });

  it("fails over past an agent whose answer is too big (a noisy agent is a failing one)", async () => {
    const c = cap();
    const big = await startAgent("http", "big", { MODE: "big", BIG_BYTES: "2000000" });
    const steady = await startAgent("http", "small");
    await register("big", `http://127.0.0.1:${big.port}/`, c, 0);
    await register("small", `http://127.0.0.1:${steady.port}/`, c, 0.5);
    const r = await route(c);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.attempts.map((a: any) => a.outcome)).toEqual(["ATTEMPT_OUTCOME_BAD_RESPONSE", "ATTEMPT_OUTCOME_OK"]);
    expect(r.json.attempts[0].detail).toContain("DISPATCH_MAX_RESPONSE_BYTES");
  });

  it("routes without dispatch: a task id and a ticket for the chosen agent, GetTask says ROUTED, nothing is sent", async () => {
    const c = cap();
    const a = await startAgent("http", "chosen");
    const id = await register("chosen", `http://127.0.0.1:${a.port}/`, c, 0);
    const r = await postJson(`${t.url}/route`, { capabilities: [c] });
    expect(r.status).toBe(200);
    expect(r.json.attempts).toEqual([]);
    const jwks = createRemoteJWKSet(new URL(`${t.url}/.well-known/jwks.json`));
    const v = await jwtVerify(r.json.ticket, jwks, { audience: id, typ: "fc-route-ticket+jwt" });
    expect(v.payload.task_id).toBe(r.json.taskId);
    expect((await getJson(`${t.url}/tasks/${r.json.taskId}`)).json.task).toMatchObject({ status: "TASK_STATUS_ROUTED", agentId: id });
    // A caller's own task id is kept (a retry of the same task).
    const again = await postJson(`${t.url}/route`, { capabilities: [c], taskId: "client-task-42" });
    expect(again.json.taskId).toBe("client-task-42");
    expect(decodeJwt(again.json.ticket).task_id).toBe("client-task-42");
    await new Promise((r) => setTimeout(r, 100));
    expect(a.tasks.items).toEqual([]);
  });
});

describe("async dispatch, the call's deadline, bad input", () => {
  it("answers at once with dispatch_async; the result arrives as task.completed and from GetTask", async () => {
    const c = cap();
    const slow = await startAgent("grpc", "slow-async", { MODE: "slow", DELAY_MS: "600" });
    const id = await register("slow-async", `grpc://127.0.0.1:${slow.port}`, c, 0);
    const started = Date.now();
    const r = await route(c, { dispatch: false, dispatchAsync: true });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(Date.now() - started).toBeLessThan(500);
    expect(r.json.result).toBeUndefined();
    expect(decodeJwt(r.json.ticket)).toMatchObject({ task_id: r.json.taskId, aud: id });
    expect((await getJson(`${t.url}/tasks/${r.json.taskId}`)).json.task.status).toBe("TASK_STATUS_RUNNING");

    const events = await waitEvents(r.json.taskId, 3);
    const done = events.find((e) => e.type === "task.completed");
    expect(done.taskProgress.result).toEqual({ agent: "slow-async", taskId: r.json.taskId, echo: { question: "6*7" } });
    expect((await getJson(`${t.url}/tasks/${r.json.taskId}`)).json.task).toMatchObject({
      status: "TASK_STATUS_COMPLETED",
      result: { agent: "slow-async" },
    });
  });

  it("keeps within the call's own deadline (connect-timeout-ms) when it is shorter than the task's", async () => {
    const c = cap();
    const slow = await startAgent("http", "slow-call", { MODE: "slow", DELAY_MS: "3000" });
    await register("slow-call", `http://127.0.0.1:${slow.port}/`, c, 0);
    const started = Date.now();
    const res = await fetch(`${t.url}/federation.v1.RouterService/Route`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-timeout-ms": "400", authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ capabilities: [c], dispatch: true, timeout: "5s" }),
    });
    const body = (await res.json()) as any;
    expect(body.code).toBe("deadline_exceeded");
    expect(Date.now() - started).toBeLessThan(1_500);
    const [seen] = await slow.tasks.waitFor(1);
    // The task ended with the call: failed, its one attempt cut short.
    const until = Date.now() + 2_000;
    let task: any;
    do task = (await getJson(`${t.url}/tasks/${seen.taskId}`)).json.task;
    while (task.status !== "TASK_STATUS_FAILED" && Date.now() < until);
    expect(task.status).toBe("TASK_STATUS_FAILED");
    expect(task.attempts).toHaveLength(1);
  });

  it("refuses bad dispatch fields with INVALID_ARGUMENT naming them", async () => {
    const c = cap();
    for (const [extra, field] of [
      [{ timeout: "-1s" }, "timeout"],
      [{ timeout: "0s" }, "timeout"],
      [{ taskId: "has space" }, "task_id"],
      [{ taskId: "x".repeat(200) }, "task_id"],
    ] as const) {
      const r = await route(c, extra);
      expect(r.status, JSON.stringify(extra)).toBe(400);
      expect(r.json.code).toBe(3);
      expect(r.json.message.startsWith(`${field}:`), r.json.message).toBe(true);
    }
    const g = await getJson(`${t.url}/tasks/no-such-task`);
    expect(g.status).toBe(404);
    expect((await getJson(`${t.url}/tasks/${encodeURIComponent("bad id!")}`)).status).toBe(400);
  });
});

describe("tenant isolation", () => {
  it("never dispatches to another tenant's agent", async () => {
    const c = cap();
    const theirs = await startAgent("http", "theirs");
    await register("theirs", `http://127.0.0.1:${theirs.port}/`, c, 0, { token: otherToken });
    const r = await route(c);
    expect(r.status).toBe(400);
    expect(r.json.message).toContain(`no registered agent offers capability "${c}"`);

    // With an agent of its own (busier than theirs), each tenant's task goes to its own agent.
    const mine = await startAgent("http", "mine");
    const mineId = await register("mine", `http://127.0.0.1:${mine.port}/`, c, 0.9);
    for (let i = 0; i < 3; i++) {
      const ok = await route(c);
      expect(ok.json.agent.id).toBe(mineId);
    }
    const theirsRoute = await route(c, {}, otherToken);
    expect(theirsRoute.json.result.agent).toBe("theirs");
    expect(theirs.tasks.items.map((x: any) => x.tenant)).toEqual(["other"]);
    expect(mine.tasks.items.map((x: any) => x.tenant)).toEqual(["default", "default", "default"]);
  });
});

describe("SSRF guard on dispatch", () => {
  it("refuses 169.254.169.254 (HTTP and gRPC) with FAILED_PRECONDITION naming the rule", async () => {
    for (const url of ["http://169.254.169.254/latest/meta-data/", "grpc://169.254.169.254:50051", "http://[::ffff:169.254.169.254]/"]) {
      const c = cap();
      await register("metadata", url, c, 0);
      const r = await route(c);
      expect(r.status, url).toBe(400);
      expect(r.json.code).toBe(9);
      expect(r.json.message).toMatch(/dispatch refused: .*169\.254\.169\.254.* is a cloud metadata address/);
      expect(r.json.message).toContain("attempt 1 agent");
    }
  });

  it("refuses a name that resolves to the metadata address, or has it among its answers", async () => {
    for (const host of ["metadata.test", "mixed.test"]) {
      const c = cap();
      const a = await startAgent("http", `behind-${host}`);
      await register("by-name", `http://${host}:${a.port}/`, c, 0);
      const r = await route(c);
      expect(r.status).toBe(400);
      expect(r.json.message).toContain(`"${host}" resolves to 169.254.169.254 is a cloud metadata address`);
      await new Promise((r) => setTimeout(r, 50));
      expect(a.tasks.items).toEqual([]);
    }
  });

  it("never follows a redirect: to the metadata address or anywhere else, nothing is sent there", async () => {
    const canary = await startAgent("http", "canary");
    for (const to of ["http://169.254.169.254/latest/meta-data/iam/", `http://127.0.0.1:${canary.port}/`]) {
      const c = cap();
      const redirector = await startAgent("http", "redirector", { MODE: "redirect", REDIRECT_TO: to });
      await register("redirector", `http://127.0.0.1:${redirector.port}/`, c, 0);
      const r = await route(c);
      expect(r.status).toBe(400);
      expect(r.json.message).toContain(`answered HTTP 302 redirecting to "${to}"; dispatch never follows redirects`);
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(canary.tasks.items).toEqual([]);
  });

  it("a refused candidate is skipped: the task fails over to an allowed one", async () => {
    const c = cap();
    const ok = await startAgent("http", "allowed");
    await register("metadata", "http://169.254.169.254/", c, 0);
    await register("allowed", `http://127.0.0.1:${ok.port}/`, c, 0.5);
    const r = await route(c);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.attempts.map((a: any) => a.outcome)).toEqual(["ATTEMPT_OUTCOME_REFUSED", "ATTEMPT_OUTCOME_OK"]);
  });

  it("refuses loopback unless DISPATCH_ALLOW_LOOPBACK=true; the agent receives nothing", async () => {
    const closed = await startApp({}, { dispatchLookup: lookup });
    try {
      const a = await startAgent("http", "local");
      for (const url of [`http://127.0.0.1:${a.port}/`, `http://localhost:${a.port}/`, `http://[::1]:${a.port}/`]) {
        const c = cap();
        const reg = await postJson(
          `${closed.url}/agents/register`,
          registerBody({ name: "local", endpoint: { url, transport: "TRANSPORT_HTTP_JSON" }, capabilities: [{ name: c }], tools: [] }),
        );
        expect(reg.status).toBe(200);
        const r = await postJson(`${closed.url}/route`, { capabilities: [c], dispatch: true });
        expect(r.status, url).toBe(400);
        expect(r.json.message).toMatch(/is a loopback address \(127\.0\.0\.0\/8, ::1\/128\); set DISPATCH_ALLOW_LOOPBACK=true to allow it/);
      }
      await new Promise((r) => setTimeout(r, 100));
      expect(a.tasks.items).toEqual([]);
    } finally {
      await closed.close();
    }
  });
});

describe("dispatch configuration and the task store", () => {
  it("validates every variable and names it", () => {
    expect(loadConfig({}).dispatch).toEqual({
      timeoutMs: 30_000,
      maxTimeoutMs: 300_000,
      attemptTimeoutMs: 10_000,
      maxAttempts: 3,
      maxResponseBytes: 1_048_576,
      allowLoopback: false,
      allowPrivate: false,
      ticketTtlMs: 60_000,
      taskRetention: 10_000,
      taskRetentionBytes: 64 * 1024 * 1024,
      taskRetentionMs: 3_600_000,
    });
    for (const [env, message] of [
      [{ DISPATCH_ALLOW_LOOPBACK: "yes" }, /^DISPATCH_ALLOW_LOOPBACK: must be one of true, false/],
      [{ DISPATCH_ALLOW_PRIVATE: "1" }, /^DISPATCH_ALLOW_PRIVATE: /],
      [{ DISPATCH_TIMEOUT: "10m" }, /^DISPATCH_TIMEOUT: must not exceed DISPATCH_MAX_TIMEOUT/],
      [{ DISPATCH_MAX_TIMEOUT: "soon" }, /^DISPATCH_MAX_TIMEOUT: must be a duration/],
      [{ DISPATCH_ATTEMPT_TIMEOUT: "0" }, /^DISPATCH_ATTEMPT_TIMEOUT: /],
      [{ DISPATCH_MAX_ATTEMPTS: "11" }, /^DISPATCH_MAX_ATTEMPTS: must be between 1 and 10/],
      [{ DISPATCH_MAX_RESPONSE_BYTES: "12" }, /^DISPATCH_MAX_RESPONSE_BYTES: /],
      [{ ROUTE_TICKET_TTL: "100ms" }, /^ROUTE_TICKET_TTL: /],
      [{ TASK_RETENTION: "0" }, /^TASK_RETENTION: /],
      [{ TASK_RETENTION_BYTES: "10" }, /^TASK_RETENTION_BYTES: /],
      [{ TASK_RETENTION_TTL: "10ms" }, /^TASK_RETENTION_TTL: must be between/],
    ] as const) {
      expect(() => loadConfig(env as Record<string, string>)).toThrow(message);
    }
  });

  it("keeps a bounded number of recent tasks, per tenant", () => {
    const store = new MemoryTaskStore(3, 1024 * 1024);
    const task = (id: string, tenant = "a") => ({
      taskId: id,
      tenant,
      capabilities: ["c"],
      status: 3,
      agentId: "x",
      attempts: [],
      result: { ok: true },
      resultBytes: 11,
      error: "",
      createdAt: 0,
      finishedAt: 1,
    });
    for (const id of ["1", "2", "3", "4"]) store.put(task(id));
    expect(store.get("a", "1")).toBeUndefined();
    expect(store.get("a", "4")?.result).toEqual({ ok: true });
    expect(store.get("b", "4")).toBeUndefined();
    // A result too big to keep is dropped, the task kept.
    store.put({ ...task("big"), resultBytes: 400_000 });
    expect(store.get("a", "big")).toMatchObject({ taskId: "big", result: undefined });
  });
});

describe("AddressGuard", () => {
  const closed = new AddressGuard({ loopback: false, private: false });
  const open = new AddressGuard({ loopback: true, private: true }, lookup);
  it.each([
    ["169.254.169.254", "cloud metadata", true],
    ["fd00:ec2::254", "cloud metadata", true],
    ["100.100.100.200", "cloud metadata", true],
    ["169.254.1.1", "link-local", true],
    ["fe80::1", "link-local", true],
    ["::ffff:169.254.169.254", "cloud metadata", true],
    ["::ffff:a9fe:a9fe", "cloud metadata", true],
    ["64:ff9b::169.254.169.254", "cloud metadata", true],
    ["0.0.0.0", "unspecified", true],
    ["::", "unspecified", true],
    ["224.0.0.1", "multicast", true],
    ["255.255.255.255", "broadcast", true],
    ["127.0.0.1", "loopback", false],
    ["::1", "loopback", false],
    ["::ffff:127.0.0.1", "loopback", false],
    ["10.1.2.3", "private", false],
    ["172.20.0.1", "private", false],
    ["192.168.1.1", "private", false],
    ["100.64.0.1", "private", false],
    ["fd12:3456::1", "private", false],
  ])("%s is refused as %s (always: %s)", (ip, rule, always) => {
    expect(closed.refusal(ip)).toContain(rule);
    if (always) expect(open.refusal(ip)).toContain("never dispatched to");
    else expect(open.refusal(ip)).toBeUndefined();
  });

  it.each(["8.8.8.8", "2001:4860:4860::8888", "172.32.0.1", "100.128.0.1"])("%s is allowed", (ip) => {
    expect(closed.refusal(ip)).toBeUndefined();
  });

  it("connects to the address it checked: the name's first answer", async () => {
    const pinned = await open.pin("http://agent.test:81/x", 80);
    expect(pinned).toMatchObject({ hostname: "agent.test", port: 81 });
    const seen: string[] = [];
    const g = new AddressGuard({ loopback: true, private: false }, async (h) => (seen.push(h), [{ address: "127.0.0.2", family: 4 }]));
    expect(await g.pin("https://svc.example/", 443)).toMatchObject({ address: "127.0.0.2", port: 443, hostname: "svc.example" });
    expect(seen).toEqual(["svc.example"]);
  });

  it("reuses a checked target: an IP literal's for good, a name's for PIN_CACHE_MS, then resolves and checks again; refusals are not kept", async () => {
    let answer = "127.0.0.2";
    const seen: string[] = [];
    const g = new AddressGuard({ loopback: true, private: false }, async (h) => (seen.push(h), [{ address: answer, family: 4 }]));
    const now = vi.spyOn(Date, "now");
    try {
      now.mockReturnValue(1_000_000);
      expect(g.cached("http://svc.example:81/x", 80)).toBeUndefined();
      const first = await g.pin("http://svc.example:81/x", 80);
      expect(g.cached("http://svc.example:81/x", 80)).toBe(first);
      // Another default port is another key (the URL alone does not say it).
      expect(g.cached("http://svc.example:81/x", 443)).toBeUndefined();
      now.mockReturnValue(1_000_000 + PIN_CACHE_MS - 1);
      expect(g.cached("http://svc.example:81/x", 80)).toBe(first);
      // The name now resolves to metadata: once the pin is stale, the new answer is checked and refused.
      answer = "169.254.169.254";
      now.mockReturnValue(1_000_000 + PIN_CACHE_MS);
      expect(g.cached("http://svc.example:81/x", 80)).toBeUndefined();
      await expect(g.pin("http://svc.example:81/x", 80)).rejects.toThrow(/cloud metadata/);
      expect(g.cached("http://svc.example:81/x", 80)).toBeUndefined();
      expect(seen).toEqual(["svc.example", "svc.example"]);
      // A literal: kept however long.
      const literal = await g.pin("http://127.0.0.3:9/", 80);
      now.mockReturnValue(1e13);
      expect(g.cached("http://127.0.0.3:9/", 80)).toBe(literal);
      await expect(g.pin("http://169.254.169.254/", 80)).rejects.toThrow(/cloud metadata/);
      expect(g.cached("http://169.254.169.254/", 80)).toBeUndefined();
    } finally {
      now.mockRestore();
    }
  });
});

