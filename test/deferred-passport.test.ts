import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends } from "./support/backends.js";
import { bearer, grpc, grpcClients, unary, type GrpcClients } from "./support/grpc-client.js";
import { getJson, postJson, registerBody, startApp, waitServing, type TestApp } from "./support/app.js";

/**
 * Register with defer_passport (issue 21: "a passport minted lazily on the
 * first heartbeat, if the contract says so clearly"): the answer carries no
 * passport, the agent keeps its registering credential, and its first
 * Heartbeat or HeartbeatStream answer carries one — with the guarantees of
 * a passport got at registration (verifies against the JWKS, renews the
 * lease, is revoked by unregistering, stays in its tenant, counts against
 * the heartbeat rate). On the memory adapters and on FerretDB + Redis, with
 * stock @grpc/grpc-js stubs, REST/JSON, and Python's grpcio.
 */

const ROOT = path.resolve(import.meta.dirname, "..");
const PYTHON = path.join(process.env.FC_PYTHON_VENV ?? path.join(os.homedir(), ".cache", "federation-core", "python-venv"), "bin", "python3");

const grpcRegister = (c: GrpcClients, name: string, extra: Record<string, unknown> = {}, md?: grpc.Metadata) =>
  unary(c.registry, "Register", {
    name,
    endpoint: { url: "grpc://127.0.0.1:50051", transport: "TRANSPORT_GRPC" },
    capabilities: [{ name: "code.generate", tags: ["python"] }],
    lease_ttl: { seconds: 30 },
    ...extra,
  }, md);

describe.each(backends())("Register with defer_passport ($name)", (backend) => {
  let t: TestApp;
  let c: GrpcClients;
  let jwks: ReturnType<typeof createLocalJWKSet>;

  beforeAll(async () => {
    t = await startApp({ ...(await backend.env()), RATE_LIMIT_HEARTBEAT: "4", RATE_LIMIT_WINDOW: "60s" });
    await waitServing(t);
    c = grpcClients(t.port);
    jwks = createLocalJWKSet((await getJson(`${t.url}/.well-known/jwks.json`)).json);
  });
  afterAll(async () => {
    c.close();
    await t.close();
  });

  it("answers without a passport; the first Heartbeat carries one that verifies, and later heartbeats keep it", async () => {
    const reg = await grpcRegister(c, "deferred", { defer_passport: true });
    expect(reg.agent.id).not.toBe("");
    expect(reg.passport).toBe("");
    expect(reg.passport_expires_at).toBeNull();
    // Registered all the same: found by id and by capability.
    const got = await unary(c.registry, "GetAgent", { agent_id: reg.agent.id });
    expect(got.agent.name).toBe("deferred");
    expect(got.agent.status).toBe("AGENT_STATUS_HEALTHY");

    const first = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id, load: 0.5 });
    expect(first.passport).not.toBe("");
    const { payload } = await jwtVerify(first.passport, jwks);
    expect(payload.sub).toBe(reg.agent.id);
    expect(payload.exp! * 1000).toBe(Number(first.passport_expires_at.seconds) * 1000);
    // The passport renews the lease as a bearer token, and later beats answer the same one.
    const second = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id }, bearer(first.passport));
    expect(second.passport).toBe(first.passport);
    expect(Number(second.agent.lease_expires_at.seconds)).toBeGreaterThanOrEqual(Number(first.agent.lease_expires_at.seconds));
  });

  it("without defer_passport the answer carries one, as before", async () => {
    const reg = await grpcRegister(c, "eager");
    expect(reg.passport).not.toBe("");
    expect((await jwtVerify(reg.passport, jwks)).payload.sub).toBe(reg.agent.id);
    const beat = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id }, bearer(reg.passport));
    expect(beat.passport).toBe(reg.passport);
  });

  it("REST/JSON takes deferPassport and leaves passport out of the answer", async () => {
    const reg = await postJson(`${t.url}/agents/register`, registerBody({ name: "rest-deferred", deferPassport: true }));
    expect(reg.status, JSON.stringify(reg.json)).toBe(200);
    expect(reg.json.passport ?? "").toBe("");
    expect(reg.json.passportExpiresAt).toBeUndefined();
    const beat = await postJson(`${t.url}/agents/${reg.json.agent.id}/heartbeat`, {});
    expect(beat.status).toBe(200);
    expect((await jwtVerify(beat.json.passport, jwks)).payload.sub).toBe(reg.json.agent.id);
    // A wrong type is refused naming the field, and nothing is registered.
    const bad = await postJson(`${t.url}/agents/register`, registerBody({ name: "rest-bad", deferPassport: "soon" }));
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.json)).toMatch(/deferPassport|defer_passport/);
    const listed = await getJson(`${t.url}/agents?pageSize=100`);
    expect(listed.json.agents.map((a: { name: string }) => a.name)).not.toContain("rest-bad");
  });

  it("the first HeartbeatStream answer carries the passport", async () => {
    const reg = await grpcRegister(c, "streamed", { defer_passport: true });
    const call = c.registry.HeartbeatStream(bearer());
    try {
      const answer = await new Promise<any>((resolve, reject) => {
        call.once("data", resolve);
        call.once("error", reject);
        call.write({ agent_id: reg.agent.id });
      });
      expect(answer.agent_id).toBe(reg.agent.id);
      expect((await jwtVerify(answer.passport, jwks)).payload.sub).toBe(reg.agent.id);
    } finally {
      call.end();
      call.cancel();
    }
  });

  it("a passport got on the first heartbeat is revoked by unregistering", async () => {
    const reg = await grpcRegister(c, "leaver", { defer_passport: true });
    const { passport } = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id });
    await unary(c.registry, "Unregister", { agent_id: reg.agent.id }, bearer(passport));
    const err = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id }, bearer(passport)).catch((e) => e);
    expect([grpc.status.NOT_FOUND, grpc.status.UNAUTHENTICATED]).toContain(err.code);
    // Registering again under the same name is a new registration: the old passport stays revoked.
    const again = await grpcRegister(c, "leaver", { defer_passport: true });
    const stale = await unary(c.registry, "Heartbeat", { agent_id: again.agent.id }, bearer(passport)).catch((e) => e);
    expect([grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED]).toContain(stale.code);
  });

  it("keeps tenants apart: another tenant can neither beat the agent nor get its passport", async () => {
    const reg = await grpcRegister(c, "private", { defer_passport: true });
    const minted = await postJson(`${t.url}/admin/tokens`, { tenant: "other", scopes: ["agents:write", "agents:read"], subject: "other" });
    expect(minted.status).toBe(200);
    const err = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id }, bearer(minted.json.token)).catch((e) => e);
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    // The owner's first heartbeat still gets the passport, of its own tenant.
    const beat = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id });
    expect((await jwtVerify(beat.passport, jwks)).payload.sub).toBe(reg.agent.id);
  });

  it("counts the passport-bearing first heartbeat against the heartbeat rate: RESOURCE_EXHAUSTED past it", async () => {
    const reg = await grpcRegister(c, "chatty", { defer_passport: true });
    for (let i = 0; i < 4; i++) await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id });
    const err = await unary(c.registry, "Heartbeat", { agent_id: reg.agent.id }).catch((e) => e);
    expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });
});

describe("defer_passport from Python's grpcio", () => {
  let t: TestApp;
  let gen: string;
  beforeAll(async () => {
    t = await startApp();
    gen = mkdtempSync(path.join(os.tmpdir(), "fc-py-defer-"));
  });
  afterAll(async () => {
    await t.close();
    rmSync(gen, { recursive: true, force: true });
  });

  it("registers with defer_passport=True, gets no passport, then one from the first Heartbeat", async () => {
    expect(existsSync(PYTHON), `${PYTHON} (scripts/test.sh makes the venv)`).toBe(true);
    const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn(PYTHON, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        p.stdout.on("data", (d) => (out += d));
        p.stderr.on("data", (d) => (out += d));
        const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
        p.on("close", (code) => (clearTimeout(timer), resolve({ code, out })));
      });
    // As the README generates the Python client: every file of the package.
    const protos = readdirSync(path.join(ROOT, "proto/federation/v1")).filter((f) => f.endsWith(".proto")).map((f) => `proto/federation/v1/${f}`);
    const protoc = await run(["-m", "grpc_tools.protoc", "-Iproto", "-Inode_modules/google-proto-files", `--python_out=${gen}`, `--grpc_python_out=${gen}`, ...protos]);
    expect(protoc.code, protoc.out).toBe(0);
    const script = path.join(gen, "defer.py");
    writeFileSync(
      script,
      [
        "import os, sys, grpc",
        "sys.path.insert(0, os.path.dirname(__file__))",
        "from federation.v1 import agent_pb2, registry_service_pb2 as r, registry_service_pb2_grpc as rg",
        "stub = rg.RegistryServiceStub(grpc.insecure_channel(os.environ['ADDR']))",
        "md = [('authorization', 'Bearer ' + os.environ['TOKEN'])]",
        "reg = stub.Register(r.RegisterRequest(name='py-deferred', endpoint=agent_pb2.Endpoint(url='grpc://127.0.0.1:50051', transport=agent_pb2.TRANSPORT_GRPC), capabilities=[agent_pb2.Capability(name='code.generate')], defer_passport=True), metadata=md, timeout=10)",
        "beat = stub.Heartbeat(r.HeartbeatRequest(agent_id=reg.agent.id), metadata=md, timeout=10)",
        "again = stub.Heartbeat(r.HeartbeatRequest(agent_id=reg.agent.id), metadata=[('authorization', 'Bearer ' + beat.passport)], timeout=10)",
        "print(reg.agent.id, repr(reg.passport), reg.HasField('passport_expires_at'), len(beat.passport) > 0, again.passport == beat.passport)",
      ].join("\n"),
    );
    const py = await run([script], { ADDR: `127.0.0.1:${t.port}`, TOKEN: "test-bootstrap-token", PYTHONPATH: gen });
    expect(py.code, py.out).toBe(0);
    const [id, passport, hasExpiry, beatHasPassport, kept] = py.out.trim().split("\n").at(-1)!.split(" ");
    expect(passport).toBe("''");
    expect(hasExpiry).toBe("False");
    expect(beatHasPassport).toBe("True");
    expect(kept).toBe("True");
    expect((await getJson(`${t.url}/agents/${id}`)).json.agent.name).toBe("py-deferred");
  });
});
