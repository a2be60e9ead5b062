import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUTH, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

let t: TestApp;
let small: TestApp;
beforeAll(async () => {
  [t, small] = await Promise.all([startApp(), startApp({ MAX_BODY_BYTES: "2048" })]);
});
afterAll(() => Promise.all([t?.close(), small?.close()]));

let seq = 0;
/** A name unique to this run, so tests sharing the server do not see each other's agents. */
const uid = (prefix: string) => `${prefix}-${process.pid}-${++seq}`;

async function register(overrides: Record<string, unknown> = {}): Promise<any> {
  const r = await postJson(`${t.url}/agents/register`, registerBody(overrides));
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json.agent;
}

const heartbeat = (id: string, body: Record<string, unknown>) => postJson(`${t.url}/agents/${id}/heartbeat`, body);

async function send(method: string, path: string, body?: string, app = t) {
  const res = await fetch(`${app.url}${path}`, { method, body, headers: { "content-type": "application/json", ...AUTH } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text === "" ? undefined : (JSON.parse(text) as any) };
}

describe("POST /agents/register (body \"*\")", () => {
  it("registers from camelCase JSON and emits implicit fields in the response", async () => {
    const r = await postJson(`${t.url}/agents/register`, registerBody({ version: undefined, labels: undefined }));
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/json");
    const a = r.json.agent;
    expect(a.id).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(a).toMatchObject({
      name: "coder",
      version: "",
      status: "AGENT_STATUS_HEALTHY",
      load: 0,
      labels: {},
      shared: false,
      tenant: "default",
      revision: "1",
      leaseTtl: "30s",
      endpoint: { url: "grpc://127.0.0.1:50051", transport: "TRANSPORT_GRPC" },
    });
    expect(a.tools).toEqual([{ name: "write_code", description: "Writes code", inputSchema: { type: "object" } }]);
    expect(r.json.leaseTtl).toBe("30s");
    expect(typeof r.json.passport).toBe("string");
  });

  it("accepts snake_case keys as well as camelCase", async () => {
    const body = {
      name: "snake",
      endpoint: { url: "http://127.0.0.1:9000", transport: "TRANSPORT_HTTP_JSON" },
      capabilities: [{ name: "snake.case", tags: [] }],
      tools: [{ name: "t1", description: "", input_schema: { type: "string" } }],
      lease_ttl: "45s",
    };
    const r = await postJson(`${t.url}/agents/register`, body);
    expect(r.status).toBe(200);
    expect(r.json.agent.leaseTtl).toBe("45s");
    expect(r.json.agent.tools[0].inputSchema).toEqual({ type: "string" });
    expect(r.json.agent.endpoint.transport).toBe("TRANSPORT_HTTP_JSON");
  });

  it("ignores unknown JSON fields at any depth", async () => {
    const body = registerBody({ notAField: 1, endpoint: { url: "grpc://127.0.0.1:1", transport: 1, extra: true } });
    const r = await postJson(`${t.url}/agents/register`, body);
    expect(r.status).toBe(200);
    expect(r.json.agent.endpoint).toEqual({ url: "grpc://127.0.0.1:1", transport: "TRANSPORT_GRPC" });
  });

  it("rejects a lease_ttl that is not a Duration with 400, code 3, naming lease_ttl", async () => {
    const r = await postJson(`${t.url}/agents/register`, registerBody({ leaseTtl: "abc" }));
    expect(r.status).toBe(400);
    expect(r.json.code).toBe(3);
    expect(r.json.message).toContain("lease_ttl");
    expect(r.json.details).toEqual([]);
  });
});

describe("path variables", () => {
  it("binds {agent_id} for heartbeat, get and delete; a deleted agent is 404 with code 5", async () => {
    const id = (await register()).id;
    const hb = await heartbeat(id, { status: "AGENT_STATUS_DEGRADED", load: 0.25 });
    expect(hb.status).toBe(200);
    expect(hb.json.agent).toMatchObject({ id, status: "AGENT_STATUS_DEGRADED", load: 0.25, revision: "2" });

    const got = await getJson(`${t.url}/agents/${id}`);
    expect(got.status).toBe(200);
    expect(got.json.agent).toMatchObject({ id, status: "AGENT_STATUS_DEGRADED", load: 0.25 });

    const del = await send("DELETE", `/agents/${id}`);
    expect(del.status).toBe(200);
    expect(del.json).toEqual({});

    const gone = await getJson(`${t.url}/agents/${id}`);
    expect(gone.status).toBe(404);
    expect(gone.json).toEqual({ code: 5, message: expect.stringContaining(id), details: [] });
  });

  it("lets the path variable win over an agent_id in the body", async () => {
    const id = (await register()).id;
    const hb = await heartbeat(id, { agentId: "someone-else", load: 0.5 });
    expect(hb.status).toBe(200);
    expect(hb.json.agent.id).toBe(id);
    expect(hb.json.agent.load).toBe(0.5);
  });
});

describe("query parameters", () => {
  let capA: string, capB: string, both: any, onlyA: any;
  beforeAll(async () => {
    capA = uid("cap-a");
    capB = uid("cap-b");
    both = await register({ capabilities: [{ name: capA, tags: ["python", "gpu"] }, { name: capB, tags: [] }] });
    onlyA = await register({ capabilities: [{ name: capA, tags: ["python"] }] });
    expect((await heartbeat(onlyA.id, { status: "AGENT_STATUS_DEGRADED" })).status).toBe(200);
  });
  const ids = (r: { json: any }) => (r.json.agents as any[]).map((a) => a.id).sort();

  it("treats repeated capabilities keys as a list the agent must fully match", async () => {
    const r = await getJson(`${t.url}/agents/discover?capabilities=${capA}&capabilities=${capB}`);
    expect(r.status).toBe(200);
    expect(ids(r)).toEqual([both.id]);
    expect(ids(await getJson(`${t.url}/agents/discover?capabilities=${capA}`))).toEqual([both.id, onlyA.id].sort());
  });

  it("filters by tags=", async () => {
    expect(ids(await getJson(`${t.url}/agents/discover?capabilities=${capA}&tags=gpu`))).toEqual([both.id]);
    expect(ids(await getJson(`${t.url}/agents/discover?capabilities=${capA}&tags=nope`))).toEqual([]);
  });

  it("reads an enum by name or by number", async () => {
    const byName = await getJson(`${t.url}/agents/discover?capabilities=${capA}&status=AGENT_STATUS_DEGRADED`);
    expect(ids(byName)).toEqual([onlyA.id]);
    expect(ids(await getJson(`${t.url}/agents/discover?capabilities=${capA}&status=2`))).toEqual([onlyA.id]);
    expect(ids(await getJson(`${t.url}/agents/discover?capabilities=${capA}&status=1`))).toEqual([both.id]);
    // Without the enum's shared prefix, in any case, as people type it into a URL.
    expect(ids(await getJson(`${t.url}/agents/discover?capabilities=${capA}&status=DEGRADED`))).toEqual([onlyA.id]);
    expect(ids(await getJson(`${t.url}/agents/discover?capabilities=${capA}&status=healthy`))).toEqual([both.id]);
  });

  it("rejects an unknown enum name or number with 400 naming the parameter, rather than dropping the filter", async () => {
    for (const bad of ["bogus", "AGENT_STATUS_NOPE", "99"]) {
      const r = await getJson(`${t.url}/agents/discover?capabilities=${capA}&status=${bad}`);
      expect(r.status, bad).toBe(400);
      expect(r.json.code).toBe(3);
      expect(r.json.message).toMatch(/^status: /);
    }
    const r = await getJson(`${t.url}/agents/discover?capabilities=${capA}&status=bogus`);
    expect(r.json.message).toContain("AGENT_STATUS_HEALTHY");
  });

  it("applies limit= and ignores unknown keys", async () => {
    const r = await getJson(`${t.url}/agents/discover?capabilities=${capA}&limit=1&bogus=1&also.bogus=x`);
    expect(r.status).toBe(200);
    expect(r.json.agents).toHaveLength(1);
  });

  it("rejects a non-numeric limit with 400 and code 3", async () => {
    const r = await getJson(`${t.url}/agents/discover?limit=abc`);
    expect(r.status).toBe(400);
    expect(r.json.code).toBe(3);
    expect(r.json.message).toContain("limit");
  });

  it("searches /tools by text and pages with page_size/page_token until the token is empty", async () => {
    const word = uid("needle");
    const toolNames = [`${word}_a`, `${word}_b`, `${word}_c`];
    await register({ tools: [{ name: toolNames[0], description: "x" }, { name: toolNames[1], description: "y" }] });
    await register({ tools: [{ name: "other", description: `mentions ${word}` }, { name: "unrelated" }] });

    const all = await getJson(`${t.url}/tools?query=${word}`);
    expect(all.status).toBe(200);
    expect(all.json.nextPageToken).toBe("");
    const expected = (all.json.tools as any[]).map((x) => `${x.agentId}/${x.name}`);
    expect((all.json.tools as any[]).map((x) => x.name).sort()).toEqual([toolNames[0], toolNames[1], "other"].sort());

    const seen: string[] = [];
    let token = "";
    for (let page = 0; page < 10; page++) {
      const r = await getJson(`${t.url}/tools?query=${word}&page_size=1&page_token=${encodeURIComponent(token)}`);
      expect(r.status).toBe(200);
      expect(r.json.tools).toHaveLength(1);
      seen.push(`${r.json.tools[0].agentId}/${r.json.tools[0].name}`);
      token = r.json.nextPageToken;
      if (token === "") break;
    }
    expect(token).toBe("");
    expect(seen).toEqual(expected);
  });

  it("pages GET /agents with page_size/page_token in id order", async () => {
    const mine = [await register(), await register(), await register()].map((a) => a.id);
    const full = await getJson(`${t.url}/agents?page_size=1000`);
    const allIds = (full.json.agents as any[]).map((a) => a.id);
    expect(allIds).toEqual([...allIds].sort());
    expect(allIds).toEqual(expect.arrayContaining(mine));

    const paged: string[] = [];
    let token = "";
    do {
      const r = await getJson(`${t.url}/agents?pageSize=2&page_token=${encodeURIComponent(token)}`);
      expect(r.status).toBe(200);
      expect(r.json.agents.length).toBeLessThanOrEqual(2);
      paged.push(...(r.json.agents as any[]).map((a) => a.id));
      token = r.json.nextPageToken;
    } while (token !== "" && paged.length <= allIds.length);
    expect(paged).toEqual(allIds);
  });
});

describe("routing misses and bad bodies", () => {
  it("answers an unknown path with 404 and code 5", async () => {
    const r = await getJson(`${t.url}/no/such/thing`);
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ code: 5, message: "no route for GET /no/such/thing", details: [] });
  });

  it("answers a known path with the wrong method with 405 and an allow header", async () => {
    const r = await send("PUT", "/health");
    expect(r.status).toBe(405);
    expect(r.headers.get("allow")).toBe("GET");
    expect(r.json.code).toBe(12);
    const agent = await send("PATCH", "/agents/some-id");
    expect(agent.status).toBe(405);
    expect(agent.headers.get("allow")?.split(", ").sort()).toEqual(["DELETE", "GET"]);
  });

  it("rejects malformed JSON with 400 and code 3", async () => {
    const r = await send("POST", "/agents/register", '{"name": "x",');
    expect(r.status).toBe(400);
    expect(r.json.code).toBe(3);
    expect(r.json.message).toContain("malformed JSON");
  });

  it("rejects a JSON array where body \"*\" needs an object", async () => {
    const r = await send("POST", "/agents/register", JSON.stringify([registerBody()]));
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ code: 3, message: "body: must be a JSON object", details: [] });
  });

  it("refuses a body over MAX_BODY_BYTES with 413 (not a retryable 429), code 8, and keeps serving", async () => {
    const ok = await send("POST", "/agents/register", JSON.stringify(registerBody()), small);
    expect(ok.status).toBe(200);
    const big = JSON.stringify(registerBody({ labels: { pad: "x".repeat(3000) } }));
    const r = await send("POST", "/agents/register", big, small);
    // 429 would tell a client to retry a request that can never succeed.
    expect(r.status).toBe(413);
    expect(r.headers.get("retry-after")).toBeNull();
    expect(r.json).toEqual({ code: 8, message: "body: larger than 2048 bytes (MAX_BODY_BYTES)", details: [] });
    expect((await getJson(`${small.url}/health`)).status).toBe(200);
  });
});

describe("domain errors over REST", () => {
  it("maps FAILED_PRECONDITION (no agent has the capability) to 400 with code 9", async () => {
    const cap = uid("nobody-offers");
    const r = await postJson(`${t.url}/route`, { capabilities: [cap] });
    expect(r.status).toBe(400);
    expect(r.json.code).toBe(9);
    expect(r.json.message).toContain(`"${cap}"`);
  });

  it("maps UNAVAILABLE (the only capable agent is DRAINING) to 503 with code 14", async () => {
    const cap = uid("draining-cap");
    const a = await register({ capabilities: [{ name: cap, tags: [] }] });
    expect((await postJson(`${t.url}/route`, { capabilities: [cap] })).json.agent.id).toBe(a.id);
    expect((await heartbeat(a.id, { status: "AGENT_STATUS_DRAINING" })).json.agent.status).toBe("AGENT_STATUS_DRAINING");
    const r = await postJson(`${t.url}/route`, { capabilities: [cap] });
    expect(r.status).toBe(503);
    expect(r.json.code).toBe(14);
  });
});

describe("GET /events (server stream as NDJSON)", () => {
  it("streams {\"result\":{event}} lines for the requested types", async () => {
    const agentId = uid("ev");
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.get(`${t.url}/events?types=agent.registered&agent_id=${agentId}`, { headers: AUTH }, resolve);
      req.on("error", reject);
    });
    try {
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-type"]).toBe("application/x-ndjson");
      const firstLine = new Promise<string>((resolve, reject) => {
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buf += chunk;
          if (buf.includes("\n")) resolve(buf.slice(0, buf.indexOf("\n")));
        });
        res.on("error", reject);
        res.on("end", () => reject(new Error(`stream ended before a line: ${buf}`)));
      });
      await register({ agentId });
      const line = JSON.parse(await firstLine);
      expect(line.result.event.type).toBe("agent.registered");
      expect(line.result.event.agentId).toBe(agentId);
      expect(line.result.event.agentChange.agent.id).toBe(agentId);
    } finally {
      res.destroy();
    }
  });

  it("rejects an unknown event type with 400 and code 3 before any stream starts", async () => {
    const r = await getJson(`${t.url}/events?types=bogus`);
    expect(r.status).toBe(400);
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(r.json.code).toBe(3);
    expect(r.json.message).toContain("types[0]");
  });
});

describe("other protocols on the same port", () => {
  it("serves Connect JSON: GetAgent answers 200, an unknown id a Connect not_found error with 404", async () => {
    const a = await register();
    const url = `${t.url}/federation.v1.RegistryService/GetAgent`;
    const ok = await postJson(url, { agentId: a.id });
    expect(ok.status).toBe(200);
    expect(ok.json.agent.id).toBe(a.id);
    const missing = await postJson(url, { agentId: "missing-agent" });
    expect(missing.status).toBe(404);
    expect(missing.json.code).toBe("not_found");
    expect(missing.json.message).toContain("missing-agent");
  });

  it("answers a request offering Upgrade: h2c over HTTP/1.1 instead of switching or dropping it", async () => {
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(t.port, "127.0.0.1");
      let data = "";
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no complete response: ${JSON.stringify(data)}`));
      }, 3000);
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        data += chunk;
        const headEnd = data.indexOf("\r\n\r\n");
        const length = /\r\ncontent-length: (\d+)\r\n/i.exec(data.slice(0, headEnd + 2));
        const complete = length ? headEnd >= 0 && data.length >= headEnd + 4 + Number(length[1]) : data.endsWith("\r\n0\r\n\r\n");
        if (complete) {
          clearTimeout(timer);
          socket.destroy();
          resolve(data);
        }
      });
      socket.on("error", reject);
      socket.write(
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
          "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
      );
    });
    expect(raw.split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    const json = JSON.parse(raw.slice(raw.indexOf("{"), raw.lastIndexOf("}") + 1));
    expect(json.status).toBe("SERVING_STATUS_SERVING");
    expect(json.version).toBe("0.1.0");
  });
});
