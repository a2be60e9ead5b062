/**
 * The panels, each drawn whole from the Fleet model (a few hundred rows at
 * most, redrawn at most once a frame: simpler than diffing, and fast enough).
 */
import { toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { AgentStatus, type Agent } from "../../gen/federation/v1/agent_pb.js";
import { CircuitState, HealthAlertSchema } from "../../gen/federation/v1/event_pb.js";
import type { GetFleetHealthResponse } from "../../gen/federation/v1/health_service_pb.js";
import type { RouteResponse } from "../../gen/federation/v1/router_service_pb.js";
import { h, num, table, time } from "./dom.js";
import type { Fleet } from "./fleet.js";

/** Agent rows drawn, at most; the filters narrow the rest. */
const MAX_AGENT_ROWS = 500;
const STATUSES = [AgentStatus.HEALTHY, AgentStatus.DEGRADED, AgentStatus.UNHEALTHY, AgentStatus.DRAINING];

export interface AgentFilter {
  status: AgentStatus | undefined;
  capability: string;
  name: string;
}

export function statusName(s: AgentStatus): string {
  return AgentStatus[s] ?? String(s);
}

function badge(text: string, kind: string): HTMLElement {
  return h("span", { class: `badge ${kind.toLowerCase()}` }, text);
}

export function summary(health: GetFleetHealthResponse | undefined, fleet: Fleet): HTMLElement[] {
  const item = (label: string, value: number, kind = "") => h("div", { class: `stat ${kind}` }, h("b", {}, value), h("span", {}, label));
  if (!health) return [item("agents", fleet.agents.size)];
  return [
    item("agents", health.totalAgents),
    item("healthy", health.healthyAgents, "healthy"),
    item("degraded", health.degradedAgents, "degraded"),
    item("unhealthy", health.unhealthyAgents, "unhealthy"),
    item("draining", health.drainingAgents, "draining"),
    item("capabilities", health.capabilities),
    item("tools", health.tools),
    item("open breakers", fleet.circuits.size, fleet.circuits.size > 0 ? "open" : ""),
  ];
}

/** The status chips: a count per status, each a filter. */
export function statusChips(fleet: Fleet, filter: AgentFilter, choose: (s: AgentStatus | undefined) => void): HTMLElement[] {
  const counts = new Map<AgentStatus, number>();
  for (const a of fleet.agents.values()) counts.set(a.status, (counts.get(a.status) ?? 0) + 1);
  const chip = (label: string, s: AgentStatus | undefined, n: number) => {
    const b = h("button", { type: "button", class: `chip ${label.toLowerCase()}`, "aria-pressed": String(filter.status === s), "data-status": label }, `${label.toLowerCase()} ${n}`);
    b.addEventListener("click", () => choose(s));
    return b;
  };
  return [chip("ALL", undefined, fleet.agents.size), ...STATUSES.map((s) => chip(statusName(s), s, counts.get(s) ?? 0))];
}

/** Capabilities with how many agents offer each, for the capability filter. */
export function capabilityOptions(fleet: Fleet, selected: string): HTMLOptionElement[] {
  const counts = new Map<string, number>();
  for (const a of fleet.agents.values()) for (const c of a.capabilities) counts.set(c.name, (counts.get(c.name) ?? 0) + 1);
  const names = [...counts.keys()].sort();
  if (selected !== "" && !counts.has(selected)) names.unshift(selected);
  return [
    h("option", { value: "" }, "all"),
    ...names.map((n) => h("option", { value: n, selected: n === selected }, `${n} (${counts.get(n) ?? 0})`)),
  ];
}

export function agentsTable(fleet: Fleet, filter: AgentFilter): HTMLElement {
  const name = filter.name.toLowerCase();
  const shown = [...fleet.agents.values()]
    .filter(
      (a) =>
        (filter.status === undefined || a.status === filter.status) &&
        (filter.capability === "" || a.capabilities.some((c) => c.name === filter.capability)) &&
        (name === "" || a.name.toLowerCase().includes(name)),
    )
    .sort((a, b) => a.status - b.status || a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  const rows = shown.slice(0, MAX_AGENT_ROWS).map((a) => agentRow(a, fleet.circuits.get(a.id)));
  const more = shown.length > MAX_AGENT_ROWS ? h("p", { class: "empty" }, `${shown.length - MAX_AGENT_ROWS} more: narrow the filters`) : null;
  return h(
    "div",
    {},
    table(["Name", "Status", "Capabilities", "Load", "Breaker", "Last heartbeat", "Id"], rows, "No agents match."),
    more,
  );
}

function agentRow(a: Agent, circuit: CircuitState | undefined): HTMLTableRowElement {
  const status = statusName(a.status);
  const beat = a.lastHeartbeatAt ?? a.registeredAt;
  return h(
    "tr",
    { "data-agent-id": a.id, "data-status": status },
    h("td", { class: "name" }, a.name, a.version ? h("small", {}, ` ${a.version}`) : null),
    h("td", { class: "status" }, badge(status, status)),
    h("td", {}, a.capabilities.map((c) => h("span", { class: "cap" }, c.name))),
    h("td", { class: "num" }, num(a.load, 2)),
    h("td", {}, circuit === undefined ? badge("CLOSED", "closed") : badge(CircuitState[circuit], CircuitState[circuit])),
    h("td", {}, beat ? time(timestampDate(beat)) : ""),
    h("td", { class: "id" }, a.id),
  );
}

export function breakers(fleet: Fleet): HTMLElement {
  const rows = [...fleet.circuits].map(([id, state]) =>
    h("tr", { "data-agent-id": id, "data-circuit": CircuitState[state] }, h("td", {}, fleet.nameOf(id)), h("td", {}, badge(CircuitState[state], CircuitState[state]))),
  );
  return table(["Agent", "State"], rows, "Every breaker is closed.");
}

/**
 * An alert: component and message first, then whatever else it sets
 * (state, severity, SLO, subject, burn rates, ...), read from the message
 * itself so fields added to HealthAlert show without a change here.
 */
export function alerts(fleet: Fleet): HTMLElement {
  if (fleet.alerts.length === 0) return h("p", { class: "empty" }, "No alerts.");
  return h(
    "ul",
    { class: "alerts" },
    fleet.alerts.map((r) => {
      const fields = toJson(HealthAlertSchema, r.alert) as Record<string, unknown>;
      delete fields.component;
      delete fields.message;
      const state = typeof fields.state === "string" ? fields.state.replace(/^ALERT_STATE_/, "") : "";
      return h(
        "li",
        { "data-alert": r.alert.alertId || r.key, class: state.toLowerCase() },
        h("div", {}, time(r.at), " ", h("b", {}, r.alert.component || "alert"), r.type !== "health.alert" ? h("small", {}, ` ${r.type}`) : null),
        h("div", { class: "message" }, r.alert.message),
        Object.keys(fields).length > 0
          ? h("dl", {}, Object.entries(fields).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))]))
          : null,
      );
    }),
  );
}

export function tasks(fleet: Fleet): HTMLElement {
  const rows = fleet.tasks.map((t) =>
    h(
      "tr",
      { "data-task-id": t.id, "data-state": t.state },
      h("td", {}, time(t.at)),
      h("td", { class: "id", title: t.id }, t.id.slice(0, 8)),
      h("td", {}, t.capabilities.join(", ")),
      h("td", {}, t.agentId ? fleet.nameOf(t.agentId) : ""),
      h("td", {}, badge(t.state, t.state === "failed" ? "unhealthy" : t.state === "completed" ? "healthy" : "muted")),
      h("td", {}, t.detail || (t.score !== undefined ? `score ${num(t.score)}` : "")),
    ),
  );
  return table(["Time", "Task", "Capabilities", "Agent", "State", "Detail"], rows, "No tasks yet.");
}

export function events(fleet: Fleet): HTMLElement {
  const rows = fleet.events.map((e) =>
    h(
      "tr",
      { "data-event-id": e.id.toString(), "data-type": e.type },
      h("td", {}, time(e.at)),
      h("td", {}, h("span", { class: `type ${e.type.split(".")[0]}` }, e.type)),
      h("td", {}, e.agentId ? fleet.nameOf(e.agentId) : ""),
      h("td", {}, e.summary),
    ),
  );
  return table(["Time", "Type", "Agent", "Detail"], rows, "Waiting for events…");
}

/** Route's answer: the chosen agent, then every candidate's score by factor. */
export function routeResult(res: RouteResponse, fleet: Fleet): HTMLElement {
  const chosen = res.agent;
  const rows = res.candidates.map((c) => {
    const b = c.breakdown;
    const cells = b
      ? [num(b.capacity), num(b.quality), num(b.latency), num(b.uptime), num(b.circuit), CircuitState[b.circuitState] ?? "", num(b.latencyEwmaMs, 1), num(b.latencyP95Ms, 1), num(b.evidence, 1)]
      : Array<string>(9).fill("");
    return h(
      "tr",
      { class: "candidate", "data-agent-id": c.agentId, "data-chosen": String(c.agentId === chosen?.id) },
      h("td", { class: "name" }, fleet.nameOf(c.agentId)),
      h("td", { class: "num score" }, num(c.score)),
      cells.map((v) => h("td", { class: "num" }, v)),
    );
  });
  return h(
    "div",
    {},
    h("p", { class: "chosen" }, "Chosen: ", h("b", {}, chosen ? chosen.name : "none"), res.reason ? ` · ${res.reason}` : "", h("br"), h("small", {}, `task ${res.taskId}`)),
    table(["Agent", "Score", "Capacity", "Quality", "Latency", "Uptime", "Circuit", "Breaker", "EWMA ms", "p95 ms", "Evidence"], rows, "No candidates."),
  );
}
