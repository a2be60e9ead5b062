import { createHash } from "node:crypto";
import { AGENT_CARD_PATH, AgentCard } from "@a2a-js/sdk";
import { Code, ConnectError } from "@connectrpc/connect";
import { federationCard } from "../a2a/federation-card.js";
import { routePolicy } from "../security/access-policy.js";
import { etagMatches } from "./etag.js";
import type { HttpRoute } from "./http-routes.js";

export interface AgentCardRouteOptions {
  readonly name: string;
  readonly version: string;
  /** FEDERATION_PUBLIC_URL; undefined: from the request's Host (or :authority). */
  readonly publicUrl: string | undefined;
  /** The listener speaks TLS (a Host-derived URL is https). */
  readonly tls: boolean;
  readonly mutualTls: boolean;
  /** Cache-Control max-age of the card. */
  readonly maxAgeSec: number;
}

/** A host, with an optional port: a DNS name, IPv4, or a bracketed IPv6 literal. */
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * GET /.well-known/agent-card.json: the federation's A2A agent card
 * (a2a/federation-card.ts), public, with an ETag and Cache-Control.
 * Behind a proxy, set FEDERATION_PUBLIC_URL: a Host-derived URL is only as
 * good as the Host the client sent, which is why such an answer is
 * `Vary: Host` and only privately cacheable.
 */
export function agentCardRoute(opts: AgentCardRouteOptions): HttpRoute {
  const fixed = opts.publicUrl === undefined ? undefined : render(opts, opts.publicUrl.replace(/\/+$/, ""));
  return {
    path: `/${AGENT_CARD_PATH}`,
    requirement: routePolicy[`/${AGENT_CARD_PATH}`],
    handle: (req, res, call) => {
      if (req.method !== "GET" && req.method !== "HEAD") {
        call.code = Code.Unimplemented;
        res.statusCode = 405;
        res.setHeader("allow", "GET, HEAD");
        res.end();
        return;
      }
      let doc = fixed;
      if (!doc) {
        const host = req.headers[":authority"] ?? req.headers.host;
        if (typeof host !== "string" || !HOST.test(host)) {
          throw new ConnectError("the request has no valid Host header (or set FEDERATION_PUBLIC_URL)", Code.InvalidArgument);
        }
        doc = render(opts, `${opts.tls ? "https" : "http"}://${host}`);
      }
      res.setHeader("content-type", "application/json");
      res.setHeader("etag", doc.etag);
      res.setHeader("cache-control", fixed ? `public, max-age=${opts.maxAgeSec}` : `private, max-age=${opts.maxAgeSec}`);
      if (!fixed) res.setHeader("vary", "Host");
      const ifNoneMatch = req.headers["if-none-match"];
      if (etagMatches(typeof ifNoneMatch === "string" ? ifNoneMatch : null, doc.etag)) {
        res.statusCode = 304;
        res.end();
        return;
      }
      res.statusCode = 200;
      res.setHeader("content-length", String(doc.body.length));
      if (req.method === "HEAD") res.end();
      else res.end(doc.body);
    },
  };
}

function render(opts: AgentCardRouteOptions, url: string): { body: Buffer; etag: string } {
  const card = federationCard({ name: opts.name, version: opts.version, url, mutualTls: opts.mutualTls });
  const body = Buffer.from(JSON.stringify(AgentCard.toJSON(card)));
  return { body, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"` };
}
