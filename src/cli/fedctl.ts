#!/usr/bin/env node
import { Command, CommanderError, Option } from "commander";
import { parseDurationMs } from "./arguments.js";
import { agentsCommand } from "./commands/agents.js";
import { discoverCommand } from "./commands/discover.js";
import { healthCommand } from "./commands/health.js";
import { peersCommand } from "./commands/peers.js";
import { registerCommand } from "./commands/register.js";
import { routeCommand } from "./commands/route.js";
import { tokenCommand } from "./commands/token.js";
import { watchCommand } from "./commands/watch.js";
import { DEFAULT_URL } from "./connection.js";
import { describeFailure, ExitCode, exitCodesHelp } from "./exit-codes.js";

/**
 * fedctl: Federation Core from a terminal, over the generated Connect
 * clients. Results on stdout (tables, or JSON with --json), everything else
 * on stderr, and an exit status from exit-codes.ts.
 */
function buildProgram(): Command {
  const program = new Command("fedctl")
    .description("Operate a Federation Core: mint tokens, register, discover and route agents, watch events.")
    .addOption(new Option("--url <url>", "the service").env("FEDERATION_URL").default(DEFAULT_URL))
    // .env() and no default: help shows where a token comes from, never the token.
    .addOption(new Option("--token <token>", "bearer token (tenant or admin)").env("FEDERATION_TOKEN"))
    .addOption(new Option("--protocol <protocol>", "wire protocol").choices(["grpc", "connect"]).default("grpc"))
    .option("--json", "print JSON (proto3 JSON of the answer) instead of tables")
    .addOption(
      new Option("--timeout <duration>", "deadline of each call (not of watch)")
        .default(30_000, "30s")
        .argParser(parseDurationMs),
    )
    .showHelpAfterError("(run with --help for usage)")
    .configureHelp({ showGlobalOptions: true })
    .addHelpText("after", `\n${exitCodesHelp}\n\nEnvironment: FEDERATION_URL, FEDERATION_TOKEN, NO_COLOR.`);
  // Commander's own usage errors exit 2 (its default is 1, which here means the server failed).
  program.exitOverride();
  for (const cmd of [tokenCommand, registerCommand, discoverCommand, routeCommand, watchCommand, agentsCommand, peersCommand, healthCommand]) {
    program.addCommand(cmd.copyInheritedSettings(program).addHelpText("after", `\n${exitCodesHelp}`));
  }
  return program;
}

async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and --version are not errors; commander has printed the message already.
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    const opts = program.opts<{ url?: string; token?: string }>();
    const { message, exitCode } = describeFailure(err, { url: opts.url ?? DEFAULT_URL, hasToken: Boolean(opts.token) });
    process.stderr.write(`fedctl: ${message}\n`);
    return exitCode;
  }
}

const code = await main(process.argv);
// Flush stdout (a pipe) before exiting: open HTTP/2 sessions would otherwise keep the process alive.
process.stdout.write("", () => process.exit(code));
