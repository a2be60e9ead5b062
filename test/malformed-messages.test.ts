import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, AUTH, startApp, type TestApp } from "./support/app.js";

/**
 * A request message that cannot be parsed is the client's error on every
 * protocol (issue 14, finding 7): INVALID_ARGUMENT / HTTP 400, never
 * INTERNAL or HTTP 500, and nothing is stored.
 */
let t: TestApp;
beforeAll(async () => {
  t = await startApp();
});
afterAll(() => t.close());

/** GetAgentRequest whose field 1 claims 255 bytes it does not have. */
const TRUNCATED = Buffer.from([0x0a, 0xff, 0x01, 0x61]);

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}
function field(num: number, bytes: Buffer): Buffer {
  return Buffer.concat([varint((num << 3) | 2), varint(bytes.length), bytes]);
}

/** RegisterRequest{name, tools: [{name, input_schema: Struct nested `depth` levels}]}, built byte by byte. */
function deepStructRegister(depth: number): Buffer {
  let struct: Buffer = Buffer.alloc(0);
  for (let i = 0; i < depth; i++) {
    const value = field(5, struct); // Value.struct_value
    const entry = Buffer.concat([field(1, Buffer.from("a")), field(2, value)]); // map entry
    struct = field(1, entry); // Struct.fields
  }
  const tool = Buffer.concat([field(1, Buffer.from("deep")), field(3, struct)]);
  return Buffer.concat([field(1, Buffer.from("deep-agent")), field(5, tool)]);
}

function frame(body: Buffer, compressed = false): Buffer {
  const payload = compressed ? gzipSync(body) : body;
  const out = Buffer.alloc(5 + payload.length);
  out[0] = compressed ? 1 : 0;
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, 5);
  return out;
}

/** A raw gRPC call over HTTP/2; resolves with grpc-status and grpc-message. */
function grpcCall(path: string, body: Buffer, headers: Record<string, string> = {}): Promise<{ status?: string; message?: string }> {
  const session = http2.connect(t.url);
  session.on("error", () => undefined);
  return new Promise((resolve, reject) => {
    const s = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${ADMIN_TOKEN}`, ...headers });
    let h: http2.IncomingHttpHeaders = {};
    s.on("response", (r) => (h = r));
    s.on("trailers", (tr) => (h = { ...h, ...tr }));
    s.on("error", reject);
    s.on("close", () => {
      session.close();
      resolve({ status: h["grpc-status"] as string | undefined, message: decodeURIComponent(String(h["grpc-message"] ?? "")) });
    });
    s.resume();
    s.end(body);
  });
}

async function agentCount(): Promise<number> {
  const res = await fetch(`${t.url}/agents?page_size=1000`, { headers: AUTH });
  return ((await res.json()) as { agents: unknown[] }).agents.length;
}

describe("a request message that cannot be parsed", () => {
  it("is INVALID_ARGUMENT over gRPC, on the lean path and compressed through connect-node", async () => {
    const lean = await grpcCall("/federation.v1.RegistryService/GetAgent", frame(TRUNCATED));
    expect(lean.status).toBe("3");
    const zipped = await grpcCall("/federation.v1.RegistryService/GetAgent", frame(TRUNCATED, true), { "grpc-encoding": "gzip" });
    expect(zipped.status).toBe("3");
    expect(zipped.message).toMatch(/parse binary/);
  });

  it("is 400 invalid_argument over Connect binary", async () => {
    const res = await fetch(`${t.url}/federation.v1.RegistryService/GetAgent`, {
      method: "POST",
      headers: { "content-type": "application/proto", "connect-protocol-version": "1", ...AUTH },
      body: TRUNCATED,
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe("invalid_argument");
  });

  it("is INVALID_ARGUMENT over gRPC-Web", async () => {
    const res = await fetch(`${t.url}/federation.v1.RegistryService/GetAgent`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...AUTH },
      body: frame(TRUNCATED),
    });
    const text = Buffer.from(await res.arrayBuffer()).toString("latin1");
    expect(res.headers.get("grpc-status") ?? /grpc-status: ?(\d+)/.exec(text)?.[1]).toBe("3");
  });

  it("is INVALID_ARGUMENT for a Struct nested far deeper than any schema, on every gRPC path, and registers nothing", async () => {
    const before = await agentCount();
    const deep = deepStructRegister(20_000);
    const lean = await grpcCall("/federation.v1.RegistryService/Register", frame(deep));
    expect(lean.status).toBe("3");
    const zipped = await grpcCall("/federation.v1.RegistryService/Register", frame(deep, true), { "grpc-encoding": "gzip" });
    expect(zipped.status).toBe("3");
    const connect = await fetch(`${t.url}/federation.v1.RegistryService/Register`, {
      method: "POST",
      headers: { "content-type": "application/proto", "connect-protocol-version": "1", ...AUTH },
      body: deep,
    });
    expect(connect.status).toBe(400);
    expect(await agentCount()).toBe(before);
    // The service is fine afterwards.
    expect((await fetch(`${t.url}/health`)).status).toBe(200);
  });
});
