/**
 * The fallback module (path re-rooting, the static answer, the plan) and the request path's use
 * of it, against a scripted upstream client per service and breakers that admit or refuse as
 * told (the real fleet breaker and real upstreams: tests/e2e/fallback_test.ts).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Admission, AttemptOutcome } from "../../src/breaker/types.ts";
import type { StaticFallback } from "../../src/config/fallback_schema.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { buildService, type BuiltService } from "../../src/gateway/build_service.ts";
import type { AdmissionControl } from "../../src/proxy/admission.ts";
import type { DeadlineScheduler } from "../../src/proxy/deadlines.ts";
import {
  FALLBACK_HEADER,
  markFallback,
  planFallback,
  prepareStaticFallback,
  reroot,
  rerouted,
  staticFallbackResponse,
} from "../../src/proxy/fallback.ts";
import { createLimiter } from "../../src/proxy/limiter.ts";
import { createRequestPath, type ServedRequest } from "../../src/proxy/request_path.ts";
import type { ServiceRuntime } from "../../src/proxy/service_runtime.ts";
import type { UpstreamClient, UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { buildRouteTable } from "../../src/routing/route_table.ts";
import { bytesOf, fieldsOf } from "../../src/server/static_body.ts";

Deno.test("reroot: the part below one prefix goes below the other", () => {
  assert.equal(reroot("/api/orders/7", "/api/orders", "/cache"), "/cache/7");
  assert.equal(reroot("/api/orders", "/api/orders", "/cache"), "/cache");
  assert.equal(reroot("/api/orders/", "/api/orders", "/cache"), "/cache/");
  assert.equal(reroot("/api/orders/7", "/api/orders", "/"), "/7");
  assert.equal(reroot("/api/orders", "/api/orders", "/"), "/");
  assert.equal(reroot("/x/y", "/", "/cache"), "/cache/x/y");
  assert.equal(reroot("/", "/", "/cache"), "/cache/");
  assert.equal(reroot("/", "/", "/"), "/");
});

/** Two services' runtimes from config (only `config` is read by the routing functions). */
function runtimes(orders: Record<string, unknown>, cache: Record<string, unknown>) {
  const config = parseConfig({
    services: {
      orders: { prefix: "/api/orders", upstreams: ["http://o.test"], ...orders },
      cache: { prefix: "/cache", upstreams: ["http://c.test"], ...cache },
    },
  });
  const runtime = (name: string) => ({ config: config.services[name] }) as ServiceRuntime;
  return { orders: runtime("orders"), cache: runtime("cache") };
}

Deno.test("rerouted: the fallback's prefix handling applies, the query is kept", () => {
  const kept = runtimes({ stripPrefix: true }, {});
  assert.deepEqual(
    rerouted(
      { target: kept.orders, path: "/api/orders/7", pathAndQuery: "/7?x=1&y" },
      kept.cache,
    ),
    { target: kept.cache, path: "/cache/7", pathAndQuery: "/cache/7?x=1&y" },
  );
  const stripped = runtimes({}, { stripPrefix: true });
  assert.deepEqual(
    rerouted(
      { target: stripped.orders, path: "/api/orders", pathAndQuery: "/api/orders" },
      stripped.cache,
    ),
    { target: stripped.cache, path: "/cache", pathAndQuery: "/" },
  );
});

Deno.test("planFallback: none, static, service, and a service this gateway lacks", () => {
  const none = runtimes({}, {});
  const routed = (target: ServiceRuntime) => ({
    target,
    path: "/api/orders/1",
    pathAndQuery: "/api/orders/1",
  });
  assert.equal(planFallback(routed(none.orders), () => none.cache), null);

  const fixed = runtimes({ fallback: { status: 200, body: "[]" } }, {});
  assert.deepEqual(planFallback(routed(fixed.orders), undefined), {
    kind: "static",
    label: "static",
    answer: { status: 200, headers: {}, body: "[]" },
  });

  const other = runtimes({ fallback: { service: "cache" } }, {});
  const plan = planFallback(
    routed(other.orders),
    (name) => name === "cache" ? other.cache : undefined,
  );
  assert.equal(plan?.kind, "service");
  assert.equal(plan.label, "service=cache");
  assert.equal(plan.kind === "service" && plan.routed.pathAndQuery, "/cache/1");
  assert.equal(planFallback(routed(other.orders), () => undefined), null);
  assert.equal(planFallback(routed(other.orders), undefined), null);
});

Deno.test("staticFallbackResponse: status, headers, body, request id; bodyless statuses", async () => {
  const response = staticFallbackResponse(
    {
      status: 200,
      headers: { "Content-Type": "application/json", "x-a": "1" },
      body: '{"items":[]}',
    },
    "req-9",
  );
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "application/json");
  assert.equal(response.headers.get("x-a"), "1");
  assert.equal(response.headers.get("x-request-id"), "req-9");
  assert.equal(await response.text(), '{"items":[]}');

  const plain = staticFallbackResponse({ status: 503, headers: {}, body: "later" }, "r");
  assert.equal(plain.headers.get("content-type"), "text/plain;charset=UTF-8");
  assert.equal(await plain.text(), "later");

  const empty = staticFallbackResponse({ status: 204, headers: {}, body: "" }, "r");
  assert.equal(empty.status, 204);
  assert.equal(empty.body, null);

  assert.equal(markFallback(empty, "static").headers.get(FALLBACK_HEADER), "static");
});

Deno.test("staticFallbackResponse: bytes and fields built once per config, not per request", async () => {
  const config = () =>
    parseConfig({
      services: {
        orders: {
          prefix: "/api/orders",
          upstreams: ["http://o.test"],
          fallback: { status: 200, headers: { "X-A": "1" }, body: "[]" },
        },
      },
    }).services.orders.fallback as StaticFallback;
  const loaded = config();
  const first = staticFallbackResponse(loaded, "r1");
  const second = staticFallbackResponse(loaded, "r2");
  // The server writes these bytes as they are: one array for every request of this config.
  assert.ok(bytesOf(first) !== null);
  assert.equal(bytesOf(first), bytesOf(second));
  assert.equal(bytesOf(first), prepareStaticFallback(loaded).bytes);
  assert.deepEqual(fieldsOf(second), [
    ["content-type", "text/plain;charset=UTF-8"],
    ["x-a", "1"],
    ["x-request-id", "r2"],
  ]);
  // One request's id stays out of the prepared fields the next request starts from.
  assert.deepEqual(prepareStaticFallback(loaded).fields.map(([name]) => name), [
    "content-type",
    "x-a",
  ]);
  // A reload parses a new config: its answer is prepared anew.
  const reloaded = config();
  assert.notEqual(prepareStaticFallback(reloaded), prepareStaticFallback(loaded));
  assert.equal(await first.text(), "[]");
  assert.equal(await second.text(), "[]");
});

// --- The request path with fallbacks ----------------------------------------------------------

const OPEN: Admission = { allowed: false, retryAfterMs: 30_000, state: "open" };
const ADMITTED: Admission = { allowed: true, probe: false, generation: 1 };

/** Per-service admissions, and every outcome recorded, by service. */
function breakerOf(admissions: Record<string, Admission>) {
  const records: Array<{ service: string; outcome: AttemptOutcome }> = [];
  const breaker: AdmissionControl = {
    admit: (service) => admissions[service] ?? ADMITTED,
    record: (service, _admission, outcome) => records.push({ service, outcome }),
  };
  return { breaker, records };
}

/** A client that answers with `answer` and keeps each request with its body read. */
function recordingClient(answer: () => Response) {
  const sent: Array<UpstreamRequest & { text: string }> = [];
  const client: UpstreamClient = {
    async send(request) {
      const body = request.body;
      const text = body === null
        ? ""
        : body instanceof Uint8Array
        ? new TextDecoder().decode(body)
        : await new Response(body).text();
      sent.push({ ...request, text });
      return answer();
    },
    close() {},
  };
  return { client, sent };
}

const noDeadlines: DeadlineScheduler = {
  schedule: () => () => {},
  pending: () => 0,
  close: () => {},
};

function gatewayPath(
  services: Record<string, Record<string, unknown>>,
  admissions: Record<string, Admission>,
  answers: Record<string, () => Response> = {},
) {
  const config = parseConfig({ services });
  const built = new Map<string, BuiltService>();
  const sent: Record<string, Array<UpstreamRequest & { text: string }>> = {};
  for (const service of Object.values(config.services)) {
    const recording = recordingClient(answers[service.name] ?? (() => new Response(service.name)));
    sent[service.name] = recording.sent;
    built.set(service.name, buildService(service, { client: recording.client, now: () => 0 }));
  }
  const { breaker, records } = breakerOf(admissions);
  const served: ServedRequest[] = [];
  const fallbacks: string[] = [];
  const rejected: string[] = [];
  const path = createRequestPath({
    match: buildRouteTable(
      [...built.values()].map((service) => ({ prefix: service.config.prefix, target: service })),
    ),
    escapedSlashes: "reject",
    maxBodyBytes: 1 << 20,
    breaker,
    globalLimiter: createLimiter({ limit: 100, maxPending: 0, queueTimeoutMs: 1000 }),
    deadlines: noDeadlines,
    now: () => 0,
    random: () => 0.5,
    draining: () => false,
    observer: {
      clientAttempt: () => {},
      rejected: (service, code) => rejected.push(`${service}:${code}`),
      retry: () => {},
      fallback: (service, kind) => fallbacks.push(`${service}:${kind}`),
    },
    serviceByName: (name) => built.get(name),
    tracing: { enabled: false, startServer: () => null },
    onServed: (record) => served.push(record),
  });
  const handle = (target: string, init: RequestInit = {}) =>
    path.handle({ raw: new Request(`http://gw.test${target}`, init), requestId: "req-1" });
  return { path, handle, sent, records, served, fallbacks, rejected };
}

const UP = ["http://upstream.test"];

Deno.test("request path: a static fallback answers while open; the open breaker hears nothing", async () => {
  const gw = gatewayPath({
    orders: {
      prefix: "/api/orders",
      upstreams: UP,
      fallback: { status: 200, headers: { "content-type": "application/json" }, body: "[]" },
    },
  }, { orders: OPEN });
  const response = await gw.handle("/api/orders/7");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get(FALLBACK_HEADER), "static");
  assert.equal(response.headers.get("x-request-id"), "req-1");
  assert.equal(response.headers.get("x-breakwater-error"), null);
  assert.equal(await response.text(), "[]");
  assert.deepEqual(gw.sent.orders, []);
  assert.deepEqual(gw.records, [], "neither a success nor a failure for the open breaker");
  assert.deepEqual(gw.fallbacks, ["orders:static"]);
  assert.deepEqual(gw.rejected, []);
  assert.equal(gw.served[0].fallback, "static");
  assert.equal(gw.served[0].service?.config.name, "orders");
  assert.equal(gw.served[0].error, undefined);
  assert.equal(gw.served[0].upstream, null);
});

Deno.test("markFallback: for the own server the label joins the pairs (no Headers filled), else the Headers", () => {
  const answer = { status: 200, headers: { "X-Breakwater-Fallback": "stale" }, body: "[]" };
  const paired = markFallback(staticFallbackResponse(answer, "r"), "static", true);
  // Still pairs: the own server writes them as they are; an earlier label (any case) replaced.
  assert.deepEqual(fieldsOf(paired), [
    ["content-type", "text/plain;charset=UTF-8"],
    ["x-request-id", "r"],
    [FALLBACK_HEADER, "static"],
  ]);
  assert.equal(paired.headers.get(FALLBACK_HEADER), "static");
  // Another server reads the Response's own header list: filled, the pairs gone.
  const filled = markFallback(staticFallbackResponse(answer, "r"), "static");
  assert.equal(fieldsOf(filled), null);
  assert.equal(filled.headers.get(FALLBACK_HEADER), "static");
});

Deno.test("request path: through the own server a static fallback stays pairs with its label", async () => {
  const gw = gatewayPath({
    orders: {
      prefix: "/api/orders",
      upstreams: UP,
      fallback: { status: 200, headers: { "content-type": "application/json" }, body: "[]" },
    },
  }, { orders: OPEN });
  const response = await gw.path.handle({
    raw: new Request("http://gw.test/api/orders/7"),
    requestId: "req-2",
    facts: { target: "/api/orders/7", method: "GET", body: null },
  });
  const fields = fieldsOf(response);
  assert.ok(fields !== null, "the server gets the prepared pairs, not a filled Headers");
  assert.deepEqual(fields.find(([name]) => name === FALLBACK_HEADER), [FALLBACK_HEADER, "static"]);
  assert.equal(await response.text(), "[]");
});

Deno.test("request path: a service fallback gets method, body and the re-rooted path", async () => {
  const gw = gatewayPath({
    orders: { prefix: "/api/orders", upstreams: UP, fallback: { service: "cache" } },
    cache: { prefix: "/cache", upstreams: UP, stripPrefix: true },
  }, { orders: OPEN });
  const response = await gw.handle("/api/orders/7?full=1", {
    method: "POST",
    body: "payload",
    headers: { "content-type": "text/plain", "content-length": "7" },
  });
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "cache");
  assert.equal(response.headers.get(FALLBACK_HEADER), "service=cache");
  assert.deepEqual(gw.sent.orders, []);
  assert.equal(gw.sent.cache.length, 1);
  assert.equal(gw.sent.cache[0].method, "POST");
  assert.equal(gw.sent.cache[0].pathAndQuery, "/7?full=1");
  assert.equal(gw.sent.cache[0].text, "payload");
  // Only the fallback service's breaker hears the attempt.
  assert.deepEqual(gw.records.map((record) => [record.service, record.outcome.status]), [
    ["cache", 200],
  ]);
  assert.deepEqual(gw.fallbacks, ["orders:service"]);
  assert.equal(gw.served[0].fallback, "service=cache");
  assert.equal(gw.served[0].upstream, UP[0]);
});

Deno.test("request path: a fallback service that is open answers its own 503, one hop only", async () => {
  const gw = gatewayPath({
    orders: { prefix: "/api/orders", upstreams: UP, fallback: { service: "cache" } },
    cache: { prefix: "/cache", upstreams: UP, fallback: { service: "stock" } },
    stock: { prefix: "/stock", upstreams: UP },
  }, { orders: OPEN, cache: { allowed: false, retryAfterMs: 2000, state: "half_open" } });
  const response = await gw.handle("/api/orders/7");
  assert.equal(response.status, 503);
  assert.equal(response.headers.get("x-breakwater-error"), "breaker_open");
  assert.equal(response.headers.get(FALLBACK_HEADER), "service=cache");
  assert.equal(response.headers.get("retry-after"), "2");
  const problem = await response.json();
  assert.equal(problem.service, "cache");
  assert.deepEqual(gw.sent.stock, [], "cache's own fallback is not followed");
  assert.deepEqual(gw.rejected, ["cache:breaker_open"]);
  assert.equal(gw.served[0].error, "breaker_open");
  assert.equal(gw.served[0].fallback, "service=cache");
});

Deno.test("request path: an upstream's own 5xx and no fallback configured stay as they were", async () => {
  const gw = gatewayPath(
    {
      orders: {
        prefix: "/api/orders",
        upstreams: UP,
        fallback: { status: 200, body: "fallback" },
      },
      plain: { prefix: "/plain", upstreams: UP },
    },
    { plain: OPEN },
    { orders: () => new Response("down", { status: 503 }) },
  );
  const upstream503 = await gw.handle("/api/orders/1");
  assert.equal(upstream503.status, 503);
  assert.equal(await upstream503.text(), "down");
  assert.equal(upstream503.headers.get(FALLBACK_HEADER), null);
  const open = await gw.handle("/plain/1");
  assert.equal(open.status, 503);
  assert.equal(open.headers.get("x-breakwater-error"), "breaker_open");
  assert.equal(open.headers.get(FALLBACK_HEADER), null);
  await open.body?.cancel();
  assert.deepEqual(gw.fallbacks, []);
});
