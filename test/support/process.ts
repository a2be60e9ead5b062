import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ADMIN_TOKEN } from "./app.js";

/**
 * The service as a real process (`node --import tsx src/main.ts`), for the
 * tests that send it real signals: its log lines parsed, its exit timed.
 */
export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly url: string;
  /** Every stdout line that parsed as JSON (pino), in order. */
  readonly lines: any[];
  /** Everything on stdout and stderr. */
  output(): string;
  /** Sends the signal and returns the time it was sent (ms). */
  signal(sig: NodeJS.Signals): number;
  /** Resolves with the exit code (or signal) and the time of exit. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** Resolves with the first log line matching, or rejects after `ms`. */
  waitForLine(pred: (line: any) => boolean, ms?: number): Promise<any>;
  /** SIGKILL if still running, and removes its data directory. */
  dispose(): Promise<void>;
}

const root = path.resolve(import.meta.dirname, "../..");

export async function startProcess(env: Record<string, string>): Promise<ServiceProcess> {
  const dataDir = env.DATA_DIR ?? mkdtempSync(path.join(os.tmpdir(), "fc-proc-"));
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: root,
    env: {
      ...process.env,
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      DATA_DIR: dataDir,
      FEDERATION_BOOTSTRAP_TOKEN: ADMIN_TOKEN,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let partial = "";
  const lines: any[] = [];
  const watchers: { pred: (l: any) => boolean; resolve: (l: any) => void }[] = [];
  child.stdout!.on("data", (d: Buffer) => {
    out += d;
    partial += d;
    const parts = partial.split("\n");
    partial = parts.pop()!;
    for (const text of parts) {
      let line: any;
      try {
        line = JSON.parse(text);
      } catch {
        continue;
      }
      lines.push(line);
      for (const w of watchers.splice(0)) (w.pred(line) ? w.resolve(line) : watchers.push(w));
    }
  });
  child.stderr!.on("data", (d: Buffer) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  const waitForLine = (pred: (l: any) => boolean, ms = 15_000) => {
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<any>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line after ${ms}ms; output:\n${out}`)), ms);
      watchers.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  };
  const dispose = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    if (!env.DATA_DIR) rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const listening = await waitForLine((l) => l.msg === "federation core listening", 20_000);
    return {
      child,
      port: listening.port,
      url: `http://127.0.0.1:${listening.port}`,
      lines,
      output: () => out,
      signal: (sig) => (child.kill(sig), Date.now()),
      exited,
      waitForLine,
      dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}

/** A loopback port nothing listens on (a backend that is down from the start). */
export async function deadPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A WebSocket client on /ws that completes the handshake and then never
 * reads again (its socket paused): the server's close frame is never
 * answered, so only the grace's end closes it.
 */
export async function stalledWs(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  socket.on("error", () => undefined);
  socket.write(
    "GET /ws HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\n" +
      "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n" +
      `authorization: Bearer ${ADMIN_TOKEN}\r\n\r\n`,
  );
  await new Promise<void>((resolve, reject) => {
    let head = "";
    const onData = (d: Buffer) => {
      head += d.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      socket.off("data", onData);
      if (!head.startsWith("HTTP/1.1 101")) reject(new Error(`no upgrade: ${head.split("\r\n")[0]}`));
      else resolve();
    };
    socket.on("data", onData);
  });
  socket.pause();
  return socket;
}

/** An HTTP/1.1 request whose body never finishes (a slow uploader): in flight until the grace ends. */
export async function stalledRequest(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  socket.on("error", () => undefined);
  socket.write(
    "POST /agents/register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n" +
      `authorization: Bearer ${ADMIN_TOKEN}\r\ncontent-length: 4000\r\n\r\n{"name":`,
  );
  return socket;
}
