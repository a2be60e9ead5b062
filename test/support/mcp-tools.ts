import type http from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";

/**
 * Answers one MCP request with the SDK's McpServer over a fresh stateless
 * Streamable HTTP transport (JSON answers), offering `tools`, each answering
 * "ok" — what the probe and remediation tests' agents serve once their
 * misbehaviour on cue has had its say.
 */
export async function answerMcp(req: http.IncomingMessage, res: http.ServerResponse, body: unknown, name: string, tools: readonly string[]): Promise<void> {
  const mcp = new McpServer({ name, version: "1.0.0" });
  for (const tool of tools) mcp.registerTool(tool, { description: `the ${tool} tool` }, async () => ({ content: [{ type: "text", text: "ok" }] }));
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on("close", () => {
    void transport.close();
    void mcp.close();
  });
  await mcp.connect(transport);
  await transport.handleRequest(req, res, body);
}
