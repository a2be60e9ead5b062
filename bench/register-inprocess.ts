/**
 * A registration without its transport: the service's Register handler
 * called in-process (request decoded from its bytes, the answer framed as
 * the lean gRPC path frames it), one call at a time, with the passport
 * deferred. What a registration costs before node:http2 and the call
 * pipeline (authentication, quotas, metrics) add theirs — the etcd
 * section's floor beside node:http2's own (README, "Where issue 21's goals
 * stand"). Started by bench/run.ts pinned like the service and with its
 * node flags.
 *
 * Usage: tsx bench/register-inprocess.ts <fleet> <calls> <rounds>
 * Prints one JSON line: { "usPerCall": [per round...] }.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createContextValues, type HandlerContext } from "@connectrpc/connect";
import { pino } from "pino";
import { RegisterRequestSchema, RegisterResponseSchema } from "../gen/federation/v1/registry_service_pb.js";
import { App } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { baseOf } from "../src/message-hints.js";
import { principalKey, type Principal } from "../src/security/principal.js";
import { TokenIssuer } from "../src/security/token-issuer.js";
import { MessageEncoder } from "../src/transport/message-encoding.js";
import { registryService } from "../src/transport/services/registry-service.js";
import { agentInit } from "./fleet.js";

const [fleet, calls, rounds] = process.argv.slice(2).map(Number) as [number, number, number];
const dataDir = mkdtempSync(path.join(os.tmpdir(), "fc-reg-inproc-"));
const config = loadConfig({ HOST: "127.0.0.1", PORT: "0", DATA_DIR: dataDir, FEDERATION_BOOTSTRAP_TOKEN: "bench-register-inprocess", LEASE_TTL_DEFAULT: "3600s" });
const app = await App.create(config, { logger: pino({ level: "silent" }) });
const issuer = new TokenIssuer(app.keys, app.clock, { issuer: config.security.issuer, audience: config.security.audience, passportTtlMs: config.security.passportTtlMs });
const impl = registryService(app.registry, issuer, config.lease, { federationName: "bench", fetcher: undefined as never }, { clock: app.clock, heartbeat: async () => undefined });
const principal = { subject: "bench", tenant: "default", scopes: new Set(["admin"]), via: "token" } as unknown as Principal;
const ctx = { values: createContextValues().set(principalKey, principal) } as HandlerContext;
const encoder = new MessageEncoder(baseOf);
const bodies = Array.from({ length: fleet + calls }, (_, i) => toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { ...agentInit(i), deferPassport: true })));
const register = async (i: number) => {
  const res = await impl.register!(fromBinary(RegisterRequestSchema, bodies[i]!), ctx);
  encoder.frame(RegisterResponseSchema, create(RegisterResponseSchema, res as never));
};
for (let i = 0; i < fleet; i++) await register(i);
const per = Math.floor(calls / rounds);
const usPerCall: number[] = [];
for (let r = 0; r < rounds; r++) {
  const before = process.cpuUsage();
  for (let i = fleet + r * per; i < fleet + (r + 1) * per; i++) await register(i);
  const used = process.cpuUsage(before);
  usPerCall.push((used.user + used.system) / per);
}
console.log(JSON.stringify({ usPerCall }));
await app.stop().catch(() => undefined);
rmSync(dataDir, { recursive: true, force: true });
process.exit(0);
