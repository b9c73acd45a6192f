/**
 * Fallback while open, through a real gateway process, real upstreams and its own KV file:
 * breakers tripped by upstreams answering 503, then a static answer, another service (method,
 * body and path as sent), that service's own 503 once it is open too, the counter on /metrics,
 * the access log, and a reload that adds and removes a fallback.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor } from "../_helpers/wait.ts";
import { attributesOf, startOtlpReceiver } from "../telemetry/_otlp_receiver.ts";
import { parsePrometheusText, samplesWhere } from "../telemetry/_prom_parser.ts";

const FALLBACK = "x-breakwater-fallback";

/** One exchange, body read, within the test's fetch bound. */
async function exchange(url: string, init: RequestInit = {}) {
  const response = await fetch(url, bounded(init));
  return { status: response.status, headers: response.headers, text: await response.text() };
}

/** Sends until the answer carries the fallback header `label` (the breaker has opened). */
async function untilFallback(url: string, label: string): Promise<void> {
  await waitFor(async () => (await exchange(url)).headers.get(FALLBACK) === label, {
    what: `${url} answered by fallback ${label}`,
    intervalMs: 20,
  });
}

/** Sends until the gateway refuses with 503 `breaker_open` (the breaker has opened). */
async function untilBreakerOpen(url: string): Promise<void> {
  await waitFor(
    async () => (await exchange(url)).headers.get("x-breakwater-error") === "breaker_open",
    { what: `${url} refused breaker_open`, intervalMs: 20 },
  );
}

async function fallbackCount(gateway: GatewayProcess, service: string, kind: string) {
  const text = (await exchange(`${gateway.adminUrl}/metrics`)).text;
  const samples = samplesWhere(
    parsePrometheusText(text),
    "breakwater_fallback_responses_total",
    "breakwater_fallback_responses_total",
    { breakwater_service: service, kind },
  );
  return samples.reduce((sum, sample) => sum + sample.value, 0);
}

const OPENS_ON_FIRST_FAILURE = { failureThreshold: 1, recoveryTimeoutMs: 60_000 };

Deno.test("fallback: static and service answers while open, the fallback's own 503, metrics and log", async (t) => {
  const down = startUpstream(() => new Response("down", { status: 503 }));
  let cacheFailing = false;
  const cache = startUpstream(async (request) => {
    if (cacheFailing) return new Response("cache down", { status: 503 });
    const url = new URL(request.url);
    return Response.json({
      method: request.method,
      pathAndQuery: url.pathname + url.search,
      body: await request.text(),
      contentType: request.headers.get("content-type"),
    });
  });
  const receiver = startOtlpReceiver();
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess({
      telemetry: { prometheus: true, otlp: { endpoint: receiver.baseUrl, intervalMs: 60_000 } },
      services: {
        catalog: {
          prefix: "/api/catalog",
          upstreams: [down.origin],
          breaker: OPENS_ON_FIRST_FAILURE,
          fallback: {
            status: 200,
            headers: { "content-type": "application/json", "cache-control": "no-store" },
            body: '{"items":[]}',
          },
        },
        orders: {
          prefix: "/api/orders",
          upstreams: [down.origin],
          breaker: OPENS_ON_FIRST_FAILURE,
          fallback: { service: "cache" },
        },
        cache: {
          prefix: "/cache",
          stripPrefix: true,
          upstreams: [cache.origin],
          breaker: OPENS_ON_FIRST_FAILURE,
        },
      },
    }, { env: { OTEL_BSP_SCHEDULE_DELAY: "50" } });
    const gw = gateway;

    await t.step(
      "the upstream's own 503 is not a fallback; once open, the static answer is",
      async () => {
        const first = await exchange(`${gw.url}/api/catalog/1`);
        assert.equal(first.status, 503);
        assert.equal(first.text, "down");
        assert.equal(first.headers.get(FALLBACK), null);
        await untilFallback(`${gw.url}/api/catalog/1`, "static");
        const reached = down.requests.length;
        const answer = await exchange(`${gw.url}/api/catalog/2?q=x`);
        assert.equal(answer.status, 200);
        assert.equal(answer.text, '{"items":[]}');
        assert.equal(answer.headers.get("content-type"), "application/json");
        assert.equal(answer.headers.get("cache-control"), "no-store");
        assert.equal(answer.headers.get(FALLBACK), "static");
        assert.ok(answer.headers.get("x-request-id"));
        assert.equal(down.requests.length, reached, "the open service's upstream is spared");
        // HEAD gets the head only (the gateway's server drops the body).
        const head = await exchange(`${gw.url}/api/catalog/3`, { method: "HEAD" });
        assert.equal(head.status, 200);
        assert.equal(head.text, "");
        assert.equal(head.headers.get(FALLBACK), "static");
      },
    );

    await t.step(
      "a service fallback gets the method, the body and the path re-rooted",
      async () => {
        await untilFallback(`${gw.url}/api/orders/0`, "service=cache");
        const reached = down.requests.length;
        const answer = await exchange(`${gw.url}/api/orders/7?full=1`, {
          method: "POST",
          headers: { "content-type": "text/plain" },
          body: "order 7, please",
        });
        assert.equal(answer.status, 200);
        assert.equal(answer.headers.get(FALLBACK), "service=cache");
        assert.deepEqual(JSON.parse(answer.text), {
          method: "POST",
          pathAndQuery: "/7?full=1", // under /cache, whose prefix is stripped
          body: "order 7, please",
          contentType: "text/plain",
        });
        assert.equal(down.requests.length, reached);
        // Access log lines are written in batches: wait for this one.
        const find = () =>
          gw.lines.find((line) =>
            line.msg === "request" && line.fallback === "service=cache" && line.status === 200
          );
        await waitFor(() => find() !== undefined, {
          what: "the access log says the fallback answered",
        });
        const logged = find()!;
        assert.equal(logged.service, "orders");
        assert.equal(logged.upstream, cache.origin);
        assert.ok(
          gw.lines.some((line) => line.msg === "request" && line.fallback === "static"),
          "the static answer is logged as one too (written before the line waited for)",
        );
      },
    );

    await t.step("/metrics counts fallback answers by service and kind", async () => {
      await waitFor(async () => await fallbackCount(gw, "catalog", "static") >= 3, {
        what: "catalog static fallbacks counted",
      });
      assert.ok(await fallbackCount(gw, "orders", "service") >= 2);
      assert.equal(await fallbackCount(gw, "cache", "service"), 0);
    });

    await t.step("the server span records the fallback", async () => {
      const fallbackOf = (label: string) =>
        receiver.spans().find((span) =>
          span.kind === 2 && attributesOf(span.attributes)["breakwater.fallback"] === label
        );
      await receiver.waitUntil(
        () => fallbackOf("static") !== undefined && fallbackOf("service=cache") !== undefined,
        5000,
        "server spans with breakwater.fallback",
      );
      const span = attributesOf(fallbackOf("service=cache")!.attributes);
      // The span is the owning service's; the attempt under it went to the fallback's upstream.
      assert.equal(span["breakwater.service"], "orders");
      assert.equal(span["http.route"], "/api/orders");
      assert.equal(span["http.response.status_code"], 200);
    });

    await t.step("a fallback service whose own breaker is open answers its own 503", async () => {
      cacheFailing = true;
      await untilBreakerOpen(`${gw.url}/cache/direct`);
      const reachedCache = cache.requests.length;
      const reachedDown = down.requests.length;
      const answer = await exchange(`${gw.url}/api/orders/8`);
      assert.equal(answer.status, 503);
      assert.equal(answer.headers.get("x-breakwater-error"), "breaker_open");
      assert.equal(answer.headers.get(FALLBACK), "service=cache");
      assert.equal(JSON.parse(answer.text).service, "cache");
      assert.equal(cache.requests.length, reachedCache);
      assert.equal(down.requests.length, reachedDown);
    });
  } finally {
    await closeAll({
      gateway: gateway === null ? null : { close: async () => void await gateway!.stop() },
      down,
      cache,
      receiver,
    });
  }
});

const TOKEN = "fallback-reload-token";

/** The config file the process was started with (from its command line). */
function configPathOf(gateway: GatewayProcess): string {
  // Deno gates /proc/<pid> behind --allow-all (`deno task test` grants less); `cat` reads it.
  const cmdline = new TextDecoder().decode(
    new Deno.Command("cat", { args: [`/proc/${gateway.child.pid}/cmdline`] }).outputSync().stdout,
  ).split("\0");
  return cmdline[cmdline.indexOf("--config", 2) + 1];
}

async function reloadWith(gateway: GatewayProcess, services: Record<string, unknown>) {
  const path = configPathOf(gateway);
  const config = JSON.parse(await Deno.readTextFile(path));
  await Deno.writeTextFile(path, JSON.stringify({ ...config, services }));
  const response = await exchange(`${gateway.adminUrl}/admin/reload`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(response.status, 200, response.text);
}

Deno.test("fallback: a reload adds a fallback to an open breaker, and removes it", async () => {
  const down = startUpstream(() => new Response("down", { status: 503 }));
  let gateway: GatewayProcess | null = null;
  const catalog = (fallback?: unknown) => ({
    catalog: {
      prefix: "/api/catalog",
      upstreams: [down.origin],
      breaker: OPENS_ON_FIRST_FAILURE,
      ...(fallback === undefined ? {} : { fallback }),
    },
  });
  try {
    gateway = await startGatewayProcess(
      { services: catalog() },
      { env: { BREAKWATER_ADMIN_TOKEN: TOKEN } },
    );
    const url = `${gateway.url}/api/catalog/1`;
    await untilBreakerOpen(url);

    // The breaker settings did not change, so the open breaker carries over the reload.
    await reloadWith(gateway, catalog({ status: 503, body: "maintenance" }));
    const answered = await exchange(url);
    assert.equal(answered.status, 503);
    assert.equal(answered.text, "maintenance");
    assert.equal(answered.headers.get(FALLBACK), "static");
    assert.equal(answered.headers.get("x-breakwater-error"), null);

    await reloadWith(gateway, catalog());
    const refused = await exchange(url);
    assert.equal(refused.headers.get("x-breakwater-error"), "breaker_open");
    assert.equal(refused.headers.get(FALLBACK), null);

    // A reload that names an unknown service is refused; the running config keeps serving.
    const path = configPathOf(gateway);
    const config = JSON.parse(await Deno.readTextFile(path));
    await Deno.writeTextFile(
      path,
      JSON.stringify({ ...config, services: catalog({ service: "nope" }) }),
    );
    const bad = await exchange(`${gateway.adminUrl}/admin/reload`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.notEqual(bad.status, 200);
    assert.match(bad.text, /services\.catalog\.fallback\.service: names no service/);
    assert.equal((await exchange(url)).headers.get("x-breakwater-error"), "breaker_open");
  } finally {
    await closeAll({
      gateway: gateway === null ? null : { close: async () => void await gateway!.stop() },
      down,
    });
  }
});
