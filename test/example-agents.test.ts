import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, getJson, postJson, startApp, type TestApp } from "./support/app.js";

/**
 * The example agents of examples/ (issue 18, item 2) — a Python agent
 * (grpcio), a Go agent (grpc-go) and a FastMCP server — generated, built and
 * run with exactly the commands their READMEs give, against a live service
 * on loopback: each registers, takes a routed and dispatched task and answers
 * it, keeps its passport renewed, and on SIGTERM unregisters and exits 0.
 * scripts/test.sh prepares the tools (a venv with grpcio and mcp, the Go
 * plugins and modules) under ~/.cache/federation-core.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CACHE = path.join(os.homedir(), ".cache", "federation-core");
const PYTHON_BIN = path.join(process.env.FC_PYTHON_VENV ?? path.join(CACHE, "python-venv"), "bin");
const GO_BIN = process.env.FC_BIN ?? path.join(CACHE, "bin");

/**
 * Passports live 4 s and the service allows no clock skew, so an agent that
 * is still up after 4 s and unregisters cleanly must have renewed its
 * passport (the first one no longer verifies).
 */
const PASSPORT_TTL_MS = 4_000;

/** The READMEs' commands, verbatim: the test runs these and checks each README still says them. */
const COMMANDS = {
  env: "export FEDERATION_ADDR=localhost:9405 FEDERATION_TOKEN=$TOKEN",
  python: {
    readme: "examples/python-agent/README.md",
    setup: ["python3 -m venv .venv && . .venv/bin/activate", "pip install grpcio grpcio-tools googleapis-common-protos"],
    generate: [
      "mkdir -p examples/python-agent/gen",
      "python3 -m grpc_tools.protoc -Iproto -Inode_modules/google-proto-files --python_out=examples/python-agent/gen --grpc_python_out=examples/python-agent/gen proto/federation/v1/*.proto",
    ],
    run: "python3 examples/python-agent/agent.py --capability text.reverse --name python-agent",
  },
  go: {
    readme: "examples/go-agent/README.md",
    setup: [
      "go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12",
      "go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2",
      'export PATH="$(go env GOPATH)/bin:$PATH"',
    ],
    generate: ["npx buf generate --template examples/go-agent/buf.gen.yaml", "(cd examples/go-agent && go build -o go-agent .)"],
    run: "examples/go-agent/go-agent --capability text.reverse --name go-agent",
  },
  fastmcp: {
    readme: "examples/fastmcp-server/README.md",
    setup: ["python3 -m venv .venv && . .venv/bin/activate", "pip install mcp"],
    generate: [],
    run: "python3 examples/fastmcp-server/server.py --capability text.tools --name fastmcp-example",
  },
} as const;

/** The environment of the commands: the prepared tools first on PATH, no proxies (loopback only). */
function commandEnv(binDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${binDir}${path.delimiter}${process.env.PATH ?? ""}` };
  for (const k of ["http_proxy", "https_proxy", "grpc_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "GRPC_PROXY", "ALL_PROXY"]) {
    delete env[k];
  }
  env.NO_PROXY = env.no_proxy = "127.0.0.1,localhost";
  return { ...env, ...extra };
}

/** Runs one command line to its end with bash in the repository root; killed (with its children) after timeoutMs. */
function runToEnd(command: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", command], { cwd: ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const timer = setTimeout(() => {
      output += `\n[killed after ${timeoutMs} ms]`;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* already gone */
      }
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

async function mustSucceed(command: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<void> {
  const r = await runToEnd(command, env, timeoutMs);
  expect(r.code, `\`${command}\` failed:\n${r.output}`).toBe(0);
}

/** A long-running example: its stdout lines as they come, its exit. */
class Example {
  readonly lines: string[] = [];
  private output = "";
  private readonly waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;

  /**
   * bash runs the README's one command line; a simple command is exec'd by
   * bash itself, so the signals the test sends reach the example.
   */
  constructor(command: string, env: NodeJS.ProcessEnv) {
    this.child = spawn("bash", ["-c", command], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let partial = "";
    this.child.stdout!.on("data", (d: Buffer) => {
      this.output += d;
      partial += d;
      const parts = partial.split("\n");
      partial = parts.pop()!;
      for (const line of parts) {
        this.lines.push(line);
        for (const w of this.waiters.splice(0)) {
          const m = w.re.exec(line);
          if (m) w.resolve(m);
          else this.waiters.push(w);
        }
      }
    });
    this.child.stderr!.on("data", (d: Buffer) => (this.output += d));
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  /** Resolves with the first stdout line matching (seen or to come); rejects after ms or when the example exits. */
  waitForLine(re: RegExp, ms = 15_000): Promise<RegExpExecArray> {
    for (const line of this.lines) {
      const m = re.exec(line);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line matching ${re} after ${ms} ms; output:\n${this.output}`)), ms);
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`exited (${code ?? signal}) before a line matching ${re}; output:\n${this.output}`));
      });
      this.waiters.push({
        re,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  describe(): string {
    return this.output;
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

const started: Example[] = [];
afterAll(() => started.forEach((e) => e.kill()));

describe("the example READMEs give the commands this test runs", () => {
  it.each(Object.entries(COMMANDS).filter(([k]) => k !== "env"))("%s", (_, c) => {
    const example = c as (typeof COMMANDS)["python"];
    const readme = readFileSync(path.join(ROOT, example.readme), "utf8");
    for (const command of [COMMANDS.env, ...example.setup, ...example.generate, example.run]) expect(readme).toContain(command);
  });

  it("scripts/test.sh prepares the packages and plugins they install", () => {
    const script = readFileSync(path.join(ROOT, "scripts", "test.sh"), "utf8");
    const pip = /pip" install [^\n]*/.exec(script)?.[0] ?? "";
    for (const p of ["grpcio", "grpcio-tools", "googleapis-common-protos"]) expect(pip.split(/\s+/)).toContain(p);
    expect(pip, "the venv has the mcp package (any version: the server runs on mcp 1.x and 2.x)").toMatch(/[\s'"]mcp([\s'"<>=~![]|$)/);
    for (const install of COMMANDS.go.setup.slice(0, 2)) expect(script).toContain(install.replace(/^go install /, ""));
    expect(script).toContain("examples/go-agent");
  });

  it("the main README points at the examples", () => {
    const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
    for (const dir of ["examples/python-agent", "examples/go-agent", "examples/fastmcp-server"]) expect(readme).toContain(dir);
  });
});

describe("example agents against a live service", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp({ DISPATCH_ALLOW_LOOPBACK: "true", PASSPORT_TTL: `${PASSPORT_TTL_MS}ms`, AUTH_CLOCK_SKEW: "0s" });
  });
  afterAll(() => t?.close());

  const env = (binDir: string) => commandEnv(binDir, { FEDERATION_ADDR: `127.0.0.1:${t.port}`, FEDERATION_TOKEN: ADMIN_TOKEN });

  /** Starts the example, waits for its "registered" line, checks Discover finds it; answers the agent id. */
  async function startAndRegister(command: string, binDir: string, capability: string): Promise<{ example: Example; id: string; at: number }> {
    const example = new Example(command, env(binDir));
    started.push(example);
    const [, id] = await example.waitForLine(/^registered agent=([A-Za-z0-9_-]+) /);
    const at = Date.now();
    const found = await getJson(`${t.url}/agents/discover?capabilities=${capability}`);
    expect(found.status, JSON.stringify(found.json)).toBe(200);
    expect(found.json.agents.map((a: { id: string }) => a.id)).toContain(id);
    return { example, id: id!, at };
  }

  /**
   * Waits until the first passport has expired (and a renewal was logged),
   * then sends SIGTERM: the example must unregister with its renewed
   * passport and exit 0, and the agent be gone.
   */
  async function stopsCleanly(example: Example, id: string, registeredAt: number): Promise<void> {
    await example.waitForLine(new RegExp(`^passport renewed agent=${id} `), PASSPORT_TTL_MS * 2);
    await new Promise((r) => setTimeout(r, Math.max(0, registeredAt + PASSPORT_TTL_MS + 500 - Date.now())));
    expect((await getJson(`${t.url}/agents/${id}`)).status, "still registered before SIGTERM").toBe(200);
    example.signal("SIGTERM");
    const exit = await example.exited;
    expect(exit, example.describe()).toEqual({ code: 0, signal: null });
    expect(example.lines.at(-1)).toBe(`unregistered agent=${id}`);
    // Renewed in time: it never lost its lease or passport and had to register again.
    expect(example.lines.filter((l) => l.startsWith("re-registering"))).toEqual([]);
    expect((await getJson(`${t.url}/agents/${id}`)).status).toBe(404);
  }

  async function routesToGrpcAgent(example: Example, id: string, name: string): Promise<void> {
    const r = await postJson(`${t.url}/route`, { capabilities: ["text.reverse"], task: { text: "federation" }, dispatch: true });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.agent.id).toBe(id);
    expect(r.json.result).toEqual({ reversed: "noitaredef", agent: name, task_id: r.json.taskId });
    await example.waitForLine(new RegExp(`^task task_id=${r.json.taskId} capabilities=text.reverse tenant=default$`), 5_000);
  }

  it("Python agent (grpcio): generated, registered, dispatched to, renews its passport, unregisters on SIGTERM", async () => {
    expect(existsSync(path.join(PYTHON_BIN, "python3")), `no venv in ${PYTHON_BIN}: run scripts/test.sh`).toBe(true);
    rmSync(path.join(ROOT, "examples/python-agent/gen"), { recursive: true, force: true });
    for (const command of COMMANDS.python.generate) await mustSucceed(command, commandEnv(PYTHON_BIN), 30_000);

    const { example, id, at } = await startAndRegister(COMMANDS.python.run, PYTHON_BIN, "text.reverse");
    await routesToGrpcAgent(example, id, "python-agent");
    await stopsCleanly(example, id, at);
  }, 45_000);

  it("Go agent (grpc-go): generated, built, registered, dispatched to, renews its passport, unregisters on SIGTERM", async () => {
    for (const p of ["protoc-gen-go", "protoc-gen-go-grpc"]) {
      expect(existsSync(path.join(GO_BIN, p)), `no ${p} in ${GO_BIN}: run scripts/test.sh`).toBe(true);
    }
    rmSync(path.join(ROOT, "examples/go-agent/gen/federation"), { recursive: true, force: true });
    rmSync(path.join(ROOT, "examples/go-agent/go-agent"), { force: true });
    // scripts/test.sh has the modules compiled into the build cache: this is a link, not a build of grpc-go.
    for (const command of COMMANDS.go.generate) await mustSucceed(command, commandEnv(GO_BIN), 60_000);

    const { example, id, at } = await startAndRegister(COMMANDS.go.run, GO_BIN, "text.reverse");
    await routesToGrpcAgent(example, id, "go-agent");
    await stopsCleanly(example, id, at);
  }, 75_000);

  it("FastMCP server: registered as an MCP agent, its tools in the catalog and called through dispatch, unregisters on SIGTERM", async () => {
    const { example, id, at } = await startAndRegister(COMMANDS.fastmcp.run, PYTHON_BIN, "text.tools");
    const agent = (await getJson(`${t.url}/agents/${id}`)).json.agent;
    expect(agent.endpoint).toEqual({ url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/mcp$/), transport: "TRANSPORT_MCP_STREAMABLE_HTTP" });

    const search = await getJson(`${t.url}/tools/search?query=reverse&provider_page_size=10`);
    expect(search.status, JSON.stringify(search.json)).toBe(200);
    const entry = search.json.tools.find((e: { name: string }) => e.name === "reverse_text");
    expect(entry, JSON.stringify(search.json)).toBeDefined();
    expect(entry.providerAgentIds).toEqual([id]);
    expect(entry.inputSchema).toMatchObject({ type: "object", properties: { text: { type: "string" } }, required: ["text"] });
    const all = await getJson(`${t.url}/tools/search?capabilities=text.tools`);
    expect(all.json.tools.map((e: { name: string }) => e.name).sort()).toEqual(["count_words", "reverse_text"]);

    const reversed = await postJson(`${t.url}/route`, {
      capabilities: ["text.tools"],
      task: { tool: "reverse_text", arguments: { text: "federation" } },
      dispatch: true,
    });
    expect(reversed.status, JSON.stringify(reversed.json)).toBe(200);
    expect(reversed.json.agent.id).toBe(id);
    expect(reversed.json.result.content).toEqual([{ type: "text", text: "noitaredef" }]);
    const counted = await postJson(`${t.url}/route`, {
      capabilities: ["text.tools"],
      task: { tool: "count_words", arguments: { text: "one federation of agents" } },
      dispatch: true,
    });
    expect(counted.status, JSON.stringify(counted.json)).toBe(200);
    expect(counted.json.result.structuredContent).toEqual({ result: 4 });
    await example.waitForLine(/^tool reverse_text chars=10$/, 5_000);
    await example.waitForLine(/^tool count_words chars=24$/, 5_000);

    await stopsCleanly(example, id, at);
  }, 45_000);
});
