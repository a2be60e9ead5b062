import { Code, ConnectError } from "@connectrpc/connect";

/**
 * What fedctl's exit status means, in one table (printed by `--help` and
 * kept in the README). Scripts branch on these, so they only ever grow.
 */
export const ExitCode = {
  ok: 0,
  /** The server answered with an error (its gRPC code is in the message), or it could not be reached. */
  server: 1,
  /** Bad arguments or agent file, caught before any call; or a command this server does not support. */
  usage: 2,
  /** UNAUTHENTICATED or PERMISSION_DENIED: a missing, wrong, expired or too narrow token. */
  auth: 3,
  /** NOT_FOUND: no such agent (or task) in the caller's tenant. */
  notFound: 4,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const exitCodesHelp = `Exit codes:
  0  success
  1  server error or server unreachable (the message names the gRPC code, e.g. UNAVAILABLE)
  2  usage error: bad arguments or agent file, or a command the server does not support
  3  UNAUTHENTICATED or PERMISSION_DENIED: check --token / FEDERATION_TOKEN and its scopes
  4  NOT_FOUND: no such agent in your tenant`;

/** An error fedctl raises itself, with the exit status it means. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
  }
}

export const usageError = (message: string) => new CliError(message, ExitCode.usage);

/** Code.InvalidArgument → "INVALID_ARGUMENT", the name every gRPC user knows. */
export function grpcCodeName(code: Code): string {
  return (Code[code] ?? `CODE_${code}`).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export function exitCodeOf(code: Code): ExitCode {
  switch (code) {
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return ExitCode.auth;
    case Code.NotFound:
      return ExitCode.notFound;
    default:
      return ExitCode.server;
  }
}

/** The one line printed for a failed command, and its exit status. */
export function describeFailure(
  err: unknown,
  { url, hasToken }: { url: string; hasToken: boolean },
): { message: string; exitCode: ExitCode } {
  if (err instanceof CliError) return { message: err.message, exitCode: err.exitCode };
  if (err instanceof ConnectError) {
    const name = grpcCodeName(err.code);
    let hint = "";
    if (err.code === Code.Unauthenticated) {
      hint = hasToken ? " (check --token / FEDERATION_TOKEN: wrong, expired or not for this server)" : " (no token: set --token or FEDERATION_TOKEN)";
    }
    else if (err.code === Code.PermissionDenied) hint = " (the token lacks the scope this call needs)";
    else if (err.code === Code.Unavailable && /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT/.test(String(err.cause ?? err.rawMessage)))
      hint = ` (is the service running at ${url}?)`;
    return { message: `${name}: ${err.rawMessage}${hint}`, exitCode: exitCodeOf(err.code) };
  }
  return { message: err instanceof Error ? err.message : String(err), exitCode: ExitCode.server };
}
