import http from "node:http";
import https from "node:https";
import { finished, Readable, Transform } from "node:stream";
import { AttemptOutcome } from "../../gen/federation/v1/task_pb.js";
import { DispatchRefused, type PinnedTarget } from "./address-guard.js";
import { AttemptFailed } from "./attempt.js";
import { checkConnectedAddress, isSecure } from "./pinned-connection.js";

/** The MCP SDK's fetch signature (a subset of WHATWG fetch). */
export type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>;

export interface PinnedFetchOptions {
  /** The keep-alive agent of this target (its lookup answers the pinned address). */
  readonly agent: http.Agent;
  /** A POST answer over this many bytes is cut off (BAD_RESPONSE). */
  readonly maxResponseBytes: number;
  /**
   * Per request, from its body: headers to add, and where to report that its
   * answer failed after it began (too big, or the connection broke): a
   * streamed (SSE) answer's reader would otherwise only wait for its timeout.
   */
  readonly forRequest?: (body: string | undefined) => { readonly headers?: Record<string, string>; readonly fail?: (err: AttemptFailed) => void } | undefined;
}

const NO_BODY = new Set([101, 204, 205, 304]);

/**
 * A fetch for one agent endpoint over node:http(s): it connects only to
 * the address the AddressGuard pinned (Host and SNI keep the URL's name),
 * checks the address the socket reached, refuses any other origin, and
 * never follows a redirect — a 3xx answer rejects with DispatchRefused
 * before the caller (the MCP SDK, whose own policy follows same-origin
 * redirects) sees it. Sockets are kept alive in the given agent. A request
 * sent on a reused socket that the peer had just closed (ECONNRESET before
 * any answer) is sent once more on a new one, as node's docs advise.
 */
export function pinnedFetch(t: PinnedTarget, opts: PinnedFetchOptions): FetchLike {
  const mod = isSecure(t.url) ? https : http;
  return (input, init = {}) => {
    const url = new URL(input);
    if (url.origin !== t.url.origin) {
      return Promise.reject(new DispatchRefused(`dispatch refused: a request to ${url.origin}, not the agent's endpoint ${t.url.origin}`));
    }
    const body = typeof init.body === "string" ? init.body : undefined;
    if (init.body != null && body === undefined) return Promise.reject(new TypeError("pinnedFetch sends string bodies only"));
    const per = opts.forRequest?.(body);
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((v, k) => (headers[k] = v));
    Object.assign(headers, per?.headers, { host: t.url.host });
    if (body !== undefined) headers["content-length"] = String(Buffer.byteLength(body));
    const method = init.method ?? "GET";

    const send = (retry: boolean) =>
      new Promise<Response>((resolve, reject) => {
        let answered = false;
        const req = mod.request({
          protocol: isSecure(t.url) ? "https:" : "http:",
          hostname: t.hostname,
          port: t.port,
          path: `${url.pathname}${url.search}`,
          method,
          agent: opts.agent,
          headers,
          signal: init.signal ?? undefined,
        });
        checkConnectedAddress(req, t, reject);
        req.on("error", (err: NodeJS.ErrnoException) => {
          if (answered) return;
          if (retry && req.reusedSocket && err.code === "ECONNRESET") resolve(send(false));
          else reject(err);
        });
        req.on("response", (res) => {
          answered = true;
          const status = res.statusCode ?? 0;
          if (status >= 300 && status < 400) {
            res.destroy();
            const location = String(res.headers.location ?? "").slice(0, 200);
            return reject(
              new DispatchRefused(`dispatch refused: the agent answered HTTP ${status} redirecting to "${location}"; dispatch never follows redirects`),
            );
          }
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (Array.isArray(v)) for (const x of v) h.append(k, x);
            else if (v !== undefined) h.set(k, v);
          }
          let stream: Readable = res;
          if (method === "POST") {
            let size = 0;
            const fail = (err: AttemptFailed) => {
              per?.fail?.(err);
              res.destroy();
              stream.destroy(err);
            };
            stream = res.pipe(
              new Transform({
                transform(chunk: Buffer, _enc, cb) {
                  size += chunk.length;
                  if (size <= opts.maxResponseBytes) return cb(null, chunk);
                  fail(new AttemptFailed(AttemptOutcome.BAD_RESPONSE, `answer over ${opts.maxResponseBytes} bytes (DISPATCH_MAX_RESPONSE_BYTES)`));
                },
              }),
            );
            finished(res, (err) => {
              if (err && !stream.destroyed) fail(new AttemptFailed(AttemptOutcome.UNREACHABLE, "the connection broke before the answer ended"));
            });
          }
          const webBody = NO_BODY.has(status) || method === "HEAD" ? null : (Readable.toWeb(stream) as ReadableStream<Uint8Array>);
          resolve(new Response(webBody, { status, statusText: res.statusMessage, headers: h }));
        });
        req.end(body);
      });
    return send(true);
  };
}
