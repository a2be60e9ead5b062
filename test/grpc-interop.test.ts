import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import { backends } from "./support/backends.js";
import { waitServing } from "./support/app.js";
import { bearer, grpc, grpcClients, unary, type GrpcClients } from "./support/grpc-client.js";

/**
 * The whole loop through a stock @grpc/grpc-js client built from the .proto
 * files, over h2c, on the same port where REST and Connect JSON also answer.
 */
describe.each(backends())("gRPC, REST and Connect on one port ($name)", (backend) => {
  let t: TestApp;
  let c: GrpcClients;

  beforeAll(async () => {
    t = await startApp(await backend.env());
    await waitServing(t);
    c = grpcClients(t.port);
  });
  afterAll(async () => {
    c.close();
    await t.close();
  });

  it("registers, heartbeats, discovers, routes to and unregisters an agent over gRPC", async () => {
    const reg = await unary(c.registry, "Register", {
      name: "grpc-coder",
      version: "2.0.0",
      endpoint: { url: "grpcs://agents.example:443", transport: "TRANSPORT_GRPC" },
      capabilities: [{ name: "code.review", tags: ["go"] }],
      tools: [{ name: "review", description: "Reviews a diff", input_schema: { fields: {} } }],
      labels: { zone: "a" },
      lease_ttl: { seconds: 20 },
    });
    const id: string = reg.agent.id;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(reg.agent.status).toBe("AGENT_STATUS_HEALTHY");
    expect(reg.lease_ttl.seconds).toBe("20");

    const hb = await unary(c.registry, "Heartbeat", { agent_id: id, load: 0.25 });
    expect(hb.agent.load).toBeCloseTo(0.25);
    expect(Number(hb.agent.revision)).toBe(2);

    const found = await unary(c.directory, "Discover", { capabilities: ["code.review"], tags: ["go"] });
    expect(found.agents.map((a: any) => a.id)).toEqual([id]);

    const routed = await unary(c.router, "Route", { capabilities: ["code.review"] });
    expect(routed.agent.id).toBe(id);
    expect(routed.candidates[0].agent_id).toBe(id);
    expect(routed.route_id).not.toBe("");

    // The same agent is visible over REST and Connect JSON on the same port.
    const rest = await getJson(`${t.url}/agents/${id}`);
    expect(rest.status).toBe(200);
    expect(rest.json.agent.name).toBe("grpc-coder");
    const connect = await postJson(`${t.url}/federation.v1.RegistryService/GetAgent`, { agentId: id });
    expect(connect.status).toBe(200);
    expect(connect.json.agent.endpoint.url).toBe("grpcs://agents.example:443");

    await unary(c.registry, "Unregister", { agent_id: id });
    const after = await unary(c.directory, "Discover", { capabilities: ["code.review"] });
    expect(after.agents).toEqual([]);
    await expect(unary(c.registry, "Heartbeat", { agent_id: id })).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
  });

  it("registers over REST and Connect JSON, and finds both over gRPC", async () => {
    const viaRest = await postJson(`${t.url}/agents/register`, registerBody({ name: "rest-agent" }));
    expect(viaRest.status).toBe(200);
    const viaConnect = await postJson(
      `${t.url}/federation.v1.RegistryService/Register`,
      registerBody({ name: "connect-agent" }),
    );
    expect(viaConnect.status).toBe(200);
    const found = await unary(c.directory, "Discover", { capabilities: ["code.generate"] });
    expect(found.agents.map((a: any) => a.name).sort()).toEqual(["connect-agent", "rest-agent"]);
    const tools = await unary(c.directory, "ListTools", { query: "WRITES" });
    expect(tools.tools.length).toBe(2);
  });

  it("re-registering with the same agent_id updates the agent and keeps its id", async () => {
    const first = await unary(c.registry, "Register", {
      name: "stable",
      endpoint: { url: "http://127.0.0.1:8080" },
      capabilities: [{ name: "summarize" }],
    });
    const again = await unary(c.registry, "Register", {
      agent_id: first.agent.id,
      name: "stable",
      version: "2",
      endpoint: { url: "http://127.0.0.1:8081" },
      capabilities: [{ name: "summarize" }, { name: "translate" }],
    });
    expect(again.agent.id).toBe(first.agent.id);
    expect(again.agent.registered_at).toEqual(first.agent.registered_at);
    expect(again.agent.endpoint.url).toBe("http://127.0.0.1:8081");
    const list = await unary(c.registry, "ListAgents", { page_size: 1000 });
    expect(list.agents.filter((a: any) => a.name === "stable")).toHaveLength(1);
  });

  it("answers grpc.health.v1.Health/Check with SERVING, and NOT_FOUND for an unknown service", async () => {
    expect(await unary(c.grpcHealth, "Check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await unary(c.grpcHealth, "Check", { service: "federation.v1.RouterService" })).toEqual({
      status: "SERVING",
    });
    await expect(unary(c.grpcHealth, "Check", { service: "nope.Service" })).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
  });

  it("reports fleet health over gRPC", async () => {
    const fleet = await unary(c.health, "GetFleetHealth", {});
    expect(fleet.total_agents).toBeGreaterThanOrEqual(3);
    expect(fleet.healthy_agents).toBe(fleet.total_agents);
    const check = await unary(c.health, "Check", {});
    expect(check.status).toBe("SERVING_STATUS_SERVING");
  });

  it("maps route failures to FAILED_PRECONDITION and carries the message to the gRPC client", async () => {
    const err = await unary(c.router, "Route", { capabilities: ["time.travel"] }).catch((e) => e);
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toContain('"time.travel"');
  });

  it("honours a gRPC deadline on a server stream and cancels cleanly", async () => {
    const call = c.health.WatchEvents({ types: ["agent.registered"] }, bearer(), { deadline: Date.now() + 300 });
    const status = await new Promise<any>((resolve) => {
      call.on("data", () => undefined);
      call.on("error", resolve);
    });
    expect(status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  });
});
