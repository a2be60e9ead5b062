import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { HealthService } from "../gen/federation/v1/health_service_pb.js";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { AUTH, startApp, type TestApp } from "./support/app.js";

const withToken: Interceptor = (next) => (req) => {
  req.header.set("authorization", AUTH.authorization);
  return next(req);
};

/** Every Connect-family protocol, over HTTP/1.1 and HTTP/2, on the one port. */
describe("Connect, gRPC-Web and gRPC clients from our generated code", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(() => t.close());

  const interceptors = [withToken];
  const transports = {
    "connect json, http/1.1": () =>
      createConnectTransport({ baseUrl: t.url, httpVersion: "1.1", useBinaryFormat: false, interceptors }),
    "connect binary, http/2": () =>
      createConnectTransport({ baseUrl: t.url, httpVersion: "2", useBinaryFormat: true, interceptors }),
    "grpc-web, http/1.1": () => createGrpcWebTransport({ baseUrl: t.url, httpVersion: "1.1", interceptors }),
    "grpc-web, http/2": () => createGrpcWebTransport({ baseUrl: t.url, httpVersion: "2", interceptors }),
    "grpc, http/2": () => createGrpcTransport({ baseUrl: t.url, interceptors }),
  };

  for (const [name, make] of Object.entries(transports)) {
    it(`registers and discovers over ${name}`, async () => {
      const transport = make();
      const registry: Client<typeof RegistryService> = createClient(RegistryService, transport);
      const directory = createClient(DirectoryService, transport);
      const cap = `cap.${name.replace(/[^a-z0-9]/g, "")}`;
      const { agent } = await registry.register({
        name: "proto-agent",
        endpoint: { url: "https://127.0.0.1:8443" },
        capabilities: [{ name: cap }],
      });
      const found = await directory.discover({ capabilities: [cap] });
      expect(found.agents.map((a) => a.id)).toEqual([agent!.id]);
      await expect(registry.getAgent({ agentId: "missing" })).rejects.toMatchObject({ code: 5 });
    });
  }

  it("streams WatchEvents over Connect on HTTP/1.1, as a browser would", async () => {
    const transport = createConnectTransport({ baseUrl: t.url, httpVersion: "1.1", interceptors: [withToken] });
    const health = createClient(HealthService, transport);
    const registry = createClient(RegistryService, transport);
    const abort = new AbortController();
    const stream = health.watchEvents({ types: ["agent.registered"] }, { signal: abort.signal });
    const first = (async () => {
      for await (const res of stream) return res.event;
    })();
    await new Promise((r) => setTimeout(r, 100));
    const { agent } = await registry.register({
      name: "streamed",
      endpoint: { url: "https://127.0.0.1:8443" },
      capabilities: [{ name: "stream.me" }],
    });
    const event = await first;
    abort.abort();
    expect(event?.type).toBe("agent.registered");
    expect(event?.agentId).toBe(agent!.id);
  });
});
