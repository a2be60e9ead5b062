import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemLookup, type Lookup } from "../src/dispatch/address-guard.js";
import { ConnectionPool } from "../src/dispatch/connection-pool.js";
import { mcpToolCall } from "../src/dispatch/mcp-client.js";
import { ADMIN_TOKEN, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { Collected } from "./support/feeds.js";

/**
 * MCP dispatch (issue 15, item 5): a routed task becomes a tools/call over
 * Streamable HTTP, sent with the official SDK's client to real MCP agent
 * processes on loopback (test/support/mcp-agent.mjs: the SDK's McpServer
 * behind StreamableHTTPServerTransport). Names resolve through an injected
 * lookup, as in dispatch.test.ts: "agent.test" → 127.0.0.1,
 * "metadata.test" → 169.254.169.254.
 */

const lookup: Lookup = async (host) => {
  if (host === "agent.test") return [{ address: "127.0.0.1", family: 4 }];
  if (host === "metadata.test") return [{ address: "169.254.169.254", family: 4 }];
  return systemLookup(host);
};

interface McpAgent {
  readonly port: number;
  readonly url: string;
  /** Every tools/call it took: tool, arguments, meta, session, headers. */
  readonly tasks: Collected<any>;
  /** Session ids, one per initialize request it took. */
  readonly inits: Collected<string>;
  readonly closed: Collected<string>;
  send(line: string): Promise<void>;
}

const script = path.resolve(import.meta.dirname, "support/mcp-agent.mjs");
const children: ChildProcess[] = [];

async function startMcpAgent(name: string, env: Record<string, string> = {}): Promise<McpAgent> {
  const child = spawn(process.execPath, [script, name], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "inherit"] });
  children.push(child);
  const tasks = new Collected<any>();
  const inits = new Collected<string>();
  const closed = new Collected<string>();
  const acks: (() => void)[] = [];
  let onPort: (p: number) => void = () => {};
  const port = new Promise<number>((r) => (onPort = r));
  let partial = "";
  child.stdout!.on("data", (d: Buffer) => {
    partial += d;
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      const [word, ...rest] = line.split(" ");
      const arg = rest.join(" ");
      if (word === "LISTENING") onPort(Number(arg));
      else if (word === "TASK") tasks.push(JSON.parse(arg));
      else if (word === "INIT") inits.push(arg);
      else if (word === "CLOSED") closed.push(arg);
      else if (word === "MODE") acks.shift()?.();
    }
  });
  const exited = new Promise<never>((_, reject) => child.once("exit", (code) => reject(new Error(`MCP agent ${name} exited (${code})`))));
  const p = await Promise.race([port, exited]);
  return {
    port: p,
    url: `http://127.0.0.1:${p}/mcp`,
    tasks,
    inits,
    closed,
    send: (line) =>
      new Promise<void>((resolve) => {
        acks.push(resolve);
        child.stdin!.write(`${line}\n`);
      }),
  };
}

let t: TestApp;
let capN = 0;
const cap = () => `mcp.cap${++capN}`;

async function register(name: string, url: string, capability: string, load: number): Promise<string> {
  const r = await postJson(
    `${t.url}/agents/register`,
    registerBody({ name, endpoint: { url, transport: "TRANSPORT_MCP_STREAMABLE_HTTP" }, capabilities: [{ name: capability }], tools: [] }),
  );
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  const id = r.json.agent.id as string;
  expect((await postJson(`${t.url}/agents/${id}/heartbeat`, { load })).status).toBe(200);
  return id;
}

function route(capability: string, task: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return postJson(
    `${t.url}/route`,
    { capabilities: [capability], dispatch: true, task, ...extra },
    { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  t = await startApp({ DISPATCH_ALLOW_LOOPBACK: "true", DISPATCH_ATTEMPT_TIMEOUT: "2s" }, { dispatchLookup: lookup });
});

afterAll(async () => {
  await t?.close();
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
});

describe("MCP dispatch: tools/call over Streamable HTTP", () => {
  it("calls the tool the task names with its arguments; the result is the CallToolResult; task id, ticket and trace go along", async () => {
    const c = cap();
    const agent = await startMcpAgent("echoer");
    const agentId = await register("echoer", `http://agent.test:${agent.port}/mcp`, c, 0);
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";

    const r = await postJson(
      `${t.url}/route`,
      { capabilities: [c], dispatch: true, task: { tool: "echo", arguments: { question: "6*7", n: 42 } } },
      { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
    );
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const answer = { agent: "echoer", tool: "echo", echo: { question: "6*7", n: 42 } };
    expect(r.json.result).toEqual({ content: [{ type: "text", text: JSON.stringify(answer) }], structuredContent: answer });
    expect(r.json.attempts).toMatchObject([{ attempt: 1, agentId, outcome: "ATTEMPT_OUTCOME_OK" }]);

    const [seen] = await agent.tasks.waitFor(1);
    expect(seen.tool).toBe("echo");
    expect(seen.arguments).toEqual({ question: "6*7", n: 42 });
    // In _meta, for the tool itself.
    expect(seen.meta).toMatchObject({
      "federation-core/task_id": r.json.taskId,
      "federation-core/ticket": r.json.ticket,
      "federation-core/tenant": "default",
      "federation-core/capabilities": [c],
    });
    expect(seen.meta.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    // And as HTTP headers on the request that carried the call (the name in Host, connected to 127.0.0.1).
    expect(seen.headers).toMatchObject({
      host: `agent.test:${agent.port}`,
      taskId: r.json.taskId,
      idempotencyKey: r.json.taskId,
      ticket: r.json.ticket,
      traceparent: seen.meta.traceparent,
    });
    expect(seen.headers.authorization).toBeUndefined();
    // The ticket verifies with plain jose: for this agent, this task.
    const jwks = createRemoteJWKSet(new URL(`${t.url}/.well-known/jwks.json`));
    const v = await jwtVerify(seen.headers.ticket, jwks, { issuer: "federation-core", audience: agentId });
    expect(v.payload).toMatchObject({ task_id: r.json.taskId, capabilities: [c] });
  });

  it("names the tool after the first capability when the task does not, with the task's fields as arguments", async () => {
    const c = cap();
    const agent = await startMcpAgent("by-capability", { TOOL_NAME: c });
    await register("by-capability", agent.url, c, 0);
    const r = await route(c, { text: "hello", lang: "en" });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.result.structuredContent).toEqual({ agent: "by-capability", tool: c, echo: { text: "hello", lang: "en" } });
    expect(mcpToolCall({ tool: "t", arguments: { a: 1 }, ignored: true }, ["cap"])).toEqual({ name: "t", arguments: { a: 1 } });
    expect(mcpToolCall(undefined, ["cap"])).toEqual({ name: "cap", arguments: {} });
  });

  it("fails over from an isError answer to a second MCP agent; GetTask shows both attempts", async () => {
    const c = cap();
    const failing = await startMcpAgent("failing", { MODE: "fail" });
    const steady = await startMcpAgent("steady");
    const failingId = await register("failing", failing.url, c, 0);
    const steadyId = await register("steady", steady.url, c, 0.5);

    const r = await route(c, { tool: "flaky", arguments: { x: 1 } });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.agent.id).toBe(steadyId);
    expect(r.json.result.structuredContent).toEqual({ agent: "steady", tool: "flaky", echo: { x: 1 } });
    expect(r.json.attempts.map((a: any) => [a.agentId, a.outcome])).toEqual([
      [failingId, "ATTEMPT_OUTCOME_ERROR"],
      [steadyId, "ATTEMPT_OUTCOME_OK"],
    ]);
    expect(r.json.attempts[0].detail).toContain('tool "flaky" answered isError: failing fails on cue');
    // Both agents got the same task id to deduplicate on.
    expect((await failing.tasks.waitFor(1))[0].meta["federation-core/task_id"]).toBe(r.json.taskId);
    expect((await steady.tasks.waitFor(1))[0].meta["federation-core/task_id"]).toBe(r.json.taskId);
    const g = await getJson(`${t.url}/tasks/${r.json.taskId}`);
    expect(g.json.task).toMatchObject({
      status: "TASK_STATUS_COMPLETED",
      agentId: steadyId,
      attempts: [{ outcome: "ATTEMPT_OUTCOME_ERROR" }, { outcome: "ATTEMPT_OUTCOME_OK" }],
    });
  });

  it("a JSON-RPC error or an unknown tool fails the attempt; a malformed task.tool is the caller's INVALID_ARGUMENT", async () => {
    const c = cap();
    const agent = await startMcpAgent("strict");
    await register("strict", agent.url, c, 0);
    let r = await route(c, { tool: "rpc_error" });
    expect(r.status, JSON.stringify(r.json)).toBe(503);
    expect(r.json.message).toMatch(/: ERROR MCP error -32603: strict: internal failure on cue\)$/);
    // The SDK's McpServer answers an unknown tool as an isError result.
    r = await route(c, { tool: "no_such_tool" });
    expect(r.status, JSON.stringify(r.json)).toBe(503);
    expect(r.json.message).toContain('ERROR tool "no_such_tool" answered isError: MCP error -32602: Tool no_such_tool not found');

    for (const [task, field] of [
      [{ tool: 42 }, "task.tool"],
      [{ tool: "echo", arguments: [1, 2] }, "task.arguments"],
    ] as const) {
      const bad = await route(c, task);
      expect(bad.status, JSON.stringify(task)).toBe(400);
      expect(bad.json.message).toMatch(new RegExp(`^${field.replace(".", "\\.")}: `));
    }
  });
});

describe("MCP sessions are reused", () => {
  it("pays initialize once per agent over many tasks, sequential and concurrent, and opens a new session when the agent forgot its own", async () => {
    const c = cap();
    const agent = await startMcpAgent("reused");
    await register("reused", agent.url, c, 0);
    for (let i = 0; i < 5; i++) {
      const r = await route(c, { tool: "echo", arguments: { i } });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      expect(r.json.result.structuredContent.echo).toEqual({ i });
    }
    const parallel = await Promise.all(Array.from({ length: 8 }, (_, i) => route(c, { tool: "echo", arguments: { i: 100 + i } })));
    expect(parallel.map((r) => r.status)).toEqual(Array(8).fill(200));
    const tasks = await agent.tasks.waitFor(13);
    expect(agent.inits.items).toHaveLength(1);
    expect(new Set(tasks.map((x) => x.session))).toEqual(new Set(agent.inits.items));

    // The agent restarts (forgets every session): the next task gets a new session, still one attempt.
    await agent.send("forget");
    const r = await route(c, { tool: "echo", arguments: { after: "restart" } });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.attempts).toHaveLength(1);
    expect(agent.inits.items).toHaveLength(2);
    expect((await agent.tasks.waitFor(14))[13].session).toBe(agent.inits.items[1]);
  });

  it("keeps sessions per tenant: another tenant's task to a shared agent does not ride this tenant's session", async () => {
    const c = cap();
    const agent = await startMcpAgent("shared");
    const id = await register("shared", agent.url, c, 0);
    const share = await postJson(`${t.url}/admin/agents/${id}:share`, { shared: true });
    expect(share.status, JSON.stringify(share.json)).toBe(200);
    expect(share.json.agent.shared).toBe(true);
    const minted = await postJson(`${t.url}/admin/tokens`, { tenant: "other", scopes: ["route"], subject: "other" });
    expect((await route(c, { tool: "echo" })).status).toBe(200);
    const theirs = await postJson(`${t.url}/route`, { capabilities: [c], dispatch: true, task: { tool: "echo" } }, { headers: { authorization: `Bearer ${minted.json.token}` } });
    expect(theirs.status, JSON.stringify(theirs.json)).toBe(200);
    const tasks = await agent.tasks.waitFor(2);
    expect(tasks.map((x) => x.meta["federation-core/tenant"])).toEqual(["default", "other"]);
    expect(tasks[0].session).not.toBe(tasks[1].session);
    expect(agent.inits.items).toHaveLength(2);
  });
});

describe("SSRF guard on MCP dispatch", () => {
  it("refuses an MCP endpoint at 169.254.169.254, or a name resolving there; nothing is sent", async () => {
    const c1 = cap();
    await register("metadata", "http://169.254.169.254/mcp", c1, 0);
    let r = await route(c1, { tool: "echo" });
    expect(r.status).toBe(400);
    expect(r.json.code).toBe(9);
    expect(r.json.message).toMatch(/dispatch refused: 169\.254\.169\.254 is a cloud metadata address/);

    const behind = await startMcpAgent("behind-metadata");
    const c2 = cap();
    await register("by-name", `http://metadata.test:${behind.port}/mcp`, c2, 0);
    r = await route(c2, { tool: "echo" });
    expect(r.status).toBe(400);
    expect(r.json.message).toContain('"metadata.test" resolves to 169.254.169.254 is a cloud metadata address');
    await sleep(100);
    expect(behind.inits.items).toEqual([]);
    expect(behind.tasks.items).toEqual([]);
  });

  it("never follows a redirect, though the SDK would follow a same-origin one: the target receives nothing", async () => {
    const canary = await startMcpAgent("canary");
    const hits: string[] = [];
    const redirector = http.createServer((req, res) => {
      hits.push(`${req.method} ${req.url}`);
      req.resume();
      res.writeHead(307, { location: canary.url }).end();
    });
    await new Promise<void>((r) => redirector.listen(0, "127.0.0.1", r));
    try {
      const c = cap();
      await register("redirector", `http://127.0.0.1:${(redirector.address() as AddressInfo).port}/mcp`, c, 0);
      const r = await route(c, { tool: "echo" });
      expect(r.status, JSON.stringify(r.json)).toBe(400);
      expect(r.json.message).toContain(`answered HTTP 307 redirecting to "${canary.url}"; dispatch never follows redirects`);
      expect(hits).toEqual(["POST /mcp"]);
      await sleep(100);
      expect(canary.inits.items).toEqual([]);
    } finally {
      redirector.close();
    }
  });
});

describe("ConnectionPool", () => {
  it("closes the least recently used entry past its bound, idle entries after idleMs, and a held one only when let go", async () => {
    const closed: string[] = [];
    const pool = new ConnectionPool<string>({ max: 2, idleMs: 100, close: (v) => closed.push(v) });
    const use = (k: string) => pool.with(k, () => `conn-${k}`, async (v, reused) => ({ v, reused }));
    expect(await use("a")).toEqual({ v: "conn-a", reused: false });
    expect(await use("a")).toEqual({ v: "conn-a", reused: true });
    await use("b");
    await use("a"); // b is now the least recently used
    await use("c");
    expect(closed).toEqual(["conn-b"]);

    // Held past its eviction: closed when the call ends, not under it.
    let release!: () => void;
    const held = pool.with("d", () => "conn-d", () => new Promise<void>((r) => (release = r)));
    await use("e");
    await use("f");
    expect(closed).not.toContain("conn-d");
    release();
    await held;
    expect(closed).toContain("conn-d");

    // Idle: everything goes after idleMs without use.
    await sleep(300);
    expect(pool.size).toBe(0);
    expect(closed.sort()).toEqual(["conn-a", "conn-b", "conn-c", "conn-d", "conn-e", "conn-f"]);
    pool.close();
  });
});
