import { Command, Option } from "commander";
import { AgentSchema, type Agent } from "../../../gen/federation/v1/agent_pb.js";
import { GetAgentResponseSchema, RegistryService } from "../../../gen/federation/v1/registry_service_pb.js";
import { agentDetail, agentTable } from "../agent-table.js";
import { parsePositiveInt } from "../arguments.js";
import { contextOf } from "../context.js";
import { messageJson, printJson, Progress } from "../output.js";

export const agentsCommand = new Command("agents")
  .summary("list the tenant's agents, or show one (RegistryService/ListAgents, GetAgent)")
  .description(
    "Without an id: every agent of your tenant, read page by page (--json: {\"agents\": [...]}). " +
      "With an id: that agent in full (exit 4 when it does not exist).",
  )
  .argument("[id]", "an agent id")
  .addOption(new Option("-n, --limit <n>", "stop after this many agents").argParser(parsePositiveInt))
  .addOption(new Option("--page-size <n>", "agents per ListAgents call (at most 1000)").default(500).argParser(parsePositiveInt))
  .action(async (id: string | undefined, opts: { limit?: number; pageSize: number }, cmd: Command) => {
    const { conn, out } = await contextOf(cmd);
    const registry = conn.client(RegistryService);
    if (id !== undefined) {
      const got = await registry.getAgent({ agentId: id }, { timeoutMs: conn.timeoutMs });
      if (out.json) return printJson(out, messageJson(GetAgentResponseSchema, got));
      return out.line(agentDetail(out, got.agent!));
    }
    const agents: Agent[] = [];
    const progress = new Progress(out, "agents read");
    let pageToken = "";
    do {
      const want = opts.limit === undefined ? opts.pageSize : Math.min(opts.pageSize, opts.limit - agents.length);
      const page = await registry.listAgents({ pageSize: want, pageToken }, { timeoutMs: conn.timeoutMs });
      agents.push(...page.agents);
      pageToken = page.nextPageToken;
      if (pageToken) progress.update(agents.length);
    } while (pageToken !== "" && (opts.limit === undefined || agents.length < opts.limit));
    progress.clear();
    const shown = opts.limit === undefined ? agents : agents.slice(0, opts.limit);
    if (out.json) return printJson(out, { agents: shown.map((a) => messageJson(AgentSchema, a)) });
    out.line(agentTable(out, shown));
  });
