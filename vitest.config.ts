import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Every file starts its own servers on port 0; two cores, so keep the
    // worker count small to avoid starving the servers under test.
    maxWorkers: 2,
  },
});
