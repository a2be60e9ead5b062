import { Command, Option } from "commander";
import { CircuitStateSchema, AlertSeveritySchema } from "../../../gen/federation/v1/event_pb.js";
import {
  CheckResponseSchema,
  GetFleetHealthResponseSchema,
  HealthService,
  ServingStatus,
  ServingStatusSchema,
} from "../../../gen/federation/v1/health_service_pb.js";
import { parsePositiveInt } from "../arguments.js";
import { contextOf } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { durationLabel, enumLabel, messageJson, paint, printJson, table } from "../output.js";

export const healthCommand = new Command("health")
  .summary("service and fleet health (HealthService/Check, GetFleetHealth)")
  .description("The service's status and components, then the fleet's agents by status, open circuits and firing alerts. Exit 1 when the service is NOT_SERVING.")
  .addOption(new Option("--max-agents <n>", "agents listed in the fleet answer").argParser(parsePositiveInt))
  .action(async (opts: { maxAgents?: number }, cmd: Command) => {
    const { conn, out } = await contextOf(cmd);
    const health = conn.client(HealthService);
    const call = { timeoutMs: conn.timeoutMs };
    const [check, fleet] = await Promise.all([health.check({}, call), health.getFleetHealth({ maxAgents: opts.maxAgents ?? 0 }, call)]);
    const serving = check.status === ServingStatus.SERVING;
    if (out.json) {
      printJson(out, { check: messageJson(CheckResponseSchema, check), fleet: messageJson(GetFleetHealthResponseSchema, fleet) });
    } else {
      const status = enumLabel(ServingStatusSchema, check.status, "SERVING_STATUS_").toUpperCase();
      out.line(`service  ${paint(out, serving ? "green" : "red", status)}  version ${check.version || "-"}  up ${durationLabel(check.uptime)}`);
      if (check.components.length > 0) {
        out.line();
        out.line(
          table(
            ["COMPONENT", "STATUS", "MESSAGE"],
            check.components.map((c) => [c.name, enumLabel(ServingStatusSchema, c.status, "SERVING_STATUS_"), c.message]),
          ),
        );
      }
      out.line();
      out.line(
        `fleet    ${fleet.totalAgents} agents: ${fleet.healthyAgents} healthy, ${fleet.degradedAgents} degraded, ` +
          `${fleet.unhealthyAgents} unhealthy, ${fleet.drainingAgents} draining; ${fleet.capabilities} capabilities, ${fleet.tools} tools`,
      );
      if (fleet.circuits.length > 0) {
        out.line();
        out.line(
          table(
            ["AGENT", "CIRCUIT"],
            fleet.circuits.map((c) => [c.agentId, enumLabel(CircuitStateSchema, c.state, "CIRCUIT_STATE_")]),
          ),
        );
      }
      if (fleet.firingAlerts.length > 0) {
        out.line();
        out.line(
          table(
            ["ALERT", "SEVERITY", "SLO", "SUBJECT", "MESSAGE"],
            fleet.firingAlerts.map((a) => [
              a.alertId,
              enumLabel(AlertSeveritySchema, a.severity, "ALERT_SEVERITY_"),
              a.slo || "-",
              a.agentId || a.capability || a.component || "-",
              a.message,
            ]),
          ),
        );
      }
    }
    if (!serving) throw new CliError("the service is not serving", ExitCode.server);
  });
