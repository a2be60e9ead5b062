import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, startApp, type TestApp } from "./support/app.js";

/**
 * gRPC server reflection, driven by the real grpcurl (scripts/build-grpcurl.sh)
 * with no .proto files anywhere, plus raw checks of both reflection versions
 * through a stock @grpc/grpc-js client.
 */
const GRPCURL = process.env.GRPCURL_BIN || path.join(os.homedir(), ".cache/federation-core/bin/grpcurl-v1.9.3");
const ROOT = path.resolve(import.meta.dirname, "..");
const AUTH_HEADER = `authorization: Bearer ${ADMIN_TOKEN}`;
const NOT_FOUND = 5;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

let t: TestApp;

/**
 * `grpcurl -plaintext [flags] 127.0.0.1:PORT [verb...]`, run asynchronously:
 * the server under test shares this process's event loop.
 */
function grpcurl(flags: string[], ...verb: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      GRPCURL,
      ["-plaintext", "-connect-timeout", "5", ...flags, `127.0.0.1:${t.port}`, ...verb],
      { timeout: 15_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") reject(new Error(`grpcurl did not finish: ${err.message}\n${stderr}`));
        else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      },
    );
  });
}

/** grpcurl prints each message as an indented JSON object; a stream prints several in a row. */
function jsonObjects(stdout: string): any[] {
  return stdout
    .split(/\n(?=\{)/)
    .filter((s) => s.trim() !== "")
    .map((s) => JSON.parse(s));
}

function fileNames(blobs: Iterable<Uint8Array>): string[] {
  return [...blobs].map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
}

beforeAll(async () => {
  if (!existsSync(GRPCURL)) throw new Error(`no grpcurl at ${GRPCURL}: run scripts/build-grpcurl.sh (or set GRPCURL_BIN)`);
  t = await startApp();
});
afterAll(async () => {
  await t?.close();
});

describe("grpcurl through server reflection (no -proto)", () => {
  it("lists every served service, the reflection services included", async () => {
    const run = await grpcurl([], "list");
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const names = run.stdout.trim().split("\n");
    expect(names).toEqual(
      expect.arrayContaining([
        "federation.v1.RegistryService",
        "federation.v1.DirectoryService",
        "federation.v1.RouterService",
        "federation.v1.HealthService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]),
    );
    expect(new Set(names).size).toBe(names.length);
  });

  it("describes a service with its methods and HTTP options", async () => {
    const run = await grpcurl([], "describe", "federation.v1.RegistryService");
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("federation.v1.RegistryService is a service:");
    for (const m of ["Register", "Heartbeat", "Unregister", "GetAgent", "ListAgents"]) {
      expect(run.stdout).toMatch(new RegExp(`rpc ${m} \\( \\.federation\\.v1\\.${m}Request \\) returns \\( \\.federation\\.v1\\.${m}Response \\)`));
    }
    expect(run.stdout).toContain('option (.google.api.http) = { post: "/agents/register", body: "*" };');
  });

  it("describes messages, nested enums, fields, methods and the google.api.http extension", async () => {
    const msg = await grpcurl([], "describe", "federation.v1.RegisterRequest");
    expect(msg.code).toBe(0);
    expect(msg.stdout).toContain("message RegisterRequest {");
    expect(msg.stdout).toContain(".google.protobuf.Duration lease_ttl = 7;");
    expect(msg.stdout).toContain("map<string, string> labels = 6;");

    const watch = await grpcurl([], "describe", "federation.v1.WatchEventsRequest");
    expect(watch.stdout).toContain("optional uint64 after_id = 3;");

    const nestedEnum = await grpcurl([], "describe", "grpc.health.v1.HealthCheckResponse.ServingStatus");
    expect(nestedEnum.stdout).toContain("is an enum:");
    expect(nestedEnum.stdout).toContain("SERVICE_UNKNOWN = 3;");

    const field = await grpcurl([], "describe", "federation.v1.RegisterRequest.name");
    expect(field.stdout).toContain("string name = 1;");

    const method = await grpcurl([], "describe", "federation.v1.DirectoryService.Discover");
    expect(method.stdout).toContain("is a method:");

    const ext = await grpcurl([], "describe", "google.api.http");
    expect(ext.stdout).toContain("extend .google.protobuf.MethodOptions {");
    expect(ext.stdout).toContain(".google.api.HttpRule http = 72295728;");
  });

  it("registers, discovers and replays agent.registered from after_id 0", async () => {
    const body = {
      name: "reflected-coder",
      version: "1.0.0",
      endpoint: { url: "grpc://127.0.0.1:50051", transport: "TRANSPORT_GRPC" },
      capabilities: [{ name: "reflection.probe", tags: ["grpcurl"] }],
      tools: [{ name: "probe", description: "Probes", inputSchema: { type: "object" } }],
      labels: { team: "core" },
      leaseTtl: "30s",
    };
    const reg = await grpcurl(["-H", AUTH_HEADER, "-d", JSON.stringify(body)], "federation.v1.RegistryService/Register");
    expect(reg.stderr).toBe("");
    const [registered] = jsonObjects(reg.stdout);
    const id: string = registered.agent.id;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(registered.agent.status).toBe("AGENT_STATUS_HEALTHY");
    expect(registered.agent.tools[0].inputSchema).toEqual({ type: "object" });

    const found = await grpcurl(
      ["-H", AUTH_HEADER, "-d", JSON.stringify({ capabilities: ["reflection.probe"], tags: ["grpcurl"] })],
      "federation.v1.DirectoryService/Discover",
    );
    expect(found.stderr).toBe("");
    expect(jsonObjects(found.stdout)[0].agents.map((a: any) => a.id)).toEqual([id]);

    // The feed stays open; -max-time ends it after the replay arrived.
    const watch = await grpcurl(
      ["-H", AUTH_HEADER, "-max-time", "2", "-d", JSON.stringify({ afterId: "0" })],
      "federation.v1.HealthService/WatchEvents",
    );
    expect(watch.stderr).toContain("DeadlineExceeded");
    const events = jsonObjects(watch.stdout).map((o) => o.event);
    const mine = events.find((e) => e.type === "agent.registered" && e.agentId === id);
    expect(mine, watch.stdout.slice(0, 2000)).toBeDefined();
    expect(mine.agentChange.agent.name).toBe("reflected-coder");
  });

  it("calls grpc.reflection.v1alpha directly: answers in order, NOT_FOUND keeps the stream open", async () => {
    const requests = [
      { fileContainingSymbol: "federation.v1.RegistryService" },
      { fileContainingSymbol: "federation.v1.NoSuchThing" },
      { listServices: "" },
    ];
    const run = await grpcurl(
      ["-d", requests.map((r) => JSON.stringify(r)).join("\n")],
      "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    );
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const [file, missing, list] = jsonObjects(run.stdout);
    expect(file.originalRequest.fileContainingSymbol).toBe("federation.v1.RegistryService");
    const names = fileNames(file.fileDescriptorResponse.fileDescriptorProto.map((b: string) => Buffer.from(b, "base64")));
    expect(names[0]).toBe("federation/v1/registry_service.proto");
    expect(names).toContain("google/api/annotations.proto");
    expect(missing.errorResponse.errorCode).toBe(NOT_FOUND);
    expect(missing.errorResponse.errorMessage).toContain("federation.v1.NoSuchThing");
    expect(list.listServicesResponse.service.map((s: any) => s.name)).toContain("grpc.reflection.v1alpha.ServerReflection");
  });

  it("says NOT_FOUND for an unknown symbol", async () => {
    const run = await grpcurl([], "describe", "federation.v1.NoSuchMessage");
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('Symbol not found: federation.v1.NoSuchMessage');
  });
});

describe.each(["v1", "v1alpha"])("grpc.reflection.%s through @grpc/grpc-js", (version) => {
  let client: any;

  beforeAll(() => {
    const def = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, {
      includeDirs: [path.join(ROOT, "proto")],
      keepCase: true,
      longs: String,
      defaults: true,
      oneofs: true,
    });
    const pkg: any = grpc.loadPackageDefinition(def);
    client = new pkg.grpc.reflection[version].ServerReflection(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
  });
  afterAll(() => client?.close());

  /** Sends all requests on one stream and collects the answers until the server ends it. */
  function exchange(requests: object[]): Promise<any[]> {
    return new Promise((resolve, reject) => {
      const call = client.ServerReflectionInfo({ deadline: Date.now() + 10_000 });
      const out: any[] = [];
      call.on("data", (m: any) => out.push(m));
      call.on("error", reject);
      call.on("end", () => resolve(out));
      for (const r of requests) call.write(r);
      call.end();
    });
  }

  it("answers every kind of request, in order, each file with its dependencies once", async () => {
    const answers = await exchange([
      { file_by_filename: "federation/v1/registry_service.proto" },
      { file_containing_symbol: "federation.v1.AgentStatus" },
      { file_containing_symbol: "federation.v1.Agent.LabelsEntry" },
      { file_containing_symbol: "federation.v1.AGENT_STATUS_HEALTHY" },
      { all_extension_numbers_of_type: "google.protobuf.MethodOptions" },
      { file_containing_extension: { containing_type: "google.protobuf.MethodOptions", extension_number: 72295728 } },
      { list_services: "*" },
    ]);
    expect(answers).toHaveLength(7);

    const byFile = fileNames(answers[0].file_descriptor_response.file_descriptor_proto);
    expect(byFile[0]).toBe("federation/v1/registry_service.proto");
    expect([...byFile].sort()).toEqual([
      "federation/v1/agent.proto",
      "federation/v1/origin.proto",
      "federation/v1/registry_service.proto",
      "google/api/annotations.proto",
      "google/api/http.proto",
      "google/protobuf/descriptor.proto",
      "google/protobuf/duration.proto",
      "google/protobuf/struct.proto",
      "google/protobuf/timestamp.proto",
    ]);

    for (const i of [1, 2, 3]) {
      const names = fileNames(answers[i].file_descriptor_response.file_descriptor_proto);
      expect(names[0]).toBe("federation/v1/agent.proto");
      expect(new Set(names).size).toBe(names.length);
    }
    expect(answers[3].original_request.file_containing_symbol).toBe("federation.v1.AGENT_STATUS_HEALTHY");

    expect(answers[4].all_extension_numbers_response).toEqual({
      base_type_name: "google.protobuf.MethodOptions",
      extension_number: [72295728],
    });
    expect(fileNames(answers[5].file_descriptor_response.file_descriptor_proto)).toEqual([
      "google/api/annotations.proto",
      "google/api/http.proto",
      "google/protobuf/descriptor.proto",
    ]);
    const services = answers[6].list_services_response.service.map((s: any) => s.name);
    expect(services).toContain(`grpc.reflection.${version}.ServerReflection`);
    expect(services).toContain("grpc.health.v1.Health");
  });

  it("answers unknown names with NOT_FOUND and keeps the stream going", async () => {
    const answers = await exchange([
      { file_containing_symbol: "federation.v1.Missing" },
      { file_by_filename: "federation/v1/missing.proto" },
      { file_containing_extension: { containing_type: "google.protobuf.MethodOptions", extension_number: 1 } },
      { all_extension_numbers_of_type: "federation.v1.MissingType" },
      { file_containing_symbol: "federation.v1.RegistryService.Register" },
    ]);
    expect(answers).toHaveLength(5);
    const errors = answers.slice(0, 4).map((a) => a.error_response);
    expect(errors.map((e) => e.error_code)).toEqual([NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND]);
    expect(errors[0].error_message).toContain("federation.v1.Missing");
    expect(errors[1].error_message).toContain("federation/v1/missing.proto");
    expect(errors[2].error_message).toContain("google.protobuf.MethodOptions");
    expect(errors[3].error_message).toContain("federation.v1.MissingType");
    expect(fileNames(answers[4].file_descriptor_response.file_descriptor_proto)[0]).toBe(
      "federation/v1/registry_service.proto",
    );
  });
});

describe("an unknown gRPC method", () => {
  const badPath = "/federation.v1.RegistryService/NoSuchMethod";

  it("is UNIMPLEMENTED for a stock gRPC client", async () => {
    const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        client.makeUnaryRequest(
          badPath,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          new grpc.Metadata(),
          { deadline: Date.now() + 5_000 },
          (e) => resolve(e),
        ),
      );
      expect(err?.code).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      client.close();
    }
  });

  // grpc-js turns an HTTP 404 into UNIMPLEMENTED itself, so the wire is
  // checked too: the gRPC spec answers HTTP 200 with grpc-status 12.
  it("is answered on the wire with HTTP 200 and grpc-status 12", async () => {
    const session = http2.connect(`http://127.0.0.1:${t.port}`);
    try {
      const result = await new Promise<{ status: unknown; grpcStatus: unknown }>((resolve, reject) => {
        const req = session.request({
          ":method": "POST",
          ":path": badPath,
          "content-type": "application/grpc",
          te: "trailers",
        });
        let headers: http2.IncomingHttpHeaders = {};
        req.on("response", (h) => (headers = h));
        req.on("trailers", (tr) => (headers = { ...headers, ...tr }));
        req.on("error", reject);
        req.setTimeout(5_000, () => reject(new Error("no answer within 5s")));
        req.on("end", () => resolve({ status: headers[":status"], grpcStatus: headers["grpc-status"] }));
        req.resume();
        req.end(Buffer.from([0, 0, 0, 0, 0]));
      });
      expect(result).toEqual({ status: 200, grpcStatus: "12" });
    } finally {
      session.close();
    }
  });

  // With reflection grpcurl refuses a method the server does not list, so it
  // is handed a .proto (written at test time) that claims one.
  it("is UNIMPLEMENTED for grpcurl calling a method its proto file claims", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "fc-grpcurl-"));
    try {
      writeFileSync(
        path.join(dir, "claims.proto"),
        'syntax = "proto3";\npackage federation.v1;\nmessage Empty {}\nservice RegistryService { rpc NoSuchMethod(Empty) returns (Empty); }\n',
      );
      const run = await grpcurl(["-import-path", dir, "-proto", "claims.proto", "-d", "{}"], "federation.v1.RegistryService/NoSuchMethod");
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain("Code: Unimplemented");
      expect(run.stderr).toContain("unknown method federation.v1.RegistryService/NoSuchMethod");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
