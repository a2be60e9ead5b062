import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const root = path.resolve(import.meta.dirname, "../..");

/**
 * Stock @grpc/grpc-js stubs built from the .proto files at run time, as a
 * polyglot user would build them — not from our generated Connect code.
 */
export function loadGrpcPackage(): any {
  const def = protoLoader.loadSync(
    [
      "federation/v1/registry_service.proto",
      "federation/v1/directory_service.proto",
      "federation/v1/router_service.proto",
      "federation/v1/health_service.proto",
      "grpc/health/v1/health.proto",
    ],
    {
      includeDirs: [path.join(root, "proto"), path.join(root, "node_modules/google-proto-files")],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    },
  );
  return grpc.loadPackageDefinition(def);
}

export interface GrpcClients {
  registry: any;
  directory: any;
  router: any;
  health: any;
  grpcHealth: any;
  close(): void;
}

export function grpcClients(port: number): GrpcClients {
  const pkg = loadGrpcPackage();
  const target = `127.0.0.1:${port}`;
  const creds = grpc.credentials.createInsecure();
  const c = {
    registry: new pkg.federation.v1.RegistryService(target, creds),
    directory: new pkg.federation.v1.DirectoryService(target, creds),
    router: new pkg.federation.v1.RouterService(target, creds),
    health: new pkg.federation.v1.HealthService(target, creds),
    grpcHealth: new pkg.grpc.health.v1.Health(target, creds),
  };
  return {
    ...c,
    close: () => Object.values(c).forEach((client) => client.close()),
  };
}

/** Promisified unary call; rejects with the grpc-js ServiceError. */
/** Metadata carrying a bearer token (the test admin token by default). */
export function bearer(token = "test-bootstrap-token"): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

/** Promisified unary call with the admin token unless `metadata` is given; rejects with the ServiceError. */
export function unary<T = any>(client: any, method: string, request: unknown, metadata?: grpc.Metadata): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](request, metadata ?? bearer(), { deadline: Date.now() + 5_000 }, (err: grpc.ServiceError | null, res: T) =>
      err ? reject(err) : resolve(res),
    );
  });
}

export { grpc };
