// An MCP agent process for the MCP dispatch tests: `node mcp-agent.mjs <name>`.
// The official SDK's McpServer behind StreamableHTTPServerTransport (stateful
// sessions) on 127.0.0.1, a random port printed as "LISTENING <port>". It
// prints "INIT <session>" for every initialize request it takes, "CLOSED
// <session>" when a client ends a session, and "TASK <json>" for every tool
// call (arguments, the task's _meta, the HTTP headers that carried it).
// Tools: "echo" answers its arguments; "flaky" does too, unless the mode is
// "fail" — then it answers isError; TOOL_NAME (env) is one more echo tool.
// A call of "rpc_error" is answered with a JSON-RPC error (not a tool result).
// Lines on stdin: "mode <ok|fail>", "forget" (drop every session, as a
// restart would; their ids then get 404).
import { randomUUID } from "node:crypto";
import http from "node:http";
import readline from "node:readline";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

const [name] = process.argv.slice(2);
let mode = process.env.MODE ?? "ok";
const sessions = new Map();

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const m = /^mode (\w+)$/.exec(line.trim());
  if (m) mode = m[1];
  if (line.trim() === "forget") sessions.clear();
  console.log(`MODE ${mode}`);
});

const anything = z.object({}).passthrough();

function newServer() {
  const server = new McpServer({ name, version: "1.0.0" });
  const echo = (tool) => async (args, extra) => {
    const h = extra.requestInfo?.headers ?? {};
    const task = {
      tool,
      arguments: args,
      meta: extra._meta ?? {},
      session: extra.sessionId,
      headers: {
        host: h.host,
        taskId: h["x-federation-task-id"],
        idempotencyKey: h["idempotency-key"],
        ticket: h["x-federation-route-ticket"],
        traceparent: h.traceparent,
        authorization: h.authorization,
      },
    };
    console.log(`TASK ${JSON.stringify(task)}`);
    if (tool === "flaky" && mode === "fail") {
      return { isError: true, content: [{ type: "text", text: `${name} fails on cue` }] };
    }
    const answer = { agent: name, tool, echo: args };
    return { content: [{ type: "text", text: JSON.stringify(answer) }], structuredContent: answer };
  };
  for (const tool of ["echo", "flaky", process.env.TOOL_NAME].filter(Boolean)) {
    server.registerTool(tool, { description: `${tool} (test agent ${name})`, inputSchema: anything }, echo(tool));
  }
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  let body;
  if (req.method === "POST") {
    let text = "";
    for await (const c of req) text += c;
    body = JSON.parse(text || "null");
  }
  const sid = req.headers["mcp-session-id"];
  let transport = sid ? sessions.get(sid) : undefined;
  if (!transport) {
    if (sid) {
      res.writeHead(404, { "content-type": "application/json" }).end(
        JSON.stringify({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null }),
      );
      return;
    }
    if (!isInitializeRequest(body)) {
      res.writeHead(400).end("no session");
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        sessions.set(id, transport);
        console.log(`INIT ${id}`);
      },
      onsessionclosed: (id) => {
        sessions.delete(id);
        console.log(`CLOSED ${id}`);
      },
    });
    await newServer().connect(transport);
  }
  if (body?.method === "tools/call" && body.params?.name === "rpc_error") {
    res.writeHead(200, { "content-type": "application/json" }).end(
      JSON.stringify({ jsonrpc: "2.0", id: body.id, error: { code: -32603, message: `${name}: internal failure on cue` } }),
    );
    return;
  }
  await transport.handleRequest(req, res, body);
});
httpServer.listen(0, "127.0.0.1", () => console.log(`LISTENING ${httpServer.address().port}`));
