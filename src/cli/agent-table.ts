import { AgentStatusSchema, AgentStatus, type Agent } from "../../gen/federation/v1/agent_pb.js";
import { enumLabel, numberLabel, paint, table, timeLabel, type Colour, type Output } from "./output.js";

const statusColour: Partial<Record<AgentStatus, Colour>> = {
  [AgentStatus.HEALTHY]: "green",
  [AgentStatus.DEGRADED]: "yellow",
  [AgentStatus.UNHEALTHY]: "red",
  [AgentStatus.DRAINING]: "gray",
};

function statusLabel(out: Output, status: AgentStatus): string {
  return paint(out, statusColour[status], enumLabel(AgentStatusSchema, status, "AGENT_STATUS_"));
}

/** The human view of a list of agents (discover, agents). */
export function agentTable(out: Output, agents: readonly Agent[]): string {
  if (agents.length === 0) return "no agents";
  const rows = agents.map((a) => [
    a.id,
    a.name,
    a.version || "-",
    enumLabel(AgentStatusSchema, a.status, "AGENT_STATUS_"),
    numberLabel(a.load),
    a.capabilities.map((c) => (c.tags.length ? `${c.name}[${c.tags.join(",")}]` : c.name)).join(" ") || "-",
    a.endpoint?.url ?? "-",
  ]);
  // Coloured after layout, so escape codes do not count toward column widths.
  const STATUS = 3;
  return table(["ID", "NAME", "VERSION", "STATUS", "LOAD", "CAPABILITIES", "ENDPOINT"], rows, (row, column, cell) =>
    column === STATUS ? paint(out, statusColour[agents[row]!.status], cell) : cell,
  );
}

/** One agent in full (agents <id>). */
export function agentDetail(out: Output, a: Agent): string {
  const lines: [string, string][] = [
    ["id", a.id],
    ["name", a.name],
    ["version", a.version || "-"],
    ["status", statusLabel(out, a.status)],
    ["tenant", a.tenant + (a.shared ? " (shared)" : "")],
    ["endpoint", a.endpoint ? `${a.endpoint.url}` : "-"],
    ["load", numberLabel(a.load)],
    ["capabilities", a.capabilities.map((c) => (c.tags.length ? `${c.name} [${c.tags.join(", ")}]` : c.name)).join(", ") || "-"],
    ["tools", a.tools.map((t) => t.name).join(", ") || "-"],
    ["labels", Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "-"],
    ["registered", timeLabel(a.registeredAt)],
    ["last heartbeat", timeLabel(a.lastHeartbeatAt)],
    ["lease expires", timeLabel(a.leaseExpiresAt)],
    ["revision", String(a.revision)],
  ];
  const width = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}
