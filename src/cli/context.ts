import type { Command } from "commander";
import { Connection, type GlobalOptions } from "./connection.js";
import { createOutput, type Output } from "./output.js";

/** What a command's action works with: the server connection and where to print. */
export interface CommandContext {
  readonly conn: Connection;
  readonly out: Output;
}

/** Built from the global options (which commander accepts before or after the command name). */
export async function contextOf(cmd: Command): Promise<CommandContext> {
  const options = cmd.optsWithGlobals<GlobalOptions>();
  return { conn: await Connection.open(options), out: createOutput(options.json === true) };
}
