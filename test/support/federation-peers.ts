import http2 from "node:http2";
import net from "node:net";
import { getJson, postJson, registerBody } from "./app.js";

/** Registers an agent with one capability and one tool on a running service (at `endpoint`, an HTTP/JSON agent, when given); returns its id. */
export async function registerAgent(url: string, name: string, capability: string, tool: string, auth?: string, endpoint?: string): Promise<string> {
  const res = await postJson(
    `${url}/agents/register`,
    registerBody({
      name,
      ...(endpoint ? { endpoint: { url: endpoint, transport: "TRANSPORT_HTTP_JSON" } } : {}),
      capabilities: [{ name: capability, tags: ["fed"] }],
      tools: [{ name: tool, description: `${tool} of ${name}`, inputSchema: { type: "object" } }],
      leaseTtl: "600s",
    }),
    auth ? { headers: { authorization: `Bearer ${auth}` } } : {},
  );
  if (res.status !== 200) throw new Error(`register ${name}: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json.agent.id as string;
}

/** A token minted on a service (admin token) for a tenant. */
export async function mintToken(url: string, tenant: string, scopes: string[]): Promise<string> {
  const res = await postJson(`${url}/admin/tokens`, { tenant, scopes, ttl: "3600s" });
  if (res.status !== 200) throw new Error(`mint on ${url}: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json.token as string;
}

export async function listPeers(url: string): Promise<any[]> {
  const res = await getJson(`${url}/federation/peers`);
  if (res.status !== 200) throw new Error(`ListPeers: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json.peers as any[];
}

/**
 * A TCP relay in front of a service that can go silent: while `silent`,
 * connections are accepted (and bytes already relayed stay relayed) but
 * nothing more is passed on either way — a peer that never answers.
 */
export async function relay(targetPort: number): Promise<{ url: string; silent: boolean; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const state = { silent: false };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("error", () => undefined);
    client.on("close", () => sockets.delete(client));
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(upstream);
    upstream.on("error", () => client.destroy());
    upstream.on("close", () => sockets.delete(upstream));
    client.on("data", (d) => void (state.silent || upstream.write(d)));
    upstream.on("data", (d) => void (state.silent || client.write(d)));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get silent() {
      return state.silent;
    },
    set silent(v: boolean) {
      state.silent = v;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * An h2c front for a Federation Core: `answer` may answer a request itself
 * (returning true); every other request is relayed to the service, gRPC
 * answers with their trailers.
 */
export async function h2Relay(
  targetUrl: string,
  answer: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean,
): Promise<{ url: string; close(): Promise<void> }> {
  const upstream = http2.connect(targetUrl);
  upstream.on("error", () => undefined);
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => (sessions.add(s), s.on("close", () => sessions.delete(s))));
  server.on("stream", (stream, headers) => {
    stream.on("error", () => undefined);
    if (answer(stream, headers)) return;
    const forwarded: http2.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(headers)) if (k !== ":authority" && k !== ":scheme") forwarded[k] = v;
    const req = upstream.request(forwarded);
    req.on("error", () => stream.destroy());
    let trailers: http2.OutgoingHttpHeaders | undefined;
    req.on("trailers", (t) => (trailers = Object.fromEntries(Object.entries(t).filter(([k]) => !k.startsWith(":"))) as http2.OutgoingHttpHeaders));
    req.on("response", (h) => {
      const out: http2.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(":") || k === ":status") out[k] = v;
      // gRPC answers end with trailers (they arrive before the body ends); Connect and REST ones have none.
      const grpc = String(h["content-type"] ?? "").startsWith("application/grpc");
      stream.respond(out, { waitForTrailers: grpc });
      if (grpc) stream.on("wantTrailers", () => stream.sendTrailers(trailers ?? {}));
      req.pipe(stream);
    });
    stream.pipe(req);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      upstream.destroy();
      for (const s of sessions) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** h2Relay answering one Connect method itself (`path` → a binary body). */
export function h2Front(targetUrl: string, path: string, body: Uint8Array): Promise<{ url: string; close(): Promise<void> }> {
  return h2Relay(targetUrl, (stream, headers) => {
    if (headers[":path"] !== path) return false;
    stream.respond({ ":status": 200, "content-type": "application/proto" });
    stream.end(Buffer.from(body));
    return true;
  });
}
