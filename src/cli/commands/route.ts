import { Command, Option } from "commander";
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { CircuitStateSchema } from "../../../gen/federation/v1/event_pb.js";
import {
  RouteRequestSchema,
  RouteResponseSchema,
  RouteStrategySchema,
  RouterService,
} from "../../../gen/federation/v1/router_service_pb.js";
import { AttemptOutcomeSchema } from "../../../gen/federation/v1/task_pb.js";
import { FederationScopeSchema } from "../../../gen/federation/v1/origin_pb.js";
import { collect, durationJson, enumParser, parseDurationMs, parseTask } from "../arguments.js";
import { contextOf } from "../context.js";
import { durationLabel, enumLabel, messageJson, numberLabel, paint, printJson, table } from "../output.js";

export const routeCommand = new Command("route")
  .summary("choose the agent for a task, and optionally dispatch it (RouterService/Route)")
  .description(
    "Ask the router which agent should take a task needing every capability given. With --dispatch the " +
      "federation carries the task to that agent (failing over to the next) and prints its result.",
  )
  .argument("<capabilities...>", "the capabilities the task needs")
  .addOption(new Option("--task <json>", "the task payload: a JSON object, or @file.json").argParser(parseTask))
  .option("-d, --dispatch", "carry the task to the agent and wait for its result")
  .addOption(new Option("--dispatch-timeout <duration>", "how long dispatch may take in all, e.g. 10s").argParser(parseDurationMs))
  .addOption(new Option("--strategy <strategy>", "best, p2c, round-robin or least-loaded").argParser(enumParser(RouteStrategySchema, "ROUTE_STRATEGY_")))
  .option("-x, --exclude <ids>", "agent ids not to choose, repeatable or comma-separated", collect)
  .addOption(
    new Option("--scope <scope>", "local (default), federated (also this federation's peers' agents) or auto (the peers' only when no local agent can serve)").argParser(
      enumParser(FederationScopeSchema, "FEDERATION_SCOPE_"),
    ),
  )
  .action(
    async (
      capabilities: string[],
      opts: { task?: JsonObject; dispatch?: boolean; dispatchTimeout?: number; strategy?: number; exclude?: string[]; scope?: number },
      cmd: Command,
    ) => {
      const { conn, out } = await contextOf(cmd);
      const request = fromJson(RouteRequestSchema, {
        capabilities: capabilities.flatMap((c) => collect(c)),
        excludeAgentIds: opts.exclude ?? [],
        dispatch: opts.dispatch === true,
        ...(opts.task ? { task: opts.task } : {}),
        ...(opts.dispatchTimeout ? { timeout: durationJson(opts.dispatchTimeout) } : {}),
      });
      request.strategy = opts.strategy ?? 0;
      request.scope = opts.scope ?? 0;
      // The call's own deadline must outlast the dispatch it waits for.
      const timeoutMs = Math.max(conn.timeoutMs, (opts.dispatchTimeout ?? 0) + 5_000);
      const routed = await conn.client(RouterService).route(request, { timeoutMs });
      if (out.json) return printJson(out, messageJson(RouteResponseSchema, routed));

      const a = routed.agent!;
      out.line(`${paint(out, "green", "chosen")} ${paint(out, "bold", a.name)} ${a.id}  ${a.endpoint?.url ?? ""}`);
      // A remote agent (scope federated or auto): the peer whose agent it is.
      if (a.origin?.peerId) out.line(`origin  peer ${a.origin.peerId} (${a.origin.peerUrl}), its id there ${a.origin.remoteId}`);
      if (routed.reason) out.line(`reason  ${routed.reason}`);
      out.line(`task    ${routed.taskId}`);
      if (routed.candidates.length > 0) {
        out.line();
        out.line(
          table(
            ["AGENT", "SCORE", "CAPACITY", "QUALITY", "LATENCY", "UPTIME", "CIRCUIT"],
            routed.candidates.map((c) => [
              c.agentId,
              numberLabel(c.score, 3),
              numberLabel(c.breakdown?.capacity ?? NaN),
              numberLabel(c.breakdown?.quality ?? NaN),
              numberLabel(c.breakdown?.latency ?? NaN),
              numberLabel(c.breakdown?.uptime ?? NaN),
              enumLabel(CircuitStateSchema, c.breakdown?.circuitState ?? 0, "CIRCUIT_STATE_"),
            ]),
          ),
        );
      }
      if (routed.attempts.length > 0) {
        out.line();
        out.line(
          table(
            ["ATTEMPT", "AGENT", "OUTCOME", "LATENCY", "DETAIL"],
            routed.attempts.map((t) => [
              String(t.attempt),
              t.agentId,
              enumLabel(AttemptOutcomeSchema, t.outcome, "ATTEMPT_OUTCOME_"),
              durationLabel(t.latency),
              t.detail || "",
            ]),
          ),
        );
      }
      if (routed.result) {
        out.line();
        out.line(JSON.stringify(routed.result, null, 2));
      }
    },
  );
