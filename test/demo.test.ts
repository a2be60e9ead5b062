import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, postJson } from "./support/app.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { freePort } from "./support/servers.js";

/**
 * `npm run demo` as a newcomer runs it (demo/run.ts; `--source` runs the
 * service from src/ so the test needs no build): within its duration tasks
 * succeed, the flaky agent's breaker opens, the weaker generator's
 * reputation falls below the better one's; then it exits 0 and leaves no
 * process behind. A Ctrl-C does the same.
 */

const root = path.resolve(import.meta.dirname, "..");
const started: ChildProcess[] = [];

interface Demo {
  readonly child: ChildProcess;
  readonly port: number;
  readonly out: () => string;
  /** Agent name → id and pid, once the demo printed them; plus the service's pid. */
  readonly ready: Promise<{ agents: Map<string, { id: string; pid: number }>; servicePid: number }>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

async function startDemo(flags: string[]): Promise<Demo> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", "demo/run.ts", "--source", `--port=${port}`, ...flags], {
    cwd: root,
    env: { ...process.env, FEDERATION_BOOTSTRAP_TOKEN: ADMIN_TOKEN },
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d));
  child.stderr!.on("data", (d: Buffer) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  const ready = new Promise<{ agents: Map<string, { id: string; pid: number }>; servicePid: number }>((resolve, reject) => {
    const timer = setInterval(() => {
      if (!/Dashboard: http:\/\/127\.0\.0\.1:\d+\/dashboard\/ {2}token: \S+/.test(out)) return;
      clearInterval(timer);
      const agents = new Map<string, { id: string; pid: number }>();
      for (const m of out.matchAll(/agent (\S+)\s+id=(\S+) pid=(\d+)/g)) agents.set(m[1]!, { id: m[2]!, pid: Number(m[3]) });
      resolve({ agents, servicePid: Number(/service pid=(\d+)/.exec(out)![1]) });
    }, 50);
    void exited.then(() => {
      clearInterval(timer);
      reject(new Error(`the demo exited before it was ready:\n${out}`));
    });
  });
  return { child, port, out: () => out, ready, exited };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** code.generate's reputation (quality × latency × uptime) per agent id, from a Route's candidates. */
async function reputation(port: number): Promise<Map<string, number>> {
  const r = await postJson(`http://127.0.0.1:${port}/route`, { capabilities: ["code.generate"] });
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  const out = new Map<string, number>();
  for (const c of r.json.candidates) out.set(c.agentId, (c.breakdown.quality ?? 0) * (c.breakdown.latency ?? 0) * (c.breakdown.uptime ?? 0));
  return out;
}

afterAll(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

describe("npm run demo", () => {
  let ws: WsFeed | undefined;
  afterAll(() => ws?.close());

  it("routes tasks, opens the flaky agent's breaker, ranks the weaker generator lower, and exits 0 after --duration with nothing left running", async () => {
    const t0 = Date.now();
    const demo = await startDemo(["--duration=20s"]);
    const { agents, servicePid } = await demo.ready;
    expect([...agents.keys()].sort()).toEqual(["fast-coder", "flaky-coder", "guard", "slow-coder"]);
    const flaky = agents.get("flaky-coder")!.id;
    const fast = agents.get("fast-coder")!.id;
    const slow = agents.get("slow-coder")!.id;
    // From the first event held, so nothing that happened before the socket opened is missed.
    ws = await openWs(demo.port, "?types=agent.circuit_opened,task.completed,task.failed&after_id=0", ADMIN_TOKEN);
    const deadline = t0 + 30_000;
    const until = async (what: string, done: () => boolean | Promise<boolean>) => {
      while (!(await done())) {
        if (Date.now() > deadline) throw new Error(`${what} did not happen within 30 s; demo output:\n${demo.out()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };

    await until("a completed task", () => ws!.events.items.some((e) => e.type === "task.completed"));
    await until("the flaky agent's breaker opening", () => ws!.events.items.some((e) => e.type === "agent.circuit_opened" && e.agentId === flaky));
    // Only the flaky agent fails: the generators' breakers never open.
    expect(ws.events.items.filter((e) => e.type === "agent.circuit_opened" && e.agentId !== flaky)).toEqual([]);
    let last = new Map<string, number>();
    await until("the slow generator's reputation falling below the fast one's", async () => {
      last = await reputation(demo.port);
      return last.get(slow)! < last.get(fast)!;
    });
    expect(last.get(slow)!).toBeLessThan(last.get(fast)!);

    const end = await demo.exited;
    expect(end.code, demo.out()).toBe(0);
    expect(end.at - t0).toBeLessThan(30_000);
    const completed = ws.events.items.filter((e) => e.type === "task.completed").length;
    expect(completed).toBeGreaterThan(20);
    const summary = /demo stopped: tasks ok (\d+), failed (\d+)/.exec(demo.out());
    expect(summary, demo.out()).not.toBeNull();
    expect(Number(summary![1])).toBeGreaterThan(20);
    for (const pid of [servicePid, ...[...agents.values()].map((a) => a.pid)]) expect(alive(pid), `pid ${pid} still running`).toBe(false);
  }, 45_000);

  it("stops everything and exits 0 on Ctrl-C", async () => {
    const demo = await startDemo([]);
    const { agents, servicePid } = await demo.ready;
    const pids = [servicePid, ...[...agents.values()].map((a) => a.pid)];
    for (const pid of pids) expect(alive(pid)).toBe(true);
    // Let it route a little first.
    await new Promise((r) => setTimeout(r, 1_500));
    const sent = Date.now();
    demo.child.kill("SIGINT");
    const end = await demo.exited;
    expect(end.code, demo.out()).toBe(0);
    expect(end.at - sent).toBeLessThan(10_000);
    expect(demo.out()).toContain("stopping (Ctrl-C)");
    for (const pid of pids) expect(alive(pid), `pid ${pid} still running`).toBe(false);
  }, 40_000);
});
