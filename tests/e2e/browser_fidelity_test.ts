/**
 * A real browser through the gateway: Debian's Chromium (headless, driven by playwright-core)
 * loads a page from an upstream through a gateway process and fetches gzip and brotli answers,
 * for each upstream client. Every browser asks for compression, so this is what users see: the
 * bytes must decode to exactly what the upstream meant.
 *
 * Skipped with a message where /usr/bin/chromium is missing (.ci/run installs it via apt).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { brotliCompressSync, gzipSync } from "node:zlib";
// Inline specifier: a test-only dependency, as in dashboard_browser_test.ts.
// deno-lint-ignore no-import-prefix
import type { Browser } from "npm:playwright-core@1.65.1";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";

const CHROMIUM = "/usr/bin/chromium";
const missing = (() => {
  try {
    return !Deno.statSync(CHROMIUM).isFile;
  } catch {
    return true;
  }
})();
if (missing) console.warn(`browser fidelity test skipped: ${CHROMIUM} not found`);

/** playwright-core, with Node's never-throwing `existsSync` (see dashboard_browser_test.ts). */
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

const DATA = { items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}` })) };
const JSON_BYTES = new TextEncoder().encode(JSON.stringify(DATA));

Deno.test({
  name: "Chromium through the gateway decodes gzip and br answers from both upstream clients",
  ignore: missing,
  sanitizeResources: false, // playwright's pipes to the browser outlive the test's own handles
  sanitizeOps: false,
  async fn() {
    const upstream = startUpstream((request) => {
      const path = new URL(request.url).pathname;
      if (path.endsWith("/page")) {
        return new Response("<!doctype html><title>through the gateway</title><p>ok</p>", {
          headers: { "content-type": "text/html; charset=utf-8" },
        });
      }
      const coding = path.endsWith(".br") ? "br" : "gzip";
      const body = coding === "br" ? brotliCompressSync(JSON_BYTES) : gzipSync(JSON_BYTES);
      return new Response(new Uint8Array(body), {
        headers: { "content-type": "application/json", "content-encoding": coding },
      });
    });
    const gw = await startGatewayProcess({
      services: {
        h1: { prefix: "/h1", upstreams: [upstream.origin], upstreamClient: "http1" },
        fe: { prefix: "/fe", upstreams: [upstream.origin], upstreamClient: "fetch" },
      },
    });
    let browser: Browser | undefined;
    try {
      const { chromium } = await loadPlaywright();
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        timeout: 30_000,
      });
      const page = await browser.newPage();
      for (const prefix of ["/h1", "/fe"]) {
        const response = await page.goto(`${gw.url}${prefix}/page`, { timeout: 10_000 });
        assert.equal(response?.status(), 200, prefix);
        assert.equal(await page.title(), "through the gateway");
        for (const file of ["data.gzip", "data.br"]) {
          const result = await page.evaluate(
            `fetch(${JSON.stringify(`${prefix}/${file}`)}).then(async (r) => ({
              status: r.status,
              encoding: r.headers.get("content-encoding"),
              json: await r.json(),
            }))`,
          ) as { status: number; encoding: string | null; json: typeof DATA };
          assert.equal(result.status, 200, `${prefix}/${file}`);
          assert.deepEqual(result.json, DATA, `${prefix}/${file}`);
          if (prefix === "/h1") {
            // Passed on compressed, labelled as the upstream labelled it.
            assert.equal(result.encoding, file.endsWith(".br") ? "br" : "gzip");
          }
        }
      }
    } finally {
      await browser?.close();
      await gw.stop();
      await upstream.close();
    }
  },
});
