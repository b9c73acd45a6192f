/**
 * The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core,
 * against a real gateway (in process, listening on loopback) in front of real upstreams.
 *
 * It watches a breaker open when its upstream starts failing (tripped by a second gateway
 * instance on the same KV file, so the fleet panel and the "tripped after N failures by
 * instance X" line come from KV), steers it with "Force close" through the in-page token dialog
 * (a wrong token first, to see the 401 shown; a name for the audit timeline), resets it from
 * the keyboard, checks the charts' axes, the fleet panel (two instances alive, then one
 * stopped), the layout at phone width, and writes screenshots to tests/artifacts/.
 *
 * Skipped with a message where /usr/bin/chromium is missing (.ci/run installs it via apt).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
// Inline specifier until deno.json maps "playwright-core" (test-only dependency).
// deno-lint-ignore no-import-prefix
import type { Browser, Page } from "npm:playwright-core@1.65.1";
import { createGateway, type Gateway } from "../../src/app.ts";
import type { AuditEntry } from "../../src/breaker/audit.ts";
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

/** The text of an element inside a service's card. */
async function cardText(page: Page, service: string, selector: string): Promise<string> {
  return await page.evaluate<string>(
    `${cardSelector(service)}?.querySelector(${JSON.stringify(selector)})?.textContent ?? ""`,
  );
}

/** The fleet panel's row of an instance, as its cells' text. */
async function fleetRow(page: Page, instanceId: string): Promise<string[]> {
  return await page.evaluate<string[]>(
    `Array.from(document.querySelector(${
      JSON.stringify(`#fleet-rows tr[data-instance="${instanceId}"]`)
    })?.children ?? []).map((cell) => cell.textContent)`,
  );
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
      // Only requests to .../fail fail, so the background traffic keeps the charts going
      // without adding failures of its own to the fleet's count.
      (request) =>
        failing && new URL(request.url).pathname.endsWith("/fail")
          ? new Response("boom", { status: 500 })
          : Response.json({ ok: true }),
    );
    const kvDir = await Deno.makeTempDir({ prefix: "breakwater-dashboard-e2e-" });
    const config = parseConfig({
      kv: { path: `${kvDir}/fleet.kv` },
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
    });
    const logger = createLogger({ level: "off", write: () => {} });
    const env = { BREAKWATER_ADMIN_TOKEN: TOKEN };
    // The gateway the browser looks at, and a second instance of the fleet on the same KV file.
    const gateway = createGateway(config, { env, logger, instanceId: "gw-a" });
    let second: Gateway | null = createGateway(config, { env, logger, instanceId: "gw-b" });
    await Promise.all([gateway.ready, second.ready]);
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

      // Charts have axes: a unit, a scale from 0, and time labels in seconds before now.
      const axes = await page.evaluate<string[]>(
        `Array.from(${cardSelector("users")}.querySelectorAll("svg.chart")).map((chart) =>
          Array.from(chart.querySelectorAll("text")).map((t) => t.textContent).join(" "))`,
      );
      assert.equal(axes.length, 3);
      assert.match(axes[0], /^0 \S+ \S+ -120 s -60 s now req\/s$/);
      assert.match(axes[1], /^0% 50% 100% -120 s -60 s now %$/);
      assert.match(axes[2], /^0 \S+ \S+ -120 s -60 s now ms$/);
      assert.match(
        await page.evaluate<string>(
          `${cardSelector("users")}.querySelector("svg.chart").getAttribute("aria-label")`,
        ),
        /over the last 120 seconds, scale 0 to \d+ req\/s/,
      );
      // The fleet panel: both instances alive by heartbeat, this one named as such.
      await waitUntil(page, `document.querySelectorAll("#fleet-rows tr").length === 2`);
      assert.deepEqual((await fleetRow(page, "gw-a")).slice(0, 3), [
        "gw-a (this instance)",
        "this instance",
        "shared (fleet breakers in KV)",
      ]);
      const other = await fleetRow(page, "gw-b");
      assert.match(other[1], /^alive, \d+ s ago$/);
      assert.equal(other[2], "shared");
      assert.match(await page.locator("#fleet-summary").innerText(), /^2 alive/);
      // A quiet service's timeline says it is empty (once read), not "Loading…".
      await waitUntil(
        page,
        `${
          cardSelector("users")
        }.querySelector(".events").textContent.startsWith("No transitions")`,
      );
      // Without a health check, an upstream in rotation says so (and that nothing ejects it).
      assert.match(
        await cardText(page, "users", ".upstreams li"),
        /in rotation.*no health check: not ejected, no failure seen/,
      );

      // The upstream starts failing: one failure through this instance, the rest through the
      // other one; the fleet's breaker opens and the page follows without reload.
      failing = true;
      assert.equal(await send("/api/orders/fail"), 500);
      for (let i = 0; i < 3; i++) {
        const response = await second.app.request("http://gw.test/api/orders/fail");
        await response.body?.cancel();
      }
      await waitForState(page, "orders", "open");
      // This instance's upstream says what happened to it, though nothing took it out.
      assert.match(
        await cardText(page, "orders", ".upstreams li"),
        /no health check: not ejected, last 500 at \d\d:\d\d:\d\d/,
      );
      // The window restarts at the trip; the card shows the count that tripped it instead,
      // and which instance of the fleet did (from the audit timeline in KV).
      const trip = ((await (await fetch(adminUrl + "/admin/audit?service=orders")).json())
        .entries as AuditEntry[]).find((entry) => entry.kind === "trip");
      assert.ok(trip !== undefined, "the trip is in the fleet's timeline");
      // At least the threshold: a failure of one instance may still be on its way to the other
      // when that one counts its own last one (see "Overshoot, bounded" in the README).
      const failures = trip.failures!;
      assert.ok(failures >= 3 && failures <= 4, `${failures}`);
      const tripper = trip.instanceId === "gw-a" ? "gw-a (this instance)" : trip.instanceId;
      await waitUntil(
        page,
        `${cardSelector("orders")}.querySelector(".why").textContent.startsWith("Tripped after")`,
      );
      assert.match(
        await cardText(page, "orders", ".why"),
        new RegExp(
          `^Tripped after ${failures} failures at \\d\\d:\\d\\d:\\d\\d by instance ${
            tripper.replace(/[()]/g, "\\$&")
          }\\.$`,
        ),
      );
      assert.ok(
        (await cardText(page, "orders", "dl")).includes(
          `Tripped after${failures} failures (threshold 3)`,
        ),
      );
      assert.match(await cardText(page, "orders", ".events li"), /^\d\d:\d\d:\d\dtripped/);
      assert.ok((await cardText(page, "orders", ".events")).includes(`after ${failures} failures`));
      await waitUntil(
        page,
        `document.querySelector(${
          JSON.stringify(`#fleet-rows tr[data-instance="${trip.instanceId}"]`)
        }).lastChild.textContent === "orders"`,
      );
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
      await page.locator("#token-name").fill("carol");
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
      // The forced change is in the fleet's timeline with its caller label, and on the card.
      await waitUntil(
        page,
        `${cardSelector("orders")}.querySelector(".events li")?.dataset.kind === "force_close"`,
      );
      assert.match(
        await cardText(page, "orders", ".events li"),
        /forced closed \(open → forced closed\) by carol, instance gw-a \(this instance\)/,
      );
      assert.match(
        await cardText(page, "orders", ".why"),
        /^Forced closed by carol at \d\d:\d\d:\d\d through instance gw-a/,
      );
      const [forced] = (await (await fetch(adminUrl + "/admin/audit?limit=1")).json()).entries;
      assert.deepEqual([forced.kind, forced.by, forced.instanceId], [
        "force_close",
        "carol",
        "gw-a",
      ]);
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

      // The other instance stops cleanly: the fleet panel says so (not "silent").
      await second.close();
      second = null;
      await waitUntil(
        page,
        `document.querySelector('#fleet-rows tr[data-instance="gw-b"]')?.dataset.status === "stopped"`,
      );
      assert.match((await fleetRow(page, "gw-b"))[1], /^stopped at \d\d:\d\d:\d\d$/);

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
      await second?.close();
      await Deno.remove(kvDir, { recursive: true });
      await healthy.shutdown();
      await flaky.shutdown();
    }
    // The fleet panel's reads come every 3 s (KV), so waiting for them adds a few seconds.
    assert.ok(performance.now() - started < 40_000, "the browser test should stay under 40 s");
  },
});
