// A demo code generator: `node coder.mjs --name=fast-coder [flags]`.
//   --capabilities=code.generate,code.review  what it offers (comma-separated)
//   --latency=20-60     how long an answer takes, ms (a range: random in it)
//   --wrong=0.35        the share of answers that are wrong (the caller notices,
//                       and tells the router with ReportOutcome)
//   --cycle=4s/8s       flaky: works 4 s, then fails every task (HTTP 500) and
//                       its /health for 8 s, and again
// A task's payload is {"spec": "sum", "args": [numbers]}; the answer is a
// function and what it returns: {"agent", "code", "answer"}.
import { flags, latencyOf, runAgent, sleep } from "./demo-agent.mjs";

const f = flags();
const name = f.name ?? "coder";
const wrong = Number(f.wrong ?? 0);
const seconds = (s) => Number(String(s).replace(/s$/, "")) * 1000;
const [okMs, failMs] = f.cycle ? f.cycle.split("/").map(seconds) : [Infinity, 0];
const born = Date.now();
const failing = () => (Date.now() - born) % (okMs + failMs) >= okMs;

let wasFailing = false;
setInterval(() => {
  if (failing() !== wasFailing) console.log((wasFailing = failing()) ? "now failing every task" : "working again");
}, 100).unref();

await runAgent({
  name,
  capabilities: (f.capabilities ?? "code.generate").split(","),
  tools: [{ name: "write_code", description: "Writes a small function to a spec", inputSchema: { type: "object" } }],
  healthy: () => !failing(),
  async execute(task) {
    await sleep(latencyOf(f.latency ?? "20-60"));
    if (failing()) throw new Error("out of GPU memory (on cue)");
    const args = Array.isArray(task.payload?.args) ? task.payload.args.map(Number) : [];
    const sum = args.reduce((a, b) => a + b, 0);
    if (Math.random() < wrong) return { agent: name, code: "(...xs) => xs.reduce((a, b) => a - b)", answer: sum - 1 };
    return { agent: name, code: "(...xs) => xs.reduce((a, b) => a + b, 0)", answer: sum };
  },
});
