import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildDashboard } from "../web/dashboard/build.js";
import { ADMIN_TOKEN, AUTH, postJson, registerBody, startApp, type TestApp } from "./support/app.js";

/**
 * The fleet dashboard at /dashboard/ in a real browser (Debian's chromium,
 * driven by playwright-core, as in test/browser-cors.test.ts): the token
 * entered once, then agents registered and changed by the test show live,
 * the routing panel shows every candidate's score breakdown, a breaker
 * opened by failed outcomes shows, and the page only ever talks to its own
 * origin. The assets are built here first (as `npm run build` does), so
 * the test needs no build step before it.
 *
 * UPDATE_SCREENSHOT=1 writes docs/dashboard.png (the README's picture);
 * otherwise the screenshot goes to .test-results/.
 */

const CHROMIUM = "/usr/bin/chromium";
const STEP_MS = 8_000;
/** How soon a change must show in the page, measured from the REST call that made it. */
const LIVE_MS = 1_000;
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");

/** federation_event_subscribers{feed="rpc"} from /metrics: the page's WatchEvents stream is open when it is 1. */
async function rpcSubscribers(t: TestApp): Promise<number> {
  const text = await (await fetch(`${t.url}/metrics`, { headers: AUTH })).text();
  const m = /^federation_event_subscribers\{feed="rpc"\} (\d+)$/m.exec(text);
  return m ? Number(m[1]) : -1;
}

async function until(what: string, check: () => Promise<boolean>, ms = STEP_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms}ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Runs `change` (a REST call) and waits for `selector` in the page; answers
 * the milliseconds from the start of the call to the selector showing, and
 * fails if it did not show within LIVE_MS of that start.
 */
async function showsLive<T>(page: Page, change: () => Promise<T>, selector: (r: T) => string): Promise<{ result: T; ms: number }> {
  const started = performance.now();
  const result = await change();
  const left = Math.max(1, LIVE_MS - (performance.now() - started));
  await page.waitForSelector(selector(result), { state: "attached", timeout: left }).catch((err: Error) => {
    throw new Error(`${selector(result)} did not show within ${LIVE_MS}ms of the change: ${err.message}`);
  });
  return { result, ms: performance.now() - started };
}

async function register(t: TestApp, name: string, capability: string): Promise<string> {
  const r = await postJson(`${t.url}/agents/register`, registerBody({ name, capabilities: [{ name: capability, tags: ["dash"] }] }));
  expect(r.status).toBe(200);
  return r.json.agent.id as string;
}

describe("the fleet dashboard (chromium)", () => {
  let t: TestApp;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const requested: string[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    await buildDashboard();
    // Two failed outcomes open a breaker, so the test can open one quickly.
    t = await startApp({ BREAKER_MIN_OUTCOMES: "2" });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
      timeout: 20_000,
    });
    context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on("request", (req) => requested.push(req.url()));
    page.on("pageerror", (e) => pageErrors.push(e.message));
  }, 60_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await browser?.close();
    await t?.close();
  });

  it("serves the page without a token, asks for one, and follows the event feed with it", async () => {
    const res = await page.goto(`${t.url}/dashboard/`);
    expect(res?.status()).toBe(200);
    expect(await page.isVisible("#login-form")).toBe(true);
    expect(await page.isHidden("#board")).toBe(true);
    await page.fill("#token", ADMIN_TOKEN);
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("#board", { state: "visible" });
    await until("the page's WatchEvents stream to open", async () => (await rpcSubscribers(t)) === 1);
    // The first event over the stream: it arrives (no time bound yet; the first call of each kind is the slowest).
    const first = await register(t, "dash-first", "dash.first");
    await page.waitForSelector(`#agents tr[data-agent-id="${first}"]`, { state: "attached" });
    expect(await page.getAttribute("#conn", "data-state")).toBe("live");
    expect(await page.evaluate("sessionStorage.length")).toBe(1);
    expect(await page.evaluate("localStorage.length")).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it("an agent registered through REST appears within a second", async () => {
    const { result: id, ms } = await showsLive(
      page,
      () => register(t, "dash-coder", "dash.code"),
      (id) => `#agents tr[data-agent-id="${id}"][data-status="HEALTHY"]`,
    );
    expect(ms).toBeLessThan(LIVE_MS);
    const row = page.locator(`#agents tr[data-agent-id="${id}"]`);
    await expect(row.textContent()).resolves.toContain("dash-coder");
    await expect(row.textContent()).resolves.toContain("dash.code");
    await page.waitForSelector(`#events tr[data-type="agent.registered"]`, { state: "attached" });
  });

  it("a heartbeat with status DEGRADED shows live", async () => {
    const id = await register(t, "dash-flaky", "dash.code");
    await page.waitForSelector(`#agents tr[data-agent-id="${id}"][data-status="HEALTHY"]`, { state: "attached" });
    const { ms } = await showsLive(
      page,
      async () => {
        const r = await postJson(`${t.url}/agents/${id}/heartbeat`, { status: "AGENT_STATUS_DEGRADED" });
        expect(r.status).toBe(200);
        expect(r.json.agent.status).toBe("AGENT_STATUS_DEGRADED");
      },
      () => `#agents tr[data-agent-id="${id}"][data-status="DEGRADED"]`,
    );
    expect(ms).toBeLessThan(LIVE_MS);
    await page.waitForSelector(`#events tr[data-type="agent.status_changed"]`, { state: "attached" });
    // The status chips count it, and filter by it.
    await page.click(`#status-filter button[data-status="DEGRADED"]`);
    // Polled with $$eval (a function, run by the debugging protocol): the page's CSP forbids
    // eval, which Playwright's string predicates need.
    await until("the status filter to show only the DEGRADED agent", async () => {
      const rows = await page.$$eval("#agents tbody tr", (trs) => trs.map((tr) => tr.getAttribute("data-agent-id")));
      return rows.length === 1 && rows[0] === id;
    });
    await page.click(`#status-filter button[data-status="ALL"]`);
  });

  it("routes a test task from the routing panel and shows each candidate's score breakdown", async () => {
    const fast = await register(t, "dash-router-a", "dash.route");
    const slow = await register(t, "dash-router-b", "dash.route");
    await page.fill("#route-capabilities", "dash.route");
    await page.selectOption("#route-strategy", "BEST");
    await page.click("#route-form button[type=submit]");
    await page.waitForSelector("#route-result tr.candidate", { state: "attached" });
    const rows = await page.$$eval("#route-result tr.candidate", (trs) =>
      trs.map((tr) => ({
        agentId: tr.getAttribute("data-agent-id"),
        chosen: tr.getAttribute("data-chosen"),
        cells: [...tr.querySelectorAll("td")].map((td) => td.textContent ?? ""),
      })),
    );
    expect(rows.map((r) => r.agentId).sort()).toEqual([fast, slow].sort());
    expect(rows.filter((r) => r.chosen === "true")).toHaveLength(1);
    for (const r of rows) {
      // Agent, score, then capacity, quality, latency, uptime, circuit (numbers in 0..1) and the breaker state.
      expect(r.cells[0]).toMatch(/^dash-router-[ab]$/);
      for (const v of r.cells.slice(1, 7)) {
        expect(Number(v)).toBeGreaterThanOrEqual(0);
        expect(Number(v)).toBeLessThanOrEqual(1);
      }
      expect(r.cells[7]).toBe("CLOSED");
    }
    // The routing decision also arrives on the feed, as a recent task.
    const taskId = (await page.textContent("#route-result .chosen small"))!.replace(/^task /, "");
    expect(taskId).not.toBe("");
    await page.waitForSelector(`#tasks tr[data-task-id="${taskId}"][data-state="routed"]`, { state: "attached" });
  });

  it("shows a routing refusal as an error, not as an empty table", async () => {
    await page.fill("#route-capabilities", "dash.nobody");
    await page.click("#route-form button[type=submit]");
    await page.waitForSelector("#route-result .error");
    expect(await page.textContent("#route-result .error")).toMatch(/^FailedPrecondition: /);
  });

  it("shows a breaker opened by failed outcomes", async () => {
    const id = await register(t, "dash-broken", "dash.break");
    for (let i = 0; i < 3; i++) {
      const r = await postJson(`${t.url}/outcomes`, { agentId: id, capabilities: ["dash.break"], success: false, latency: "0.2s" });
      expect(r.status).toBe(200);
    }
    await page.waitForSelector(`#breakers tr[data-agent-id="${id}"][data-circuit="OPEN"]`, { state: "attached" });
    await page.waitForSelector(`#agents tr[data-agent-id="${id}"] .badge.open`, { state: "attached" });
    await page.waitForSelector(`#events tr[data-type="agent.circuit_opened"]`, { state: "attached" });
  });

  it("keeps the token for the tab: a reload needs no new one", async () => {
    await page.reload();
    await page.waitForSelector("#board", { state: "visible" });
    await page.waitForSelector(`#agents tr[data-status="DEGRADED"]`, { state: "attached" });
    expect(await page.isHidden("#login")).toBe(true);
  });

  it("refuses a wrong token and asks again", async () => {
    const other = await context.newPage();
    try {
      other.on("request", (req) => requested.push(req.url()));
      await other.goto(`${t.url}/dashboard/`);
      await other.fill("#token", "not-a-token");
      await other.click("#login-form button[type=submit]");
      await until("the login error", async () => ((await other.textContent("#login-error")) ?? "") !== "");
      expect(await other.textContent("#login-error")).toMatch(/refused the token/);
      expect(await other.isHidden("#board")).toBe(true);
      expect(await other.evaluate("sessionStorage.length")).toBe(0);
    } finally {
      await other.close();
    }
  });

  it("serves the page no-cache and the hashed assets immutable, with ETags", async () => {
    const index = await fetch(`${t.url}/dashboard/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(index.headers.get("cache-control")).toBe("no-cache");
    expect(index.headers.get("content-security-policy")).toContain("connect-src 'self'");
    const html = await index.text();
    const assets = [...html.matchAll(/(?:src|href)="(assets\/[^"]+)"/g)].map((m) => m[1]!);
    expect(assets).toHaveLength(2);
    for (const asset of assets) {
      expect(asset).toMatch(/^assets\/app-[A-Z0-9]{8}\.(js|css)$/);
      const res = await fetch(`${t.url}/dashboard/${asset}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
      expect(res.headers.get("content-type")).toMatch(asset.endsWith(".js") ? /^text\/javascript/ : /^text\/css/);
      const etag = res.headers.get("etag");
      expect(etag).toMatch(/^".+"$/);
      await res.arrayBuffer();
      const again = await fetch(`${t.url}/dashboard/${asset}`, { headers: { "if-none-match": etag! } });
      expect(again.status).toBe(304);
    }
    const redirect = await fetch(`${t.url}/dashboard`, { redirect: "manual" });
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get("location")).toBe("/dashboard/");
  });

  it("made no request to any other origin, and no script failed", async () => {
    const shot = process.env.UPDATE_SCREENSHOT === "1" ? path.join(root, "docs", "dashboard.png") : path.join(root, ".test-results", "dashboard.png");
    mkdirSync(path.dirname(shot), { recursive: true });
    // The routing panel filled in, for the picture.
    await page.fill("#route-capabilities", "dash.route");
    await page.click("#route-form button[type=submit]");
    await page.waitForSelector("#route-result tr.candidate", { state: "attached" });
    await page.screenshot({ path: shot, fullPage: true });
    expect(requested.length).toBeGreaterThan(5);
    const origins = new Set(requested.map((u) => new URL(u).origin));
    expect([...origins]).toEqual([t.url]);
    expect(requested.filter((u) => new URL(u).pathname.startsWith("/federation.v1."))).not.toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
