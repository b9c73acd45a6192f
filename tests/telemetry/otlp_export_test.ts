import assert from "node:assert/strict";
import { createTelemetry, REQUEST_DURATION_BUCKETS_S } from "../../src/telemetry/mod.ts";
import {
  attributesOf,
  latestMetric,
  pointsWhere,
  pointValue,
  startOtlpReceiver,
} from "./_otlp_receiver.ts";
import { withEnv } from "./_env.ts";

const quiet = () => {};

/** Drives the traffic of a short outage: successes, then failures, breaker opens, rejections. */
function driveOutage(telemetry: ReturnType<typeof createTelemetry>) {
  for (let i = 0; i < 3; i++) {
    telemetry.serverRequest({
      method: "GET",
      status: 200,
      service: "users",
      durationS: 0.004,
      scheme: "http",
      route: "/api/users",
    });
    telemetry.clientAttempt({
      service: "users",
      address: "127.0.0.1",
      port: 9001,
      method: "GET",
      status: 200,
      durationS: 0.003,
    });
  }
  // The upstream's own 503 and the gateway's breaker_open 503 stay apart by error.type.
  telemetry.serverRequest({
    method: "GET",
    status: 503,
    service: "users",
    durationS: 0.003,
    scheme: "http",
    route: "/api/users",
  });
  for (let i = 0; i < 2; i++) {
    telemetry.serverRequest({ method: "POST", status: 502, service: "users", durationS: 0.02 });
    telemetry.clientAttempt({
      service: "users",
      address: "127.0.0.1",
      port: 9001,
      errorType: "upstream_unreachable",
      durationS: 0.015,
    });
    telemetry.retry("users");
  }
  telemetry.breakerTransition("users", "closed", "open");
  for (let i = 0; i < 4; i++) {
    telemetry.serverRequest({
      method: "GET",
      status: 503,
      service: "users",
      durationS: 0.0002,
      scheme: "http",
      route: "/api/users",
      errorType: "breaker_open",
    });
    telemetry.rejected("users", "breaker_open");
  }
  telemetry.retryRefused("users", "budget");
  telemetry.upstreamAvailability("users", "http://127.0.0.1:9001", false, "outlier_ejected");
  telemetry.upstreamAvailability("users", "http://127.0.0.1:9001", true, "ejection_ended");
  telemetry.upstreamAvailability("users", "http://127.0.0.1:9002", false, "outlier_ejected");
  telemetry.serverRequest({ method: "GET", status: 404, service: null, durationS: 0.0001 });
  telemetry.rejected(null, "no_route");
  telemetry.observe({
    breakerStates: () => [{ service: "users", state: "open" }, {
      service: "orders",
      state: "half_open",
    }],
    pools: () => [
      { service: "users", active: 2, pending: 1, max: 20 },
      { service: "orders", active: 0, pending: 0, max: 20 },
    ],
    kvDegraded: () => true,
    upstreams: () => [
      { service: "users", upstream: "http://127.0.0.1:9001", available: true },
      { service: "users", upstream: "http://127.0.0.1:9002", available: false },
    ],
  });
}

Deno.test("shutdown flushes the last metrics to a real OTLP/HTTP receiver (protobuf)", async () => {
  const receiver = startOtlpReceiver();
  try {
    const telemetry = await withEnv({
      OTEL_SERVICE_NAME: "edge-gw",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test,team=edge%20ops",
      OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20collector-token,x-tenant=t1",
    }, () =>
      createTelemetry({
        serviceNames: ["users", "orders"],
        prometheus: false,
        // A long interval: the only export is the flush at shutdown.
        otlp: { endpoint: receiver.baseUrl, intervalMs: 60_000 },
        instanceId: "gw-test-1",
        version: "9.9.9",
        logger: quiet,
      }));
    driveOutage(telemetry);
    await telemetry.shutdown();
    await telemetry.shutdown(); // idempotent

    assert.equal(receiver.received.length, 1);
    const [request] = receiver.received;
    assert.equal(request.path, "/v1/metrics");
    assert.equal(request.contentType, "application/x-protobuf");
    assert.equal(request.encoding, "protobuf");
    assert.equal(request.headers.get("authorization"), "Bearer collector-token");
    assert.equal(request.headers.get("x-tenant"), "t1");

    const resource = attributesOf(request.body.resourceMetrics[0].resource.attributes);
    assert.equal(resource["service.name"], "edge-gw");
    assert.equal(resource["service.instance.id"], "gw-test-1");
    assert.equal(resource["deployment.environment"], "test");
    assert.equal(resource["team"], "edge ops");
    assert.equal(request.body.resourceMetrics[0].scopeMetrics[0].scope.name, "breakwater");

    // Request counts by status, from the latency histogram.
    const server = latestMetric(receiver.received, "http.server.request.duration");
    assert.ok(server?.histogram, "http.server.request.duration is a histogram");
    assert.equal(server.unit, "s");
    const countFor = (match: Record<string, unknown>) =>
      pointsWhere(server.histogram!.dataPoints, match)
        .reduce((sum, point) => sum + Number(point.count), 0);
    assert.equal(countFor({ "http.response.status_code": 200 }), 3);
    assert.equal(countFor({ "http.response.status_code": 502, "http.request.method": "POST" }), 2);
    assert.equal(countFor({ "http.response.status_code": 503, "breakwater.service": "users" }), 5);
    assert.equal(countFor({ "error.type": "breaker_open", "http.response.status_code": 503 }), 4);
    assert.equal(
      countFor({
        "http.response.status_code": 200,
        "url.scheme": "http",
        "http.route": "/api/users",
      }),
      3,
    );
    const upstream503 = pointsWhere(server.histogram.dataPoints, {
      "http.response.status_code": 503,
    }).filter((point) => !("error.type" in attributesOf(point.attributes)));
    assert.equal(upstream503.length, 1, "the upstream's own 503 carries no error.type");
    const noRoute = pointsWhere(server.histogram.dataPoints, { "http.response.status_code": 404 });
    assert.equal(noRoute.length, 1);
    assert.equal("breakwater.service" in attributesOf(noRoute[0].attributes), false);

    // The histogram's buckets: our bounds, counts that add up, values in the right bucket.
    const [ok] = pointsWhere(server.histogram.dataPoints, { "http.response.status_code": 200 });
    assert.deepEqual(ok.explicitBounds, [...REQUEST_DURATION_BUCKETS_S]);
    assert.equal(ok.bucketCounts.length, REQUEST_DURATION_BUCKETS_S.length + 1);
    const counts = ok.bucketCounts.map(Number);
    assert.equal(counts.reduce((a, b) => a + b, 0), 3);
    // 4 ms lands in (2.5 ms, 5 ms].
    assert.equal(counts[REQUEST_DURATION_BUCKETS_S.indexOf(0.005)], 3);
    assert.ok(Math.abs((ok.sum ?? 0) - 0.012) < 1e-9);

    const client = latestMetric(receiver.received, "http.client.request.duration");
    assert.ok(client?.histogram);
    const [failedAttempts] = pointsWhere(client.histogram.dataPoints, {
      "error.type": "upstream_unreachable",
      "server.address": "127.0.0.1",
      "server.port": 9001,
      "breakwater.service": "users",
    });
    assert.equal(Number(failedAttempts.count), 2);
    const [okAttempts] = pointsWhere(client.histogram.dataPoints, {
      "http.request.method": "GET",
      "http.response.status_code": 200,
    });
    assert.equal(Number(okAttempts.count), 3, "client durations carry http.request.method");

    const transitions = latestMetric(receiver.received, "breakwater.breaker.transitions");
    assert.equal(transitions?.sum?.isMonotonic, true);
    const [opened] = pointsWhere(transitions!.sum!.dataPoints, {
      "breakwater.service": "users",
      from: "closed",
      to: "open",
    });
    assert.equal(pointValue(opened), 1);

    const rejected = latestMetric(receiver.received, "breakwater.requests.rejected");
    assert.equal(
      pointValue(pointsWhere(rejected!.sum!.dataPoints, { reason: "breaker_open" })[0]),
      4,
    );
    assert.equal(pointValue(pointsWhere(rejected!.sum!.dataPoints, { reason: "no_route" })[0]), 1);

    const retries = latestMetric(receiver.received, "breakwater.retries");
    assert.equal(
      pointValue(pointsWhere(retries!.sum!.dataPoints, { "breakwater.service": "users" })[0]),
      2,
    );
    // Pre-created zero series for a service that saw no traffic.
    assert.equal(
      pointValue(pointsWhere(retries!.sum!.dataPoints, { "breakwater.service": "orders" })[0]),
      0,
    );

    const active = latestMetric(receiver.received, "breakwater.pool.active");
    assert.notEqual(active?.sum?.isMonotonic, true, "an up-down counter");
    assert.equal(
      pointValue(pointsWhere(active!.sum!.dataPoints, { "breakwater.service": "users" })[0]),
      2,
    );
    const pending = latestMetric(receiver.received, "breakwater.pool.pending");
    assert.equal(
      pointValue(pointsWhere(pending!.sum!.dataPoints, { "breakwater.service": "users" })[0]),
      1,
    );

    const usage = latestMetric(receiver.received, "breakwater.pool.usage");
    assert.ok(usage?.gauge, "pool usage is a gauge");
    assert.equal(
      pointValue(pointsWhere(usage.gauge.dataPoints, { "breakwater.service": "users" })[0]),
      0.1,
    );
    const state = latestMetric(receiver.received, "breakwater.breaker.state");
    assert.ok(state?.gauge);
    assert.equal(
      pointValue(pointsWhere(state.gauge.dataPoints, { "breakwater.service": "users" })[0]),
      2,
    );
    assert.equal(
      pointValue(pointsWhere(state.gauge.dataPoints, { "breakwater.service": "orders" })[0]),
      1,
    );

    const gaugeValue = (name: string, match: Record<string, unknown> = {}) => {
      const metric = latestMetric(receiver.received, name);
      assert.ok(metric?.gauge, `${name} is a gauge`);
      const points = pointsWhere(metric.gauge.dataPoints, match);
      assert.equal(points.length, 1, `${name} ${JSON.stringify(match)}`);
      return pointValue(points[0]);
    };
    const counterValue = (name: string, match: Record<string, unknown>) => {
      const metric = latestMetric(receiver.received, name);
      assert.equal(metric?.sum?.isMonotonic, true, `${name} is a counter`);
      return pointsWhere(metric!.sum!.dataPoints, match).reduce((n, p) => n + pointValue(p), 0);
    };
    assert.equal(gaugeValue("breakwater.pool.limit", { "breakwater.service": "users" }), 20);
    assert.equal(gaugeValue("breakwater.kv.degraded"), 1);
    assert.equal(
      gaugeValue("breakwater.upstream.available", {
        "breakwater.upstream": "http://127.0.0.1:9002",
      }),
      0,
    );
    assert.equal(
      gaugeValue("breakwater.upstream.available", {
        "breakwater.upstream": "http://127.0.0.1:9001",
      }),
      1,
    );
    assert.equal(
      counterValue("breakwater.upstream.ejections", {
        "breakwater.service": "users",
        reason: "outlier_ejected",
      }),
      2,
    );
    assert.equal(
      counterValue("breakwater.retries.refused", {
        "breakwater.service": "users",
        reason: "budget",
      }),
      1,
    );
    assert.equal(
      counterValue("breakwater.retries.refused", { "breakwater.service": "orders" }),
      0,
      "zero series from the start",
    );
    assert.equal(gaugeValue("breakwater.build.info", { version: "9.9.9" }), 1);
    assert.equal(resource["service.version"], "9.9.9");
    const startTimeS = gaugeValue("process.start_time");
    assert.ok(Math.abs(startTimeS - performance.timeOrigin / 1000) < 1);
    assert.ok(startTimeS < Date.now() / 1000);

    const cpu = latestMetric(receiver.received, "process.cpu.time");
    assert.equal(cpu?.unit, "s");
    const userCpu = pointsWhere(cpu!.sum!.dataPoints, { "cpu.mode": "user" });
    assert.ok(pointValue(userCpu[0]) > 0);
    const memory = latestMetric(receiver.received, "process.memory.usage");
    assert.equal(memory?.unit, "By");
    assert.ok(pointValue(memory!.sum!.dataPoints[0]) > 1_000_000);
  } finally {
    await receiver.close();
  }
});

Deno.test("exports every OTEL_METRIC_EXPORT_INTERVAL, as JSON when asked, to the env endpoint, gzipped", async () => {
  const receiver = startOtlpReceiver();
  const telemetry = await withEnv({
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${receiver.baseUrl}/custom/metrics`,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
    OTEL_METRIC_EXPORT_INTERVAL: "100",
  }, () =>
    createTelemetry({
      serviceNames: ["users"],
      prometheus: false,
      otlp: { endpoint: null, intervalMs: null },
      instanceId: "gw-test-2",
      logger: quiet,
    }));
  try {
    telemetry.serverRequest({ method: "GET", status: 200, service: "users", durationS: 0.001 });
    await receiver.waitFor(2, 3000);
    assert.equal(receiver.received[0].path, "/custom/metrics");
    assert.equal(receiver.received[0].contentType, "application/json");
    assert.equal(receiver.received[0].headers.get("content-encoding"), "gzip");
    const resource = attributesOf(receiver.received[0].body.resourceMetrics[0].resource.attributes);
    assert.equal(resource["service.name"], "breakwater");
    // Cumulative temporality: the count does not reset between exports.
    telemetry.serverRequest({ method: "GET", status: 200, service: "users", durationS: 0.001 });
    const before = receiver.received.length;
    await receiver.waitFor(before + 1, 3000);
    const server = latestMetric(receiver.received, "http.server.request.duration");
    assert.equal(server?.histogram?.aggregationTemporality, 2);
    assert.equal(Number(server!.histogram!.dataPoints[0].count), 2);
  } finally {
    await telemetry.shutdown();
    await receiver.close();
  }
});
