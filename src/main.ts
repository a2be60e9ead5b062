import { App } from "./app.js";
import { ConfigError, loadConfig } from "./config.js";

/** A configuration problem is one line naming the variable and exit code 2, never a stack trace. */
function exitOnConfigError(err: unknown): never {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`configuration error: ${err.message.replace(/\s*\n\s*/g, " ")}\n`);
  process.exit(2);
}

let app: App;
try {
  // App.create finds what only loading shows: unusable signing keys, unparsable PEM files.
  app = await App.create(loadConfig());
} catch (err) {
  exitOnConfigError(err);
}
await app.start();

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, "draining");
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        app.log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}
