import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { LATEST_PROTOCOL_VERSION, McpError, ToolListChangedNotificationSchema, type Tool } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemLookup, type Lookup } from "../src/dispatch/address-guard.js";
import { ADMIN_TOKEN, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { killAgents, startAgent } from "./support/dispatch-agents.js";
import { Collected } from "./support/feeds.js";

/**
 * /mcp (issue 18, item 1): the federation as one MCP server, driven by the
 * official TypeScript SDK's Client over Streamable HTTP (and, at the end,
 * by the Python `mcp` package's Client) against a started service. Tool
 * calls land on real agent processes: test/support/mcp-agent.mjs (the
 * SDK's McpServer) and test/support/dispatch-agent.mjs (HTTP/JSON).
 */

const lookup: Lookup = async (host) => (host === "agent.test" ? [{ address: "127.0.0.1", family: 4 }] : systemLookup(host));
const mcpAgentScript = path.resolve(import.meta.dirname, "support/mcp-agent.mjs");
const pythonScript = path.resolve(import.meta.dirname, "support/mcp-python-client.py");
const PYTHON_VENV = process.env.FC_PYTHON_VENV ?? path.join(os.homedir(), ".cache", "federation-core", "python-venv");
const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let t: TestApp;
let otherToken: string;
let readOnlyToken: string;

/** `token` "": no authorization header. */
async function connect(url: string, token = ADMIN_TOKEN, name = "test-client") {
  const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
    requestInit: token ? { headers: { authorization: `Bearer ${token}` } } : {},
  });
  const client = new Client({ name, version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

/** Every page of tools/list, and how many pages it took. */
async function listAll(client: Client): Promise<{ tools: Tool[]; pages: number }> {
  const tools: Tool[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = await client.listTools(cursor === undefined ? {} : { cursor });
    tools.push(...page.tools);
    cursor = page.nextCursor;
    pages++;
  } while (cursor !== undefined && pages < 100);
  return { tools, pages };
}

async function register(body: Record<string, unknown>, token = ADMIN_TOKEN): Promise<string> {
  const r = await postJson(`${t.url}/agents/register`, registerBody(body), { headers: { authorization: `Bearer ${token}` } });
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json.agent.id as string;
}

const tool = (name: string, description = `${name} tool`) => ({ name, description, inputSchema: { type: "object", properties: { q: { type: "string" } } } });

async function startMcpAgent(name: string): Promise<{ port: number; tasks: Collected<any> }> {
  const child = spawn(process.execPath, [mcpAgentScript, name], { stdio: ["pipe", "pipe", "inherit"] });
  children.push(child);
  const tasks = new Collected<any>();
  let onPort: (p: number) => void = () => {};
  const port = new Promise<number>((r) => (onPort = r));
  let partial = "";
  child.stdout!.on("data", (d: Buffer) => {
    partial += d;
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith("LISTENING ")) onPort(Number(line.slice(10)));
      else if (line.startsWith("TASK ")) tasks.push(JSON.parse(line.slice(5)));
    }
  });
  return { port: await port, tasks };
}

beforeAll(async () => {
  t = await startApp({ DISPATCH_ALLOW_LOOPBACK: "true", DISPATCH_ATTEMPT_TIMEOUT: "2s" }, { dispatchLookup: lookup });
  otherToken = (await postJson(`${t.url}/admin/tokens`, { tenant: "other", scopes: ["agents:write", "agents:read", "route"], subject: "other" })).json.token;
  readOnlyToken = (await postJson(`${t.url}/admin/tokens`, { tenant: "default", scopes: ["agents:read"], subject: "reader" })).json.token;
});

afterAll(async () => {
  killAgents();
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await t?.close();
});

describe("/mcp: authentication", () => {
  it("answers 401 without a bearer token, and the SDK client fails to connect", async () => {
    const res = await fetch(`${t.url}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "x", version: "1" } } }),
    });
    expect(res.status).toBe(401);
    await expect(connect(t.url, "")).rejects.toSatisfy((e: unknown) => e instanceof StreamableHTTPError && e.code === 401);
    await expect(connect(t.url, "not-a-token")).rejects.toSatisfy((e: unknown) => e instanceof StreamableHTTPError && e.code === 401);
  });

  it("negotiates the SDK's current protocol revision and announces tools with listChanged", async () => {
    const { client, transport } = await connect(t.url);
    expect(transport.protocolVersion).toBe(LATEST_PROTOCOL_VERSION);
    expect(client.getServerCapabilities()?.tools).toEqual({ listChanged: true });
    await client.close();
  });
});

describe("/mcp: tools/list is the tenant's distinct catalog", () => {
  it("lists each distinct tool once, pages with cursors, names same-named distinct tools uniquely, and hides other tenants' tools", async () => {
    // 3 agents × 50 tools with the same content: 50 distinct tools, not 150.
    const common = Array.from({ length: 50 }, (_, i) => tool(`common_${String(i).padStart(3, "0")}`));
    for (let i = 0; i < 3; i++) await register({ name: `lister-${i}`, tools: common });
    // 120 more, one agent each half: 170 distinct with the above, over two pages of 100.
    await register({ name: "lister-a", tools: Array.from({ length: 60 }, (_, i) => tool(`bulk_a_${String(i).padStart(3, "0")}`)) });
    await register({ name: "lister-b", tools: Array.from({ length: 60 }, (_, i) => tool(`bulk_b_${String(i).padStart(3, "0")}`)) });
    // Two distinct tools named "translate" (different descriptions).
    await register({ name: "translator-1", tools: [tool("translate", "translates text, v1")] });
    await register({ name: "translator-2", tools: [tool("translate", "translates text, v2")] });
    // Another tenant's tool, never shown to this one.
    await register({ name: "secretive", tools: [tool("other_tenant_secret")] }, otherToken);

    const { client } = await connect(t.url);
    const { tools, pages } = await listAll(client);
    const names = tools.map((x) => x.name);
    expect(pages).toBeGreaterThanOrEqual(2);
    expect(new Set(names).size).toBe(names.length);
    expect(names.filter((n) => n.startsWith("common_"))).toHaveLength(50);
    expect(names.filter((n) => n.startsWith("bulk_"))).toHaveLength(120);
    const common0 = tools.find((x) => x.name === "common_000")!;
    expect(common0._meta).toMatchObject({ "federation-core/providers": 3 });
    expect(common0.inputSchema).toEqual({ type: "object", properties: { q: { type: "string" } } });
    // Same-named distinct tools: both listed, each under a unique, stable name.
    const translate = tools.filter((x) => x.name.startsWith("translate"));
    expect(translate).toHaveLength(2);
    expect(translate.every((x) => /^translate__.{8}$/.test(x.name) && x.title === "translate")).toBe(true);
    expect(new Set(translate.map((x) => x.description))).toEqual(new Set(["translates text, v1", "translates text, v2"]));
    expect(names).not.toContain("other_tenant_secret");
    // The same listing again: the same names (stable).
    expect((await listAll(client)).tools.map((x) => x.name)).toEqual(names);
    await expect(client.listTools({ cursor: "not-a-cursor" })).rejects.toBeInstanceOf(McpError);

    // The other tenant sees its own tool, and none of this tenant's.
    const other = await connect(t.url, otherToken);
    const otherNames = (await listAll(other.client)).tools.map((x) => x.name);
    expect(otherNames).toContain("other_tenant_secret");
    expect(otherNames.some((n) => n.startsWith("common_") || n.startsWith("translate"))).toBe(false);
    // ...and cannot call them.
    await expect(other.client.callTool({ name: "common_000", arguments: {} })).rejects.toThrow(/Unknown tool/);
    // Nor can it use this tenant's session.
    const res = await fetch(`${t.url}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${otherToken}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": (client.transport as StreamableHTTPClientTransport).sessionId!,
        "mcp-protocol-version": LATEST_PROTOCOL_VERSION,
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "tools/list", params: {} }),
    });
    expect(res.status).toBe(404);
    await other.client.close();
    await client.close();
  });
});

describe("/mcp: tools/call routes and dispatches to an agent offering the tool", () => {
  it("calls a tool of a real MCP agent process and returns its CallToolResult", async () => {
    const agent = await startMcpAgent("mcp-echoer");
    const agentId = await register({
      name: "mcp-echoer",
      endpoint: { url: `http://agent.test:${agent.port}/mcp`, transport: "TRANSPORT_MCP_STREAMABLE_HTTP" },
      capabilities: [{ name: "mcp.echo" }],
      tools: [{ name: "echo", description: "echo (test agent mcp-echoer)", inputSchema: { type: "object" } }],
    });
    await postJson(`${t.url}/agents/${agentId}/heartbeat`, { load: 0 });
    const { client } = await connect(t.url);
    const result = await client.callTool({ name: "echo", arguments: { question: "6*7", n: 42 } });
    const answer = { agent: "mcp-echoer", tool: "echo", echo: { question: "6*7", n: 42 } };
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toEqual(answer);
    expect(result.content).toEqual([{ type: "text", text: JSON.stringify(answer) }]);
    expect(result._meta).toMatchObject({ "federation-core/agent_id": agentId });
    const [seen] = await agent.tasks.waitFor(1);
    expect(seen.arguments).toEqual({ question: "6*7", n: 42 });
    expect(seen.meta["federation-core/tenant"]).toBe("default");
    await client.close();
  });

  it("calls a tool of a real HTTP/JSON agent process: its result is structuredContent and text", async () => {
    const agent = await startAgent("http", "http-summarizer");
    const agentId = await register({
      name: "http-summarizer",
      endpoint: { url: `http://agent.test:${agent.port}/execute`, transport: "TRANSPORT_HTTP_JSON" },
      capabilities: [{ name: "text.summarize" }],
      tools: [tool("summarize", "summarizes text")],
    });
    await postJson(`${t.url}/agents/${agentId}/heartbeat`, { load: 0 });
    const { client } = await connect(t.url);
    const result = await client.callTool({ name: "summarize", arguments: { q: "a long text" } });
    expect(result.isError).toBeFalsy();
    const [task] = await agent.tasks.waitFor(1);
    const expected = { agent: "http-summarizer", taskId: task.taskId, echo: { tool: "summarize", arguments: { q: "a long text" } } };
    expect(result.structuredContent).toEqual(expected);
    expect(result.content).toEqual([{ type: "text", text: JSON.stringify(expected) }]);
    await client.close();
  });

  it("answers isError when no agent can serve, a protocol error for an unknown tool, and refuses tools/call without the route scope", async () => {
    // Registered at a port nobody listens on: every attempt fails.
    const id = await register({
      name: "unreachable",
      endpoint: { url: "http://agent.test:1/execute", transport: "TRANSPORT_HTTP_JSON" },
      tools: [tool("unreachable_tool")],
    });
    await postJson(`${t.url}/agents/${id}/heartbeat`, { load: 0 });
    const { client } = await connect(t.url);
    const failed = await client.callTool({ name: "unreachable_tool", arguments: {} });
    expect(failed.isError).toBe(true);
    expect(JSON.stringify(failed.content)).toMatch(/every attempt failed|UNREACHABLE/);
    await expect(client.callTool({ name: "no_such_tool", arguments: {} })).rejects.toThrow(/Unknown tool: no_such_tool/);
    await client.close();

    const reader = await connect(t.url, readOnlyToken);
    expect((await listAll(reader.client)).tools.map((x) => x.name)).toContain("unreachable_tool");
    await expect(reader.client.callTool({ name: "unreachable_tool", arguments: {} })).rejects.toThrow(/requires scope "route"/);
    await reader.client.close();
  });
});

describe("/mcp: notifications/tools/list_changed", () => {
  it("arrives after a registration adds a tool to the tenant's catalog, not after another tenant's", async () => {
    const { client } = await connect(t.url);
    const changed = new Collected<unknown>();
    client.setNotificationHandler(ToolListChangedNotificationSchema, (n) => changed.push(n));
    // The GET stream that carries server notifications opens after initialization.
    await sleep(300);
    await register({ name: "other-newcomer", tools: [tool("other_new_tool")] }, otherToken);
    await sleep(800);
    expect(changed.items).toHaveLength(0);
    await register({ name: "newcomer", tools: [tool("brand_new_tool")] });
    await changed.waitFor(1, 3_000);
    expect((await listAll(client)).tools.map((x) => x.name)).toContain("brand_new_tool");
    await client.close();
  });
});

describe("/mcp: sessions are bounded", () => {
  let small: TestApp;
  beforeAll(async () => {
    small = await startApp({ MCP_MAX_SESSIONS: "2", MCP_SESSION_IDLE: "1s" });
  });
  afterAll(() => small?.close());

  it("refuses an initialize past MCP_MAX_SESSIONS with 503 until a session ends; idle sessions are closed", async () => {
    const a = await connect(small.url);
    const b = await connect(small.url);
    expect(small.app.mcp.sessionCount).toBe(2);
    await expect(connect(small.url)).rejects.toSatisfy((e: unknown) => e instanceof StreamableHTTPError && e.code === 503);
    await a.transport.terminateSession();
    expect(small.app.mcp.sessionCount).toBe(1);
    const c = await connect(small.url);
    expect((await c.client.listTools()).tools).toEqual([]);
    // Idle past MCP_SESSION_IDLE (1s): closed; the old session id is then unknown (404).
    await sleep(2_000);
    expect(small.app.mcp.sessionCount).toBe(0);
    await expect(b.client.listTools()).rejects.toSatisfy((e: unknown) => e instanceof StreamableHTTPError && e.code === 404);
    for (const x of [a, b, c]) await x.client.close().catch(() => {});
  });
});

describe("/mcp with the Python mcp client", () => {
  it("lists the tools and calls one on a real agent process", async () => {
    const python = path.join(PYTHON_VENV, "bin", "python3");
    expect(existsSync(python), `no venv at ${PYTHON_VENV}: run scripts/test.sh`).toBe(true);
    const agent = await startMcpAgent("py-target");
    const agentId = await register({
      name: "py-target",
      endpoint: { url: `http://agent.test:${agent.port}/mcp`, transport: "TRANSPORT_MCP_STREAMABLE_HTTP" },
      tools: [{ name: "flaky", description: "flaky (test agent py-target)", inputSchema: { type: "object" } }],
    });
    await postJson(`${t.url}/agents/${agentId}/heartbeat`, { load: 0 });
    const child = spawn(python, [pythonScript, "flaky", JSON.stringify({ from: "python" })], {
      env: { ...process.env, FEDERATION_MCP_URL: `${t.url}/mcp`, FEDERATION_TOKEN: ADMIN_TOKEN },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    expect(code, stderr).toBe(0);
    const line = (word: string) => JSON.parse(stdout.split("\n").find((l) => l.startsWith(`${word} `))!.slice(word.length + 1));
    expect(stdout).toMatch(/^PROTOCOL \d{4}-\d{2}-\d{2}$/m);
    const names = line("TOOLS") as string[];
    expect(names).toContain("flaky");
    expect(names).not.toContain("other_tenant_secret");
    const result = line("RESULT");
    expect(result).toEqual({
      isError: false,
      structuredContent: { agent: "py-target", tool: "flaky", echo: { from: "python" } },
      text: JSON.stringify({ agent: "py-target", tool: "flaky", echo: { from: "python" } }),
    });
    expect((await agent.tasks.waitFor(1))[0].arguments).toEqual({ from: "python" });
  }, 60_000);
});
