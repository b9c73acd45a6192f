/**
 * Per-request cost of the gateway's instrumentation: what the request path pays to record a
 * finished request (`serverRequest`) plus one upstream attempt (`clientAttempt`), with both a
 * Prometheus and an OTLP reader registered (the OTLP interval is long, so only recording is
 * measured). Compare with the proxy's own ~57 us of CPU per request (DESIGN.md).
 *
 * Run: deno bench --allow-env --allow-read --allow-net --allow-sys bench/telemetry_bench.ts
 */
import { accessLogEntry, createLogger, createTelemetry } from "../src/telemetry/mod.ts";

const telemetry = createTelemetry({
  serviceNames: ["users", "orders"],
  prometheus: true,
  // An endpoint nobody listens on: the reader exists, but the interval never elapses here.
  otlp: { endpoint: "http://127.0.0.1:9/", intervalMs: 3_600_000 },
  instanceId: "bench",
  env: {},
  logger: () => {},
});

const statuses = [200, 200, 200, 200, 201, 204, 404, 500, 503];
let i = 0;

Deno.bench("baseline: loop and argument objects only", { group: "request" }, () => {
  i++;
  const status = statuses[i % statuses.length];
  const server = { method: "GET", status, service: "users", durationS: 0.004 };
  const client = {
    service: "users",
    address: "127.0.0.1",
    port: 9001,
    status,
    durationS: 0.003,
  };
  if (server.durationS + client.durationS < 0) throw new Error("unreachable");
});

Deno.bench("serverRequest + clientAttempt (one request)", {
  group: "request",
  baseline: true,
}, () => {
  i++;
  const status = statuses[i % statuses.length];
  telemetry.serverRequest({ method: "GET", status, service: "users", durationS: 0.004 });
  telemetry.clientAttempt({
    service: "users",
    address: "127.0.0.1",
    port: 9001,
    status,
    durationS: 0.003,
  });
});

Deno.bench("serverRequest only", { group: "request" }, () => {
  i++;
  telemetry.serverRequest({
    method: "GET",
    status: statuses[i % statuses.length],
    service: "users",
    durationS: 0.004,
  });
});

Deno.bench("clientAttempt only", { group: "request" }, () => {
  i++;
  telemetry.clientAttempt({
    service: "users",
    address: "127.0.0.1",
    port: 9001,
    status: statuses[i % statuses.length],
    durationS: 0.003,
  });
});

const silent = createLogger({ level: "info", write: () => {} });
Deno.bench("access log line (JSON, discarded)", { group: "log" }, () => {
  silent.info(
    "request",
    accessLogEntry({
      method: "GET",
      path: "/api/users/42?token=x",
      service: "users",
      status: 200,
      durationMs: 3.2,
      upstream: "http://127.0.0.1:9001",
      requestId: "7d8e0c4a-2f5b-4e0e-9a55-3f1b7c1d9e21",
      breakerState: "closed",
    }),
  );
});

Deno.bench("prometheusText (scrape)", { group: "scrape", n: 200 }, async () => {
  await telemetry.prometheusText();
});

globalThis.addEventListener("unload", () => {
  telemetry.shutdown();
});
