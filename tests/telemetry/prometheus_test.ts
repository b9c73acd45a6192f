import assert from "node:assert/strict";
import { createTelemetry, PROMETHEUS_CONTENT_TYPE } from "../../src/telemetry/mod.ts";
import { prometheusBaseName, prometheusUnitSuffix } from "../../src/telemetry/prometheus.ts";
import { parsePrometheusText, samplesWhere } from "./_prom_parser.ts";
import { withEnv } from "./_env.ts";

async function telemetryWithTraffic(cgroupRoot?: string) {
  const telemetry = await withEnv(
    { OTEL_SERVICE_NAME: "edge", OTEL_RESOURCE_ATTRIBUTES: 'note=say "hi"\\now' },
    () =>
      createTelemetry({
        serviceNames: ["users", "orders"],
        prometheus: true,
        otlp: { endpoint: null, intervalMs: 10_000 },
        instanceId: "prom-1",
        version: "1.2.3",
        logger: () => {},
        cgroupRoot: cgroupRoot ?? "/nonexistent",
        eventLoopSampleIntervalMs: 20,
      }),
  );
  for (const durationS of [0.0003, 0.004, 0.004, 0.2, 12]) {
    telemetry.serverRequest({ method: "GET", status: 200, service: "users", durationS });
  }
  telemetry.serverRequest({ method: "PURGE", status: 405, service: "users", durationS: 0.001 });
  telemetry.clientAttempt({
    service: "users",
    address: "10.0.0.5",
    port: 8080,
    status: 503,
    durationS: 0.05,
  });
  telemetry.breakerTransition("users", "closed", "open");
  telemetry.breakerTransition("users", "open", "half_open");
  telemetry.rejected("users", "pool_saturated");
  telemetry.retry("users");
  telemetry.observe({
    breakerStates: () => [
      { service: "users", state: "forced_open" },
      { service: "orders", state: "forced_closed" },
    ],
    pools: () => [
      { service: "users", active: 4, pending: 0, max: 20 },
      { service: "orders", active: 0, pending: 2, max: 20 },
    ],
    kvDegraded: () => false,
    upstreams: () => [{ service: "users", upstream: "http://10.0.0.5:8080", available: false }],
  });
  telemetry.upstreamAvailability("users", "http://10.0.0.5:8080", false, "outlier_ejected");
  telemetry.retryRefused("users", "budget");
  return telemetry;
}

Deno.test("prometheusText parses and uses the usual OpenTelemetry -> Prometheus names", async () => {
  const telemetry = await telemetryWithTraffic();
  try {
    await new Promise((resolve) => setTimeout(resolve, 60)); // a few event-loop samples
    const text = await telemetry.prometheusText();
    assert.ok(text !== null);
    const families = parsePrometheusText(text);

    const expected: Record<string, string> = {
      http_server_request_duration_seconds: "histogram",
      http_client_request_duration_seconds: "histogram",
      breakwater_breaker_state: "gauge",
      breakwater_breaker_transitions_total: "counter",
      breakwater_requests_rejected_total: "counter",
      breakwater_pool_active: "gauge",
      breakwater_pool_pending: "gauge",
      breakwater_pool_limit: "gauge",
      breakwater_kv_degraded: "gauge",
      breakwater_upstream_available: "gauge",
      breakwater_upstream_ejections_total: "counter",
      breakwater_retries_refused_total: "counter",
      breakwater_build_info: "gauge",
      process_start_time_seconds: "gauge",
      process_uptime_seconds: "gauge",
      breakwater_pool_usage_ratio: "gauge",
      breakwater_retries_total: "counter",
      process_cpu_time_seconds_total: "counter",
      process_memory_usage_bytes: "gauge",
      breakwater_event_loop_delay_seconds: "histogram",
      target_info: "gauge",
    };
    for (const [name, type] of Object.entries(expected)) {
      assert.equal(families.get(name)?.type, type, `${name} is a ${type}`);
    }
    // No cgroup files under the given root: no limit gauges.
    assert.equal(families.has("breakwater_cgroup_cpu_limit"), false);
    assert.equal(families.has("breakwater_cgroup_memory_limit_bytes"), false);

    const users = { breakwater_service: "users", http_response_status_code: "200" };
    const buckets = samplesWhere(
      families,
      "http_server_request_duration_seconds",
      "http_server_request_duration_seconds_bucket",
      users,
    );
    assert.ok(buckets.length > 10);
    // Cumulative and non-decreasing, ending with +Inf == _count.
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value);
    assert.equal(buckets.at(-1)!.labels.le, "+Inf");
    const [count] = samplesWhere(
      families,
      "http_server_request_duration_seconds",
      "http_server_request_duration_seconds_count",
      users,
    );
    assert.equal(count.value, 5);
    assert.equal(buckets.at(-1)!.value, 5);
    const le = (bound: string) => buckets.find((b) => b.labels.le === bound)!.value;
    assert.equal(le("0.0005"), 1);
    assert.equal(le("0.005"), 3);
    assert.equal(le("0.25"), 4);
    assert.equal(le("10"), 4);
    assert.equal(le("30"), 5);

    // Unknown methods are folded into _OTHER (bounded cardinality).
    assert.equal(
      samplesWhere(
        families,
        "http_server_request_duration_seconds",
        "http_server_request_duration_seconds_count",
        { http_request_method: "_OTHER", http_response_status_code: "405" },
      )[0].value,
      1,
    );

    const transitions = samplesWhere(
      families,
      "breakwater_breaker_transitions_total",
      "breakwater_breaker_transitions_total",
      { breakwater_service: "users" },
    );
    assert.deepEqual(
      transitions.map((s) => [s.labels.from, s.labels.to, s.value]).sort(),
      [["closed", "open", 1], ["open", "half_open", 1]],
    );
    const state = (service: string) =>
      samplesWhere(families, "breakwater_breaker_state", "breakwater_breaker_state", {
        breakwater_service: service,
      })[0].value;
    assert.equal(state("users"), 3, "forced_open");
    assert.equal(state("orders"), 4, "forced_closed");
    assert.equal(
      samplesWhere(families, "breakwater_pool_usage_ratio", "breakwater_pool_usage_ratio")[0]
        .value,
      0.2,
    );
    assert.equal(
      samplesWhere(families, "breakwater_pool_pending", "breakwater_pool_pending", {
        breakwater_service: "orders",
      })[0].value,
      2,
    );
    assert.equal(
      samplesWhere(
        families,
        "http_client_request_duration_seconds",
        "http_client_request_duration_seconds_count",
        { server_address: "10.0.0.5", server_port: "8080", http_response_status_code: "503" },
      )[0].value,
      1,
    );
    const loopCount = samplesWhere(
      families,
      "breakwater_event_loop_delay_seconds",
      "breakwater_event_loop_delay_seconds_count",
    )[0];
    assert.ok(loopCount.value >= 1, "the event-loop sampler ran");

    // The resource travels as target_info, escaping intact.
    const [target] = families.get("target_info")!.samples;
    assert.equal(target.labels.service_name, "edge");
    assert.equal(target.labels.service_instance_id, "prom-1");
    assert.equal(target.labels.note, 'say "hi"\\now');
    assert.equal(PROMETHEUS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
  } finally {
    await telemetry.shutdown();
  }
});

Deno.test("the event-loop delay histogram sees a blocked loop", async () => {
  const telemetry = await telemetryWithTraffic();
  try {
    await new Promise((resolve) => setTimeout(resolve, 30));
    const blockUntil = performance.now() + 150;
    while (performance.now() < blockUntil) { /* block the event loop */ }
    await new Promise((resolve) => setTimeout(resolve, 40));
    const families = parsePrometheusText((await telemetry.prometheusText())!);
    const family = "breakwater_event_loop_delay_seconds";
    const [count] = samplesWhere(families, family, `${family}_count`);
    const [under100ms] = samplesWhere(families, family, `${family}_bucket`, { le: "0.1" });
    assert.ok(count.value - under100ms.value >= 1, "one sample was at least 100 ms late");
  } finally {
    await telemetry.shutdown();
  }
});

Deno.test("cgroup v2 limits become gauges when the files exist", async () => {
  const root = await Deno.makeTempDir();
  await Deno.writeTextFile(`${root}/cpu.max`, "150000 100000\n");
  await Deno.writeTextFile(`${root}/memory.max`, "536870912\n");
  const telemetry = await telemetryWithTraffic(root);
  try {
    const families = parsePrometheusText((await telemetry.prometheusText())!);
    assert.equal(families.get("breakwater_cgroup_cpu_limit")?.samples[0].value, 1.5);
    assert.equal(families.get("breakwater_cgroup_memory_limit_bytes")?.samples[0].value, 536870912);
  } finally {
    await telemetry.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("prometheus off: prometheusText is null", async () => {
  const telemetry = createTelemetry({
    serviceNames: ["users"],
    prometheus: false,
    otlp: { endpoint: null, intervalMs: 10_000 },
    instanceId: "off",
  });
  telemetry.serverRequest({ method: "GET", status: 200, service: "users", durationS: 0.01 });
  assert.equal(await telemetry.prometheusText(), null);
  await telemetry.shutdown();
});

Deno.test("after shutdown a scrape returns the last text instead of failing", async () => {
  const telemetry = await telemetryWithTraffic();
  const before = await telemetry.prometheusText();
  await telemetry.shutdown();
  assert.equal(await telemetry.prometheusText(), before);
});

Deno.test("unit suffixes follow the OpenTelemetry compatibility rules", () => {
  assert.equal(prometheusUnitSuffix("s", false), "seconds");
  assert.equal(prometheusUnitSuffix("By", true), "bytes");
  assert.equal(prometheusUnitSuffix("1", true), "ratio");
  assert.equal(prometheusUnitSuffix("1", false), "");
  assert.equal(prometheusUnitSuffix("{request}", false), "");
  assert.equal(prometheusUnitSuffix("By/s", true), "bytes_per_second");
  assert.equal(prometheusBaseName("a.duration", "s", false), "a.duration_seconds");
  assert.equal(prometheusBaseName("a.duration_seconds", "s", false), "a.duration_seconds");
});

Deno.test("the test parser rejects malformed exposition", () => {
  assert.throws(() => parsePrometheusText('a{b="c} 1'), SyntaxError);
  assert.throws(() => parsePrometheusText("a 1\n# TYPE a counter"), SyntaxError);
  assert.throws(() => parsePrometheusText("a-b 1"), SyntaxError);
  assert.throws(() => parsePrometheusText("a one"), SyntaxError);
  assert.equal(parsePrometheusText("a +Inf").get("a")!.samples[0].value, Infinity);
});
