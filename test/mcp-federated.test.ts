import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode, LATEST_PROTOCOL_VERSION, McpError, type Tool } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, postJson, startApp, type TestApp } from "./support/app.js";
import { mintToken, registerAgent } from "./support/federation-peers.js";
import { startProcess, type ServiceProcess } from "./support/process.js";

/**
 * tools/list over /mcp, federated when asked (issue 18, item 1; part 7's
 * peers): A (in this process) peers with B (its own process) for tenant
 * "default". An MCP client of A that connects to `/mcp?scope=federated`
 * (the official TypeScript SDK's Client: the URL is all it needs) sees B's
 * tools after A's on the first page, each named `<peer>__<name>` with its
 * origin in `_meta`; `/mcp` alone lists A's only; another tenant of A,
 * not permitted to see the peer, sees no remote tool; tools/call of a
 * remote tool on a local session answers an MCP error that says where to
 * call it (test/mcp-federated-call.test.ts calls remote tools).
 */

let a: TestApp;
let b: ServiceProcess;
let otherToken: string;

async function connect(path: string, token = ADMIN_TOKEN): Promise<Client> {
  const transport = new StreamableHTTPClientTransport(new URL(`${a.url}${path}`), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  const client = new Client({ name: "federated-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

async function listAll(client: Client): Promise<Tool[][]> {
  const pages: Tool[][] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listTools(cursor === undefined ? {} : { cursor });
    pages.push(page.tools);
    cursor = page.nextCursor;
  } while (cursor !== undefined && pages.length < 20);
  return pages;
}

beforeAll(async () => {
  b = await startProcess({ FEDERATION_INSTANCE_ID: "fed-b" });
  a = await startApp({ FEDERATION_INSTANCE_ID: "fed-a", FEDERATION_TIMEOUT: "2s", FEDERATION_CACHE_TTL: "0" });
  await registerAgent(b.url, "bravo", "bravo.cap", "bravo_tool");
  await registerAgent(b.url, "bravo-2", "bravo.cap", "shared_name");
  // A's own tools: 101 of them, so the first page is full and a second one exists.
  for (let i = 0; i < 101; i++) await registerAgent(a.url, `alpha-${i}`, "alpha.cap", `alpha_${String(i).padStart(3, "0")}`);
  // A local tool whose name is what B's "shared_name" would be listed as: the remote one is suffixed.
  await registerAgent(a.url, "alpha-clash", "alpha.cap", "b__shared_name");
  const token = await mintToken(b.url, "default", ["agents:read"]);
  const added = await postJson(`${a.url}/federation/peers`, { peerId: "b", url: b.url, token, tenants: ["default"] });
  expect(added.status, JSON.stringify(added.json)).toBe(200);
  otherToken = (await postJson(`${a.url}/admin/tokens`, { tenant: "other", scopes: ["agents:read", "agents:write", "route"], subject: "other" })).json.token;
  await registerAgent(a.url, "other-agent", "other.cap", "other_tool", otherToken);
}, 60_000);

afterAll(async () => {
  await a?.close();
  await b?.dispose();
});

describe("/mcp?scope=federated", () => {
  it("lists the peer's tools after the local ones on the first page, named by peer, with their origin; later pages are local", async () => {
    const client = await connect("/mcp?scope=federated");
    const pages = await listAll(client);
    expect(pages.length).toBe(2);
    const first = pages[0]!;
    const remote = first.filter((t) => t._meta?.["federation-core/origin"] !== undefined);
    expect(first.slice(0, 100).every((t) => t._meta?.["federation-core/origin"] === undefined)).toBe(true);
    expect(remote.map((t) => t.title).sort()).toEqual(["bravo_tool", "shared_name"]);
    const bravo = remote.find((t) => t.title === "bravo_tool")!;
    expect(bravo.name).toBe("b__bravo_tool");
    expect(bravo.description).toBe("bravo_tool of bravo");
    expect(bravo.inputSchema).toEqual({ type: "object" });
    expect(bravo._meta?.["federation-core/origin"]).toEqual({ peerId: "b", peerUrl: b.url, remoteId: bravo._meta?.["federation-core/tool_id"] });
    // "b__shared_name" is a local tool's name: the remote one gets the id suffix, so every name is unique.
    const clash = remote.find((t) => t.title === "shared_name")!;
    expect(clash.name).toMatch(/^b__shared_name__[A-Za-z0-9_-]{8}$/);
    const all = pages.flat().map((t) => t.name);
    expect(new Set(all).size).toBe(all.length);
    expect(all).toContain("b__shared_name");
    // The second page goes on through the local catalog only.
    expect(pages[1]!.every((t) => t._meta?.["federation-core/origin"] === undefined)).toBe(true);
    expect(pages.flat().filter((t) => t.name.startsWith("alpha_"))).toHaveLength(101);
    await client.close();
  });

  it("lists local tools only without the parameter (or with scope=local), and scope=auto asks peers only for a page that is not full", async () => {
    for (const path of ["/mcp", "/mcp?scope=local", "/mcp?scope=auto"]) {
      const client = await connect(path);
      const pages = await listAll(client);
      expect(pages.flat().some((t) => t._meta?.["federation-core/origin"] !== undefined), path).toBe(false);
      expect(pages.flat().filter((t) => t.name.startsWith("alpha_")), path).toHaveLength(101);
      await client.close();
    }
  });

  it("shows another tenant, whom the peer is not permitted for, no remote tool (and none of A's default tenant)", async () => {
    for (const path of ["/mcp?scope=federated", "/mcp?scope=auto"]) {
      const client = await connect(path, otherToken);
      const tools = (await listAll(client)).flat();
      expect(tools.map((t) => t.name), path).toEqual(["other_tool"]);
      await client.close();
    }
  });

  it("answers tools/call of a remote tool on a local session with an MCP error saying to connect with scope=federated", async () => {
    const client = await connect("/mcp");
    const err = await client.callTool({ name: "b__bravo_tool", arguments: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect((err as McpError).code).toBe(ErrorCode.InvalidParams);
    expect((err as McpError).message).toContain('remote tool of peer "b"');
    expect((err as McpError).message).toContain("/mcp?scope=federated");
    // A name that merely looks remote is an unknown tool.
    const unknown = await client.callTool({ name: "nopeer__bravo_tool", arguments: {} }).catch((e: unknown) => e);
    expect((unknown as McpError).message).toContain("Unknown tool: nopeer__bravo_tool");
    await client.close();
  });

  it("refuses an unknown scope with 400, naming the parameter", async () => {
    for (const query of ["scope=everywhere", "scope=local&scope=federated"]) {
      const res = await fetch(`${a.url}/mcp?${query}`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "x", version: "1" } } }),
      });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { code: number; message: string } };
      expect(body.error.code).toBe(ErrorCode.InvalidRequest);
      expect(body.error.message).toMatch(/^scope: must be one of local, federated, auto/);
    }
  });
});
