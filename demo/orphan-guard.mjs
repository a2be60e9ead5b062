// Preloaded into the demo's service (`node --import ./demo/orphan-guard.mjs`):
// when the demo runner that started it is gone (killed outright, so it could
// not stop its children), the service drains and exits as on SIGTERM.
const parent = process.ppid;
const timer = setInterval(() => {
  if (process.ppid === parent) return;
  clearInterval(timer);
  process.kill(process.pid, "SIGTERM");
}, 500);
timer.unref();
