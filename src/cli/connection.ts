import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { usageError } from "./exit-codes.js";

/** The options every command shares (commander's global options). */
export interface GlobalOptions {
  url: string;
  token?: string;
  protocol: string;
  json?: boolean;
  /** --timeout, in milliseconds. */
  timeout: number;
}

export const DEFAULT_URL = "http://127.0.0.1:9405";

/** One transport per run; the token rides on every call as the README says. */
export class Connection {
  private constructor(
    private readonly transport: Transport,
    readonly url: string,
    readonly hasToken: boolean,
    /** Deadline for unary calls; streams (watch) have none. */
    readonly timeoutMs: number,
  ) {}

  static async open(options: GlobalOptions): Promise<Connection> {
    let parsed: URL;
    try {
      parsed = new URL(options.url);
    } catch {
      throw usageError(`--url: "${options.url}" is not a URL (e.g. ${DEFAULT_URL})`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw usageError(`--url: must be http:// or https://, not ${parsed.protocol}`);
    }
    const baseUrl = options.url.replace(/\/+$/, "");
    const token = options.token;
    const interceptors: Interceptor[] = token
      ? [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ]
      : [];
    // Loaded only when a command calls the server: --help and usage errors answer in half the time.
    const node = await import("@connectrpc/connect-node");
    let transport: Transport;
    switch (options.protocol) {
      case "grpc":
        transport = node.createGrpcTransport({ baseUrl, interceptors });
        break;
      case "connect":
        // HTTP/1.1 and JSON: what passes through any proxy.
        transport = node.createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
        break;
      default:
        throw usageError(`--protocol: must be grpc or connect, not "${options.protocol}"`);
    }
    return new Connection(transport, baseUrl, Boolean(token), options.timeout);
  }

  client<S extends DescService>(service: S): Client<S> {
    return createClient(service, this.transport);
  }
}
