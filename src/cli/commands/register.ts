import { Command, Option } from "commander";
import { RegistryService, RegisterResponseSchema, type RegisterResponse } from "../../../gen/federation/v1/registry_service_pb.js";
import { AgentStatusSchema } from "../../../gen/federation/v1/agent_pb.js";
import { readAgentFiles, type AgentEntry } from "../agent-file.js";
import { parsePositiveInt } from "../arguments.js";
import { contextOf } from "../context.js";
import { CliError, describeFailure } from "../exit-codes.js";
import { durationLabel, enumLabel, messageJson, paint, printJson, Progress } from "../output.js";

export const registerCommand = new Command("register")
  .summary("register agents from YAML or JSON agent files")
  .description(
    "Register (or, with agentId, update) every agent of the files: one agent, a list, {agents: [...]} " +
      "or several YAML documents per file, each a RegisterRequest as POST /agents/register takes it. " +
      "Prints each agent's id and passport (deferPassport: true in a file defers it to the first heartbeat); --json prints one RegisterResponse per line. Stops at the " +
      "first agent the server refuses (the ones before it stay registered).",
  )
  .argument("<files...>", "agent files (.yaml, .yml or .json)")
  .option("-q, --quiet", "print nothing on success")
  .addOption(new Option("--concurrency <n>", "registrations in flight at once").default(8).argParser(parsePositiveInt))
  .action(async (files: string[], opts: { quiet?: boolean; concurrency: number }, cmd: Command) => {
    const { conn, out } = await contextOf(cmd);
    const entries = readAgentFiles(files);
    const registry = conn.client(RegistryService);
    const progress = new Progress(out, "registering", entries.length);
    const results: (RegisterResponse | undefined)[] = new Array(entries.length);
    let next = 0;
    let done = 0;
    let failure: { entry: AgentEntry; err: unknown } | undefined;

    // A small pool: files of thousands of agents neither run one at a time nor open thousands of streams.
    const worker = async () => {
      while (failure === undefined && next < entries.length) {
        const i = next++;
        const entry = entries[i]!;
        try {
          results[i] = await registry.register(entry.request, { timeoutMs: conn.timeoutMs });
        } catch (err) {
          failure ??= { entry, err };
          return;
        }
        progress.update(++done);
        if (!opts.quiet) printReady();
      }
    };
    // Printed in file order as soon as every earlier agent is in.
    let printed = 0;
    const printReady = () => {
      while (printed < entries.length && results[printed] !== undefined) {
        const r = results[printed++]!;
        progress.clear();
        if (out.json) printJson(out, messageJson(RegisterResponseSchema, r), true);
        else {
          const a = r.agent!;
          out.line(
            `${paint(out, "green", "registered")} ${a.name} ${a.version}  id ${paint(out, "bold", a.id)}  ` +
              `${enumLabel(AgentStatusSchema, a.status, "AGENT_STATUS_")}  lease ${durationLabel(r.leaseTtl)}`,
          );
          // An agent file with deferPassport: true gets its passport with its first heartbeat.
          out.line(r.passport === "" ? "  passport deferred: the first heartbeat answers with it" : `  passport ${r.passport}`);
        }
        progress.update(done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.concurrency, entries.length) }, worker));
    progress.clear();
    if (failure) {
      const { message, exitCode } = describeFailure(failure.err, { url: conn.url, hasToken: conn.hasToken });
      const before = entries.length > 1 ? ` (${done} of ${entries.length} registered)` : "";
      throw new CliError(`${failure.entry.where}: ${message}${before}`, exitCode);
    }
  });
