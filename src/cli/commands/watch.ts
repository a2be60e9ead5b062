import { Code, ConnectError } from "@connectrpc/connect";
import { Command, Option } from "commander";
import { AgentStatusSchema } from "../../../gen/federation/v1/agent_pb.js";
import { AlertStateSchema, CircuitStateSchema, EventSchema, type Event } from "../../../gen/federation/v1/event_pb.js";
import { HealthService } from "../../../gen/federation/v1/health_service_pb.js";
import { AttemptOutcomeSchema } from "../../../gen/federation/v1/task_pb.js";
import { collect } from "../arguments.js";
import { contextOf } from "../context.js";
import { usageError } from "../exit-codes.js";
import { durationLabel, enumLabel, messageJson, numberLabel, paint, printJson, type Colour, type Output } from "../output.js";

export const watchCommand = new Command("watch")
  .summary("follow the live event feed (HealthService/WatchEvents) until Ctrl-C")
  .description(
    "Print events as they happen, coloured by type on a terminal; --json prints one Event per line (NDJSON). " +
      "Runs until Ctrl-C (exit 0) or until the server ends the stream (exit 1).",
  )
  .option("--type <types>", "only these event types, repeatable or comma-separated (e.g. agent.registered)", collect)
  .option("--agent <id>", "only events about this agent")
  .addOption(new Option("--after <id>", "first replay the held events after this id (0: all held), then go live"))
  .action(async (opts: { type?: string[]; agent?: string; after?: string }, cmd: Command) => {
    const { conn, out } = await contextOf(cmd);
    let afterId: bigint | undefined;
    if (opts.after !== undefined) {
      if (!/^\d+$/.test(opts.after)) throw usageError(`--after: "${opts.after}" is not an event id (a whole number)`);
      afterId = BigInt(opts.after);
    }
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    if (!out.json && process.stderr.isTTY) out.notice(paint(out, "gray", `watching ${conn.url} (Ctrl-C to stop)`));
    try {
      const stream = conn.client(HealthService).watchEvents(
        { types: opts.type ?? [], agentId: opts.agent ?? "", afterId },
        { signal: abort.signal },
      );
      for await (const { event } of stream) {
        if (!event) continue;
        if (out.json) printJson(out, messageJson(EventSchema, event), true);
        else out.line(eventLine(out, event));
      }
    } catch (err) {
      if (abort.signal.aborted && err instanceof ConnectError && err.code === Code.Canceled) return;
      throw err;
    } finally {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    }
    if (!abort.signal.aborted) throw new ConnectError("the server ended the event stream", Code.Unavailable);
  });

function colourOf(type: string): Colour | undefined {
  if (type === "agent.registered" || type === "agent.circuit_closed" || type === "agent.probe_recovered" || type === "task.completed") return "green";
  if (type === "agent.unregistered" || type === "agent.expired" || type === "agent.circuit_opened" || type === "task.failed" || type === "agent.probe_failed") return "red";
  if (type === "agent.status_changed" || type === "agent.circuit_half_open") return "yellow";
  if (type.startsWith("health.")) return "magenta";
  if (type.startsWith("task.")) return "cyan";
  if (type.startsWith("agent.")) return "blue";
  return undefined;
}

/** time  type  subject  what changed — one line per event. */
function eventLine(out: Output, e: Event): string {
  const time = e.time ? new Date(Number(e.time.seconds) * 1000 + e.time.nanos / 1e6).toISOString().slice(11, 23) : "--:--:--.---";
  const type = paint(out, colourOf(e.type), e.type.padEnd(24));
  return `${paint(out, "gray", time)}  ${type}  ${detail(e)}`.trimEnd();
}

function detail(e: Event): string {
  const p = e.payload;
  switch (p.case) {
    case "agentChange": {
      const a = p.value.agent;
      const status = enumLabel(AgentStatusSchema, a?.status ?? 0, "AGENT_STATUS_");
      const previous = p.value.previousStatus ? `${enumLabel(AgentStatusSchema, p.value.previousStatus, "AGENT_STATUS_")} → ` : "";
      return [a ? `${a.name} ${a.id}` : e.agentId, `${previous}${status}`, p.value.reason].filter(Boolean).join("  ");
    }
    case "taskRouted":
      return `${e.agentId}  [${p.value.capabilities.join(", ")}]  score ${numberLabel(p.value.score, 3)}  route ${p.value.routeId}`;
    case "taskProgress": {
      const outcome = enumLabel(AttemptOutcomeSchema, p.value.outcome, "ATTEMPT_OUTCOME_");
      return [`task ${p.value.taskId}`, e.agentId, `attempt ${p.value.attempt}`, outcome === "-" ? "" : outcome, p.value.latency ? durationLabel(p.value.latency) : "", p.value.detail]
        .filter(Boolean)
        .join("  ");
    }
    case "healthAlert":
      return [enumLabel(AlertStateSchema, p.value.state, "ALERT_STATE_"), p.value.slo || p.value.component, p.value.agentId || p.value.capability, p.value.message]
        .filter((s) => s && s !== "-")
        .join("  ");
    case "circuitChange":
      return `${e.agentId}  ${enumLabel(CircuitStateSchema, p.value.previousState, "CIRCUIT_STATE_")} → ${enumLabel(CircuitStateSchema, p.value.state, "CIRCUIT_STATE_")}  ${p.value.reason}`.trimEnd();
    default:
      return e.agentId;
  }
}
