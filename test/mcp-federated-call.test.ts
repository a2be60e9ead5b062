import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode, McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { mintToken } from "./support/federation-peers.js";
import { Collected } from "./support/feeds.js";
import { startProcess, type ServiceProcess } from "./support/process.js";

/**
 * tools/call of a federated tool over /mcp (issue 18, item 1, with part
 * 7's cross-federation routing): A (in this process) peers with B (its own
 * process) for tenant "default" only. B has a real MCP agent process
 * (test/support/mcp-agent.mjs, the SDK's McpServer) registered with the
 * tools "bravo_lookup" and "flaky". An MCP client of A (the official
 * TypeScript SDK's Client) at /mcp?scope=federated lists "b__bravo_lookup"
 * and calls it: A ranks B's providers of the tool, forwards the task to B
 * as a Route, B calls its agent, and the agent's CallToolResult comes back.
 */

const mcpAgentScript = path.resolve(import.meta.dirname, "support/mcp-agent.mjs");
let a: TestApp;
let b: ServiceProcess;
let agentChild: ChildProcess;
const tasks = new Collected<any>();
let bravoId: string;
let otherToken: string;

async function connect(pathAndQuery: string, token = ADMIN_TOKEN): Promise<Client> {
  const transport = new StreamableHTTPClientTransport(new URL(`${a.url}${pathAndQuery}`), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  const client = new Client({ name: "federated-call-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

/** The MCP agent process on B: its port, and every tool call it takes (on `tasks`). */
async function startMcpAgent(name: string): Promise<number> {
  agentChild = spawn(process.execPath, [mcpAgentScript, name], { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, TOOL_NAME: "bravo_lookup" } });
  let onPort: (p: number) => void = () => {};
  const port = new Promise<number>((r) => (onPort = r));
  let partial = "";
  agentChild.stdout!.on("data", (d: Buffer) => {
    partial += d;
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith("LISTENING ")) onPort(Number(line.slice(10)));
      else if (line.startsWith("TASK ")) tasks.push(JSON.parse(line.slice(5)));
    }
  });
  return port;
}

async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 5_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  b = await startProcess({ FEDERATION_INSTANCE_ID: "fed-b", DISPATCH_ALLOW_LOOPBACK: "true" });
  a = await startApp({ FEDERATION_INSTANCE_ID: "fed-a", FEDERATION_TIMEOUT: "2s", FEDERATION_CACHE_TTL: "0" });
  const port = await startMcpAgent("bravo-mcp");
  const schema = { type: "object", properties: { q: { type: "string" } } };
  const reg = await postJson(
    `${b.url}/agents/register`,
    registerBody({
      name: "bravo-mcp",
      endpoint: { url: `http://127.0.0.1:${port}/mcp`, transport: "TRANSPORT_MCP_STREAMABLE_HTTP" },
      capabilities: [{ name: "bravo.mcp", tags: [] }],
      tools: [
        { name: "bravo_lookup", description: "Looks things up on B", inputSchema: schema },
        { name: "flaky", description: "Fails on cue", inputSchema: { type: "object" } },
      ],
      leaseTtl: "600s",
    }),
  );
  expect(reg.status, JSON.stringify(reg.json)).toBe(200);
  bravoId = reg.json.agent.id;
  // B's token for A: reads, and Route (a forwarded Route needs the route scope).
  const token = await mintToken(b.url, "default", ["agents:read", "route"]);
  const added = await postJson(`${a.url}/federation/peers`, { peerId: "b", url: b.url, token, tenants: ["default"] });
  expect(added.status, JSON.stringify(added.json)).toBe(200);
  otherToken = (await postJson(`${a.url}/admin/tokens`, { tenant: "other", scopes: ["agents:read", "agents:write", "route"], subject: "other" })).json.token;
}, 60_000);

afterAll(async () => {
  if (agentChild && agentChild.exitCode === null) agentChild.kill("SIGKILL");
  await a?.close();
  await b?.dispose();
});

describe("tools/call of a remote tool over /mcp?scope=federated", () => {
  it("lands on B's MCP agent process with the tool's name there, and answers the agent's CallToolResult; the outcome feeds A's reputation", async () => {
    const client = await connect("/mcp?scope=federated");
    const { tools } = await client.listTools();
    const listed = tools.find((t) => t.name === "b__bravo_lookup");
    expect(listed?._meta?.["federation-core/origin"]).toMatchObject({ peerId: "b", peerUrl: b.url });
    expect(listed?.inputSchema).toEqual({ type: "object", properties: { q: { type: "string" } } });

    const before = tasks.items.length;
    const res = (await client.callTool({ name: "b__bravo_lookup", arguments: { q: "where" } })) as CallToolResult;
    expect(res.isError).toBeFalsy();
    const answer = { agent: "bravo-mcp", tool: "bravo_lookup", echo: { q: "where" } };
    expect(res.structuredContent).toEqual(answer);
    expect(res.content).toEqual([{ type: "text", text: JSON.stringify(answer) }]);
    const key = `b/${bravoId}`;
    expect(res._meta?.["federation-core/agent_id"]).toBe(key);
    const taskId = res._meta?.["federation-core/task_id"] as string;
    expect(taskId).toMatch(/^[0-9a-f-]{36}$/);

    // The agent process got one tools/call of its own tool name, from B (B's tenant, B's task with A's task id).
    const got = (await tasks.waitFor(before + 1)).slice(before);
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ tool: "bravo_lookup", arguments: { q: "where" }, headers: { taskId } });
    expect(got[0].meta).toMatchObject({ "federation-core/task_id": taskId, "federation-core/tenant": "default", "federation-core/capabilities": ["bravo.mcp"] });
    const onB = await getJson(`${b.url}/tasks/${taskId}`);
    expect(onB.status, JSON.stringify(onB.json)).toBe(200);
    expect(onB.json.task).toMatchObject({ status: "TASK_STATUS_COMPLETED", agentId: bravoId });

    // A kept the task: one OK attempt through peer b; the remote agent's standing on A has the evidence.
    const onA = await getJson(`${a.url}/tasks/${taskId}`);
    expect(onA.json.task).toMatchObject({ status: "TASK_STATUS_COMPLETED", agentId: key });
    expect(onA.json.task.attempts[0]).toMatchObject({ agentId: key, outcome: "ATTEMPT_OUTCOME_OK" });
    expect(onA.json.task.attempts[0].detail).toContain(`via peer "b" (fed-b): remote task ${taskId}`);
    const evidence = await until("the outcome in A's reputation", () => {
      const s = a.app.router.reputation.standing(key, undefined, Date.now());
      return s.evidence > 0 ? s.evidence : undefined;
    });
    expect(evidence).toBeGreaterThan(0);
    await client.close();
  });

  it("answers a failed remote tool with an isError result that says where it failed, and counts the failure", async () => {
    const client = await connect("/mcp?scope=federated");
    agentChild.stdin!.write("mode fail\n");
    try {
      const before = tasks.items.length;
      const res = (await client.callTool({ name: "b__flaky", arguments: {} })) as CallToolResult;
      expect(res.isError).toBe(true);
      const text = (res.content[0] as { text: string }).text;
      expect(text).toContain('via peer "b"');
      expect(text).toContain("isError");
      // It did reach the agent (once: B's one provider; A's one candidate).
      const got = (await tasks.waitFor(before + 1)).slice(before);
      expect(got.map((t) => t.tool)).toEqual(["flaky"]);
    } finally {
      agentChild.stdin!.write("mode ok\n");
    }
    await client.close();
  });

  it("answers a remote name the peer does not list with Unknown tool, and a remote tool on a local session with where to call it", async () => {
    const fed = await connect("/mcp?scope=federated");
    const unknown = await fed.callTool({ name: "b__no_such_tool", arguments: {} }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(McpError);
    expect((unknown as McpError).code).toBe(ErrorCode.InvalidParams);
    expect((unknown as McpError).message).toContain("Unknown tool: b__no_such_tool");
    await fed.close();

    const local = await connect("/mcp");
    const err = await local.callTool({ name: "b__bravo_lookup", arguments: {} }).catch((e: unknown) => e);
    expect((err as McpError).code).toBe(ErrorCode.InvalidParams);
    expect((err as McpError).message).toContain('remote tool of peer "b"');
    expect((err as McpError).message).toContain("/mcp?scope=federated");
    await local.close();
  });

  it("keeps the peer's tools invisible and uncallable for a tenant the peer is not configured for", async () => {
    const before = tasks.items.length;
    const client = await connect("/mcp?scope=federated", otherToken);
    const { tools } = await client.listTools();
    expect(tools.some((t) => t.name.startsWith("b__"))).toBe(false);
    const err = await client.callTool({ name: "b__bravo_lookup", arguments: { q: "x" } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect((err as McpError).code).toBe(ErrorCode.InvalidParams);
    expect((err as McpError).message).toContain("Unknown tool: b__bravo_lookup");
    await client.close();
    // Nothing reached the agent for that tenant.
    expect(tasks.items.length).toBe(before);
  });
});
