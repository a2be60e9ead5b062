import { pino, type Logger } from "pino";

export type { Logger };

/**
 * The root logger. Serializers are explicit so a raw request, and with it an
 * Authorization header or a token, is never written to the log.
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "federation-core" },
    serializers: {
      err: pino.stdSerializers.err,
      req: () => undefined,
      res: () => undefined,
    },
    redact: { paths: ["authorization", "*.authorization", "token", "*.token"], remove: true },
  });
}
