import { create, fromBinary, toBinary, type DescFile, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1Alpha,
  ServerReflectionRequestSchema as AlphaRequestSchema,
  ServerReflectionResponseSchema as AlphaResponseSchema,
} from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";

export { ServerReflection, ServerReflectionV1Alpha };

/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), so grpcurl and
 * friends work without .proto files. Everything is answered from the
 * generated descriptors of the services passed in, which must be exactly the
 * services the server routes; the reflection services add themselves.
 */
export function reflectionServices(served: readonly DescService[]): {
  v1: ServiceImpl<typeof ServerReflection>;
  v1alpha: ServiceImpl<typeof ServerReflectionV1Alpha>;
} {
  const index = new ReflectionIndex([...served, ServerReflection, ServerReflectionV1Alpha]);
  return {
    v1: {
      async *serverReflectionInfo(requests) {
        for await (const req of requests) yield index.answer(req);
      },
    },
    // v1alpha is wire-identical to v1 (same fields, same numbers), so its
    // messages are re-read as v1 ones rather than keeping a second copy of
    // the logic.
    v1alpha: {
      async *serverReflectionInfo(requests) {
        for await (const req of requests) {
          const answer = index.answer(fromBinary(ServerReflectionRequestSchema, toBinary(AlphaRequestSchema, req)));
          yield fromBinary(AlphaResponseSchema, toBinary(ServerReflectionResponseSchema, answer));
        }
      },
    },
  };
}

class ReflectionIndex {
  private readonly serviceNames: string[];
  private readonly files = new Map<string, DescFile>();
  private readonly symbols = new Map<string, DescFile>();
  private readonly messageTypes = new Set<string>();
  /** extendee type name → extension number → the file declaring it. */
  private readonly extensions = new Map<string, Map<number, DescFile>>();
  private readonly encoded = new Map<string, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.serviceNames = [...new Set(services.map((s) => s.typeName))];
    for (const s of services) this.addFile(s.file);
  }

  answer(req: ServerReflectionRequest): ServerReflectionResponse {
    const r = req.messageRequest;
    const base = { validHost: req.host, originalRequest: req };
    const reply = (messageResponse: MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"]) =>
      create(ServerReflectionResponseSchema, { ...base, messageResponse });
    const error = (code: Code, message: string) =>
      reply({ case: "errorResponse", value: { errorCode: code, errorMessage: message } });
    const files = (file: DescFile | undefined, what: string) =>
      file
        ? reply({ case: "fileDescriptorResponse", value: { fileDescriptorProto: this.withDependencies(file) } })
        : error(Code.NotFound, `${what} not found`);

    switch (r.case) {
      case "listServices":
        return reply({ case: "listServicesResponse", value: { service: this.serviceNames.map((name) => ({ name })) } });
      case "fileByFilename":
        return files(this.files.get(r.value), `file "${clip(r.value)}"`);
      case "fileContainingSymbol":
        return files(this.symbols.get(r.value), `symbol "${clip(r.value)}"`);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = r.value;
        const file = this.extensions.get(containingType)?.get(extensionNumber);
        return files(file, `extension ${extensionNumber} of "${clip(containingType)}"`);
      }
      case "allExtensionNumbersOfType": {
        if (!this.messageTypes.has(r.value)) return error(Code.NotFound, `type "${clip(r.value)}" not found`);
        const numbers = [...(this.extensions.get(r.value)?.keys() ?? [])];
        return reply({ case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: numbers } });
      }
      default:
        return error(Code.InvalidArgument, "no request kind set");
    }
  }

  /** The file first, then each file it imports, transitively, each once. */
  private withDependencies(file: DescFile): Uint8Array[] {
    const seen = new Map<string, DescFile>();
    const visit = (f: DescFile) => {
      if (seen.has(f.proto.name)) return;
      seen.set(f.proto.name, f);
      f.dependencies.forEach(visit);
    };
    visit(file);
    return [...seen.values()].map((f) => this.encode(f));
  }

  private encode(file: DescFile): Uint8Array {
    let bytes = this.encoded.get(file.proto.name);
    if (!bytes) this.encoded.set(file.proto.name, (bytes = toBinary(FileDescriptorProtoSchema, file.proto)));
    return bytes;
  }

  // Walks the FileDescriptorProto rather than protobuf-es's Desc objects:
  // those have no map-entry messages (Agent.LabelsEntry), which a client may
  // still name since the fields refer to them.
  private addFile(file: DescFile): void {
    const proto = file.proto;
    if (this.files.has(proto.name)) return;
    this.files.set(proto.name, file);
    file.dependencies.forEach((d) => this.addFile(d));
    const symbol = (name: string) => this.symbols.set(name, file);
    const addExtensions = (scope: string, xs: readonly FieldDescriptorProto[]) => {
      for (const x of xs) {
        symbol(`${scope}${x.name}`);
        const extendee = x.extendee.replace(/^\./, "");
        const byNumber = this.extensions.get(extendee) ?? new Map<number, DescFile>();
        this.extensions.set(extendee, byNumber.set(x.number, file));
      }
    };
    const addEnums = (scope: string, enums: readonly EnumDescriptorProto[]) => {
      for (const e of enums) {
        symbol(`${scope}${e.name}`);
        // Protobuf scopes enum values beside their enum (pkg.VALUE), while
        // grpcurl and others name them pkg.Enum.VALUE; both resolve.
        for (const v of e.value) {
          symbol(`${scope}${v.name}`);
          symbol(`${scope}${e.name}.${v.name}`);
        }
      }
    };
    const addMessages = (scope: string, messages: readonly DescriptorProto[]) => {
      for (const m of messages) {
        const name = `${scope}${m.name}`;
        symbol(name);
        this.messageTypes.add(name);
        for (const member of [...m.field, ...m.oneofDecl]) symbol(`${name}.${member.name}`);
        addMessages(`${name}.`, m.nestedType);
        addEnums(`${name}.`, m.enumType);
        addExtensions(`${name}.`, m.extension);
      }
    };
    const pkg = proto.package ? `${proto.package}.` : "";
    addMessages(pkg, proto.messageType);
    addEnums(pkg, proto.enumType);
    addExtensions(pkg, proto.extension);
    for (const s of proto.service) {
      symbol(`${pkg}${s.name}`);
      for (const m of s.method) symbol(`${pkg}${s.name}.${m.name}`);
    }
  }
}

/** Names come from the client; an error message quotes at most 200 characters of one. */
function clip(s: string): string {
  return s.slice(0, 200);
}
