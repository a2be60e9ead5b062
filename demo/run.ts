/**
 * `npm run demo`: the service and a small fleet on this machine, with tasks
 * routed all the time, so reputation, breakers, probes, SLO alerts and the
 * dashboard have something to show within a minute.
 *
 *   npm run demo                      # builds, then runs until Ctrl-C
 *   npx tsx demo/run.ts --source      # without building: the service from src/ through tsx
 *   flags: --duration=60s (stop by itself), --port=9405 (or PORT), --source
 *
 * Everything listens on 127.0.0.1 only. Children are started in their own
 * process groups, so a Ctrl-C reaches this runner alone and it stops them in
 * order (agents unregister, then the service drains); each child also stops
 * by itself when this runner disappears (demo/orphan-guard.mjs, the agents'
 * parent check). Every step of the stop is bounded, then SIGKILL.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");

interface Options {
  readonly port: number;
  /** Stop after this long (ms); undefined: until Ctrl-C. */
  readonly durationMs: number | undefined;
  /** Run src/main.ts through tsx instead of the built dist/src/main.js. */
  readonly source: boolean;
}

function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new Error(`--duration: "${s}" is not a duration like 20s, 2m or 500ms`);
  return Number(m[1]) * ({ ms: 1, s: 1_000, m: 60_000 } as const)[(m[2] ?? "ms") as "ms" | "s" | "m"];
}

function parseArgs(argv: string[]): Options {
  let port = Number(process.env.PORT ?? 9405);
  let durationMs: number | undefined;
  let source = false;
  for (const a of argv) {
    const [k, v = ""] = a.split("=", 2) as [string, string?];
    if (k === "--duration") durationMs = parseDuration(v);
    else if (k === "--port") port = Number(v);
    else if (k === "--source") source = true;
    else throw new Error(`unknown flag ${a} (flags: --duration=20s, --port=9405, --source)`);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`--port: ${port} is not a port`);
  return { port, durationMs, source };
}

/** The fleet: two generators of different quality, a flaky one, and the Guard. */
const FLEET = [
  { name: "fast-coder", script: "coder.mjs", flags: ["--latency=15-40"], about: "fast and right" },
  { name: "slow-coder", script: "coder.mjs", flags: ["--latency=60-160", "--wrong=0.5"], about: "slower, and wrong half of the time (the demo reports it)" },
  {
    name: "flaky-coder",
    script: "coder.mjs",
    flags: ["--latency=20-50", "--cycle=4s/8s", "--capabilities=code.generate,code.review"],
    about: "fails everything 8 s out of every 12; the only code.review agent",
  },
  { name: "guard", script: "guard.mjs", flags: [], about: "the Praetorian Guard: capability remediation" },
] as const;

/** Demo-sized windows: breakers, probes, reputation and SLOs that move in seconds. */
const SERVICE_ENV = {
  HOST: "127.0.0.1",
  LOG_LEVEL: "warn",
  DISPATCH_ALLOW_LOOPBACK: "true",
  DISPATCH_ATTEMPT_TIMEOUT: "2s",
  PROBES: "on",
  PROBE_INTERVAL: "2s",
  PROBE_TIMEOUT: "1s",
  SLO: "on",
  // Fast pair 18 s / 1.5 s, slow pair 108 s / 9 s.
  SLO_WINDOW_SCALE: "0.005",
  REMEDIATION_COOLDOWN: "30s",
  BREAKER_WINDOW: "5s",
  BREAKER_MIN_OUTCOMES: "4",
  BREAKER_COOL_DOWN: "4s",
  REPUTATION_HALF_LIFE: "30s",
  REPUTATION_UPTIME_WINDOW: "1m",
  SHUTDOWN_GRACE: "2s",
};

/** Events worth a line of their own. */
const NOTABLE = [
  "agent.registered",
  "agent.status_changed",
  "agent.circuit_opened",
  "agent.circuit_half_open",
  "agent.circuit_closed",
  "agent.probe_failed",
  "agent.probe_recovered",
  "health.alert",
  "health.remediation_dispatched",
  "health.remediation_escalated",
];

const TICK_MS = 200;
const MAX_IN_FLIGHT = 8;

const say = (line: string) => process.stdout.write(`${line}\n`);

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** Sends `signal`, waits up to `ms`, then SIGKILLs (the whole process group: the child leads it). */
async function stopChild(child: ChildProcess, signal: NodeJS.Signals, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
  }, ms);
  await exited(child);
  clearTimeout(timer);
}

/** Lines of a child's stdout, one callback each. */
function onLines(child: ChildProcess, fn: (line: string) => void): void {
  let partial = "";
  child.stdout!.on("data", (d: Buffer) => {
    partial += d;
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const l of lines) fn(l);
  });
}

interface AgentInfo {
  readonly name: string;
  readonly id: string;
  readonly port: number;
  readonly pid: number;
  readonly child: ChildProcess;
}

class Demo {
  private readonly url: string;
  private readonly dataDir = mkdtempSync(path.join(os.tmpdir(), "fc-demo-"));
  private readonly adminToken = process.env.FEDERATION_BOOTSTRAP_TOKEN || `demo-${randomBytes(12).toString("hex")}`;
  private token = "";
  private service: ChildProcess | undefined;
  private readonly agents: AgentInfo[] = [];
  private readonly names = new Map<string, string>();
  private readonly stopping = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped: Promise<void> | undefined;
  private readonly startedAt = Date.now();
  // What the per-second line shows.
  private ok = 0;
  private failed = 0;
  private wrong = 0;
  private lastOk = 0;
  private lastFailed = 0;
  private tick = 0;
  private readonly reputation = new Map<string, number>();

  constructor(private readonly opts: Options) {
    this.url = `http://127.0.0.1:${opts.port}`;
  }

  async start(): Promise<void> {
    await this.startService();
    // One token for the demo's own calls and the dashboard: not admin.
    const minted = await this.call("POST", "/admin/tokens", {
      tenant: "default",
      subject: "demo",
      scopes: ["agents:read", "agents:write", "route", "events:read"],
      ttl: "86400s",
    }, this.adminToken);
    this.token = minted.token;
    for (const a of FLEET) this.agents.push(await this.startAgent(a.name, a.script, [...a.flags]));
    for (const a of this.agents) this.names.set(a.id, a.name);
    say("");
    say("Federation Core demo");
    for (const a of FLEET) {
      const info = this.agents.find((x) => x.name === a.name)!;
      say(`  agent ${a.name.padEnd(12)} id=${info.id} pid=${info.pid} port=${info.port}  ${a.about}`);
    }
    say(`  service pid=${this.service!.pid} log=${path.join(this.dataDir, "service.log")}`);
    say(`  Dashboard: ${this.url}/dashboard/  token: ${this.token}`);
    say(`  Feed:      curl -sN '${this.url}/events' -H 'authorization: Bearer ${this.token}'`);
    say(`  Routing a code.generate task every ${TICK_MS} ms (and code.review every ${3 * TICK_MS} ms); Ctrl-C stops.`);
    say("  Each second: tasks, then per agent its code.generate reputation (quality × latency × uptime) and breaker.");
    say("");
    void this.watchEvents();
    this.timers.push(setInterval(() => this.route(), TICK_MS));
    this.timers.push(setInterval(() => void this.report(), 1_000));
    if (this.opts.durationMs !== undefined) {
      const left = Math.max(0, this.opts.durationMs - (Date.now() - this.startedAt));
      this.timers.push(setTimeout(() => void this.stop("duration reached"), left));
    }
  }

  private async startService(): Promise<void> {
    const guard = path.join(root, "demo", "orphan-guard.mjs");
    const args = this.opts.source ? ["--import", "tsx", "--import", guard, "src/main.ts"] : ["--import", guard, "dist/src/main.js"];
    const log = createWriteStream(path.join(this.dataDir, "service.log"));
    const child = spawn(process.execPath, args, {
      cwd: root,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        ...SERVICE_ENV,
        PORT: String(this.opts.port),
        DATA_DIR: this.dataDir,
        FEDERATION_BOOTSTRAP_TOKEN: this.adminToken,
      },
    });
    this.service = child;
    let output = "";
    for (const s of [child.stdout!, child.stderr!]) {
      s.on("data", (d: Buffer) => {
        if (output.length < 16_384) output += d;
        log.write(d);
      });
    }
    child.once("exit", (code, signal) => {
      log.end();
      if (!this.stopped) {
        say(`the service exited (${code ?? signal}); its output:\n${output}`);
        void this.stop("service exited", 1);
      }
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the service did not start:\n${output}`);
      const up = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(1_000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (up) return;
      if (Date.now() > deadline) throw new Error(`the service did not answer /health on ${this.url} within 30 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async startAgent(name: string, script: string, flags: string[]): Promise<AgentInfo> {
    const child = spawn(process.execPath, [path.join(root, "demo", "agents", script), `--name=${name}`, ...flags], {
      detached: true,
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, FEDERATION_URL: this.url, FEDERATION_TOKEN: this.token },
    });
    return new Promise<AgentInfo>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent ${name} did not register within 10 s`)), 10_000);
      child.once("exit", (code) => reject(new Error(`agent ${name} exited (${code}) before registering`)));
      onLines(child, (line) => {
        if (line.startsWith("READY ")) {
          clearTimeout(timer);
          const r = JSON.parse(line.slice(6));
          resolve({ name, id: r.id, port: r.port, pid: child.pid!, child });
        } else if (line.startsWith("REMEDIATE ")) {
          const r = JSON.parse(line.slice(10));
          say(`  ${name}: remediating ${this.names.get(r.subject) ?? r.subject} (${r.slo}, ${r.severity}, burn ${Number(r.burnRate).toFixed(1)}×)`);
        } else if (line.trim() !== "") {
          say(`  ${name}: ${line}`);
        }
      });
    });
  }

  /** One call to the service's REST surface; throws with the status and body on an error answer. */
  private async call(method: string, p: string, body?: unknown, token = this.token): Promise<any> {
    const res = await fetch(this.url + p, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.any([AbortSignal.timeout(5_000), this.stopping.signal]),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text.slice(0, 300)}`);
    return text ? JSON.parse(text) : {};
  }

  /** One task, dispatched; a wrong answer is reported as low quality. */
  private route(): void {
    if (this.inFlight.size >= MAX_IN_FLIGHT) return;
    this.tick++;
    // Every fourth task goes round robin, so each agent keeps getting some
    // work and its reputation keeps being measured, not only remembered.
    this.send(["code.generate"], this.tick % 4 === 0 ? "ROUTE_STRATEGY_ROUND_ROBIN" : undefined);
    if (this.tick % 3 === 0) this.send(["code.review"]);
  }

  private send(capabilities: string[], strategy?: string): void {
    const args = [1 + (this.tick % 7), 10 + (this.tick % 5), 100];
    const expected = args.reduce((a, b) => a + b, 0);
    const p = (async () => {
      try {
        const r = await this.call("POST", "/route", { capabilities, dispatch: true, timeout: "3s", strategy, task: { spec: "sum", args } });
        this.ok++;
        // Reputation is per capability: the line shows code.generate's.
        for (const c of capabilities[0] === "code.generate" ? (r.candidates ?? []) : []) {
          const b = c.breakdown ?? {};
          this.reputation.set(c.agentId, (b.quality ?? 0) * (b.latency ?? 0) * (b.uptime ?? 0));
        }
        if (r.result?.answer !== expected) {
          // The caller checks the work: a wrong answer is a success of low quality.
          this.wrong++;
          const attempt = (r.attempts ?? []).at(-1);
          await this.call("POST", "/outcomes", {
            agentId: r.agent.id,
            capabilities,
            taskId: r.taskId,
            success: true,
            quality: 0,
            ...(attempt?.latency ? { latency: attempt.latency } : {}),
          });
        }
      } catch (err) {
        if (!this.stopping.signal.aborted) this.failed++;
      }
    })();
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** Notable events from the feed (GET /events, NDJSON), one line each. */
  private async watchEvents(): Promise<void> {
    const q = NOTABLE.map((t) => `types=${t}`).join("&");
    try {
      const res = await fetch(`${this.url}/events?${q}`, {
        headers: { authorization: `Bearer ${this.token}` },
        signal: this.stopping.signal,
      });
      let partial = "";
      const decoder = new TextDecoder();
      for await (const chunk of res.body!) {
        partial += decoder.decode(chunk as Uint8Array, { stream: true });
        const lines = partial.split("\n");
        partial = lines.pop()!;
        for (const l of lines) if (l.trim()) this.printEvent(JSON.parse(l));
      }
    } catch {
      // Aborted at stop, or the service went away: the per-second line says the rest.
    }
  }

  private printEvent(line: any): void {
    const e = line.result?.event ?? line.event ?? line;
    if (!e?.type) return;
    const who = this.names.get(e.agentId) ?? e.agentId ?? "";
    let detail = "";
    if (e.type === "agent.status_changed") detail = `${e.agentChange?.previousStatus ?? ""} → ${e.agentChange?.agent?.status ?? ""}`.replace(/AGENT_STATUS_/g, "");
    if (e.type.startsWith("health.")) {
      const a = e.healthAlert ?? {};
      detail = `${(a.state ?? "").replace("ALERT_STATE_", "")} ${a.slo ?? ""} ${this.names.get(a.agentId) ?? a.capability ?? ""} burn ${Number(a.burnRate ?? 0).toFixed(1)}×`;
    }
    say(`  event ${e.type} ${who} ${detail}`.trimEnd());
  }

  /** The per-second line: tasks, and each agent's breaker, status and reputation. */
  private async report(): Promise<void> {
    let fleet: any = {};
    try {
      fleet = await this.call("GET", "/health/fleet");
    } catch {
      return;
    }
    const secs = Math.round((Date.now() - this.startedAt) / 1000);
    const parts = this.agents.map((a) => {
      const h = (fleet.agents ?? []).find((x: any) => x.agentId === a.id) ?? {};
      const circuit = String(h.circuit ?? "CIRCUIT_STATE_CLOSED").replace("CIRCUIT_STATE_", "").toLowerCase();
      const status = String(h.status ?? "").replace("AGENT_STATUS_", "");
      const rep = this.reputation.get(a.id);
      return `${a.name} ${rep === undefined ? "  -  " : rep.toFixed(2)} ${circuit === "closed" ? "closed" : circuit.toUpperCase()}${status && status !== "HEALTHY" ? ` ${status}` : ""}`;
    });
    const alerts = (fleet.firingAlerts ?? []).length;
    say(
      `${String(secs).padStart(4)}s  tasks ok ${this.ok} (+${this.ok - this.lastOk}) failed ${this.failed} (+${this.failed - this.lastFailed}) wrong ${this.wrong}` +
        `  | ${parts.join(" | ")}  | alerts firing ${alerts}`,
    );
    this.lastOk = this.ok;
    this.lastFailed = this.failed;
  }

  /** Stops everything, in order and bounded; the process exits with `code`. */
  stop(why: string, code = 0): Promise<void> {
    this.stopped ??= (async () => {
      say(`\nstopping (${why}) …`);
      for (const t of this.timers) clearInterval(t);
      // Tasks in flight get a moment to finish; then their calls are cut.
      await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((r) => setTimeout(r, 3_000))]);
      this.stopping.abort();
      // Agents unregister while the service is still up …
      await Promise.all(this.agents.map((a) => stopChild(a.child, "SIGTERM", 3_000)));
      // … then the service drains (SHUTDOWN_GRACE 2 s).
      if (this.service) await stopChild(this.service, "SIGTERM", 5_000);
      rmSync(this.dataDir, { recursive: true, force: true });
      say(`demo stopped: tasks ok ${this.ok}, failed ${this.failed}, wrong answers reported ${this.wrong}`);
      process.exit(code);
    })();
    return this.stopped;
  }
}

async function main(): Promise<void> {
  let opts: Options;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const demo = new Demo(opts);
  // A Ctrl-C may arrive twice (the terminal, and npm passing it on): the stop is one and bounded.
  for (const s of ["SIGINT", "SIGTERM"] as const) process.on(s, () => void demo.stop(s === "SIGINT" ? "Ctrl-C" : s));
  try {
    await demo.start();
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    await demo.stop("start failed", 1);
  }
}

await main();
