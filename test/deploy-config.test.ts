import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

/**
 * The Docker image runs the service as `npm start` and the benchmark do:
 * with package.json's `config.node_flags`, and on jemalloc with its
 * `config.malloc_conf` (bench/lib.ts reads both from package.json).
 */
describe("deployment settings", () => {
  const root = path.resolve(import.meta.dirname, "..");
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { config: { node_flags: string; malloc_conf: string } };
  const dockerfile = readFileSync(path.join(root, "Dockerfile"), "utf8");

  it("starts node with package.json's node flags", () => {
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)?.[1];
    expect(cmd).toBeDefined();
    expect(JSON.parse(cmd!)).toEqual(["node", ...pkg.config.node_flags.split(" "), "dist/src/main.js"]);
  });

  it("gives node only flags this node accepts, with the values asked for", () => {
    // V8 flags come and go between node versions, and node refuses to start
    // on one it does not know ("bad option"): the image would not start.
    const flags = pkg.config.node_flags.split(" ");
    const seen = execFileSync(process.execPath, [...flags, "-p", "JSON.stringify(require('v8').getHeapStatistics())"], { encoding: "utf8" });
    expect(JSON.parse(seen)).toHaveProperty("heap_size_limit");
    // --v8-options lists each flag with the value it has now ("default: --name=value").
    const listed = execFileSync(process.execPath, [...flags, "--v8-options"], { encoding: "utf8", maxBuffer: 16 * 2 ** 20 });
    for (const flag of flags) expect(listed, flag).toContain(`default: ${flag}\n`);
  });

  it("preloads jemalloc with package.json's MALLOC_CONF", () => {
    expect(dockerfile).toMatch(/^\s+LD_PRELOAD=\/usr\/local\/lib\/libjemalloc\.so\.2 \\$/m);
    expect(/^\s+MALLOC_CONF=(\S+)$/m.exec(dockerfile)?.[1]).toBe(pkg.config.malloc_conf);
  });
});
