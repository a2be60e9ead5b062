// The demo's Praetorian Guard: `node guard.mjs --name=guard`. It offers
// capability `remediation`, so SLO alerts (SLO=on) are dispatched to it as
// tasks; it prints what it would do ("REMEDIATE {json}") and answers done.
import { flags, runAgent } from "./demo-agent.mjs";

const name = flags().name ?? "guard";
await runAgent({
  name,
  capabilities: ["remediation"],
  async execute(task) {
    const p = task.payload ?? {};
    console.log(`REMEDIATE ${JSON.stringify({ slo: p.slo, subject: p.subject, severity: p.severity, burnRate: p.burnRate })}`);
    return { agent: name, action: "restart-requested", subject: p.subject ?? null };
  },
});
