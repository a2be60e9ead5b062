import { constants } from "node:os";
import { App, type StopReport } from "./app.js";
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

/**
 * Exit codes: 0 when the drain was clean; 1 when the grace ran out with work
 * left (connections cut, events still queued for Redis, a step past its
 * deadline) or shutdown failed; 128 + the signal's number when a second
 * signal cut the drain short.
 */
const EXIT_CLEAN = 0;
const EXIT_WORK_LEFT = 1;
/** App.stop bounds itself; this is the backstop if something on its path ignores its deadline. */
const HARD_MARGIN_MS = 1_500;

/** What is still queued for Redis right now (for the lines written when the drain is cut short). */
const queuedEvents = () => app.bus.unpublishedEvents?.().queued ?? 0;

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) {
      // A second signal: the operator wants out now.
      app.log.warn({ signal, unpublishedEvents: queuedEvents() }, "second signal; exiting now without finishing the drain");
      process.exit(128 + (constants.signals[signal] ?? 15));
    }
    stopping = true;
    const graceMs = app.config.shutdownGraceMs;
    app.log.info({ signal, graceMs }, "draining");
    // Not unref()ed: whatever else ends, this process ends by it.
    setTimeout(() => {
      app.log.error({ unpublishedEvents: queuedEvents(), afterMs: graceMs + HARD_MARGIN_MS }, "shutdown did not finish in time; exiting with work left");
      process.exit(EXIT_WORK_LEFT);
    }, graceMs + HARD_MARGIN_MS);
    app.stop().then(
      (report) => {
        finalLine(report);
        process.exit(report.clean ? EXIT_CLEAN : EXIT_WORK_LEFT);
      },
      (err: unknown) => {
        app.log.error({ err, unpublishedEvents: queuedEvents() }, "shutdown failed");
        process.exit(EXIT_WORK_LEFT);
      },
    );
  });
}

/** The last line a stopping process writes: how it ended and what, if anything, was lost. */
function finalLine(r: StopReport): void {
  const fields = {
    exitCode: r.clean ? EXIT_CLEAN : EXIT_WORK_LEFT,
    durationMs: r.durationMs,
    unpublishedEvents: r.unpublishedEvents,
    droppedEvents: r.droppedEvents,
    connectionsCut: r.connectionsCut,
    timedOut: r.timedOut,
  };
  if (r.clean) {
    app.log.info(fields, "stopped: drained cleanly");
    return;
  }
  const why = [
    r.unpublishedEvents > 0 ? `${r.unpublishedEvents} event(s) still queued for Redis were not published and are lost` : "",
    r.connectionsCut ? "connections still open at the end of the grace were closed" : "",
    r.timedOut.length > 0 ? `steps past their deadline: ${r.timedOut.join(", ")}` : "",
  ].filter(Boolean);
  app.log.error(fields, `stopped with work left: ${why.join("; ")}`);
}
