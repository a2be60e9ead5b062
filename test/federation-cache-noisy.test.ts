import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DiscoverResponseSchema } from "../gen/federation/v1/directory_service_pb.js";
import { getJson, postJson } from "./support/app.js";
import { openWs, type WsFeed } from "./support/feeds.js";
import { h2Relay, listPeers, mintToken, registerAgent } from "./support/federation-peers.js";
import { startProcess, type ServiceProcess } from "./support/process.js";

/**
 * A noisy neighbour: B, a real Federation Core, behind an h2c front that
 * relays everything (so B's manifest verifies) but can answer Discover
 * itself — too many results, an oversized answer, malformed records. Each
 * counts against B on A until its breaker isolates it
 * (federation.peer_isolated); once B answers soundly again the half-open
 * trial closes the breaker (federation.peer_recovered).
 */
type Mode = "relay" | "too-many" | "oversized" | "malformed";
const MAX_ANSWER_BYTES = 16 * 1024;
const COOL_DOWN_MS = 800;
const LIMIT = 5;
let a: ServiceProcess, b: ServiceProcess;
let front: Awaited<ReturnType<typeof tamperingFront>>;
let feed: WsFeed;

function answer(mode: Mode): Uint8Array {
  const agent = (i: number, extra: Record<string, unknown> = {}) => ({
    id: `noisy-${i}`,
    name: `noisy-${i}`,
    capabilities: [{ name: "shared.cap" }],
    ...extra,
  });
  const agents =
    mode === "too-many"
      ? Array.from({ length: LIMIT + 7 }, (_, i) => agent(i))
      : mode === "oversized"
        ? [agent(0, { tools: [{ name: "huge", description: "x".repeat(MAX_ANSWER_BYTES * 2) }] })]
        : [agent(0, { id: "" }), agent(1, { name: "" })];
  return toBinary(DiscoverResponseSchema, create(DiscoverResponseSchema, { agents }));
}

/** One gRPC message frame: not compressed, its length, the message. */
function grpcFrame(message: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.byteLength, 1);
  return Buffer.concat([head, message]);
}

/**
 * An h2c front for a Federation Core: relays every request (trailers too:
 * federated reads are gRPC), except Discover while `mode` says otherwise.
 */
async function tamperingFront(targetUrl: string) {
  const state = { mode: "relay" as Mode, discovers: 0 };
  const front = await h2Relay(targetUrl, (stream, headers) => {
    const isDiscover = headers[":path"] === "/federation.v1.DirectoryService/Discover";
    if (isDiscover) state.discovers++;
    if (!isDiscover || state.mode === "relay") return false;
    stream.resume();
    stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(grpcFrame(answer(state.mode)));
    return true;
  });
  return { state, ...front };
}

const discover = () => getJson(`${a.url}/agents/discover?capabilities=shared.cap&limit=${LIMIT}&scope=FEDERATION_SCOPE_FEDERATED`);
const peerB = async () => (await listPeers(a.url)).find((p) => p.peerId === "b");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  a = await startProcess({
    FEDERATION_INSTANCE_ID: "fed-a",
    FEDERATION_TIMEOUT: "2s",
    FEDERATION_MAX_ANSWER_BYTES: String(MAX_ANSWER_BYTES),
    // The cache is on: noisy answers must not be cached (each read asks B again and counts). A sound
    // answer is cached for 1 s (no stale serving, no hot refresh), gone before each case starts.
    FEDERATION_CACHE_TTL: "1s",
    FEDERATION_CACHE_STALE: "0ms",
    FEDERATION_CACHE_HOT: "0",
    BREAKER_MIN_OUTCOMES: "3",
    BREAKER_WINDOW: "1500ms",
    BREAKER_COOL_DOWN: `${COOL_DOWN_MS}ms`,
  });
  b = await startProcess({ FEDERATION_INSTANCE_ID: "fed-b" });
  await registerAgent(a.url, "alpha", "shared.cap", "alpha_tool");
  await registerAgent(b.url, "bravo", "shared.cap", "bravo_tool");
  front = await tamperingFront(b.url);
  feed = await openWs(a.port, "?types=federation.peer_added,federation.peer_degraded,federation.peer_isolated,federation.peer_recovered,federation.peer_removed");
  const token = await mintToken(b.url, "default", ["agents:read"]);
  const added = await postJson(`${a.url}/federation/peers`, { peerId: "b", url: front.url, token, tenants: ["*"] });
  if (added.status !== 200) throw new Error(`AddPeer: ${added.status} ${JSON.stringify(added.json)}`);
}, 50_000);

afterAll(async () => {
  feed?.close();
  await front?.close();
  await Promise.all([a, b].map((p) => p?.dispose()));
});

const eventsOf = (type: string) => feed.events.items.filter((e) => e.type === type);

describe("noisy or failing peers", () => {
  it("announces the peer it added", async () => {
    await feed.events.waitFor(1);
    expect(eventsOf("federation.peer_added")[0]).toMatchObject({
      type: "federation.peer_added",
      peerChange: { peerId: "b", url: front.url, kind: "federation-core", breaker: "CIRCUIT_STATE_CLOSED" },
    });
    const res = await discover();
    expect((res.json.agents as any[]).map((x) => [x.name, x.origin?.peerId])).toEqual([
      ["alpha", undefined],
      ["bravo", "b"],
    ]);
  });

  for (const [mode, problem] of [
    ["too-many", "PEER_PROBLEM_TOO_MANY_RESULTS"],
    ["oversized", "PEER_PROBLEM_OVERSIZED"],
    ["malformed", "PEER_PROBLEM_MALFORMED"],
  ] as const) {
    it(`counts ${mode} answers against the peer until its breaker isolates it, then it recovers`, async () => {
      // Whatever the earlier cases left in the breaker's window is gone.
      await sleep(1_600);
      const isolatedBefore = eventsOf("federation.peer_isolated").length;
      const recoveredBefore = eventsOf("federation.peer_recovered").length;
      const failuresBefore = Number((await peerB()).failures ?? 0);
      front.state.mode = mode;
      const askedBefore = front.state.discovers;
      let reads = 0;
      while (reads < 10 && (await peerB()).breaker !== "CIRCUIT_STATE_OPEN") {
        const res = await discover();
        reads++;
        expect(res.status).toBe(200);
        // None of the noise reaches the caller: no extra agents, no malformed records.
        const names = (res.json.agents as any[]).map((x) => x.name);
        expect(names[0]).toBe("alpha");
        expect(names.length).toBeLessThanOrEqual(LIMIT * 2);
        for (const x of res.json.agents as any[]) expect(x.id).toBeTruthy();
        if (mode !== "malformed") expect(names).toEqual(["alpha"]);
      }
      // Every read asked B (noise is never cached) and counted against it.
      expect(front.state.discovers - askedBefore).toBe(reads);
      const isolated = await peerB();
      expect(isolated.breaker).toBe("CIRCUIT_STATE_OPEN");
      expect(Number(isolated.failures) - failuresBefore).toBeGreaterThanOrEqual(3);
      expect(isolated.reputation).toBeLessThan(1);
      await waitForCount("federation.peer_isolated", isolatedBefore + 1);
      const event = eventsOf("federation.peer_isolated").at(-1);
      expect(event.peerChange).toMatchObject({ peerId: "b", breaker: "CIRCUIT_STATE_OPEN" });
      expect(eventsOf("federation.peer_degraded").some((e) => e.peerChange.problem === problem)).toBe(true);

      // Isolated: not asked at all.
      const asked = front.state.discovers;
      const local = await discover();
      expect((local.json.agents as any[]).map((x) => x.name)).toEqual(["alpha"]);
      expect(front.state.discovers).toBe(asked);

      // B answers soundly again: after the cool-down the half-open trial closes the breaker.
      front.state.mode = "relay";
      await sleep(COOL_DOWN_MS + 100);
      const back = await discover();
      expect((back.json.agents as any[]).map((x) => [x.name, x.origin?.peerId])).toEqual([
        ["alpha", undefined],
        ["bravo", "b"],
      ]);
      expect((await peerB()).breaker).toBe("CIRCUIT_STATE_CLOSED");
      await waitForCount("federation.peer_recovered", recoveredBefore + 1);
      expect(eventsOf("federation.peer_recovered").at(-1).peerChange).toMatchObject({ peerId: "b", breaker: "CIRCUIT_STATE_CLOSED" });

      const metrics = await fetch(`${a.url}/metrics`, { headers: { authorization: "Bearer test-bootstrap-token" } }).then((r) => r.text());
      const label = problem.replace("PEER_PROBLEM_", "").toLowerCase();
      expect(Number(new RegExp(`federation_peer_problems_total\\{problem="${label}"\\} (\\d+)`).exec(metrics)?.[1])).toBeGreaterThanOrEqual(3);
    });
  }

  it("announces a removed peer", async () => {
    const del = await fetch(`${a.url}/federation/peers/b`, { method: "DELETE", headers: { authorization: "Bearer test-bootstrap-token" } });
    expect(del.status).toBe(200);
    await waitForCount("federation.peer_removed", 1);
    expect(eventsOf("federation.peer_removed")[0].peerChange).toMatchObject({ peerId: "b" });
  });
});

async function waitForCount(type: string, n: number, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (eventsOf(type).length < n) {
    if (Date.now() > end) throw new Error(`expected ${n} ${type} events, got ${JSON.stringify(feed.events.items).slice(0, 1500)}`);
    await sleep(20);
  }
}
