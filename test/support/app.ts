import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterAll } from "vitest";
import { App, type AppDeps } from "../../src/app.js";
import { loadConfig } from "../../src/config.js";

export interface TestApp {
  readonly app: App;
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  close(): Promise<void>;
}

/** Starts the whole service on a random loopback port with the given environment. */
/** The dev-mode admin token every test app accepts (tenant "default", every scope). */
export const ADMIN_TOKEN = "test-bootstrap-token";
export const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}` };

const dataDirs: string[] = [];
afterAll(() => dataDirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

export async function startApp(env: Record<string, string> = {}, deps: AppDeps = {}): Promise<TestApp> {
  const dataDir = env.DATA_DIR ?? mkdtempSync(path.join(os.tmpdir(), "fc-data-"));
  if (!env.DATA_DIR) dataDirs.push(dataDir);
  const config = loadConfig({
    HOST: "127.0.0.1",
    PORT: "0",
    SHUTDOWN_GRACE: "2s",
    DATA_DIR: dataDir,
    FEDERATION_BOOTSTRAP_TOKEN: ADMIN_TOKEN,
    ...env,
  });
  const app = await App.create(config, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }), ...deps });
  const port = await app.start();
  return { app, port, url: `http://127.0.0.1:${port}`, close: () => app.stop().then(() => undefined) };
}

/** A valid REST/JSON register body; override fields per test. */
export function registerBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: "coder",
    version: "1.2.0",
    endpoint: { url: "grpc://127.0.0.1:50051", transport: "TRANSPORT_GRPC" },
    capabilities: [{ name: "code.generate", tags: ["python", "fast"] }],
    tools: [{ name: "write_code", description: "Writes code", inputSchema: { type: "object" } }],
    labels: { team: "core" },
    leaseTtl: "30s",
    ...overrides,
  };
}

/** POST JSON with the admin token unless `init.headers` says otherwise. */
export async function postJson(url: string, body: unknown, init: RequestInit = {}) {
  const res = await fetch(url, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
    headers: { "content-type": "application/json", ...AUTH, ...(init.headers as Record<string, string>) },
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text === "" ? undefined : (JSON.parse(text) as any) };
}

/** GET with the admin token unless `init.headers` says otherwise. */
export async function getJson(url: string, init: RequestInit = {}) {
  const res = await fetch(url, { ...init, headers: { ...AUTH, ...(init.headers as Record<string, string>) } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text === "" ? undefined : (JSON.parse(text) as any) };
}

/** Waits until /health says SERVING (a shared store or bus may still be connecting). */
export async function waitServing(t: TestApp, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const h = await getJson(`${t.url}/health`);
    if (h.json?.status === "SERVING_STATUS_SERVING") return;
    if (Date.now() > deadline) throw new Error(`not serving after ${timeoutMs}ms: ${JSON.stringify(h.json)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
