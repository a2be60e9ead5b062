import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

/**
 * /mcp against the MCP conformance suite (@modelcontextprotocol/conformance
 * 0.1.13, pinned: the last release that runs on Node 20 — 0.1.14 on uses
 * fs.globSync, Node 22), its server scenarios that apply to a tools-only
 * server: server-initialize, ping, tools-list, json-schema-2020-12 (a
 * registered agent's tool schema keeps $schema, $defs and
 * additionalProperties through the catalog) and server-sse-multiple-streams.
 * Not applicable: resources-*, prompts-*, completion-complete and
 * logging-set-level (capabilities /mcp does not offer); tools-call-* and
 * the elicitation/sampling ones (they call tools with fixed names and
 * behaviours the suite's own reference server has, not a federation's
 * agents); dns-rebinding-protection (for unauthenticated localhost
 * servers: every /mcp request carries a bearer token a rebound page does
 * not have). The suite cannot send a token, and /mcp has no auth-free
 * mode: a loopback proxy in front of the service adds the bearer token to
 * every request and passes everything else (SSE included) through.
 * MCP_CONFORMANCE_SCENARIOS (comma-separated) runs others by hand.
 */

const SCENARIOS = (process.env.MCP_CONFORMANCE_SCENARIOS ?? "server-initialize,ping,tools-list,json-schema-2020-12,server-sse-multiple-streams").split(",");
const bin = path.resolve(import.meta.dirname, "../node_modules/@modelcontextprotocol/conformance/dist/index.js");

let t: TestApp;
let proxy: http.Server;
let proxyUrl: string;
const dirs: string[] = [];

beforeAll(async () => {
  t = await startApp();
  const jsonSchema2020 = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    type: "object",
    $defs: { address: { type: "object", properties: { street: { type: "string" }, city: { type: "string" } } } },
    properties: { name: { type: "string" }, address: { $ref: "#/$defs/address" } },
    additionalProperties: false,
  };
  const r = await postJson(
    `${t.url}/agents/register`,
    registerBody({
      name: "conformance-agent",
      tools: [
        { name: "write_code", description: "Writes code", inputSchema: { type: "object" } },
        { name: "json_schema_2020_12_tool", description: "Tool with JSON Schema 2020-12 features", inputSchema: jsonSchema2020 },
      ],
    }),
  );
  expect(r.status).toBe(200);
  proxy = http.createServer((req, res) => {
    const up = http.request(
      { host: "127.0.0.1", port: t.port, path: req.url, method: req.method, headers: { ...req.headers, authorization: `Bearer ${ADMIN_TOKEN}` } },
      (answer) => {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/mcp`;
});

afterAll(async () => {
  proxy?.closeAllConnections();
  await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
  await t?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Runs one scenario (its results in a temporary directory); its exit code, output and checks. */
async function run(scenario: string): Promise<{ code: number | null; output: string; checks: { id: string; status: string; errorMessage?: string }[] }> {
  const cwd = mkdtempSync(path.join(os.tmpdir(), "mcp-conformance-"));
  dirs.push(cwd);
  const results = path.join(cwd, "results");
  const child = spawn(process.execPath, [bin, "server", "--url", proxyUrl, "--scenario", scenario, "--output-dir", results], { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const code = await new Promise<number | null>((r) => child.on("close", r));
  const checks = readdirSync(results).flatMap((d) => JSON.parse(readFileSync(path.join(results, d, "checks.json"), "utf8")));
  return { code, output, checks };
}

describe("/mcp: MCP conformance suite (tools-only server scenarios)", () => {
  it.each(SCENARIOS)("%s passes", async (scenario) => {
    const { code, output, checks } = await run(scenario);
    expect(checks.length, output).toBeGreaterThan(0);
    expect(checks.filter((c) => c.status === "FAILURE"), output).toEqual([]);
    expect(code, output).toBe(0);
  }, 60_000);
});
