import assert from "node:assert/strict";
import { createTrafficStats } from "../../src/admin/traffic_stats.ts";
import { createRequestLog } from "../../src/gateway/request_log.ts";
import type { ServedRequest } from "../../src/proxy/request_path.ts";
import type { ServiceRuntime } from "../../src/proxy/service_runtime.ts";
import { createLogger, type ServerRequestRecord } from "../../src/telemetry/mod.ts";

/** The record phase's sink over a real logger and traffic stats; what reached each is kept. */
function sink(level: "info" | "warn") {
  const lines: string[] = [];
  const metrics: ServerRequestRecord[] = [];
  const breakerLookups: string[] = [];
  const logger = createLogger({ level, write: (line) => void lines.push(line) });
  const clock = { ms: 1_796_000_000_000 };
  const traffic = createTrafficStats(300, () => clock.ms);
  const onServed = createRequestLog({
    traffic,
    telemetry: { serverRequest: (record) => void metrics.push(record) },
    logger,
    breakerState: (name) => {
      breakerLookups.push(name);
      return "closed";
    },
  });
  return { lines, metrics, breakerLookups, logger, traffic, clock, onServed };
}

// Only the service's name and prefix are read from its runtime.
const users = { config: { name: "users", prefix: "/api/users" } } as unknown as ServiceRuntime;

const served: ServedRequest = {
  method: "GET",
  scheme: "http",
  path: "/api/users/7?token=s3cret",
  service: users,
  status: 200,
  durationMs: 1.23456,
  upstream: "http://127.0.0.1:9001",
  requestId: "req-7",
  span: null,
};

Deno.test("access log on: one line per request with the service's breaker state", () => {
  const { lines, metrics, breakerLookups, onServed } = sink("info");
  onServed(served);
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]);
  assert.deepEqual({ ...line, time: undefined }, {
    time: undefined,
    level: "info",
    msg: "request",
    method: "GET",
    path: "/api/users/7",
    service: "users",
    status: 200,
    durationMs: 1.235,
    upstream: "http://127.0.0.1:9001",
    requestId: "req-7",
    breakerState: "closed",
  });
  assert.deepEqual(breakerLookups, ["users"]);
  assert.equal(metrics.length, 1);
});

Deno.test("access log off: no line and no breaker look-up; metrics and traffic still kept", () => {
  const { lines, metrics, breakerLookups, logger, traffic, clock, onServed } = sink("warn");
  onServed(served);
  onServed({ ...served, service: null, status: 404 });
  assert.deepEqual(lines, []);
  assert.deepEqual(breakerLookups, []);
  assert.deepEqual(metrics.map((record) => record.status), [200, 404]);
  clock.ms += 1000; // the series holds complete seconds
  assert.equal(traffic.series("users", 300).reduce((sum, point) => sum + point.requests, 0), 1);
  // The level is read per request: turned on at run time, the next request is logged.
  logger.level = "info";
  onServed(served);
  assert.equal(lines.length, 1);
  assert.deepEqual(breakerLookups, ["users"]);
});
