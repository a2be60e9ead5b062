import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import { DispatchRefused, type PinnedTarget } from "../dispatch/address-guard.js";
import { oneShotAgent, sni } from "../dispatch/pinned-connection.js";
import { pinnedFetch } from "../dispatch/pinned-fetch.js";
import { Transport, type AgentRecord } from "../registry/agent-record.js";
import type { HttpProber } from "./http-probe.js";

/** How one probe ended (the `outcome` label of federation_probes_total). */
export type ProbeOutcome = "ok" | "timeout" | "error" | "missing_tool" | "refused";

/** The agent answered, but not as it should: the message says how. */
export class ProbeFailed extends Error {
  override name = "ProbeFailed";
  constructor(
    readonly outcome: "error" | "missing_tool",
    message: string,
  ) {
    super(message);
  }
}

/** What one probe gets: the agent, the checked address to connect to, and its time. */
export interface ProbeCall {
  readonly agent: AgentRecord;
  readonly target: PinnedTarget;
  /** Aborts when the probe's time is up or probing stops. */
  readonly signal: AbortSignal;
  readonly timeoutMs: number;
  /** HTTP/JSON and Connect agents: the path that answers 2xx. */
  readonly httpPath: string;
  readonly userAgent: string;
  /** HTTP probes' kept-alive sockets and deadlines. */
  readonly http: HttpProber;
}

/** Resolves when the agent passed; throws (ProbeFailed, DispatchRefused, or any error) when not. */
export type TransportProbe = (call: ProbeCall) => Promise<void>;

/** tools/list pages read at most (a server that pages forever fails within the timeout anyway). */
const MAX_TOOL_PAGES = 20;
/** Bytes one MCP answer may have: a tools/list with schemas is large, not unbounded. */
const MAX_MCP_RESPONSE_BYTES = 8 * 1024 * 1024;

/** HTTP/JSON and Connect: GET the health path on the endpoint's origin; any 2xx passes (raw keep-alive sockets: http-probe.ts). */
export const probeHttp: TransportProbe = (c) => c.http.probe(c.target, c.httpPath, c.signal);

/** gRPC: grpc.health.v1.Health/Check for the whole server (service ""), over one HTTP/2 connection to the pinned address. */
export const probeGrpc: TransportProbe = async (c) => {
  const t = c.target;
  const secure = t.url.protocol === "https:" || t.url.protocol === "grpcs:";
  const base = new URL(`${secure ? "https" : "http"}://${t.url.host}/`);
  const sessions = new Http2SessionManager(
    base,
    {},
    {
      createConnection: () =>
        secure
          ? tlsConnect({ host: t.address, port: t.port, servername: sni(t), ALPNProtocols: ["h2"] })
          : netConnect({ host: t.address, port: t.port }),
    },
  );
  const client = createClient(Health, createGrpcTransport({ baseUrl: base.href, sessionManager: sessions, readMaxBytes: 64 * 1024 }));
  try {
    const res = await client.check(create(HealthCheckRequestSchema, { service: "" }), { signal: c.signal, timeoutMs: c.timeoutMs });
    if (res.status !== HealthCheckResponse_ServingStatus.SERVING) {
      throw new ProbeFailed("error", `grpc.health.v1 Check answered ${HealthCheckResponse_ServingStatus[res.status] ?? res.status}`);
    }
  } catch (err) {
    if (err instanceof ProbeFailed || c.signal.aborted) throw err;
    const e = ConnectError.from(err);
    throw new ProbeFailed("error", `grpc.health.v1 Check failed: ${Code[e.code]}: ${e.rawMessage.slice(0, 200)}`);
  } finally {
    sessions.abort();
  }
};

/**
 * MCP over Streamable HTTP, with the official SDK: `initialize`, then
 * `tools/list` (every page); every tool the agent registered must be
 * listed. An answering /health says nothing about whether tool calls are
 * served — this round trip does. Every request the SDK makes goes through
 * a fetch pinned to the checked address.
 */
export const probeMcp: TransportProbe = async (c) => {
  const transport = new StreamableHTTPClientTransport(c.target.url, {
    // Dispatch's pinned fetch (checked address only, no redirects), on a
    // connection of its own that closes with the probe.
    fetch: pinnedFetch(c.target, {
      agent: oneShotAgent(c.target),
      maxResponseBytes: MAX_MCP_RESPONSE_BYTES,
      forRequest: () => ({ headers: { "user-agent": c.userAgent } }),
    }),
    reconnectionOptions: { maxRetries: 0, initialReconnectionDelay: 1_000, maxReconnectionDelay: 1_000, reconnectionDelayGrowFactor: 1 },
  });
  const client = new Client({ name: "federation-core-probe", version: "1" }, { capabilities: {} });
  const options = { signal: c.signal, timeout: c.timeoutMs };
  try {
    await client.connect(transport, options);
    const listed = new Set<string>();
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await client.listTools(cursor === undefined ? undefined : { cursor }, options);
      for (const tool of page.tools) listed.add(tool.name);
      cursor = page.nextCursor;
    } while (cursor !== undefined && ++pages < MAX_TOOL_PAGES);
    const missing = c.agent.tools.filter((tool) => !listed.has(tool.name)).map((tool) => JSON.stringify(tool.name));
    if (missing.length > 0) {
      throw new ProbeFailed(
        "missing_tool",
        `tools/list lacks registered tool${missing.length > 1 ? "s" : ""} ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", …" : ""}`,
      );
    }
    // A stateful server keeps a session per initialize: end ours (best effort, within the probe's time).
    if (transport.sessionId !== undefined) await transport.terminateSession().catch(() => undefined);
  } catch (err) {
    if (err instanceof ProbeFailed || err instanceof DispatchRefused || c.signal.aborted) throw err;
    throw new ProbeFailed("error", `MCP ${(err as Error).message?.slice(0, 200) ?? String(err)}`);
  } finally {
    await client.close().catch(() => undefined);
  }
};

/** The probe of each transport; agents of the others are left to their lease. */
export const TRANSPORT_PROBES: ReadonlyMap<Transport, TransportProbe> = new Map([
  [Transport.HTTP_JSON, probeHttp],
  [Transport.CONNECT, probeHttp],
  [Transport.GRPC, probeGrpc],
  [Transport.MCP_STREAMABLE_HTTP, probeMcp],
]);

/** The `transport` label. */
export function transportLabel(t: Transport): string {
  switch (t) {
    case Transport.HTTP_JSON:
      return "http_json";
    case Transport.CONNECT:
      return "connect";
    case Transport.GRPC:
      return "grpc";
    case Transport.MCP_STREAMABLE_HTTP:
      return "mcp";
    default:
      return "other";
  }
}
