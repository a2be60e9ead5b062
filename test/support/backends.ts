import { afterAll } from "vitest";
import { startFerret, startRedis, type ManagedServer } from "./servers.js";

/**
 * The backends a behavioural suite runs on: the embedded memory adapters,
 * and MongoDB (FerretDB) + Redis. Use with describe.each(backends()); the
 * shared servers start on first use and stop after the file.
 */
export interface Backend {
  readonly name: string;
  /** Environment for startApp: a fresh database and stream prefix per call. */
  env(): Promise<Record<string, string>>;
}

let shared: Promise<{ ferret: ManagedServer & { dispose(): Promise<void> }; redis: ManagedServer & { dispose(): Promise<void> } }> | undefined;
let n = 0;

export function backends(): Backend[] {
  afterAll(async () => {
    if (!shared) return;
    const s = await shared;
    shared = undefined;
    await Promise.all([s.ferret.dispose(), s.redis.dispose()]);
  });
  return [
    { name: "memory", env: async () => ({}) },
    {
      name: "mongodb+redis",
      env: async () => {
        shared ??= Promise.all([startFerret(), startRedis()]).then(([ferret, redis]) => ({ ferret, redis }));
        const { ferret, redis } = await shared;
        const id = `${process.pid}_${n++}`;
        return { MONGODB_URI: ferret.url, MONGODB_DB: `suite_${id}`, REDIS_URL: redis.url, REDIS_PREFIX: `suite-${id}` };
      },
    },
  ];
}
