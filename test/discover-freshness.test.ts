import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, startApp, waitServing, type TestApp } from "./support/app.js";
import { grpcClients, unary, type GrpcClients } from "./support/grpc-client.js";

/**
 * Discover answers are cached per answer (the store hands back the same
 * array while nothing in it changed, the response and its encodings are
 * kept with it): every change must still show in the next answer, over
 * the gRPC fast path and over REST.
 */
describe("Discover answers stay current", () => {
  let t: TestApp;
  let c: GrpcClients;
  const register = (name: string, tag: string) =>
    unary(c.registry, "Register", {
      name,
      endpoint: { url: `grpc://${name}.example:443` },
      capabilities: [{ name: "fresh.cap", tags: [tag] }],
    }).then((r) => r.agent.id as string);
  const discover = () => unary(c.directory, "Discover", { capabilities: ["fresh.cap"] });
  const rest = () => getJson(`${t.url}/agents/discover?capabilities=fresh.cap`);

  beforeAll(async () => {
    t = await startApp();
    await waitServing(t);
    c = grpcClients(t.port);
  });
  afterAll(async () => {
    c.close();
    await t.close();
  });

  it("follows heartbeats, registrations, status changes and removals", async () => {
    const a = await register("fresh-a", "x");
    const b = await register("fresh-b", "y");
    const first = await discover();
    expect(first.agents.map((x: any) => x.id).sort()).toEqual([a, b].sort());
    expect(await discover()).toEqual(first);
    expect((await rest()).json.agents).toHaveLength(2);

    // A heartbeat changes nothing of who matches, only what is reported.
    await unary(c.registry, "Heartbeat", { agent_id: a, load: 0.75 });
    const loaded = await discover();
    expect(loaded.agents.find((x: any) => x.id === a).load).toBeCloseTo(0.75);
    expect(Number(loaded.agents.find((x: any) => x.id === a).revision)).toBe(2);
    expect((await rest()).json.agents.find((x: any) => x.id === a).load).toBeCloseTo(0.75);

    // Draining leaves the default answer (healthy and degraded agents).
    await unary(c.registry, "Heartbeat", { agent_id: b, status: "AGENT_STATUS_DRAINING" });
    expect((await discover()).agents.map((x: any) => x.id)).toEqual([a]);

    const d = await register("fresh-d", "z");
    expect((await discover()).agents.map((x: any) => x.id).sort()).toEqual([a, d].sort());
    await unary(c.registry, "Unregister", { agent_id: a });
    expect((await discover()).agents.map((x: any) => x.id)).toEqual([d]);
    expect((await rest()).json.agents.map((x: any) => x.id)).toEqual([d]);
  });
});
