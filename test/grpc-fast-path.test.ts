import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentStore } from "../src/registry/agent-store.js";
import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { startApp, type TestApp } from "./support/app.js";
import { bearer, grpc, loadGrpcPackage, unary } from "./support/grpc-client.js";

/** A real store whose reads take a while, so deadlines and cancellation can be exercised. */
function slowReads(delayMs: number): AgentStore {
  const store = new MemoryAgentStore();
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop !== "query" || typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        await new Promise((r) => setTimeout(r, delayMs));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/**
 * The lean gRPC path must behave like connect-node's for grpc-js clients:
 * deadlines, cancellation, size limits, metadata, error details; what it
 * does not take (compression) still works through connect-node.
 */
describe("the gRPC fast path", () => {
  let t: TestApp;
  const clients: { close(): void }[] = [];
  const client = (service: "RegistryService" | "DirectoryService", options: Record<string, unknown> = {}) => {
    const pkg = loadGrpcPackage();
    const c = new pkg.federation.v1[service](`127.0.0.1:${t.port}`, grpc.credentials.createInsecure(), options);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    t = await startApp({ MAX_BODY_BYTES: "65536" }, { store: slowReads(300) });
  });
  afterAll(async () => {
    clients.forEach((c) => c.close());
    await t.close();
  });

  it("serves unary calls itself, with the request id in the response metadata", async () => {
    const before = t.app.server.fastPath!.served;
    const c = client("RegistryService");
    const metadata = await new Promise<grpc.Metadata>((resolve, reject) => {
      const call = c.ListAgents({}, bearer(), (err: Error | null) => err && reject(err));
      call.on("metadata", resolve);
    });
    expect(metadata.get("x-request-id")[0]).toMatch(/^[0-9a-f]{8}-[0-9a-z]+$/);
    expect(t.app.server.fastPath!.served).toBe(before + 1);
  });

  it("ends an event stream whose deadline passes with DEADLINE_EXCEEDED in its trailers, not a reset", async () => {
    const session = http2.connect(`http://127.0.0.1:${t.port}`);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/federation.v1.HealthService/WatchEvents",
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": "200m",
        authorization: bearer().get("authorization")[0] as string,
      });
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
      stream.on("data", () => undefined);
      const [status, trailers, rst] = await new Promise<[unknown, http2.IncomingHttpHeaders | undefined, number]>((resolve) => {
        let headers: unknown;
        let trailers: http2.IncomingHttpHeaders | undefined;
        stream.on("response", (h) => (headers = h[":status"]));
        stream.on("trailers", (h) => (trailers = h));
        stream.on("close", () => resolve([headers, trailers, stream.rstCode ?? -1]));
      });
      expect(status).toBe(200);
      expect(trailers?.["grpc-status"]).toBe("4");
      expect(rst).toBe(http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      session.close();
    }
  });

  it("answers DEADLINE_EXCEEDED when the deadline passes before the answer", async () => {
    const c = client("DirectoryService");
    const started = Date.now();
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      c.Discover({ capabilities: ["x"] }, bearer(), { deadline: Date.now() + 100 }, (e: grpc.ServiceError) => resolve(e)),
    );
    expect(err.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - started).toBeLessThan(290);
  });

  it("refuses a message over MAX_BODY_BYTES with RESOURCE_EXHAUSTED and keeps serving", async () => {
    const c = client("RegistryService");
    const huge = { name: "big", endpoint: { url: "http://127.0.0.1:1" }, capabilities: [{ name: "a" }], version: "x".repeat(70_000) };
    await expect(unary(c, "Register", huge)).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    expect((await unary(c, "ListAgents", {})).agents).toEqual([]);
  });

  it("carries error codes and messages in the trailers", async () => {
    const err = await unary(client("RegistryService"), "GetAgent", { agent_id: "no-such-agent" }).catch((e) => e);
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    expect(err.details).toBe('agent "no-such-agent" not found; register again');
  });

  it("leaves compressed calls to connect-node, which still answers them", async () => {
    const before = t.app.server.fastPath!.served;
    const c = client("RegistryService", { "grpc.default_compression_algorithm": 2 });
    const res = await unary(c, "Register", {
      name: "gzip",
      endpoint: { url: "http://127.0.0.1:1" },
      capabilities: [{ name: "zip" }],
      tools: [{ name: "t", description: "compressible ".repeat(300) }],
    });
    expect(res.agent.name).toBe("gzip");
    expect(t.app.server.fastPath!.served).toBe(before);
  });

  it("survives a client that cancels mid-call", async () => {
    const c = client("DirectoryService");
    const call = c.Discover({ capabilities: ["x"] }, bearer(), (e: grpc.ServiceError) => e);
    const status = new Promise<number>((resolve) => call.on("status", (s: grpc.StatusObject) => resolve(s.code)));
    setTimeout(() => call.cancel(), 50);
    expect(await status).toBe(grpc.status.CANCELLED);
    // The server finished the abandoned call without harm and keeps serving.
    await new Promise((r) => setTimeout(r, 400));
    await expect(unary(client("RegistryService"), "ListAgents", {})).resolves.toHaveProperty("agents");
  });
});
