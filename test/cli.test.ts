import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

/**
 * fedctl as a user runs it: a separate process per command, against a real
 * service on loopback; stdout, stderr and exit codes checked.
 */
const root = path.resolve(import.meta.dirname, "..");
const fixture = (name: string) => path.join(root, "test/fixtures/cli", name);

/**
 * The CLI's files (src/cli and gen) transpiled one for one, the layout `npm
 * run build` gives dist/, into a scratch directory: spawning the output
 * starts in a third of the time tsx takes, and dist/ (shared, possibly
 * stale) is left alone. esbuild rather than tsc: the same type-stripped
 * output in 10 ms instead of 2 s of CPU (types are the type-check step's job).
 */
let binDir = "";
async function compileCli(): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fedctl-"));
  writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  symlinkSync(path.join(root, "node_modules"), path.join(dir, "node_modules"), "dir");
  const sources = ["src/cli", "gen"].flatMap((folder) =>
    readdirSync(path.join(root, folder), { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".ts"))
      .map((f) => path.join(root, folder, f)),
  );
  await build({ entryPoints: sources, outdir: dir, outbase: root, format: "esm", platform: "node", target: "es2022", logLevel: "warning" });
  return dir;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs fedctl with FEDERATION_URL and FEDERATION_TOKEN set (token null: none). */
function start(url: string, args: string[], token: string | null = ADMIN_TOKEN): ChildProcessWithoutNullStreams {
  const env: NodeJS.ProcessEnv = { ...process.env, FEDERATION_URL: url, NO_COLOR: "1" };
  delete env.FEDERATION_TOKEN;
  delete env.FORCE_COLOR;
  if (token !== null) env.FEDERATION_TOKEN = token;
  return spawn(process.execPath, [path.join(binDir, "src/cli/fedctl.js"), ...args], { cwd: root, env });
}

function fedctl(t: Pick<TestApp, "url">, args: string[], token: string | null = ADMIN_TOKEN): Promise<Run> {
  const child = start(t.url, args, token);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d));
  child.stderr.on("data", (d: Buffer) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  return new Promise((resolve) =>
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

// Several processes per test: room for a loaded machine (about 2 s per test on an idle one).
describe("fedctl", { timeout: 30_000 }, () => {
  let t: TestApp;
  let coderId = "";
  beforeAll(async () => {
    [binDir, t] = await Promise.all([compileCli(), startApp()]);
  });
  afterAll(async () => {
    await t?.close();
    if (binDir) rmSync(binDir, { recursive: true, force: true });
  });

  it("mints a token with `token` that then works for its tenant only", async () => {
    const minted = await fedctl(t, ["token", "--tenant", "cli-tenant", "--scopes", "agents:read", "--ttl", "10m", "--json"]);
    expect(minted.stderr).toBe("");
    expect(minted.code).toBe(0);
    const { token, expiresAt } = JSON.parse(minted.stdout) as { token: string; expiresAt: string };
    expect(Date.parse(expiresAt) - Date.now()).toBeGreaterThan(9 * 60_000);
    expect(Date.parse(expiresAt) - Date.now()).toBeLessThanOrEqual(10 * 60_000);

    // Human form: the token alone on stdout, so TOKEN=$(fedctl token ...) works.
    const plain = await fedctl(t, ["token", "--tenant", "cli-tenant"]);
    expect(plain.code).toBe(0);
    expect(plain.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);

    await postJson(`${t.url}/agents/register`, registerBody({ name: "default-tenant-agent" }));
    const listed = await fedctl(t, ["agents", "--json"], token);
    expect(listed.stderr).toBe("");
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual({ agents: [] });

    // agents:read only: registering is refused as a permission problem.
    const refused = await fedctl(t, ["register", fixture("agent.yaml")], token);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/PERMISSION_DENIED/);
  });

  it("registers an agent from a YAML file, and discover, agents and route find it", async () => {
    const registered = await fedctl(t, ["register", fixture("agent.yaml")]);
    expect(registered.stderr).toBe("");
    expect(registered.code).toBe(0);
    const m = /registered cli-coder 2\.0\.0\s+id (\S+)/.exec(registered.stdout);
    expect(m, registered.stdout).not.toBeNull();
    coderId = m![1]!;
    expect(registered.stdout).toMatch(/passport [\w-]+\.[\w-]+\.[\w-]+/);

    const discovered = await fedctl(t, ["discover", "-c", "cli.code.generate", "--tag", "python", "--json"]);
    expect(discovered.code).toBe(0);
    const found = JSON.parse(discovered.stdout) as { agents: { id: string; name: string; labels: Record<string, string> }[] };
    expect(found.agents.map((a) => a.id)).toEqual([coderId]);
    expect(found.agents[0]!.labels).toEqual({ team: "cli" });

    const none = await fedctl(t, ["discover", "-c", "cli.code.generate", "--tag", "rust", "--json"]);
    expect(none.code).toBe(0);
    expect(JSON.parse(none.stdout)).toEqual({});

    const table = await fedctl(t, ["agents"]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^ID\s+NAME\s+VERSION\s+STATUS/);
    const row = lines.find((l) => l.startsWith(coderId));
    expect(row, table.stdout).toMatch(/cli-coder\s+2\.0\.0\s+healthy\s+0\.00\s+cli\.code\.generate\[python,fast\] cli\.code\.review/);

    const routed = await fedctl(t, ["route", "cli.code.review", "--task", '{"repo": "x"}', "--strategy", "best", "--json"]);
    expect(routed.stderr).toBe("");
    expect(routed.code).toBe(0);
    const decision = JSON.parse(routed.stdout) as { agent: { id: string }; candidates: { agentId: string }[]; taskId: string };
    expect(decision.agent.id).toBe(coderId);
    expect(decision.candidates.map((c) => c.agentId)).toEqual([coderId]);
    expect(decision.taskId).not.toBe("");
  });

  it("route --scope federated|auto|local: a capability only a peer offers is routed to the peer's agent, never with local", async () => {
    const far = await startApp();
    try {
      const reg = await postJson(`${far.url}/agents/register`, registerBody({ name: "cli-far", capabilities: [{ name: "cli.far.only" }] }));
      expect(reg.status, JSON.stringify(reg.json)).toBe(200);
      const minted = await postJson(`${far.url}/admin/tokens`, { tenant: "default", scopes: ["agents:read", "route"], ttl: "600s" });
      const added = await postJson(`${t.url}/federation/peers`, { peerId: "far", url: far.url, token: minted.json.token, tenants: ["*"] });
      expect(added.status, JSON.stringify(added.json)).toBe(200);
      for (const scope of ["federated", "auto"]) {
        const routed = await fedctl(t, ["route", "cli.far.only", "--scope", scope, "--json"]);
        expect(routed.stderr, scope).toBe("");
        expect(routed.code).toBe(0);
        expect(JSON.parse(routed.stdout).agent).toMatchObject({ id: reg.json.agent.id, origin: { peerId: "far", peerUrl: far.url } });
      }
      const shown = await fedctl(t, ["route", "cli.far.only", "--scope", "auto"]);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toContain(`origin  peer far (${far.url}), its id there ${reg.json.agent.id}`);
      const local = await fedctl(t, ["route", "cli.far.only", "--scope", "local"]);
      expect(local.code).toBe(1);
      expect(local.stderr).toMatch(/FAILED_PRECONDITION.*cli\.far\.only/);
      const bad = await fedctl(t, ["route", "cli.far.only", "--scope", "everywhere"]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/"everywhere" is not one of local, federated, auto/);
    } finally {
      await fetch(`${t.url}/federation/peers/far`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      await far.close();
    }
  });

  it("registers every agent of a multi-document file, one JSON line each", async () => {
    const run = await fedctl(t, ["register", fixture("fleet.yaml"), fixture("watched-agent.json"), "--json"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const answers = run.stdout.trim().split("\n").map((l) => JSON.parse(l) as { agent: { name: string }; passport: string });
    expect(answers.map((a) => a.agent.name)).toEqual(["cli-fleet-a", "cli-fleet-b", "cli-fleet-c", "cli-watched"]);
    expect(answers.every((a) => a.passport.split(".").length === 3)).toBe(true);

    const quiet = await fedctl(t, ["register", "-q", fixture("fleet.yaml")]);
    expect(quiet).toEqual({ code: 0, stdout: "", stderr: "" });
  });

  it("registers an agent file with deferPassport: true and says the passport comes with the first heartbeat", async () => {
    const run = await fedctl(t, ["register", fixture("deferred-agent.yaml")]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/registered cli-deferred/);
    expect(run.stdout).toMatch(/passport deferred: the first heartbeat answers with it/);
    const json = await fedctl(t, ["register", fixture("deferred-agent.yaml"), "--json"]);
    const answer = JSON.parse(json.stdout.trim()) as { agent: { id: string }; passport?: string };
    expect(answer.passport ?? "").toBe("");
    const beat = await postJson(`${t.url}/agents/${answer.agent.id}/heartbeat`, {});
    expect(beat.json.passport.split(".")).toHaveLength(3);
  });

  it("watch --json prints the registration of an agent registered meanwhile, until interrupted", async () => {
    const child = start(t.url, ["watch", "--json", "--type", "agent.registered"]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once("close", (code, signal) => resolve({ code, signal })),
    );
    try {
      // The CLI subscribes some time after it starts: register until one registration shows up.
      const ids = new Set<string>();
      const deadline = Date.now() + 15_000;
      let seen: { type: string; agentId: string; agentChange: { agent: { name: string } } } | undefined;
      while (!seen) {
        expect(Date.now(), `no event within 15 s; stdout: ${stdout}; stderr: ${stderr}`).toBeLessThan(deadline);
        expect(child.exitCode, stderr).toBeNull();
        const r = await postJson(`${t.url}/agents/register`, registerBody({ name: "cli-watched-live", capabilities: [{ name: "cli.live" }] }));
        expect(r.status).toBe(200);
        ids.add(r.json.agent.id);
        await new Promise((resolve) => setTimeout(resolve, 300));
        seen = stdout
          .split("\n")
          .filter((l) => l.trim() !== "")
          .map((l) => JSON.parse(l))
          .find((e) => ids.has(e.agentId));
      }
      expect(seen.type).toBe("agent.registered");
      expect(seen.agentChange.agent.name).toBe("cli-watched-live");
    } finally {
      child.kill("SIGINT");
      setTimeout(() => child.kill("SIGKILL"), 5_000).unref();
    }
    // Ctrl-C is how a watch ends: a clean exit, nothing on stderr.
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(stderr).toBe("");
  });

  it("exits 3 with a clear message for a wrong or missing token", async () => {
    const wrong = await fedctl(t, ["agents"], "not-a-token");
    expect(wrong.code).toBe(3);
    expect(wrong.stdout).toBe("");
    expect(wrong.stderr).toMatch(/^fedctl: UNAUTHENTICATED: .*check --token \/ FEDERATION_TOKEN/);

    const missing = await fedctl(t, ["discover", "-c", "cli.code.generate"], null);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/^fedctl: UNAUTHENTICATED: .*no token: set --token or FEDERATION_TOKEN/);
  });

  it("exits 4 for an unknown agent", async () => {
    const run = await fedctl(t, ["agents", "00000000-0000-4000-8000-000000000000"]);
    expect(run.code).toBe(4);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^fedctl: NOT_FOUND: agent "00000000-0000-4000-8000-000000000000" not found/);
  });

  it("exits 2 for bad arguments and bad agent files, before calling the server", async () => {
    const cases: [string[], RegExp][] = [
      [["discover", "--status", "bogus"], /"bogus" is not one of healthy, degraded, unhealthy, draining/],
      [["route"], /missing required argument 'capabilities'/],
      [["route", "x", "--task", "[1]"], /must be a JSON object/],
      [["token", "--tenant", "t", "--ttl", "soon"], /"soon" is not a duration/],
      [["frobnicate"], /unknown command 'frobnicate'/],
      [["register", fixture("missing.yaml")], /missing\.yaml: cannot read: ENOENT/],
      [["register", fixture("unknown-field.yaml")], /unknown-field\.yaml: .*"capabilites"/],
      [["--url", "ftp://x", "agents"], /--url: must be http:\/\/ or https:\/\//],
    ];
    for (const [args, message] of cases) {
      const run = await fedctl(t, args);
      expect({ args, code: run.code }).toEqual({ args, code: 2 });
      expect(run.stderr).toMatch(message);
      expect(run.stdout).toBe("");
    }
    // Nothing reached the server: the typo'd agent was not registered.
    const typo = await fedctl(t, ["discover", "-c", "cli.code.generate", "--json"]);
    expect((JSON.parse(typo.stdout) as { agents: { name: string }[] }).agents.map((a) => a.name)).not.toContain("cli-typo");
  });

  it("exits 1 naming the gRPC code when the server is unreachable", async () => {
    const down = await fedctl({ ...t, url: "http://127.0.0.1:1" }, ["agents"]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^fedctl: UNAVAILABLE: .*is the service running at http:\/\/127\.0\.0\.1:1\?/);
  });

  it("documents its exit codes in --help, and health and peers answer", async () => {
    const help = await fedctl(t, ["--help"]);
    expect(help.code).toBe(0);
    for (const line of [/0\s+success/, /1\s+server error/, /2\s+usage error/, /3\s+UNAUTHENTICATED or PERMISSION_DENIED/, /4\s+NOT_FOUND/]) {
      expect(help.stdout).toMatch(line);
    }

    const health = await fedctl(t, ["health", "--json"]);
    expect(health.code).toBe(0);
    const h = JSON.parse(health.stdout) as { check: { status: string }; fleet: { totalAgents: number } };
    expect(h.check.status).toBe("SERVING_STATUS_SERVING");
    expect(h.fleet.totalAgents).toBeGreaterThan(0);

    // ListPeers where the server implements federation; else a clear exit 2.
    const peers = await fedctl(t, ["peers", "--json"]);
    if (peers.code === 0) expect(JSON.parse(peers.stdout)).toMatchObject({});
    else {
      expect(peers.code).toBe(2);
      expect(peers.stderr).toMatch(/peers: not supported by this server/);
    }
  });
});
