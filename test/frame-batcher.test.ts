import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { FrameBatcher } from "../src/transport/frame-batcher.js";

function sink() {
  const writes: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push(chunk.toString());
      cb();
    },
  });
  return { out, writes };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("FrameBatcher", () => {
  it("writes the frames of one turn to each stream as one write, in order", async () => {
    const batcher = new FrameBatcher();
    const a = sink();
    const b = sink();
    batcher.write(a.out, Buffer.from("1"));
    batcher.write(b.out, Buffer.from("x"));
    batcher.write(a.out, Buffer.from("2"));
    batcher.write(a.out, Buffer.from("3"));
    expect(batcher.queued(a.out)).toBe(3);
    expect(a.writes).toEqual([]);
    await tick();
    expect(a.writes).toEqual(["123"]);
    expect(b.writes).toEqual(["x"]);
    expect(batcher.queued(a.out)).toBe(0);
    batcher.write(a.out, Buffer.from("4"));
    await tick();
    expect(a.writes).toEqual(["123", "4"]);
  });

  it("drains one stream at once, drops a discarded one, and skips ended streams", async () => {
    const batcher = new FrameBatcher();
    const a = sink();
    const b = sink();
    const c = sink();
    batcher.write(a.out, Buffer.from("a1"));
    batcher.write(b.out, Buffer.from("b1"));
    batcher.write(c.out, Buffer.from("c1"));
    batcher.drain(a.out);
    expect(a.writes).toEqual(["a1"]);
    batcher.discard(b.out);
    c.out.end();
    await tick();
    expect(a.writes).toEqual(["a1"]);
    expect(b.writes).toEqual([]);
    expect(c.writes).toEqual([]);
  });
});
