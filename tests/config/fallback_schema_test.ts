/**
 * `services.<name>.fallback`: both shapes, every refusal naming its field, and the checks
 * across services (unknown service, itself, cycles).
 */
import assert from "node:assert/strict";
import { fallbackProblems, MAX_FALLBACK_BODY_BYTES } from "../../src/config/fallback_schema.ts";
import { ConfigError, formatProblem, parseConfig } from "../../src/config/schema.ts";

const UP = ["http://127.0.0.1:9001"];

function withFallbacks(fallbacks: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const services: Record<string, unknown> = {
    orders: { prefix: "/api/orders", upstreams: UP },
    cache: { prefix: "/cache", upstreams: UP },
    stock: { prefix: "/stock", upstreams: UP },
    ...extra,
  };
  for (const [name, fallback] of Object.entries(fallbacks)) {
    services[name] = { ...(services[name] as Record<string, unknown>), fallback };
  }
  return { services };
}

function problemLines(input: unknown): string[] {
  try {
    parseConfig(input);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems.map(formatProblem);
  }
  throw new Error("expected a ConfigError");
}

Deno.test("fallback: null by default", () => {
  const config = parseConfig(withFallbacks({}));
  assert.equal(config.services.orders.fallback, null);
});

Deno.test("fallback: a service fallback parses to its name", () => {
  const config = parseConfig(withFallbacks({ orders: { service: "cache" } }));
  assert.deepEqual(config.services.orders.fallback, { service: "cache" });
});

Deno.test("fallback: a static answer gets empty headers and body filled", () => {
  const config = parseConfig(withFallbacks({
    orders: { status: 200, headers: { "content-type": "application/json" }, body: '{"items":[]}' },
    cache: { status: 503 },
  }));
  assert.deepEqual(config.services.orders.fallback, {
    status: 200,
    headers: { "content-type": "application/json" },
    body: '{"items":[]}',
  });
  assert.deepEqual(config.services.cache.fallback, { status: 503, headers: {}, body: "" });
});

Deno.test("fallback: neither or both of service and status", () => {
  assert.deepEqual(problemLines(withFallbacks({ orders: {} })), [
    'services.orders.fallback: needs "service" (another service to route to) or "status" (a static answer)',
  ]);
  assert.deepEqual(problemLines(withFallbacks({ orders: { service: "cache", status: 200 } })), [
    'services.orders.fallback.status: either "service" (another service) or "status" (a static answer), not both',
  ]);
  assert.deepEqual(
    problemLines(withFallbacks({ orders: { service: "cache", body: "x", headers: {} } })),
    [
      'services.orders.fallback.headers: belongs to a static answer ("status"), not to a service fallback',
      'services.orders.fallback.body: belongs to a static answer ("status"), not to a service fallback',
    ],
  );
  assert.deepEqual(problemLines(withFallbacks({ orders: { status: 200, typo: 1 } })), [
    "services.orders.fallback.typo: unknown key",
  ]);
});

Deno.test("fallback: status range and bodyless statuses", () => {
  assert.match(
    problemLines(withFallbacks({ orders: { status: 101 } }))[0],
    /^services\.orders\.fallback\.status: /,
  );
  assert.match(
    problemLines(withFallbacks({ orders: { status: 600 } }))[0],
    /^services\.orders\.fallback\.status: /,
  );
  assert.deepEqual(problemLines(withFallbacks({ orders: { status: 204, body: "x" } })), [
    "services.orders.fallback.body: must be empty for status 204 (RFC 9110: no content)",
  ]);
  // Empty is fine.
  assert.deepEqual(
    parseConfig(withFallbacks({ orders: { status: 304 } })).services.orders.fallback,
    {
      status: 304,
      headers: {},
      body: "",
    },
  );
});

Deno.test("fallback: the body is bounded in UTF-8 bytes, not characters", () => {
  const atLimit = "x".repeat(MAX_FALLBACK_BODY_BYTES);
  assert.equal(
    (parseConfig(withFallbacks({ orders: { status: 200, body: atLimit } })).services.orders
      .fallback as { body: string }).body.length,
    MAX_FALLBACK_BODY_BYTES,
  );
  // Two bytes each: half as many characters are already over.
  const wide = "é".repeat(MAX_FALLBACK_BODY_BYTES / 2 + 1);
  assert.deepEqual(problemLines(withFallbacks({ orders: { status: 200, body: wide } })), [
    `services.orders.fallback.body: must be at most ${MAX_FALLBACK_BODY_BYTES} bytes (UTF-8)`,
  ]);
});

Deno.test("fallback: header names, values, framing and the gateway's own headers refused", () => {
  const lines = problemLines(withFallbacks({
    orders: {
      status: 200,
      headers: {
        "bad name": "x",
        "Content-Length": "3",
        "Transfer-Encoding": "chunked",
        "x-breakwater-fallback": "no",
        "x-request-id": "no",
        "x-split": "a\r\nb",
        "Cache-Control": "no-store",
        "cache-control": "max-age=1",
      },
    },
  }));
  assert.deepEqual(lines, [
    "services.orders.fallback.headers.bad name: is not a header name (a token, RFC 9110 section 5.1)",
    "services.orders.fallback.headers.Content-Length: is set by the gateway (framing, hop-by-hop or its own header)",
    "services.orders.fallback.headers.Transfer-Encoding: is set by the gateway (framing, hop-by-hop or its own header)",
    "services.orders.fallback.headers.x-breakwater-fallback: is set by the gateway (framing, hop-by-hop or its own header)",
    "services.orders.fallback.headers.x-request-id: is set by the gateway (framing, hop-by-hop or its own header)",
    "services.orders.fallback.headers.x-split: header values may not hold CR, LF or NUL (RFC 9110 section 5.5)",
    "services.orders.fallback.headers.cache-control: is given twice (header names are case-insensitive)",
  ]);
});

Deno.test("fallback: an unknown service, the service itself, and a bad name", () => {
  assert.deepEqual(problemLines(withFallbacks({ orders: { service: "nope" } })), [
    'services.orders.fallback.service: names no service ("nope" is not under services)',
  ]);
  assert.deepEqual(problemLines(withFallbacks({ orders: { service: "orders" } })), [
    "services.orders.fallback.service: names this service itself; a fallback is another service",
  ]);
  assert.match(
    problemLines(withFallbacks({ orders: { service: "a b" } }))[0],
    /^services\.orders\.fallback\.service: must be the name of another service/,
  );
});

Deno.test("fallback: a service that failed validation is not called unknown", () => {
  const lines = problemLines(withFallbacks({ orders: { service: "cache" } }, {
    cache: { prefix: "/cache", upstreams: [] },
  }));
  assert.deepEqual(lines, ["services.cache.upstreams: needs at least one upstream"]);
});

Deno.test("fallback: cycles are refused on every service in them, chains are not", () => {
  assert.deepEqual(
    problemLines(withFallbacks({ orders: { service: "cache" }, cache: { service: "orders" } })),
    [
      'services.orders.fallback.service: forms a cycle: "orders" -> "cache" -> "orders"',
      'services.cache.fallback.service: forms a cycle: "cache" -> "orders" -> "cache"',
    ],
  );
  assert.deepEqual(
    problemLines(withFallbacks({
      orders: { service: "cache" },
      cache: { service: "stock" },
      stock: { service: "orders" },
    })).length,
    3,
  );
  // A chain that ends, and a service leading into a cycle it is not part of.
  const chain = parseConfig(
    withFallbacks({ orders: { service: "cache" }, cache: { service: "stock" } }),
  );
  assert.deepEqual(chain.services.cache.fallback, { service: "stock" });
  const leading = fallbackProblems({
    a: { fallback: { service: "b" } },
    b: { fallback: { service: "c" } },
    c: { fallback: { service: "b" } },
  }, ["a", "b", "c"]);
  assert.deepEqual(leading.map((problem) => problem.path), [
    "services.b.fallback.service",
    "services.c.fallback.service",
  ]);
});

Deno.test("fallback: not a defaults key", () => {
  const lines = problemLines({
    defaults: { fallback: { status: 503 } },
    services: { orders: { prefix: "/api/orders", upstreams: UP } },
  });
  assert.deepEqual(lines, ["defaults.fallback: unknown key"]);
});

Deno.test("fallback: the README's example is a valid config", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("\n## Fallback while open\n"));
  const block = /```json\n([\s\S]*?)\n```/.exec(section);
  assert.ok(block, "the section has a JSON example");
  const config = parseConfig(JSON.parse(block[1]));
  assert.deepEqual(config.services.orders.fallback, { service: "orders-cache" });
  assert.equal((config.services.catalog.fallback as { status: number }).status, 200);
});
