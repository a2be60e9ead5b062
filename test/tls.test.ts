import https from "node:https";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { startApp, type TestApp } from "./support/app.js";
import { grpc, loadGrpcPackage, unary } from "./support/grpc-client.js";
import { TestPki, type Pem } from "./support/certs.js";

/** mTLS on the one port: every protocol over TLS, the certificate as the caller's identity. */
describe("TLS with client certificates", () => {
  const pki = new TestPki();
  let ca: Pem;
  let t: TestApp;
  let certs: Record<"coder" | "intruder" | "foreign" | "expired", Pem>;
  const clients: { close(): void }[] = [];

  beforeAll(async () => {
    ca = pki.ca("federation-ca");
    const otherCa = pki.ca("other-ca");
    const server = pki.leaf("server", ca, "DNS:localhost,IP:127.0.0.1");
    certs = {
      coder: pki.leaf("coder", ca, "URI:spiffe://fc.test/tenant/acme/agent/coder"),
      intruder: pki.leaf("intruder", ca, "URI:spiffe://fc.test/tenant/acme/agent/intruder"),
      foreign: pki.leaf("foreign", otherCa, "URI:spiffe://fc.test/tenant/acme/agent/coder"),
      expired: pki.leaf("expired", ca, "URI:spiffe://fc.test/tenant/acme/agent/coder", -1),
    };
    t = await startApp({
      TLS_CERT: server.certFile,
      TLS_KEY: server.keyFile,
      TLS_CA: ca.certFile,
      TLS_CLIENT_AUTH: "require",
      MTLS_TRUST_DOMAIN: "fc.test",
    });
  });
  afterAll(async () => {
    clients.forEach((c) => c.close());
    await t.close();
    pki.dispose();
  });

  const grpcRegistry = (pem: Pem) => {
    const pkg = loadGrpcPackage();
    const client = new pkg.federation.v1.RegistryService(
      `127.0.0.1:${t.port}`,
      grpc.credentials.createSsl(ca.cert, pem.key, pem.cert),
    );
    clients.push(client);
    return client;
  };
  const register = (client: unknown, name: string) =>
    unary(client, "Register", { name, endpoint: { url: "grpcs://127.0.0.1:7000" }, capabilities: [{ name: "tls.cap" }] }, new grpc.Metadata());

  it("accepts a grpc-js client with the right certificate and binds the agent to it", async () => {
    const client = grpcRegistry(certs.coder);
    const reg = await register(client, "coder");
    expect(reg.agent.tenant).toBe("acme");
    const hb = await unary(client, "Heartbeat", { agent_id: reg.agent.id }, new grpc.Metadata());
    expect(hb.agent.id).toBe(reg.agent.id);
  });

  it("refuses a certificate that names another agent", async () => {
    const coder = await register(grpcRegistry(certs.coder), "coder");
    const intruder = grpcRegistry(certs.intruder);
    await expect(register(intruder, "coder")).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(unary(intruder, "Unregister", { agent_id: coder.agent.id }, new grpc.Metadata())).rejects.toMatchObject({
      code: grpc.status.PERMISSION_DENIED,
    });
  });

  it("refuses certificates from another CA and expired ones at the handshake", async () => {
    for (const pem of [certs.foreign, certs.expired]) {
      await expect(register(grpcRegistry(pem), "coder")).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    }
  });

  it("serves Connect, REST and the WebSocket on the same TLS port", async () => {
    const tlsOptions = { ca: ca.cert, cert: certs.coder.cert, key: certs.coder.key };
    const transport = createConnectTransport({
      baseUrl: `https://127.0.0.1:${t.port}`,
      httpVersion: "2",
      nodeOptions: tlsOptions,
    });
    const viaConnect = await createClient(RegistryService, transport).register({
      name: "coder",
      endpoint: { url: "https://127.0.0.1:8443" },
      capabilities: [{ name: "tls.cap" }],
    });
    expect(viaConnect.agent?.tenant).toBe("acme");

    const viaRest = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = https.request(
        { host: "127.0.0.1", port: t.port, path: `/agents/${viaConnect.agent!.id}`, ...tlsOptions },
        (res) => {
          let text = "";
          res.on("data", (d: Buffer) => (text += d));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect(viaRest.status).toBe(200);
    expect(viaRest.body.agent.name).toBe("coder");

    const ws = new WebSocket(`wss://127.0.0.1:${t.port}/ws?types=agent.status_changed`, tlsOptions);
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const got = new Promise<any>((resolve) => ws.once("message", (d) => resolve(JSON.parse(d.toString()))));
    await createClient(RegistryService, transport).heartbeat({ agentId: viaConnect.agent!.id, status: 2 });
    expect((await got).agentId).toBe(viaConnect.agent!.id);
    ws.close();
  });
});
