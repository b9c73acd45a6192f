/**
 * The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core,
 * against a real gateway (in process, listening on loopback) in front of real upstreams.
 *
 * It watches a breaker open when its upstream starts failing, steers it with "Force close"
 * through the in-page token dialog (a wrong token first, to see the 401 shown), resets it from
 * the keyboard, checks the layout at phone width, and writes screenshots to tests/artifacts/.
 *
 * Skipped with a message where /usr/bin/chromium is missing (.ci/run installs it via apt).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
// Inline specifier until deno.json maps "playwright-core" (test-only dependency).
// deno-lint-ignore no-import-prefix
import type { Browser, Page } from "npm:playwright-core@1.65.1";
import { createGateway } from "../../src/app.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { createLogger } from "../../src/telemetry/mod.ts";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = new URL("../artifacts/", import.meta.url);
const TOKEN = "dashboard-test-token";

function chromiumMissing(): boolean {
  try {
    return !Deno.statSync(CHROMIUM).isFile;
  } catch {
    return true;
  }
}

const missing = chromiumMissing();
if (missing) {
  console.warn(
    `dashboard browser test skipped: ${CHROMIUM} not found (apt-get install chromium to run it)`,
  );
}

/**
 * Loads playwright-core. On load it probes `/proc/sys/fs/binfmt_misc/WSLInterop` with
 * `fs.existsSync`; Node's `existsSync` never throws, but Deno's throws `NotCapable` for that
 * /proc path unless the test runs with --allow-all. So existsSync gets Node's contract back
 * (false on any error) before the import; nothing else in playwright-core needs more than the
 * test's explicit permissions.
 */
async function loadPlaywright(): Promise<typeof import("npm:playwright-core@1.65.1")> {
  const existsSync = fs.existsSync;
  fs.existsSync = ((path: fs.PathLike) => {
    try {
      return existsSync(path);
    } catch {
      return false;
    }
  }) as typeof fs.existsSync;
  // deno-lint-ignore no-import-prefix
  return await import("npm:playwright-core@1.65.1");
}

/**
 * Browser-side checks are JavaScript expressions (strings), so this file needs no DOM types;
 * names put into them are the test's own constants, quoted with JSON.stringify.
 */
function cardSelector(service: string): string {
  return `document.querySelector(${JSON.stringify(`article[data-service="${service}"]`)})`;
}

/** The state word and `data-state` of a service's card. */
async function cardState(page: Page, service: string): Promise<{ state: string; word: string }> {
  return await page.evaluate(
    `({ state: ${cardSelector(service)}?.dataset.state ?? "",
        word: ${cardSelector(service)}?.querySelector(".state-word")?.textContent ?? "" })`,
  );
}

/**
 * Polls an expression until it is true. (Not `page.waitForFunction`: with a string it evals in
 * the page, which the dashboard's CSP rightly forbids; `page.evaluate` goes through CDP.)
 */
async function waitUntil(page: Page, expression: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await page.evaluate<boolean>(`Boolean(${expression})`))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${expression}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function waitForState(page: Page, service: string, state: string): Promise<void> {
  await waitUntil(page, `${cardSelector(service)}?.dataset.state === ${JSON.stringify(state)}`);
}

Deno.test({
  name: "dashboard in Chromium: breaker opens live, force close with the token, phone width",
  ignore: missing,
  // playwright-core keeps the browser's child process and its pipes in ops that finish only
  // after the test body returns (its own close handshake), so Deno's op/resource sanitizers
  // flag them although everything is closed; every server and the gateway are closed below.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const started = performance.now();
    let failing = false;
    const healthy = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => Response.json({ ok: true }),
    );
    const flaky = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => failing ? new Response("boom", { status: 500 }) : Response.json({ ok: true }),
    );
    const gateway = createGateway(
      parseConfig({
        kv: { path: ":memory:" },
        telemetry: { prometheus: true },
        services: {
          users: {
            prefix: "/api/users",
            upstreams: [`http://127.0.0.1:${healthy.addr.port}`],
          },
          orders: {
            prefix: "/api/orders",
            upstreams: [`http://127.0.0.1:${flaky.addr.port}`],
            breaker: { failureThreshold: 3, recoveryTimeoutMs: 60_000 },
          },
        },
      }),
      {
        env: { BREAKWATER_ADMIN_TOKEN: TOKEN },
        logger: createLogger({ level: "off", write: () => {} }),
      },
    );
    await gateway.ready;
    const publicServer = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      gateway.app.fetch,
    );
    const adminServer = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      gateway.adminApp.fetch,
    );
    const publicUrl = `http://127.0.0.1:${publicServer.addr.port}`;
    const adminUrl = `http://127.0.0.1:${adminServer.addr.port}`;

    const send = async (path: string) => {
      const response = await fetch(publicUrl + path);
      await response.body?.cancel();
      return response.status;
    };
    // Background traffic so the charts have something to draw; bounded and stopped below.
    let trafficOn = true;
    const traffic = (async () => {
      for (let i = 0; trafficOn && i < 400; i++) {
        await Promise.all([send("/api/users/1"), send("/api/users/2"), send("/api/orders/1")]);
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
    })();

    let browser: Browser | null = null;
    try {
      const { chromium } = await loadPlaywright();
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      });
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
      page.on("console", (message) => {
        // A CSP violation or script error shows up as a console error.
        // The one 401 is the wrong token this test types on purpose.
        const expected = /status of 401/.test(message.text());
        if (message.type() === "error" && !expected) problems.push(`console: ${message.text()}`);
      });
      const requested: string[] = [];
      page.on("request", (request) => requested.push(request.url()));

      const response = await page.goto(adminUrl + "/", { waitUntil: "load" });
      assert.equal(response?.status(), 200);
      assert.match(response?.headers()["content-security-policy"] ?? "", /default-src 'none'/);
      await waitForState(page, "users", "closed");
      await waitForState(page, "orders", "closed");
      assert.deepEqual(await cardState(page, "orders"), { state: "closed", word: "closed" });
      assert.match(await page.locator("#instance-word").innerText(), /shared/);
      // Let a couple of complete seconds of traffic reach the charts.
      await waitUntil(
        page,
        `(${
          cardSelector("users")
        }?.querySelector(".chart .a")?.getAttribute("d") ?? "").includes("L")`,
      );

      // The upstream starts failing: the breaker opens and the page follows without reload.
      failing = true;
      for (let i = 0; i < 4; i++) await send("/api/orders/fail");
      await waitForState(page, "orders", "open");
      assert.deepEqual(await cardState(page, "orders"), { state: "open", word: "open" });
      const orders = page.locator('article[data-service="orders"]');
      assert.match(await orders.locator("dl").innerText(), /Next probe\s+in \d+/);
      await waitUntil(
        page,
        `document.getElementById("announcer").textContent.includes("orders breaker is now open")`,
      );
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: new URL("dashboard-open.png", ARTIFACTS).pathname });

      // Force close asks for the token in a modal dialog. Escape cancels, focus comes back.
      const forceClose = orders.getByRole("button", { name: /force close/i });
      await forceClose.click();
      const dialog = page.locator("#token-dialog");
      await dialog.waitFor({ state: "visible", timeout: 5_000 });
      assert.equal(await page.evaluate(`document.activeElement?.id`), "token-input");
      await page.keyboard.press("Escape");
      await dialog.waitFor({ state: "hidden", timeout: 5_000 });
      assert.match(await page.locator("#message").innerText(), /Cancelled/);
      assert.equal(await page.evaluate(`document.activeElement?.dataset.action`), "close");
      assert.equal((await cardState(page, "orders")).state, "open");

      // Again, with a wrong token first: 401, shown, asked again; then the right one.
      await forceClose.click();
      await dialog.waitFor({ state: "visible", timeout: 5_000 });
      await page.locator("#token-input").fill("not-the-token");
      await page.locator("#token-submit").click();
      await page.locator("#token-error").waitFor({ state: "visible", timeout: 5_000 });
      assert.match(await page.locator("#token-error").innerText(), /401/);
      assert.match(await page.locator("#error").innerText(), /401 Unauthorized/);
      assert.equal((await cardState(page, "orders")).state, "open");
      await page.locator("#token-input").fill(TOKEN);
      await page.locator("#token-input").press("Enter");
      await waitForState(page, "orders", "forced_closed");
      assert.deepEqual(await cardState(page, "orders"), {
        state: "forced_closed",
        word: "forced closed",
      });
      assert.match(
        await page.locator("#message").innerText(),
        /orders is now forced closed for the whole fleet/,
      );
      assert.equal(await dialog.isVisible(), false);
      // The fleet breaker itself changed, not only the page.
      assert.equal(gateway.breaker.view("orders").state, "forced_closed");
      // The token stays in this tab's session storage, and never went into a URL.
      assert.equal(
        await page.evaluate(`sessionStorage.getItem("breakwater.adminToken")`),
        TOKEN,
      );
      assert.ok(requested.every((url) => !url.includes(TOKEN)), "token leaked into a URL");
      // Let a poll land so the screenshot shows the polled state, then take it.
      await page.waitForTimeout(1100);
      await waitForState(page, "orders", "forced_closed");
      await page.screenshot({ path: new URL("dashboard.png", ARTIFACTS).pathname });

      assert.equal(await page.locator("#error").isVisible(), false, "the 401 error clears");

      // The upstream recovers; the operator resets from the keyboard: Reset is a real button,
      // focused and pressed with Enter (the token is remembered, so no dialog this time).
      failing = false;
      const reset = orders.getByRole("button", { name: /reset/i });
      await reset.focus();
      await page.keyboard.press("Enter");
      await waitForState(page, "orders", "closed");
      assert.equal(gateway.breaker.view("orders").state, "closed");
      assert.equal(
        await page.evaluate(`document.activeElement?.dataset.action`),
        "reset",
      );

      // Phone width: nothing wider than the screen.
      await page.setViewportSize({ width: 375, height: 800 });
      await page.waitForTimeout(200);
      const scrollWidth = await page.evaluate<number>(`document.documentElement.scrollWidth`);
      assert.ok(scrollWidth <= 375, `page is ${scrollWidth}px wide at 375px`);
      await page.screenshot({
        path: new URL("dashboard-phone.png", ARTIFACTS).pathname,
        fullPage: true,
      });

      // Everything came from the gateway itself, and nothing broke the CSP.
      assert.ok(requested.every((url) => url.startsWith(adminUrl)), requested.join("\n"));
      assert.deepEqual(problems, []);
      await context.close();
    } finally {
      trafficOn = false;
      await traffic;
      await browser?.close();
      await publicServer.shutdown();
      await adminServer.shutdown();
      await gateway.close();
      await healthy.shutdown();
      await flaky.shutdown();
    }
    assert.ok(performance.now() - started < 30_000, "the browser test should stay under 30 s");
  },
});
