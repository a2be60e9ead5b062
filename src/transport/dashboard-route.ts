import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { routePolicy } from "../security/access-policy.js";
import { etagMatches } from "./etag.js";
import type { HttpRoute } from "./http-routes.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";

/** Where the page lives; `/dashboard` redirects here. */
export const DASHBOARD_PATH = "/dashboard/";
/** Built assets carry a content hash in their name, so a URL never changes meaning. */
const IMMUTABLE = "public, max-age=31536000, immutable";
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};
/**
 * The page talks to its own origin only: the browser itself refuses any
 * other request, whatever a script tries.
 */
const PAGE_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

interface Asset {
  readonly type: string;
  readonly cacheControl: string;
  readonly body: Buffer;
  readonly etag: string;
  /** Present when compressing pays (text, over 1 KiB). */
  readonly gzip: Buffer | undefined;
  readonly page: boolean;
}

/**
 * The fleet dashboard (web/dashboard/, built by `npm run build` into
 * dist/dashboard/) as route-table entries: one per file, read once at
 * start-up. The page is public; the data it shows comes from the RPCs with
 * the token the user enters, under their own access policy. Without built
 * assets `/dashboard/` says how to build them instead of failing start-up
 * (`npm run dev` runs from source).
 */
export function dashboardRoutes(dir = defaultDashboardDir()): HttpRoute[] {
  const requirement = routePolicy[DASHBOARD_PATH];
  const redirect: HttpRoute = {
    path: "/dashboard",
    requirement,
    handle: (_req, res) => {
      res.writeHead(308, { location: DASHBOARD_PATH, "content-length": "0" });
      res.end();
    },
  };
  const notBuilt: HttpRoute = {
    path: DASHBOARD_PATH,
    requirement,
    handle: (_req, res) => {
      res.writeHead(503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end("the dashboard is not built: run `npm run build`\n");
    },
  };
  if (!existsSync(path.join(dir, "index.html"))) return [redirect, notBuilt];
  const routes: HttpRoute[] = [redirect];
  try {
    for (const file of filesUnder(dir)) {
      const rel = path.relative(dir, file).split(path.sep).join("/");
      const page = rel === "index.html";
      const asset = load(file, page);
      routes.push({ path: page ? DASHBOARD_PATH : DASHBOARD_PATH + rel, requirement, handle: (req, res) => serve(asset, req, res) });
    }
  } catch {
    // A build swapping the tree in while we read it: the service starts without the page rather than not at all.
    return [redirect, notBuilt];
  }
  return routes;
}

/** dist/dashboard of the package, whether this module runs from src/ (tsx) or dist/src/. */
export function defaultDashboardDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return path.join(dir, "dist", "dashboard");
}

function load(file: string, page: boolean): Asset {
  const body = readFileSync(file);
  const type = TYPES[path.extname(file)] ?? "application/octet-stream";
  const text = type.startsWith("text/") || type === "image/svg+xml";
  return {
    type,
    // The page names the current hashed assets, so it is revalidated every time.
    cacheControl: page ? "no-cache" : IMMUTABLE,
    body,
    etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
    gzip: text && body.length > 1024 ? gzipSync(body) : undefined,
    page,
  };
}

function serve(asset: Asset, req: NodeRequest, res: NodeResponse): void {
  const method = req.method ?? "GET";
  if (method !== "GET" && method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD", "content-length": "0" });
    res.end();
    return;
  }
  const gzip = asset.gzip !== undefined && /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
  const body = gzip ? asset.gzip! : asset.body;
  // Each encoding is its own representation, with its own tag.
  const etag = gzip ? `${asset.etag.slice(0, -1)}-gz"` : asset.etag;
  const headers: Record<string, string> = {
    "content-type": asset.type,
    "cache-control": asset.cacheControl,
    etag,
    vary: "accept-encoding",
    "x-content-type-options": "nosniff",
    ...(asset.page ? PAGE_HEADERS : {}),
  };
  if (etagMatches(headerOf(req, "if-none-match"), etag)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  if (gzip) headers["content-encoding"] = "gzip";
  headers["content-length"] = String(body.length);
  res.writeHead(200, headers);
  if (method === "HEAD") res.end();
  else res.end(body);
}

function headerOf(req: NodeRequest, name: string): string | null {
  const v = req.headers[name];
  return typeof v === "string" ? v : null;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}
