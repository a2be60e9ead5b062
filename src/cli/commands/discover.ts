import { Command, Option } from "commander";
import { AgentStatusSchema } from "../../../gen/federation/v1/agent_pb.js";
import { DirectoryService, DiscoverResponseSchema } from "../../../gen/federation/v1/directory_service_pb.js";
import { FederationScopeSchema } from "../../../gen/federation/v1/origin_pb.js";
import { agentTable } from "../agent-table.js";
import { collect, enumParser, parsePositiveInt } from "../arguments.js";
import { contextOf } from "../context.js";
import { messageJson, printJson } from "../output.js";

export const discoverCommand = new Command("discover")
  .summary("find agents by capability, tag and status (DirectoryService/Discover)")
  .description("Find agents that have every capability and every tag given, best first.")
  .option("-c, --capability <names>", "required capability, repeatable or comma-separated", collect)
  .option("-t, --tag <tags>", "required tag, repeatable or comma-separated", collect)
  .addOption(new Option("-s, --status <status>", "only agents in this status (healthy, degraded, unhealthy, draining)").argParser(enumParser(AgentStatusSchema, "AGENT_STATUS_")))
  .addOption(new Option("-n, --limit <n>", "at most this many agents").argParser(parsePositiveInt))
  .addOption(new Option("--scope <scope>", "local, federated or auto (also ask this federation's peers)").argParser(enumParser(FederationScopeSchema, "FEDERATION_SCOPE_")))
  .action(
    async (opts: { capability?: string[]; tag?: string[]; status?: number; limit?: number; scope?: number }, cmd: Command) => {
      const { conn, out } = await contextOf(cmd);
      const found = await conn.client(DirectoryService).discover(
        {
          capabilities: opts.capability ?? [],
          tags: opts.tag ?? [],
          status: opts.status ?? 0,
          limit: opts.limit ?? 0,
          scope: opts.scope ?? 0,
        },
        { timeoutMs: conn.timeoutMs },
      );
      if (out.json) return printJson(out, messageJson(DiscoverResponseSchema, found));
      out.line(agentTable(out, found.agents));
    },
  );
