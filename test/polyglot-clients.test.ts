import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, getJson, startApp, type TestApp } from "./support/app.js";

/**
 * The Python (grpcio) and Go (grpc-go) clients of examples/, generated and run
 * with exactly the commands the README gives, against a live service on
 * loopback. scripts/test.sh prepares the tools (a venv, the Go plugins and the
 * client's Go modules) under ~/.cache/federation-core.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CACHE = path.join(os.homedir(), ".cache", "federation-core");
const PYTHON_VENV = process.env.FC_PYTHON_VENV ?? path.join(CACHE, "python-venv");
const GO_BIN = process.env.FC_BIN ?? path.join(CACHE, "bin");

/** The README's commands, verbatim: the test runs these and checks the README still says them. */
const README_COMMANDS = {
  env: "export FEDERATION_ADDR=localhost:9405 FEDERATION_TOKEN=$TOKEN",
  python: {
    venv: "python3 -m venv .venv && . .venv/bin/activate",
    install: "pip install grpcio grpcio-tools googleapis-common-protos",
    generate: [
      "mkdir -p examples/python-client/gen",
      "python3 -m grpc_tools.protoc -Iproto -Inode_modules/google-proto-files --python_out=examples/python-client/gen --grpc_python_out=examples/python-client/gen proto/federation/v1/*.proto",
    ],
    run: "python3 examples/python-client/client.py",
  },
  go: {
    install: [
      "go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12",
      "go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2",
    ],
    path: 'export PATH="$(go env GOPATH)/bin:$PATH"',
    generate: ["npx buf generate --template buf.gen.go.yaml"],
    run: "(cd examples/go-client && go run .)",
  },
  probe: "grpc-health-probe -addr=localhost:9405",
} as const;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs one command line with bash in the repository root; killed (with its children) after timeoutMs. */
function sh(command: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", command], { cwd: ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${timeoutMs} ms]`;
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
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The environment of the commands: the prepared tools first on PATH, no proxies (loopback only). */
function commandEnv(binDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${binDir}${path.delimiter}${process.env.PATH ?? ""}` };
  for (const k of ["http_proxy", "https_proxy", "grpc_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "GRPC_PROXY", "ALL_PROXY"]) {
    delete env[k];
  }
  env.NO_PROXY = env.no_proxy = "127.0.0.1,localhost";
  return { ...env, ...extra };
}

async function mustSucceed(command: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Run> {
  const r = await sh(command, env, timeoutMs);
  expect(r.code, `\`${command}\` failed\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(0);
  return r;
}

/** The step lines both clients print, in order; returns the agent id. */
function expectSteps(r: Run): string {
  const why = `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
  const lines = r.stdout.trim().split("\n");
  const first = /^register ok agent=([A-Za-z0-9_-]+) capability=(\S+)$/.exec(lines[0] ?? "");
  expect(first, why).not.toBeNull();
  const id = first![1];
  const esc = id.replace(/[-]/g, "\\-");
  const expected = [
    new RegExp(`^heartbeat ok agent=${esc} status=AGENT_STATUS_HEALTHY$`),
    new RegExp(`^discover ok agent=${esc} agents=1$`),
    new RegExp(`^route ok agent=${esc} route_id=\\S+$`),
    new RegExp(`^watch ok event=agent\\.registered agent=${esc} id=[1-9][0-9]*$`),
    new RegExp(`^unregister ok agent=${esc}$`),
    /^unknown-method ok code=UNIMPLEMENTED$/,
    /^all steps ok$/,
  ];
  expect(lines.length, why).toBe(expected.length + 1);
  expected.forEach((re, i) => expect(lines[i + 1], why).toMatch(re));
  expect(r.code, why).toBe(0);
  return id;
}

describe("README: the commands it gives are the ones this test runs", () => {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const all = [
    README_COMMANDS.env,
    README_COMMANDS.python.venv,
    README_COMMANDS.python.install,
    ...README_COMMANDS.python.generate,
    README_COMMANDS.python.run,
    ...README_COMMANDS.go.install,
    README_COMMANDS.go.path,
    ...README_COMMANDS.go.generate,
    README_COMMANDS.go.run,
    README_COMMANDS.probe,
  ];
  it.each(all)("README.md contains %s", (command) => {
    expect(readme).toContain(command);
  });

  it("scripts/test.sh prepares the same packages and plugin versions", () => {
    const script = readFileSync(path.join(ROOT, "scripts", "test.sh"), "utf8");
    expect(script).toContain("grpcio grpcio-tools googleapis-common-protos");
    for (const install of README_COMMANDS.go.install) expect(script).toContain(install.replace(/^go install /, ""));
  });

  it("no README line still says python (Debian has python3) or grpc_health_probe as a command", () => {
    expect(readme).not.toMatch(/^python -m/m);
    expect(readme).not.toMatch(/`grpc_health_probe -addr/);
  });
});

describe("polyglot clients against a live service", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(() => t?.close());

  const clientEnv = (token = ADMIN_TOKEN) => ({ FEDERATION_ADDR: `127.0.0.1:${t.port}`, FEDERATION_TOKEN: token });

  describe("Python (grpcio)", () => {
    const pyBin = path.join(PYTHON_VENV, "bin");

    it("generates the stubs with the README's commands", async () => {
      expect(existsSync(path.join(pyBin, "python3")), `no venv at ${PYTHON_VENV}: run scripts/test.sh`).toBe(true);
      rmSync(path.join(ROOT, "examples/python-client/gen"), { recursive: true, force: true });
      for (const command of README_COMMANDS.python.generate) await mustSucceed(command, commandEnv(pyBin), 60_000);
      expect(existsSync(path.join(ROOT, "examples/python-client/gen/federation/v1/registry_service_pb2_grpc.py"))).toBe(true);
    }, 90_000);

    it("runs every step: register, heartbeat, discover, route, watch, unregister, unknown method", async () => {
      const r = await sh(README_COMMANDS.python.run, commandEnv(pyBin, clientEnv()), 60_000);
      const id = expectSteps(r);
      expect((await getJson(`${t.url}/agents/${id}`)).status).toBe(404);
    }, 90_000);

    it("exits non-zero with a FAIL line when a step fails", async () => {
      const r = await sh(README_COMMANDS.python.run, commandEnv(pyBin, clientEnv("not-a-valid-token")), 60_000);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^FAIL register: UNAUTHENTICATED/m);
    }, 90_000);
  });

  describe("Go (grpc-go)", () => {
    it("generates the stubs with the README's commands", async () => {
      for (const p of ["protoc-gen-go", "protoc-gen-go-grpc"]) {
        expect(existsSync(path.join(GO_BIN, p)), `no ${p} in ${GO_BIN}: run scripts/test.sh`).toBe(true);
      }
      rmSync(path.join(ROOT, "examples/go-client/gen/federation"), { recursive: true, force: true });
      for (const command of README_COMMANDS.go.generate) await mustSucceed(command, commandEnv(GO_BIN), 60_000);
      expect(existsSync(path.join(ROOT, "examples/go-client/gen/federation/v1/registry_service_grpc.pb.go"))).toBe(true);
    }, 90_000);

    it("runs every step: register, heartbeat, discover, route, watch, unregister, unknown method", async () => {
      // The first `go run` compiles grpc-go (minutes on two cores); later ones hit the build cache.
      const r = await sh(README_COMMANDS.go.run, commandEnv(GO_BIN, clientEnv()), 300_000);
      const id = expectSteps(r);
      expect((await getJson(`${t.url}/agents/${id}`)).status).toBe(404);
    }, 330_000);

    it("exits non-zero with a FAIL line when a step fails", async () => {
      const r = await sh(README_COMMANDS.go.run, commandEnv(GO_BIN, clientEnv("not-a-valid-token")), 120_000);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^FAIL register: .*Unauthenticated/m);
    }, 150_000);
  });
});
