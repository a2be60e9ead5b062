/**
 * The browser side of test/browser-cors.test.ts: bundled by esbuild at test
 * time (IIFE, platform browser) and loaded by a page served from another
 * origin than the service. It puts `globalThis.fc` on the page; the test
 * drives it with page.evaluate and gets plain JSON back.
 *
 * Type-checked by the root tsconfig, which has no DOM lib: the little of the
 * browser's WebSocket it uses is declared below, module-local.
 */
import { createClient, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { DirectoryService } from "../../gen/federation/v1/directory_service_pb.js";
import { HealthService } from "../../gen/federation/v1/health_service_pb.js";
import { RegistryService } from "../../gen/federation/v1/registry_service_pb.js";

interface BrowserWebSocket {
  readonly protocol: string;
  onopen: (() => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: (() => void) | null;
  onclose: ((ev: { code: number }) => void) | null;
  close(): void;
}
declare const WebSocket: new (url: string, protocols?: string[]) => BrowserWebSocket;

export type Protocol = "connect-json" | "connect-binary" | "grpc-web";

export interface CallOptions {
  readonly baseUrl: string;
  readonly protocol: Protocol;
  readonly token: string;
  readonly name: string;
  readonly capability: string;
  readonly timeoutMs: number;
}

export interface RoundTrip {
  readonly protocol: Protocol;
  readonly registered: { id: string; name: string };
  /** x-request-id as the page could read it from Register's response headers (Expose-Headers). */
  readonly requestIdSeen: string | null;
  readonly discovered: { id: string; name: string; capabilities: string[] }[];
  readonly event: { id: string; type: string; agentId: string; agentName: string };
}

export type Attempt =
  | { readonly ok: true; readonly id: string }
  | { readonly ok: false; readonly code: number; readonly message: string; readonly causeName: string };

function transportFor(protocol: Protocol, baseUrl: string, token: string): Transport {
  const withToken: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const interceptors = [withToken];
  switch (protocol) {
    case "connect-json":
      return createConnectTransport({ baseUrl, useBinaryFormat: false, interceptors });
    case "connect-binary":
      return createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, interceptors });
  }
}

function registerRequest(o: CallOptions) {
  return {
    name: o.name,
    version: "1.2.0",
    endpoint: { url: "grpc://127.0.0.1:50051" },
    capabilities: [{ name: o.capability, tags: ["browser"] }],
    tools: [{ name: "write_code", description: "Writes code" }],
    labels: { team: "core" },
    leaseTtl: { seconds: 30n },
  };
}

/** Register, Discover by capability, then WatchEvents (replay from the oldest held) until its agent.registered. */
async function roundTrip(o: CallOptions): Promise<RoundTrip> {
  const transport = transportFor(o.protocol, o.baseUrl, o.token);
  const registry = createClient(RegistryService, transport);
  const directory = createClient(DirectoryService, transport);
  const health = createClient(HealthService, transport);
  const requestId = `browser-${o.protocol}-${Date.now()}`;
  let requestIdSeen: string | null = null;
  const { agent } = await registry.register(registerRequest(o), {
    timeoutMs: o.timeoutMs,
    headers: { "x-request-id": requestId },
    onHeader: (h) => {
      requestIdSeen = h.get("x-request-id");
    },
  });
  if (!agent) throw new Error("Register answered without an agent");
  const found = await directory.discover({ capabilities: [o.capability] }, { timeoutMs: o.timeoutMs });
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), o.timeoutMs);
  let event: RoundTrip["event"] | undefined;
  try {
    for await (const res of health.watchEvents(
      { types: ["agent.registered"], agentId: agent.id, afterId: 0n },
      { signal: abort.signal },
    )) {
      const e = res.event;
      if (e?.type === "agent.registered" && e.agentId === agent.id) {
        const changed = e.payload.case === "agentChange" ? e.payload.value.agent : undefined;
        event = { id: e.id.toString(), type: e.type, agentId: e.agentId, agentName: changed?.name ?? "" };
        break;
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
    throw new Error(`WatchEvents: no agent.registered for ${agent.id} within ${o.timeoutMs}ms`);
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  if (!event) throw new Error("WatchEvents ended without the agent.registered event");
  return {
    protocol: o.protocol,
    registered: { id: agent.id, name: agent.name },
    requestIdSeen,
    discovered: found.agents.map((a) => ({ id: a.id, name: a.name, capabilities: a.capabilities.map((c) => c.name) })),
    event,
  };
}

/** One Register; a failure comes back as data (code, message and the name of the underlying error). */
async function attemptRegister(o: CallOptions): Promise<Attempt> {
  try {
    const { agent } = await createClient(RegistryService, transportFor(o.protocol, o.baseUrl, o.token)).register(
      registerRequest(o),
      { timeoutMs: o.timeoutMs },
    );
    return { ok: true, id: agent?.id ?? "" };
  } catch (err) {
    const e = ConnectError.from(err);
    const cause = e.cause as { name?: unknown } | undefined;
    return { ok: false, code: e.code, message: e.rawMessage, causeName: String(cause?.name ?? "") };
  }
}

export type RestAnswer =
  | { readonly ok: true; readonly status: number; readonly body: unknown; readonly requestIdSeen: string | null }
  | { readonly ok: false; readonly error: string; readonly message: string };

/** A REST call with fetch (bearer token, an x-request-id); a network failure comes back as data. */
async function rest(url: string, token: string, timeoutMs: number): Promise<RestAnswer> {
  try {
    const res = await fetch(url, {
      headers: { authorization: `Bearer ${token}`, "x-request-id": "browser-rest" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { ok: true, status: res.status, body: await res.json(), requestIdSeen: res.headers.get("x-request-id") };
  } catch (err) {
    const e = err as { name?: unknown; message?: unknown };
    return { ok: false, error: String(e.name), message: String(e.message) };
  }
}

export type WsOpen =
  | { readonly opened: true; readonly protocol: string }
  | { readonly opened: false; readonly errored: boolean; readonly closeCode: number };

const wsMessages: unknown[] = [];
let socket: BrowserWebSocket | undefined;

/** Opens the page's one WebSocket (token as the `bearer, <token>` subprotocol pair); resolves on open or on failure. */
function openWs(url: string, token: string, timeoutMs: number): Promise<WsOpen> {
  socket?.close();
  wsMessages.length = 0;
  return new Promise((resolve) => {
    let errored = false;
    const ws = new WebSocket(url, ["bearer", token]);
    socket = ws;
    const timer = setTimeout(() => resolve({ opened: false, errored, closeCode: -1 }), timeoutMs);
    ws.onopen = () => {
      clearTimeout(timer);
      resolve({ opened: true, protocol: ws.protocol });
    };
    ws.onmessage = (ev) => wsMessages.push(JSON.parse(String(ev.data)));
    ws.onerror = () => {
      errored = true;
    };
    ws.onclose = (ev) => {
      clearTimeout(timer);
      resolve({ opened: false, errored, closeCode: ev.code });
    };
  });
}

/** Resolves with the first message received on the page's WebSocket whose agentId is `agentId`. */
async function wsMessageAbout(agentId: string, timeoutMs: number): Promise<unknown> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = wsMessages.find((x) => (x as { agentId?: unknown }).agentId === agentId);
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no /ws message about ${agentId} in ${timeoutMs}ms: ${JSON.stringify(wsMessages)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function closeWs(): void {
  socket?.close();
  socket = undefined;
}

const api = { roundTrip, attemptRegister, rest, openWs, wsMessageAbout, closeWs };
export type PageApi = typeof api;
(globalThis as { fc?: PageApi }).fc = api;
