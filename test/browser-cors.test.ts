import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, AUTH, getJson, postJson, registerBody, startApp, type TestApp } from "./support/app.js";
import type { Attempt, PageApi, Protocol, RestAnswer, RoundTrip, WsOpen } from "./browser/client.js";

/**
 * A real browser (Debian's chromium, driven by playwright-core; scripts/test.sh
 * installs it) on a page served from another origin than the service calls it
 * with @connectrpc/connect-web — Connect JSON, Connect binary, gRPC-Web — and
 * opens /ws. With the page's origin in CORS_ALLOWED_ORIGINS everything works;
 * from an origin not on the list the browser blocks the calls (and the server
 * never runs them) and /ws refuses the handshake.
 */

const CHROMIUM = "/usr/bin/chromium";
const STEP_MS = 8_000;
const here = path.dirname(fileURLToPath(import.meta.url));

/** A page origin: a tiny static server on its own loopback port serving the bundle. */
interface Origin {
  readonly origin: string;
  close(): Promise<void>;
}

async function servePage(bundle: string): Promise<Origin> {
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>fc</title></head>` +
    `<body><script src="/client.js"></script></body></html>`;
  const server = http.createServer((req, res) => {
    const [body, type] =
      req.url === "/client.js" ? [bundle, "text/javascript"] : req.url === "/" ? [html, "text/html"] : [undefined, ""];
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": `${type}; charset=utf-8`, "cache-control": "no-store" }).end(body);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Runs `fn` in the page against its `globalThis.fc`, bounded on the node side as well. */
async function inPage<A, R>(page: Page, fn: (fc: PageApi, arg: A) => Promise<R>, arg: A, ms = STEP_MS + 2_000): Promise<R> {
  const source = fn.toString();
  let timer: NodeJS.Timeout | undefined;
  const bounded = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`page step did not finish in ${ms}ms: ${source}`)), ms);
  });
  try {
    return await Promise.race([
      page.evaluate(
        ([src, a]) => {
          const f = (0, eval)(`(${src})`) as (fc: unknown, arg: unknown) => Promise<unknown>;
          return f((globalThis as { fc?: unknown }).fc, a);
        },
        [source, arg] as const,
      ) as Promise<R>,
      bounded,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function openPage(context: BrowserContext, origin: Origin): Promise<Page> {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${origin.origin}/`);
  await page.waitForFunction(() => (globalThis as { fc?: unknown }).fc !== undefined).catch(() => {
    throw new Error(`the bundle did not load on ${origin.origin}: ${errors.join("; ")}`);
  });
  return page;
}

/** Agents of the admin tenant with this capability, asked from node (no browser, no CORS). */
async function agentsWith(t: TestApp, capability: string): Promise<string[]> {
  const r = await getJson(`${t.url}/agents/discover?capabilities=${encodeURIComponent(capability)}`);
  expect(r.status).toBe(200);
  return (r.json.agents as { name: string }[]).map((a) => a.name);
}

/** A raw (non-browser) handshake on /ws with the given Origin header: the status it gets. */
function handshakeStatus(t: TestApp, origin: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${t.port}/ws`, { headers: AUTH, origin, handshakeTimeout: STEP_MS });
    ws.on("open", () => {
      ws.close();
      resolve(101);
    });
    ws.on("unexpected-response", (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on("error", (err) => reject(err));
  });
}

describe("a browser on another origin (chromium, connect-web)", () => {
  let browser: Browser;
  let context: BrowserContext;
  let allowed: Origin;
  let denied: Origin;
  let t: TestApp;
  let allowedPage: Page;
  let deniedPage: Page;

  beforeAll(async () => {
    const bundled = await build({
      entryPoints: [path.join(here, "browser/client.ts")],
      bundle: true,
      format: "iife",
      platform: "browser",
      target: "es2022",
      write: false,
      logLevel: "silent",
    });
    const bundle = bundled.outputFiles[0]!.text;
    allowed = await servePage(bundle);
    denied = await servePage(bundle);
    t = await startApp({ CORS_ALLOWED_ORIGINS: allowed.origin });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
      timeout: 20_000,
    });
    context = await browser.newContext();
    allowedPage = await openPage(context, allowed);
    deniedPage = await openPage(context, denied);
  }, 45_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await browser?.close();
    await t?.close();
    await allowed?.close();
    await denied?.close();
  });

  const protocols: Protocol[] = ["connect-json", "connect-binary", "grpc-web"];

  for (const protocol of protocols) {
    it(`${protocol}: registers, discovers and watches the event from the allowed origin`, async () => {
      const tag = protocol.replace(/-/g, "");
      const name = `browser-${tag}`;
      const capability = `browser.${tag}`;
      const r = await inPage<{ baseUrl: string; protocol: Protocol; token: string; name: string; capability: string; timeoutMs: number }, RoundTrip>(
        allowedPage,
        (fc, o) => fc.roundTrip(o),
        { baseUrl: t.url, protocol, token: ADMIN_TOKEN, name, capability, timeoutMs: STEP_MS },
      );
      expect(r.protocol).toBe(protocol);
      expect(r.registered.name).toBe(name);
      expect(r.registered.id).not.toBe("");
      // The browser read our x-request-id back: it was allowed as a request header and exposed on the answer.
      expect(r.requestIdSeen).toMatch(new RegExp(`^browser-${protocol}-\\d+$`));
      expect(r.discovered).toEqual([{ id: r.registered.id, name, capabilities: [capability] }]);
      expect(r.event).toMatchObject({ type: "agent.registered", agentId: r.registered.id, agentName: name });
      expect(BigInt(r.event.id)).toBeGreaterThan(0n);
      // And the server really holds it (asked without a browser).
      expect(await agentsWith(t, capability)).toEqual([name]);
    });
  }

  it("REST from the allowed origin: a GET with a bearer token, answer and x-request-id readable", async () => {
    await postJson(`${t.url}/agents/register`, registerBody({ name: "rest-seen", capabilities: [{ name: "browser.rest" }] }));
    const url = `${t.url}/agents/discover?capabilities=browser.rest`;
    const r = await inPage<{ url: string; token: string; ms: number }, RestAnswer>(allowedPage, (fc, a) => fc.rest(a.url, a.token, a.ms), {
      url,
      token: ADMIN_TOKEN,
      ms: STEP_MS,
    });
    expect(r).toMatchObject({ ok: true, status: 200, requestIdSeen: "browser-rest", body: { agents: [{ name: "rest-seen" }] } });
    const denied = await inPage<{ url: string; token: string; ms: number }, RestAnswer>(deniedPage, (fc, a) => fc.rest(a.url, a.token, a.ms), {
      url,
      token: ADMIN_TOKEN,
      ms: STEP_MS,
    });
    expect(denied).toMatchObject({ ok: false, error: "TypeError", message: expect.stringMatching(/failed to fetch/i) });
  });

  it("a browser WebSocket to /ws from the allowed origin receives events", async () => {
    const url = `ws://127.0.0.1:${t.port}/ws?types=agent.registered`;
    const open = await inPage<{ url: string; token: string; ms: number }, WsOpen>(
      allowedPage,
      (fc, a) => fc.openWs(a.url, a.token, a.ms),
      { url, token: ADMIN_TOKEN, ms: STEP_MS },
    );
    expect(open).toEqual({ opened: true, protocol: "bearer" });
    try {
      const reg = await postJson(`${t.url}/agents/register`, registerBody({ name: "ws-watched", capabilities: [{ name: "browser.ws" }] }));
      expect(reg.status).toBe(200);
      const id = reg.json.agent.id as string;
      const msg = await inPage<{ id: string; ms: number }, any>(allowedPage, (fc, a) => fc.wsMessageAbout(a.id, a.ms), { id, ms: STEP_MS });
      expect(msg).toMatchObject({ type: "agent.registered", agentId: id, agentChange: { agent: { id, name: "ws-watched" } } });
    } finally {
      await inPage(allowedPage, async (fc) => fc.closeWs(), undefined);
    }
  });

  for (const protocol of protocols) {
    it(`${protocol}: from an origin not on the list the browser blocks the call and the server never runs it`, async () => {
      const tag = protocol.replace(/-/g, "");
      const capability = `denied.${tag}`;
      const r = await inPage<{ baseUrl: string; protocol: Protocol; token: string; name: string; capability: string; timeoutMs: number }, Attempt>(
        deniedPage,
        (fc, o) => fc.attemptRegister(o),
        { baseUrl: t.url, protocol, token: ADMIN_TOKEN, name: `denied-${tag}`, capability, timeoutMs: STEP_MS },
      );
      // A network error (fetch's TypeError), not an answer from the server: no code a server sends.
      expect(r).toMatchObject({ ok: false, code: 2, causeName: "TypeError" });
      expect((r as Extract<Attempt, { ok: false }>).message).toMatch(/failed to fetch/i);
      expect(await agentsWith(t, capability)).toEqual([]);
      // The same call from the allowed page goes through (the refusal is the origin, nothing else).
      const ok = await inPage<{ baseUrl: string; protocol: Protocol; token: string; name: string; capability: string; timeoutMs: number }, Attempt>(
        allowedPage,
        (fc, o) => fc.attemptRegister(o),
        { baseUrl: t.url, protocol, token: ADMIN_TOKEN, name: `control-${tag}`, capability: `control.${tag}`, timeoutMs: STEP_MS },
      );
      expect(ok).toMatchObject({ ok: true });
      expect(await agentsWith(t, `control.${tag}`)).toEqual([`control-${tag}`]);
    });
  }

  it("a browser WebSocket to /ws from an origin not on the list fails", async () => {
    const open = await inPage<{ url: string; token: string; ms: number }, WsOpen>(
      deniedPage,
      (fc, a) => fc.openWs(a.url, a.token, a.ms),
      { url: `ws://127.0.0.1:${t.port}/ws`, token: ADMIN_TOKEN, ms: STEP_MS },
    );
    expect(open).toEqual({ opened: false, errored: true, closeCode: 1006 });
  });

  it("/ws answers a handshake with an Origin not on the list 403, and upgrades the listed one", async () => {
    expect(await handshakeStatus(t, denied.origin)).toBe(403);
    expect(await handshakeStatus(t, "http://localhost:" + new URL(allowed.origin).port)).toBe(403);
    expect(await handshakeStatus(t, allowed.origin)).toBe(101);
  });
});
