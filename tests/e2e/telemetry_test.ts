/**
 * Telemetry from a real gateway process: OTLP/HTTP export to a real receiver on loopback,
 * decoded as OTLP JSON, and the Prometheus endpoint parsed as text format. Traffic includes an
 * induced outage so breaker transitions and rejections show up.
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import {
  attributesOf,
  latestMetric,
  pointValue,
  type ReceivedExport,
  startOtlpReceiver,
} from "../telemetry/_otlp_receiver.ts";
import { waitFor } from "../_helpers/wait.ts";
import { parsePrometheusText, samplesWhere } from "../telemetry/_prom_parser.ts";

Deno.test("a gateway process exports what happened over OTLP and on /metrics", async () => {
  let failing = false;
  const upstream = startUpstream(() =>
    failing ? new Response("down", { status: 500 }) : Response.json({ ok: true })
  );
  const receiver = startOtlpReceiver();
  const gateway = await startGatewayProcess({
    // One thread: this test reads one export as the whole picture; with workers each thread
    // exports its own series (the next test).
    workers: 1,
    telemetry: { prometheus: true, otlp: { endpoint: receiver.baseUrl, intervalMs: 300 } },
    services: {
      api: {
        prefix: "/api",
        upstreams: [upstream.origin],
        breaker: { failureThreshold: 3, recoveryTimeoutMs: 60_000 },
      },
    },
  }, {
    env: { OTEL_SERVICE_NAME: "edge-test", OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=ci" },
  });
  try {
    for (let i = 0; i < 10; i++) await (await fetch(`${gateway.url}/api/ok`)).text();
    await (await fetch(`${gateway.url}/nowhere`)).text();
    failing = true;
    for (let i = 0; i < 6; i++) await (await fetch(`${gateway.url}/api/fail`)).text();

    // /metrics, parsed with a text-format parser.
    const families = parsePrometheusText(await (await fetch(`${gateway.adminUrl}/metrics`)).text());
    const ok = samplesWhere(
      families,
      "http_server_request_duration_seconds",
      "http_server_request_duration_seconds_count",
      {
        breakwater_service: "api",
        http_response_status_code: "200",
      },
    );
    assert.equal(ok.reduce((sum, s) => sum + s.value, 0), 10);
    const rejected = samplesWhere(
      families,
      "breakwater_requests_rejected_total",
      "breakwater_requests_rejected_total",
      {
        reason: "breaker_open",
      },
    );
    assert.ok(rejected.reduce((sum, s) => sum + s.value, 0) >= 1);
    const transitions = samplesWhere(
      families,
      "breakwater_breaker_transitions_total",
      "breakwater_breaker_transitions_total",
      {
        breakwater_service: "api",
        to: "open",
      },
    );
    assert.ok(transitions.reduce((sum, s) => sum + s.value, 0) >= 1);
    const state = samplesWhere(families, "breakwater_breaker_state", "breakwater_breaker_state", {
      breakwater_service: "api",
    });
    assert.equal(state[0]?.value, 2);

    // OTLP: wait for an export that already carries the outage.
    const deadline = Date.now() + 10_000;
    let exported = false;
    while (!exported && Date.now() < deadline) {
      await receiver.waitFor(receiver.received.length + 1, 5000);
      const metric = latestMetric(receiver.received, "breakwater.breaker.transitions");
      exported = metric?.sum?.dataPoints.some((p) => attributesOf(p.attributes).to === "open") ??
        false;
    }
    assert.ok(exported, "breaker transition exported over OTLP");
    const last = receiver.received.at(-1)!;
    assert.match(last.path, /\/v1\/metrics$/);
    const resource = attributesOf(last.body.resourceMetrics[0].resource.attributes);
    assert.equal(resource["service.name"], "edge-test");
    assert.equal(resource["deployment.environment"], "ci");
    assert.ok(typeof resource["service.instance.id"] === "string");

    const duration = latestMetric(receiver.received, "http.server.request.duration")!;
    const points = duration.histogram!.dataPoints;
    const byStatus = (status: number) =>
      points
        .filter((p) => {
          const attributes = attributesOf(p.attributes);
          return attributes["breakwater.service"] === "api" &&
            Number(attributes["http.response.status_code"]) === status;
        })
        .reduce((sum, p) => sum + Number(p.count), 0);
    assert.equal(byStatus(200), 10);
    assert.ok(byStatus(500) >= 3);
    assert.ok(byStatus(503) >= 1);
    assert.ok(points[0].explicitBounds.length > 5, "latency histogram has buckets");
    assert.equal(duration.unit, "s");

    const client = latestMetric(receiver.received, "http.client.request.duration")!;
    assert.ok(
      client.histogram!.dataPoints.some((p) =>
        attributesOf(p.attributes)["server.port"] !== undefined
      ),
    );
    const usage = latestMetric(receiver.received, "breakwater.pool.usage")!;
    const usagePoint = usage.gauge!.dataPoints.find((p) =>
      attributesOf(p.attributes)["breakwater.service"] === "api"
    );
    assert.ok(
      usagePoint !== undefined && pointValue(usagePoint) >= 0 && pointValue(usagePoint) <= 1,
    );
  } finally {
    const status = await gateway.stop();
    assert.equal(status.code, 0);
    await receiver.close();
    await upstream.close();
  }
});

/** The `service.instance.id` of each resource in an export. */
function instanceIds(received: ReceivedExport): string[] {
  return received.body.resourceMetrics.map((each) =>
    String(attributesOf(each.resource.attributes)["service.instance.id"])
  );
}

/** The request count of `service` in the latest export from each instance id. */
function requestsByInstance(received: ReceivedExport[], service: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const entry of received) {
    for (const resourceMetrics of entry.body.resourceMetrics) {
      const id = String(attributesOf(resourceMetrics.resource.attributes)["service.instance.id"]);
      const metric = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics)
        .find((each) => each.name === "http.server.request.duration");
      if (metric?.histogram === undefined) continue;
      const count = metric.histogram.dataPoints
        .filter((point) => attributesOf(point.attributes)["breakwater.service"] === service)
        .reduce((sum, point) => sum + Number(point.count), 0);
      counts.set(id, count); // cumulative: the latest export of each thread is its total
    }
  }
  return counts;
}

Deno.test("with two workers, OTLP carries every thread: the main thread's and each worker's series", async () => {
  const upstream = startUpstream(() => Response.json({ ok: true }));
  const receiver = startOtlpReceiver();
  const gateway = await startGatewayProcess({
    workers: 2,
    telemetry: { otlp: { endpoint: receiver.baseUrl, intervalMs: 300 } },
    services: { api: { prefix: "/api", upstreams: [upstream.origin] } },
  });
  try {
    // Fresh connections, so the kernel spreads them over both workers' sockets.
    const total = 40;
    for (let i = 0; i < total; i++) {
      const response = await fetch(`${gateway.url}/api/ok`, { headers: { connection: "close" } });
      await response.text();
    }
    let counts = new Map<string, number>();
    await waitFor(() => {
      counts = requestsByInstance(receiver.received, "api");
      return [...counts.values()].reduce((sum, each) => sum + each, 0) === total;
    }, { timeoutMs: 10_000, what: "the workers' exports add up to every request" });
    const ids = new Set(receiver.received.flatMap(instanceIds));
    const main = [...ids].find((id) => !/-w\d+$/.test(id));
    assert.ok(main !== undefined, `the main thread exports too (ids: ${[...ids].join(", ")})`);
    for (const id of counts.keys()) assert.match(id, new RegExp(`^${main}-w\\d+$`));
    // Both workers exported (each exports its series even before it served anything).
    const workerIds = [...ids].filter((id) => id !== main);
    assert.equal(workerIds.length, 2, `worker ids: ${workerIds.join(", ")}`);
  } finally {
    const status = await gateway.stop();
    assert.equal(status.code, 0);
    await receiver.close();
    await upstream.close();
  }
});
