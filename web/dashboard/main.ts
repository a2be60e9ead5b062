/**
 * The fleet dashboard: asks for a token once, takes a snapshot of the
 * fleet, then follows the WatchEvents stream (resuming after the last event
 * seen when it drops) and polls fleet health for the counts and breakers.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { AgentStatus } from "../../gen/federation/v1/agent_pb.js";
import type { GetFleetHealthResponse } from "../../gen/federation/v1/health_service_pb.js";
import { RouteStrategy } from "../../gen/federation/v1/router_service_pb.js";
import { connect, listAgents, tokenStore, type Api } from "./api.js";
import { byId, h } from "./dom.js";
import { Fleet } from "./fleet.js";
import * as panels from "./panels.js";
import "./styles.css";

const HEALTH_POLL_MS = 5_000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;
const ROUTE_TIMEOUT_MS = 10_000;

/** One session: the token's clients, the model and the loops that feed it; stop() ends them. */
class Session {
  private readonly fleet = new Fleet();
  private readonly stop = new AbortController();
  private health: GetFleetHealthResponse | undefined;
  private readonly filter: panels.AgentFilter = { status: undefined, capability: "", name: "" };
  private drawPending = false;

  constructor(
    private readonly api: Api,
    private readonly onRefused: (message: string) => void,
  ) {}

  start(): void {
    const capability = byId<HTMLSelectElement>("capability-filter");
    capability.onchange = () => {
      this.filter.capability = capability.value;
      this.draw();
    };
    const name = byId<HTMLInputElement>("name-filter");
    name.oninput = () => {
      this.filter.name = name.value.trim();
      this.draw();
    };
    byId<HTMLFormElement>("route-form").onsubmit = (ev) => {
      ev.preventDefault();
      void this.route();
    };
    void this.follow();
    void this.pollHealth();
    this.draw();
  }

  end(): void {
    this.stop.abort();
  }

  /** Snapshot, then the feed from after the last event applied; again after a pause when it drops. */
  private async follow(): Promise<void> {
    const signal = this.stop.signal;
    let pause = RETRY_MIN_MS;
    while (!signal.aborted) {
      try {
        setConnection("connecting", "connecting…");
        const { agents, truncated } = await listAgents(this.api, signal);
        this.fleet.setAgents(agents);
        if (truncated) console.warn("more agents than the dashboard lists");
        this.draw();
        const afterId = this.fleet.lastEventId ?? 0n;
        // The server sends the stream's headers with its first event, so "live" means the snapshot is in and the stream asked for.
        setConnection("live", "live");
        for await (const res of this.api.health.watchEvents({ afterId }, { signal })) {
          pause = RETRY_MIN_MS;
          if (res.event) this.fleet.apply(res.event);
          this.draw();
        }
      } catch (err) {
        if (signal.aborted) return;
        const e = ConnectError.from(err);
        if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) return this.onRefused(e.rawMessage);
        // The server no longer holds the events after ours: start over from what it holds.
        if (e.code === Code.OutOfRange || e.code === Code.DataLoss) this.fleet.lastEventId = undefined;
        setConnection("down", `reconnecting: ${e.rawMessage}`);
      }
      await sleep(pause, signal);
      pause = Math.min(pause * 2, RETRY_MAX_MS);
    }
  }

  private async pollHealth(): Promise<void> {
    const signal = this.stop.signal;
    while (!signal.aborted) {
      try {
        const res = await this.api.health.getFleetHealth({ maxAgents: 1 }, { signal });
        this.health = res;
        this.fleet.setCircuits(res.circuits);
        this.fleet.setFiring(res.firingAlerts);
        this.draw();
      } catch (err) {
        if (signal.aborted) return;
        const e = ConnectError.from(err);
        if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) return this.onRefused(e.rawMessage);
      }
      await sleep(HEALTH_POLL_MS, signal);
    }
  }

  private async route(): Promise<void> {
    const out = byId("route-result");
    const capabilities = byId<HTMLInputElement>("route-capabilities")
      .value.split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    const strategy = RouteStrategy[byId<HTMLSelectElement>("route-strategy").value as keyof typeof RouteStrategy];
    out.replaceChildren(h("p", { class: "empty" }, "routing…"));
    try {
      const res = await this.api.router.route(
        { capabilities, strategy, task: { source: "dashboard", test: true } },
        { signal: this.stop.signal, timeoutMs: ROUTE_TIMEOUT_MS },
      );
      out.replaceChildren(panels.routeResult(res, this.fleet));
    } catch (err) {
      const e = ConnectError.from(err);
      out.replaceChildren(h("p", { class: "error", role: "alert" }, `${Code[e.code]}: ${e.rawMessage}`));
    }
  }

  /** Redraws every panel, at most once a frame however many events arrive. */
  private draw(): void {
    if (this.drawPending) return;
    this.drawPending = true;
    requestAnimationFrame(() => {
      this.drawPending = false;
      if (this.stop.signal.aborted) return;
      const f = this.fleet;
      byId("summary").replaceChildren(...panels.summary(this.health, f));
      byId("status-filter").replaceChildren(
        ...panels.statusChips(f, this.filter, (s: AgentStatus | undefined) => {
          this.filter.status = s;
          this.draw();
        }),
      );
      const capability = byId<HTMLSelectElement>("capability-filter");
      if (document.activeElement !== capability) capability.replaceChildren(...panels.capabilityOptions(f, this.filter.capability));
      byId("agents").replaceChildren(panels.agentsTable(f, this.filter));
      byId("breakers").replaceChildren(panels.breakers(f));
      byId("alerts").replaceChildren(panels.alerts(f));
      byId("tasks").replaceChildren(panels.tasks(f));
      byId("events").replaceChildren(panels.events(f));
    });
  }
}

function setConnection(state: "idle" | "connecting" | "live" | "down", text: string): void {
  const el = byId("conn");
  el.dataset.state = state;
  el.textContent = text;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

let session: Session | undefined;

function signIn(token: string): void {
  session?.end();
  byId("login").hidden = true;
  byId("board").hidden = false;
  byId("logout").hidden = false;
  session = new Session(connect(token), (message) => signOut(`The service refused the token: ${message}`));
  session.start();
}

function signOut(message = ""): void {
  session?.end();
  session = undefined;
  tokenStore.clear();
  byId("board").hidden = true;
  byId("logout").hidden = true;
  byId("login").hidden = false;
  byId("login-error").textContent = message;
  setConnection("idle", "not connected");
}

byId<HTMLFormElement>("login-form").onsubmit = (ev) => {
  ev.preventDefault();
  const input = byId<HTMLInputElement>("token");
  const token = input.value.trim();
  if (token === "") return;
  input.value = "";
  tokenStore.set(token);
  signIn(token);
};
byId("logout").onclick = () => signOut();

const saved = tokenStore.get();
if (saved) signIn(saved);
