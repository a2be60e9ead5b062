import { cors as connectCors } from "@connectrpc/connect";
import type { IncomingHttpHeaders } from "node:http";
import type { NodeRequest, NodeResponse } from "./node-types.js";

/** Headers a browser may send and read beyond what Connect and gRPC-Web need. */
const ALLOWED_HEADERS = [...connectCors.allowedHeaders, "Authorization", "X-Request-Id"].join(", ");
const EXPOSED_HEADERS = [...connectCors.exposedHeaders, "X-Request-Id", "Retry-After", "WWW-Authenticate"].join(", ");
/** Connect and gRPC-Web use POST and GET; REST routes use the rest. */
const ALLOWED_METHODS = [...new Set([...connectCors.allowedMethods, "PUT", "PATCH", "DELETE"])].join(", ");

/**
 * Cross-origin access for browsers (Connect-Web, gRPC-Web, REST, /ws),
 * from an allow-list of origins (CORS_ALLOWED_ORIGINS). `*` allows every
 * origin without credentials; listed origins are echoed back with
 * credentials allowed. A request from an origin not on the list gets no
 * CORS headers, so the browser refuses to hand it the response, and its
 * preflight is refused, so the browser never sends the call at all.
 */
export class CorsPolicy {
  private readonly any: boolean;
  private readonly origins: ReadonlySet<string>;

  constructor(
    allowed: readonly string[],
    private readonly maxAgeSec = 7200,
  ) {
    this.any = allowed.includes("*");
    this.origins = new Set(allowed);
  }

  /**
   * Whether a browser on `origin` may use the service. No Origin header
   * (not a browser, or a same-origin GET) and the service's own origin are
   * always allowed.
   */
  allows(origin: string | undefined, headers: IncomingHttpHeaders): boolean {
    if (origin === undefined) return true;
    if (this.any || this.origins.has(origin)) return true;
    return sameOrigin(origin, headers);
  }

  /**
   * Adds the CORS headers to a response, and answers a preflight itself:
   * true when the request was a preflight and has been answered.
   */
  handle(req: NodeRequest, res: NodeResponse): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
    res.setHeader("vary", "Origin");
    if (!this.any && !this.origins.has(origin)) {
      if (!preflight) return false;
      res.writeHead(403, { "content-type": "text/plain" });
      res.end(`origin ${origin.slice(0, 200)} is not allowed (CORS_ALLOWED_ORIGINS)`);
      return true;
    }
    res.setHeader("access-control-allow-origin", this.any ? "*" : origin);
    if (!this.any) res.setHeader("access-control-allow-credentials", "true");
    if (!preflight) {
      res.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
      return false;
    }
    res.writeHead(204, {
      "access-control-allow-methods": ALLOWED_METHODS,
      "access-control-allow-headers": ALLOWED_HEADERS,
      "access-control-max-age": String(this.maxAgeSec),
      "content-length": "0",
    });
    res.end();
    return true;
  }
}

/** The Origin names the host the request was sent to (a page the service served itself). */
function sameOrigin(origin: string, headers: IncomingHttpHeaders): boolean {
  const host = headers.host ?? headers[":authority"];
  if (typeof host !== "string") return false;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}
