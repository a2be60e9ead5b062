import type http2 from "node:http2";
import v8 from "node:v8";
import vm from "node:vm";
import { afterEach, describe, expect, it } from "vitest";
import { PendingRequests } from "../src/transport/http2-limits.js";

/**
 * The requests still arriving (every lean gRPC call passes through this
 * table): expired after their limit, forgotten when in, and — the reason
 * it is a slot table — a finished request is not kept alive by it until
 * the next full GC (a long-lived Map churned by short-lived keys is: see
 * README, "Node flags").
 */
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as (o?: { type: "minor" | "major"; execution?: "sync" }) => void;

type FakeStream = { destroyed: boolean; closed: boolean; payload: number[] };
const fake = (): FakeStream => ({ destroyed: false, closed: false, payload: new Array<number>(256).fill(1.5) });
const asStream = (s: FakeStream) => s as unknown as http2.ServerHttp2Stream;

const tables: PendingRequests[] = [];
afterEach(() => tables.splice(0).forEach((t) => t.stop()));
function table(limitMs: number, expired: FakeStream[] = []): PendingRequests {
  const t = new PendingRequests(limitMs, (s) => expired.push(s as unknown as FakeStream));
  tables.push(t);
  return t;
}

describe("PendingRequests", () => {
  it("expires a request still arriving after its limit, and not one that is in", async () => {
    const expired: FakeStream[] = [];
    const t = table(100, expired);
    const [slow, done, gone] = [fake(), fake(), fake()];
    for (const s of [slow, done, gone]) t.add(asStream(s));
    t.delete(asStream(done));
    gone.destroyed = true;
    expect(t.size).toBe(2);
    await new Promise((r) => setTimeout(r, 250));
    expect(expired).toEqual([slow]);
    expect(t.size).toBe(0);
  });

  it("takes freed slots again, counts each stream once, and shrinks back after a flood", () => {
    const t = table(60_000);
    const flood = Array.from({ length: 5000 }, fake);
    for (const s of flood) t.add(asStream(s));
    t.add(asStream(flood[0]!));
    expect(t.size).toBe(5000);
    for (const s of flood.slice(0, 4000)) t.delete(asStream(s));
    t.delete(asStream(flood[0]!));
    expect(t.size).toBe(1000);
    const again = Array.from({ length: 4000 }, fake);
    for (const s of again) t.add(asStream(s));
    expect(t.size).toBe(5000);
    expect((t as unknown as { streams: unknown[] }).streams.length).toBe(5000);
    for (const s of [...flood, ...again]) t.delete(asStream(s));
    expect(t.size).toBe(0);
    (t as unknown as { sweep: () => void }).sweep();
    expect((t as unknown as { streams: unknown[] }).streams.length).toBe(0);
  });

  it("does not keep finished requests alive across young-generation GCs", () => {
    const oldSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === "old_space")!.space_used_size;
    const t = table(60_000);
    // A long-running server's table: its own storage in the old generation.
    t.add(asStream(fake()));
    gc();
    gc();
    const before = oldSpace();
    // 20,000 requests of ~2 KB, 64 in flight, young-generation GCs as they go: ~40 MB if each were kept.
    const inFlight: FakeStream[] = [];
    for (let i = 0; i < 20_000; i++) {
      const s = fake();
      t.add(asStream(s));
      inFlight.push(s);
      if (inFlight.length > 64) t.delete(asStream(inFlight.shift()!));
      if (i % 500 === 0) gc({ type: "minor", execution: "sync" });
    }
    gc({ type: "minor", execution: "sync" });
    gc({ type: "minor", execution: "sync" });
    const promoted = oldSpace() - before;
    expect(promoted).toBeLessThan(8 * 1024 * 1024);
  });
});
