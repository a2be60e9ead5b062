import { fromJson } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import {
  AdminService,
  MintTokenRequestSchema,
  MintTokenResponseSchema,
} from "../../../gen/federation/v1/admin_service_pb.js";
import { collect, durationJson, parseDurationMs } from "../arguments.js";
import { contextOf } from "../context.js";
import { usageError } from "../exit-codes.js";
import { messageJson, printJson, timeLabel } from "../output.js";

const DEFAULT_SCOPES = ["agents:read", "agents:write", "route", "events:read"];

export const tokenCommand = new Command("token")
  .summary("mint a tenant token (AdminService/MintToken; needs an admin token)")
  .description(
    "Mint a token for a tenant. Prints only the token, so TOKEN=$(fedctl token --tenant acme) works; " +
      "its expiry goes to stderr (or use --json).",
  )
  .requiredOption("--tenant <tenant>", "the tenant the token acts in")
  .option("--scopes <scopes>", `comma-separated scopes, repeatable (default: ${DEFAULT_SCOPES.join(",")})`, collect)
  .addOption(new Option("--ttl <duration>", "lifetime, e.g. 90s, 15m, 24h, 7d").default(3_600_000, "1h").argParser(parseDurationMs))
  .option("--subject <subject>", "the token's sub claim (default tenant:<tenant>)")
  .action(async (opts: { tenant: string; scopes?: string[]; ttl: number; subject?: string }, cmd: Command) => {
    const { conn, out } = await contextOf(cmd);
    if (opts.tenant.trim() === "") throw usageError("--tenant: must not be empty");
    const request = fromJson(MintTokenRequestSchema, {
      tenant: opts.tenant,
      scopes: opts.scopes ?? DEFAULT_SCOPES,
      subject: opts.subject ?? "",
      ttl: durationJson(opts.ttl),
    });
    const minted = await conn.client(AdminService).mintToken(request, { timeoutMs: conn.timeoutMs });
    if (out.json) return printJson(out, messageJson(MintTokenResponseSchema, minted));
    out.line(minted.token);
    out.notice(`token for tenant ${opts.tenant}, expires ${timeLabel(minted.expiresAt)}`);
  });
