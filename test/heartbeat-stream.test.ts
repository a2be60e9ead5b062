import { spawn } from "node:child_process";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends } from "./support/backends.js";
import { bearer, grpc, grpcClients, type GrpcClients } from "./support/grpc-client.js";
import { getJson, postJson, registerBody, startApp, waitServing, type TestApp } from "./support/app.js";

const GRPCURL = process.env.GRPCURL_BIN || path.join(os.homedir(), ".cache/federation-core/bin/grpcurl-v1.9.3");

/**
 * HeartbeatStream (issue 21): heartbeats over one long-lived gRPC stream,
 * with the unary Heartbeat's guarantees — lease renewal, passport renewal,
 * revocation on unregister, tenant isolation, rate limits — on the memory
 * adapters and on FerretDB + Redis, driven by stock @grpc/grpc-js stubs
 * built from proto/ (and grpcurl, a client from another stack).
 */

interface Answer {
  agent_id: string;
  lease_expires_at: { seconds: string; nanos: number } | null;
  status: string;
  passport: string;
  passport_expires_at: { seconds: string; nanos: number } | null;
  lease_ttl: { seconds: string; nanos: number } | null;
}

/** One HeartbeatStream: send requests, read answers in order, learn how it ended. */
function openStream(c: GrpcClients, token: string, options: grpc.CallOptions = {}) {
  const call = c.registry.HeartbeatStream(bearer(token), options);
  const answers: Answer[] = [];
  const waiters: (() => void)[] = [];
  let ended: grpc.StatusObject | undefined;
  call.on("data", (a: Answer) => {
    answers.push(a);
    waiters.splice(0).forEach((w) => w());
  });
  call.on("status", (s: grpc.StatusObject) => {
    ended = s;
    waiters.splice(0).forEach((w) => w());
  });
  call.on("error", () => undefined);
  const until = async (ok: () => boolean, what: string) => {
    const deadline = Date.now() + 10_000;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  return {
    answers,
    get ended() {
      return ended;
    },
    /** Sends one heartbeat and waits for its answer. */
    async beat(req: Record<string, unknown>): Promise<Answer> {
      const n = answers.length;
      call.write(req);
      await until(() => answers.length > n || ended !== undefined, "an answer");
      if (answers.length > n) return answers[n]!;
      throw Object.assign(new Error(`stream ended: ${ended!.code} ${ended!.details}`), { status: ended });
    },
    /** Sends one heartbeat that must end the stream; resolves with how it ended. */
    async refused(req: Record<string, unknown>): Promise<grpc.StatusObject> {
      const n = answers.length;
      call.write(req);
      await until(() => ended !== undefined, "the stream to end");
      expect(answers.length).toBe(n);
      return ended!;
    },
    close() {
      call.end();
      call.cancel();
    },
  };
}

const ms = (t: { seconds: string; nanos: number } | null) => (t ? Number(t.seconds) * 1000 + Math.round(t.nanos / 1e6) : 0);

// The lean gRPC path serves the stream; with it off, connect-node does (the reference), with the same answers.
const variants = [...backends(), { name: "memory, GRPC_FAST_PATH=off", env: async () => ({ GRPC_FAST_PATH: "off" }) }];

describe.each(variants)("HeartbeatStream ($name)", (backend) => {
  let t: TestApp;
  let c: GrpcClients;

  beforeAll(async () => {
    t = await startApp({ ...(await backend.env()), RATE_LIMIT_HEARTBEAT: "3", RATE_LIMIT_WINDOW: "60s", PASSPORT_TTL: "4s", LEASE_MIN_TTL: "1s" });
    await waitServing(t);
    c = grpcClients(t.port);
  });
  afterAll(async () => {
    c.close();
    await t.close();
  });

  async function register(overrides: Record<string, unknown> = {}) {
    const reg = await postJson(`${t.url}/agents/register`, registerBody({ leaseTtl: "30s", ...overrides }));
    expect(reg.status, JSON.stringify(reg.json)).toBe(200);
    return reg.json as { agent: { id: string }; passport: string };
  }

  it("renews the lease with each heartbeat and says status, passport and TTL only on the first answer", async () => {
    const { agent, passport } = await register({ name: "streamer" });
    const served = t.app.server.fastPath?.served ?? 0;
    // One stream: one call on the lean path when it is on.
    const lean = t.app.server.fastPath ? served + 1 : 0;
    const s = openStream(c, passport);
    try {
      const first = await s.beat({ agent_id: agent.id, load: 0.25 });
      expect(first.agent_id).toBe(agent.id);
      expect(first.status).toBe("AGENT_STATUS_HEALTHY");
      expect(first.passport).toBe(passport);
      expect(ms(first.lease_ttl)).toBe(30_000);
      await new Promise((r) => setTimeout(r, 20));
      const second = await s.beat({ agent_id: agent.id, status: "AGENT_STATUS_DEGRADED" });
      expect(ms(second.lease_expires_at)).toBeGreaterThan(ms(first.lease_expires_at));
      expect(second.status).toBe("AGENT_STATUS_DEGRADED");
      expect(second.passport).toBe("");
      expect(second.lease_ttl).toBeNull();
      const third = await s.beat({ agent_id: agent.id });
      expect(third.status).toBe("AGENT_STATUS_UNSPECIFIED");
      expect(t.app.server.fastPath?.served ?? 0).toBe(lean);
      // The store has what the stream said.
      const got = await getJson(`${t.url}/agents/${agent.id}`);
      expect(got.json.agent.status).toBe("AGENT_STATUS_DEGRADED");
      expect(got.json.agent.load).toBe(0.25);
      expect(Date.parse(got.json.agent.leaseExpiresAt)).toBe(ms(third.lease_expires_at));
    } finally {
      s.close();
    }
  });

  it("sends a renewed passport once half its life has passed, and ends UNAUTHENTICATED when the opening credential expires", async () => {
    const { agent, passport } = await register({ name: "renewer" });
    const s = openStream(c, passport);
    try {
      await s.beat({ agent_id: agent.id });
      await new Promise((r) => setTimeout(r, 2_200));
      const renewed = await s.beat({ agent_id: agent.id });
      expect(renewed.passport).not.toBe("");
      expect(renewed.passport).not.toBe(passport);
      await new Promise((r) => setTimeout(r, 2_000));
      const end = await s.refused({ agent_id: agent.id });
      expect(end.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(end.details).toMatch(/reopen it with the renewed passport/);
      // The renewed passport opens a new stream.
      const again = openStream(c, renewed.passport);
      try {
        // Its first answer names the passport to keep (this one, or a newer one past half its life).
        const reopened = await again.beat({ agent_id: agent.id });
        expect(reopened.passport).not.toBe("");
        expect(ms(reopened.passport_expires_at)).toBeGreaterThanOrEqual(ms(renewed.passport_expires_at));
      } finally {
        again.close();
      }
    } finally {
      s.close();
    }
  });

  it("ends with NOT_FOUND once the agent is unregistered (the passport no longer renews anything)", async () => {
    const { agent, passport } = await register({ name: "leaver" });
    const s = openStream(c, passport);
    try {
      await s.beat({ agent_id: agent.id });
      const del = await fetch(`${t.url}/agents/${agent.id}`, { method: "DELETE", headers: { authorization: `Bearer ${passport}` } });
      expect(del.status).toBe(200);
      const end = await s.refused({ agent_id: agent.id });
      expect(end.code).toBe(grpc.status.NOT_FOUND);
      expect(end.details).toContain(agent.id);
    } finally {
      s.close();
    }
  });

  it("keeps tenants apart: another tenant's token cannot beat this tenant's agent, and a passport only its own agent", async () => {
    const mine = await register({ name: "mine" });
    const other = await register({ name: "other-agent" });
    const minted = await postJson(`${t.url}/admin/tokens`, { tenant: "other", scopes: ["agents:write"], subject: "other" });
    expect(minted.status).toBe(200);
    const foreign = openStream(c, minted.json.token);
    try {
      const end = await foreign.refused({ agent_id: mine.agent.id });
      expect(end.code).toBe(grpc.status.NOT_FOUND);
    } finally {
      foreign.close();
    }
    const s = openStream(c, mine.passport);
    try {
      const end = await s.refused({ agent_id: other.agent.id });
      expect(end.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(end.details).toMatch(/agent_id/);
    } finally {
      s.close();
    }
  });

  it("counts every streamed heartbeat against the agent's heartbeat rate: RESOURCE_EXHAUSTED past it", async () => {
    const { agent, passport } = await register({ name: "chatty" });
    const s = openStream(c, passport);
    try {
      for (let i = 0; i < 3; i++) await s.beat({ agent_id: agent.id });
      const end = await s.refused({ agent_id: agent.id });
      expect(end.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(end.details).toMatch(/heartbeat/);
    } finally {
      s.close();
    }
  });

  it("refuses bad input with INVALID_ARGUMENT naming the field, and nothing is written", async () => {
    const { agent, passport } = await register({ name: "badly" });
    const s = openStream(c, passport);
    try {
      const end = await s.refused({ agent_id: agent.id, load: 7 });
      expect(end.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(end.details).toBe("load: must be between 0 and 1");
      const got = await getJson(`${t.url}/agents/${agent.id}`);
      expect(got.json.agent.load).toBe(0);
    } finally {
      s.close();
    }
    const anon = openStream(c, "not-a-token");
    try {
      const end = await anon.refused({ agent_id: agent.id });
      expect(end.code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      anon.close();
    }
  });

  it("ends an open stream at its deadline with DEADLINE_EXCEEDED", async () => {
    const { agent, passport } = await register({ name: "deadline" });
    const s = openStream(c, passport, { deadline: Date.now() + 800 });
    try {
      await s.beat({ agent_id: agent.id });
      const started = Date.now();
      while (s.ended === undefined && Date.now() - started < 5_000) await new Promise((r) => setTimeout(r, 50));
      expect(s.ended?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    } finally {
      s.close();
    }
  });

  it("answers a frame that is not a request message, or compressed without grpc-encoding, with INVALID_ARGUMENT", async () => {
    const { passport } = await register({ name: "framed" });
    const session = http2.connect(t.url);
    try {
      const send = (frame: Buffer) =>
        new Promise<Record<string, unknown>>((resolve, reject) => {
          const req = session.request({
            ":method": "POST",
            ":path": "/federation.v1.RegistryService/HeartbeatStream",
            "content-type": "application/grpc",
            te: "trailers",
            authorization: `Bearer ${passport}`,
          });
          let headers: Record<string, unknown> = {};
          req.on("response", (h) => (headers = { ...h }));
          req.on("trailers", (tr) => resolve({ ...headers, ...tr }));
          req.on("end", () => resolve(headers));
          req.on("error", reject);
          req.on("data", () => undefined);
          req.end(frame);
        });
      // Field 1 as a varint where a string belongs: not a HeartbeatStreamRequest.
      const garbage = await send(Buffer.from([0, 0, 0, 0, 3, 0x08, 0xff, 0xff]));
      expect(garbage["grpc-status"]).toBe(String(grpc.status.INVALID_ARGUMENT));
      const compressed = await send(Buffer.from([1, 0, 0, 0, 2, 0x0a, 0x00]));
      expect(compressed["grpc-status"]).toBe(String(grpc.status.INVALID_ARGUMENT));
      expect(decodeURIComponent(String(compressed["grpc-message"]))).toMatch(/compressed/);
    } finally {
      session.close();
    }
  });

  it("answers grpcurl (a Go client, through server reflection) streaming two heartbeats from stdin", async () => {
    const { agent, passport } = await register({ name: "grpcurl-agent" });
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      // Through server reflection, as a user without our .proto files would.
      const p = spawn(GRPCURL, [
        "-plaintext",
        "-H", `authorization: Bearer ${passport}`,
        "-d", "@",
        `127.0.0.1:${t.port}`,
        "federation.v1.RegistryService/HeartbeatStream",
      ]);
      let stdout = "";
      let stderr = "";
      p.stdout.on("data", (d) => (stdout += d));
      p.stderr.on("data", (d) => (stderr += d));
      p.on("close", (code) => resolve({ code, stdout, stderr }));
      p.stdin.end(`{"agentId":"${agent.id}","load":0.5}\n{"agentId":"${agent.id}"}\n`);
    });
    expect(out.code, out.stderr).toBe(0);
    const answers = out.stdout
      .split(/\n(?=\{)/)
      .filter((x) => x.trim() !== "")
      .map((x) => JSON.parse(x));
    expect(answers).toHaveLength(2);
    expect(answers[0].passport).toBe(passport);
    expect(answers[1].passport).toBeUndefined();
  });
});
