import { Code, createConnectRouter, type ConnectRouter, type ConnectRouterOptions, type ContextValues } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import { percentEncode } from "./grpc-message.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";

export interface ConnectAdapterOptions extends ConnectRouterOptions {
  readonly routes: (router: ConnectRouter) => void;
  /** Serves requests for which no RPC matched the path. */
  readonly fallback: (req: NodeRequest, res: NodeResponse) => void;
  readonly contextValues: (req: NodeRequest) => ContextValues;
}

/**
 * connect-node's `connectNodeAdapter`, with one difference: a request
 * message that cannot be parsed is the client's error. connect-es uses one
 * serialization for clients and servers and calls a binary message it
 * cannot parse INTERNAL ("parse binary: …"): right for a client reading a
 * server's answer, wrong for a server reading a client's request (Connect
 * answered HTTP 500, gRPC INTERNAL). Such answers are turned into
 * INVALID_ARGUMENT (HTTP 400) before they are written.
 */
export function createConnectAdapter(options: ConnectAdapterOptions): (req: NodeRequest, res: NodeResponse) => void {
  const router = createConnectRouter({ acceptCompression: [compressionGzip, compressionBrotli], ...options });
  options.routes(router);
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const handler = handlers.get((req.url ?? "").split("?", 1)[0]!);
    if (!handler) return options.fallback(req, res);
    const uReq = universalRequestFromNodeRequest(req, res, undefined, options.contextValues(req));
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(asClientError(uRes), res))
      .catch(() => {
        // Write errors: the client went away; connect-node ends the call the same way.
      });
  };
}

/** What connect-es says, as INTERNAL, about a request it cannot read. */
const PARSE_FAILURE = /^(?:parse(?: |%20)binary|received(?: |%20)compressed(?: |%20)envelope)/;

function asClientError(res: UniversalServerResponse): UniversalServerResponse {
  const body = res.body;
  // Connect unary: HTTP 500 with a JSON error body.
  if (res.status === 500 && body !== undefined && Symbol.asyncIterator in body) {
    const out = { ...res };
    out.body = rewriteConnectError(out, body as AsyncIterable<Uint8Array>);
    return out;
  }
  // gRPC: the status in the trailers (or the headers of a trailers-only answer).
  if (isParseFailure(res.header?.get("grpc-status"), res.header?.get("grpc-message"))) res.header!.set("grpc-status", String(Code.InvalidArgument));
  specEncodedMessage(res.header);
  if (body === undefined || !(Symbol.asyncIterator in body)) return res;
  return { ...res, body: watchTrailers(res, body as AsyncIterable<Uint8Array>) };
}

function isParseFailure(status: string | null | undefined, message: string | null | undefined): boolean {
  return status === String(Code.Internal) && message != null && PARSE_FAILURE.test(message);
}

async function* rewriteConnectError(res: UniversalServerResponse, body: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  const fixed = clientErrorJson(bytes);
  if (fixed) {
    // Read by connect-node after this first chunk, before it writes the head.
    (res as { status: number }).status = 400;
    res.header?.set("content-length", String(fixed.length));
  }
  yield fixed ?? bytes;
}

/** A Connect error body saying the request could not be parsed, as invalid_argument; undefined for any other body. */
function clientErrorJson(bytes: Uint8Array): Uint8Array | undefined {
  try {
    const error = JSON.parse(Buffer.from(bytes).toString("utf8")) as { code?: string; message?: string };
    if (error.code === "internal" && PARSE_FAILURE.test(error.message ?? "")) return Buffer.from(JSON.stringify({ ...error, code: "invalid_argument" }));
  } catch {
    // Not a Connect error body.
  }
  return undefined;
}

/** gRPC's trailers are filled while the body is written; gRPC-Web's are the body's last frame (flag 0x80). */
async function* watchTrailers(res: UniversalServerResponse, body: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  for await (const chunk of body) {
    if (chunk[0] === 0x80 && chunk.length >= 5) {
      const text = Buffer.from(chunk.subarray(5)).toString("utf8");
      const message = /(?:^|\r\n)grpc-message: ([^\r]*)\r\n/.exec(text)?.[1] ?? "";
      if (/(^|\r\n)grpc-status: 13\r\n/.test(text) && PARSE_FAILURE.test(message)) {
        const fixed = Buffer.from(text.replace(/(^|\r\n)grpc-status: 13\r\n/, `$1grpc-status: ${Code.InvalidArgument}\r\n`));
        const frame = Buffer.alloc(5 + fixed.length);
        frame[0] = 0x80;
        frame.writeUInt32BE(fixed.length, 1);
        fixed.copy(frame, 5);
        yield frame;
        continue;
      }
    }
    yield chunk;
  }
  if (isParseFailure(res.trailer?.get("grpc-status"), res.trailer?.get("grpc-message"))) res.trailer!.set("grpc-status", String(Code.InvalidArgument));
  specEncodedMessage(res.trailer);
}

/**
 * connect-es percent-encodes grpc-message with encodeURIComponent (":" as
 * %3A, "/" as %2F ...); grpc-js decodes it with decodeURI, which leaves
 * those escaped, so its users read "agent_id%3A is required". Re-encoded
 * as the gRPC spec asks (grpc-message.ts), every client reads the message.
 */
function specEncodedMessage(h: Headers | undefined): void {
  const raw = h?.get("grpc-message");
  if (raw == null || raw === "") return;
  let message: string;
  try {
    message = decodeURIComponent(raw);
  } catch {
    return;
  }
  h!.set("grpc-message", percentEncode(message));
}
