import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { Collected } from "./feeds.js";

/** An agent process (test/support/dispatch-agent.mjs) the dispatch tests start. */
export interface AgentProcess {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  /** Every task it received (taskId, ticket, tenant, host, idempotencyKey, ...). */
  readonly tasks: Collected<any>;
  readonly exited: Promise<number | null>;
  /** Changes its behaviour: ok, slow, fail, die, redirect, big. */
  setMode(mode: string): Promise<void>;
  kill(): void;
}

const script = path.resolve(import.meta.dirname, "dispatch-agent.mjs");
const started: AgentProcess[] = [];

export async function startAgent(kind: "http" | "grpc", name: string, env: Record<string, string> = {}): Promise<AgentProcess> {
  const child = spawn(process.execPath, [script, kind, name], {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const tasks = new Collected<any>();
  const modeAcks: (() => void)[] = [];
  let partial = "";
  let onPort: (port: number) => void = () => {};
  const port = new Promise<number>((resolve) => (onPort = resolve));
  child.stdout!.on("data", (d: Buffer) => {
    partial += d;
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith("LISTENING ")) onPort(Number(line.slice(10)));
      else if (line.startsWith("TASK ")) tasks.push(JSON.parse(line.slice(5)));
      else if (line.startsWith("MODE ")) modeAcks.shift()?.();
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const p = await Promise.race([
    port,
    exited.then((code) => {
      throw new Error(`agent ${name} exited (${code}) before listening`);
    }),
  ]);
  const agent: AgentProcess = {
    name,
    port: p,
    child,
    tasks,
    exited,
    setMode: (mode) =>
      new Promise<void>((resolve) => {
        modeAcks.push(resolve);
        child.stdin!.write(`mode ${mode}\n`);
      }),
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
  started.push(agent);
  return agent;
}

export function killAgents(): void {
  for (const a of started.splice(0)) a.kill();
}
