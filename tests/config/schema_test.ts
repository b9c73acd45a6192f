import assert from "node:assert/strict";
import { ConfigError, formatProblem, parseConfig } from "../../src/config/schema.ts";
import { loadConfig } from "../../src/config/load.ts";
import { inFlightCapFor, parseCpuMax, parseMemoryMax } from "../../src/config/cgroup.ts";

const minimal = {
  services: { users: { prefix: "/api/users", upstreams: ["http://127.0.0.1:9001"] } },
};

function problemLines(input: unknown): string[] {
  try {
    parseConfig(input);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems.map(formatProblem);
  }
  throw new Error("expected a ConfigError");
}

Deno.test("every documented default is filled", () => {
  const config = parseConfig(minimal);
  assert.deepEqual(config.listen, {
    hostname: "0.0.0.0",
    port: 8080,
    tls: null,
    redirectToHttps: false,
  });
  assert.equal(config.workers, "auto");
  // Envoy's admin port: 9090 is Prometheus's default.
  assert.deepEqual(config.admin, { hostname: "127.0.0.1", port: 9901 });
  assert.equal(config.kv.path, "./data/breakwater.kv");
  assert.deepEqual(config.limits, {
    maxBodyBytes: 10485760,
    maxConnections: 100,
    headerTimeoutMs: 10000,
    idleTimeoutMs: 60000,
    bodyIdleTimeoutMs: 60000,
    maxClientConnections: 10000,
  });
  assert.equal(config.escapedSlashes, "reject");
  assert.deepEqual(config.shutdown, { drainDelayMs: 0, timeoutMs: 25000 });
  const users = config.services.users;
  assert.equal(users.timeoutMs, 10000);
  assert.equal(users.stripPrefix, false);
  assert.deepEqual(users.pool, {
    maxConnections: 20,
    maxPending: 100,
    queueTimeoutMs: 1000,
    idleTimeoutMs: 30000,
  });
  assert.equal(users.breaker.failureThreshold, 5);
  assert.equal(users.breaker.windowMs, 10000);
  assert.equal(users.breaker.recoveryTimeoutMs, 30000);
  assert.equal(users.breaker.halfOpenProbes, 1);
  assert.deepEqual(users.breaker.failureStatuses, [{ from: 500, to: 599 }]);
  assert.equal(users.breaker.slowCallMs, null);
  assert.deepEqual(
    { ...users.retry },
    { ...users.retry, attempts: 0, baseDelayMs: 50, maxDelayMs: 1000, budgetPercent: 20 },
  );
  assert.equal(users.healthCheck, null);
  assert.equal(users.upstreamClient, "http1");
  assert.equal(users.bodyIdleTimeoutMs, 60000);
  assert.equal(users.maxDecodedBodyBytes, 104857600);
  assert.equal(users.escapedSlashes, "reject");
});

Deno.test("service names that are Object.prototype properties are refused, not dropped", () => {
  for (const name of ["__proto__", "constructor", "hasOwnProperty"]) {
    const text = `{"services":{"${name}":{"prefix":"/a","upstreams":["http://127.0.0.1:1"]}}}`;
    assert.deepEqual(problemLines(JSON.parse(text)), [
      `services.${name}: is a reserved name (every JavaScript object has a property of that name)`,
    ]);
  }
  // As a key inside a service it is an unknown key, not a prototype.
  const nested = JSON.parse(
    '{"services":{"a":{"prefix":"/a","upstreams":["http://127.0.0.1:1"],"__proto__":{"x":1}}}}',
  );
  assert.deepEqual(problemLines(nested), ["services.a.__proto__: unknown key"]);
  // A lookup of a name that is no service finds nothing.
  const config = parseConfig(minimal);
  assert.equal(config.services["constructor"], undefined);
});

Deno.test("escapedSlashes: gateway-wide in defaults, per service, and a $schema key", () => {
  const config = parseConfig({
    $schema: "./breakwater.schema.json",
    defaults: { escapedSlashes: "decode" },
    services: {
      a: { prefix: "/a", upstreams: ["http://127.0.0.1:1"] },
      b: { prefix: "/b", upstreams: ["http://127.0.0.1:2"], escapedSlashes: "keep" },
    },
  });
  assert.equal(config.escapedSlashes, "decode");
  assert.equal(config.services.a.escapedSlashes, "decode");
  assert.equal(config.services.b.escapedSlashes, "keep");
  assert.deepEqual(
    problemLines({ services: { a: { ...minimal.services.users, escapedSlashes: "x" } } }),
    [
      'services.a.escapedSlashes: expected one of "reject"|"decode"|"keep"',
    ],
  );
});

Deno.test("services inherit defaults key by key; their own values win", () => {
  const config = parseConfig({
    defaults: { timeoutMs: 2000, breaker: { failureThreshold: 3, windowMs: 5000 } },
    services: {
      a: { prefix: "/a", upstreams: ["http://127.0.0.1:1"], breaker: { windowMs: 100 } },
      b: { prefix: "/b", upstreams: ["http://127.0.0.1:2"], timeoutMs: 50 },
    },
  });
  assert.equal(config.services.a.timeoutMs, 2000);
  assert.equal(config.services.a.breaker.failureThreshold, 3);
  assert.equal(config.services.a.breaker.windowMs, 100);
  assert.equal(config.services.b.timeoutMs, 50);
  assert.equal(config.services.b.breaker.windowMs, 5000);
});

Deno.test("every problem names its JSON path", () => {
  const lines = problemLines({
    listen: { port: "80" },
    bogus: true,
    services: {
      users: {
        prefix: "api/users",
        upstreams: ["ftp://x", "http://127.0.0.1:1"],
        pool: { maxConnections: 0, extra: 1 },
        breaker: { failureStatuses: "5xx" },
        timeoutMs: -1,
      },
    },
  });
  const paths = lines.map((line) => line.split(":")[0]);
  for (
    const expected of [
      "listen.port",
      "bogus",
      "services.users.prefix",
      "services.users.upstreams[0]",
      "services.users.pool.maxConnections",
      "services.users.pool.extra",
      "services.users.breaker.failureStatuses",
      "services.users.timeoutMs",
    ]
  ) {
    assert.ok(paths.includes(expected), `${expected} missing in:\n${lines.join("\n")}`);
  }
  assert.ok(
    lines.some((line) => line.startsWith("services.users.upstreams[0]: must be an http(s) URL")),
  );
});

Deno.test("plausible mistakes are caught with a clear message", () => {
  const cases: [unknown, string][] = [
    [{}, "services"],
    [{ services: {} }, "services: needs at least one service"],
    [{ services: { a: "x" } }, "services.a: must be an object"],
    [{ services: { a: { prefix: "/a" } } }, "services.a.upstreams"],
    [
      { services: { a: { prefix: "/a", upstreams: [] } } },
      "services.a.upstreams: needs at least one",
    ],
    [
      { services: { a: { prefix: "/a", upstreams: ["http://u:p@h"] } } },
      "services.a.upstreams[0]",
    ],
    [
      {
        services: {
          a: { prefix: "/a", upstreams: ["http://h"] },
          b: { prefix: "/a/", upstreams: ["http://h"] },
        },
      },
      'services.b.prefix: "/a" is already the prefix of service "a"',
    ],
    [{ services: { a: { prefix: "/healthz", upstreams: ["http://h"] } } }, "services.a.prefix"],
    [{ services: { a: { prefix: "/a/../b", upstreams: ["http://h"] } } }, "services.a.prefix"],
    [{ services: { "bad name": { prefix: "/a", upstreams: ["http://h"] } } }, "services.bad name"],
    [{ kv: { path: 7 }, services: minimal.services }, "kv.path"],
    [{ kv: { path: "redis://kv:6379" }, services: minimal.services }, "kv.path: must be a file"],
    [{ kv: { path: "https://" }, services: minimal.services }, "kv.path: must be a file"],
    [
      { telemetry: { otlp: { endpoint: "not a url" } }, services: minimal.services },
      "telemetry.otlp.endpoint",
    ],
    [
      { defaults: { breaker: { failureThreshold: 0 } }, services: minimal.services },
      "failureThreshold",
    ],
    [
      { services: { a: { prefix: "/a", upstreams: ["http://h"], retry: { maxDelayMs: 1 } } } },
      "services.a.retry.maxDelayMs",
    ],
  ];
  for (const [input, expected] of cases) {
    const lines = problemLines(input);
    assert.ok(
      lines.some((line) => line.includes(expected)),
      `${expected} not in:\n${lines.join("\n")}`,
    );
  }
});

Deno.test("a catch-all / prefix is allowed next to the health routes", () => {
  const config = parseConfig({ services: { all: { prefix: "/", upstreams: ["http://h"] } } });
  assert.equal(config.services.all.prefix, "/");
});

Deno.test("PORT overrides listen.port; a bad PORT is a config error", () => {
  const { config } = loadConfig(minimal, { PORT: "0" }, { cpuCores: null, memoryBytes: null });
  assert.equal(config.listen.port, 0);
  assert.throws(
    () => loadConfig(minimal, { PORT: "http" }, { cpuCores: null, memoryBytes: null }),
    ConfigError,
  );
});

Deno.test("container limits cap only the defaults the file left unset", () => {
  const small = { cpuCores: 0.25, memoryBytes: 512 * 1024 * 1024 };
  const capped = loadConfig(minimal, {}, small);
  assert.equal(capped.config.limits.maxConnections, 25);
  assert.equal(capped.config.services.users.pool.maxConnections, 20);
  assert.equal(capped.notes.capped.length, 1);

  const tiny = loadConfig(minimal, {}, { cpuCores: 0.1, memoryBytes: null });
  assert.equal(tiny.config.limits.maxConnections, 10);
  assert.equal(tiny.config.services.users.pool.maxConnections, 10);

  const explicit = loadConfig(
    { ...minimal, limits: { maxConnections: 500 } },
    {},
    { cpuCores: 0.1, memoryBytes: null },
  );
  assert.equal(explicit.config.limits.maxConnections, 500);
});

Deno.test("cgroup files parse", () => {
  assert.equal(parseCpuMax("max 100000\n"), null);
  assert.equal(parseCpuMax("150000 100000\n"), 1.5);
  assert.equal(parseCpuMax("garbage"), null);
  assert.equal(parseMemoryMax("max\n"), null);
  assert.equal(parseMemoryMax("268435456\n"), 268435456);
  assert.equal(inFlightCapFor({ cpuCores: null, memoryBytes: null }), null);
  assert.equal(inFlightCapFor({ cpuCores: 4, memoryBytes: 64 * 1024 * 1024 }), 64);
});

Deno.test("failureStatuses is read into ranges once, also when it comes from defaults", () => {
  const config = parseConfig({
    defaults: { breaker: { failureStatuses: "502, 504-503" } },
    services: {
      a: { prefix: "/a", upstreams: ["http://127.0.0.1:1"] },
      b: {
        prefix: "/b",
        upstreams: ["http://127.0.0.1:2"],
        breaker: { failureStatuses: "500-599,429" },
      },
    },
  });
  assert.deepEqual(config.services.a.breaker.failureStatuses, [
    { from: 502, to: 502 },
    { from: 503, to: 504 },
  ]);
  assert.deepEqual(config.services.b.breaker.failureStatuses, [
    { from: 500, to: 599 },
    { from: 429, to: 429 },
  ]);
  const lines = problemLines({
    defaults: { breaker: { failureStatuses: "5xx" } },
    services: { a: { prefix: "/a", upstreams: ["http://127.0.0.1:1"] } },
  });
  assert.ok(
    lines.some((line) => line.startsWith("defaults.breaker.failureStatuses")),
    lines.join("\n"),
  );
});
