import assert from "node:assert/strict";
import { parseCpuMax, parseMemoryMax, readCgroupLimits } from "../../src/telemetry/cgroup.ts";
import {
  breakerStateValue,
  buildResource,
  normalizeMethod,
  resolveExportPlan,
} from "../../src/telemetry/mod.ts";
import { samplerFromEnv } from "../../src/telemetry/tracing.ts";
import { withEnv } from "./_env.ts";

const file = (endpoint: string | null, intervalMs: number | null = null) => ({
  endpoint,
  intervalMs,
});

Deno.test("export plan: nothing configured, nothing exported", async () => {
  await withEnv({}, () => {
    const plan = resolveExportPlan(file(null));
    assert.equal(plan.metrics, null);
    assert.equal(plan.traces, null);
    assert.deepEqual(plan.notices, []);
  });
});

Deno.test("export plan: the config endpoint wins and serves both signals, protobuf by default", async () => {
  await withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://general:4318" }, () => {
    const plan = resolveExportPlan(file("http://cfg:4318"));
    assert.equal(plan.metrics?.configUrl, "http://cfg:4318/v1/metrics");
    assert.equal(plan.traces?.configUrl, "http://cfg:4318/v1/traces");
    assert.equal(plan.metrics?.protocol, "http/protobuf");
    assert.equal(plan.traces?.protocol, "http/protobuf");
    assert.equal(plan.metrics?.intervalMs, 10_000);
    assert.equal(
      resolveExportPlan(file("https://cfg.example/otlp/")).traces?.configUrl,
      "https://cfg.example/otlp/v1/traces",
    );
    assert.equal(
      resolveExportPlan(file("http://cfg:4318/v1/metrics")).metrics?.configUrl,
      "http://cfg:4318/v1/metrics",
    );
  });
});

Deno.test("export plan: env endpoints turn a signal on and are left to the exporter", async () => {
  await withEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://traces:4318/t" }, () => {
    const plan = resolveExportPlan(file(null));
    assert.equal(plan.metrics, null, "only traces have an endpoint");
    assert.equal(plan.traces?.configUrl, undefined, "the exporter resolves the env URL");
  });
  await withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://general:4318" }, () => {
    const plan = resolveExportPlan(file(null));
    assert.ok(plan.metrics !== null && plan.traces !== null);
  });
  await withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "  " }, () => {
    assert.equal(resolveExportPlan(file(null)).metrics, null, "blank is unset");
  });
});

Deno.test("export plan: OTEL_<SIGNAL>_EXPORTER none/otlp and unsupported exporters", async () => {
  await withEnv({ OTEL_METRICS_EXPORTER: "none", OTEL_TRACES_EXPORTER: "none" }, () => {
    const plan = resolveExportPlan(file("http://cfg:4318"));
    assert.equal(plan.metrics, null);
    assert.equal(plan.traces, null);
  });
  await withEnv({ OTEL_TRACES_EXPORTER: "otlp" }, () => {
    // The spec's default endpoint (localhost:4318) when asked for explicitly.
    assert.ok(resolveExportPlan(file(null)).traces !== null);
  });
  await withEnv({ OTEL_TRACES_EXPORTER: "zipkin", OTEL_METRICS_EXPORTER: "prometheus" }, () => {
    const plan = resolveExportPlan(file("http://cfg:4318"));
    assert.equal(plan.traces, null);
    assert.equal(plan.metrics, null, "prometheus is the /metrics endpoint, not a push");
    assert.deepEqual(plan.notices.map((n) => n.event), ["otel_exporter_unsupported"]);
  });
});

Deno.test("export plan: protocols per signal, grpc falls back to protobuf with a notice", async () => {
  await withEnv({
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf",
  }, () => {
    const plan = resolveExportPlan(file("http://c:4318"));
    assert.equal(plan.metrics?.protocol, "http/json");
    assert.equal(plan.traces?.protocol, "http/protobuf");
  });
  await withEnv({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }, () => {
    const plan = resolveExportPlan(file("http://c:4318"));
    assert.equal(plan.metrics?.protocol, "http/protobuf");
    assert.deepEqual(plan.notices.map((n) => n.event), [
      "otlp_protocol_unsupported",
      "otlp_protocol_unsupported",
    ]);
  });
});

Deno.test("export plan: interval and timeouts, config over env over default", async () => {
  await withEnv({
    OTEL_METRIC_EXPORT_INTERVAL: "2500",
    OTEL_METRIC_EXPORT_TIMEOUT: "60000",
    OTEL_EXPORTER_OTLP_TIMEOUT: "20000",
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: "750",
  }, () => {
    const fromEnv = resolveExportPlan(file("http://c:4318")).metrics!;
    assert.equal(fromEnv.intervalMs, 2500);
    assert.equal(fromEnv.exportTimeoutMs, 2500, "clamped to the interval");
    assert.equal(fromEnv.requestTimeoutMs, 750, "the signal's own timeout wins");
    const fromFile = resolveExportPlan(file("http://c:4318", 5000)).metrics!;
    assert.equal(fromFile.intervalMs, 5000);
  });
  await withEnv({ OTEL_METRIC_EXPORT_INTERVAL: "-5" }, () => {
    const plan = resolveExportPlan(file("http://c:4318"));
    assert.equal(plan.metrics?.intervalMs, 10_000);
    assert.deepEqual(plan.notices.map((n) => n.event), ["otel_env_invalid"]);
  });
});

Deno.test("export plan: an invalid endpoint disables that signal with an error notice", async () => {
  await withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "not a url" }, () => {
    const plan = resolveExportPlan(file(null));
    assert.equal(plan.metrics, null);
    assert.equal(plan.traces, null);
    assert.deepEqual(plan.notices.map((n) => [n.level, n.event]), [
      ["error", "otlp_config_invalid"],
      ["error", "otlp_config_invalid"],
    ]);
  });
});

Deno.test("resource: SDK env detectors, OTEL_SERVICE_NAME over OTEL_RESOURCE_ATTRIBUTES, instance id from the gateway", async () => {
  await withEnv({
    OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attrs,service.instance.id=spoof,k=v%3Dw",
  }, () => {
    const attributes = buildResource("gw-1", "1.2.3").attributes;
    assert.equal(attributes["service.name"], "from-attrs");
    assert.equal(attributes["service.instance.id"], "gw-1");
    assert.equal(attributes["service.version"], "1.2.3");
    assert.equal(attributes.k, "v=w");
    assert.equal(attributes["telemetry.sdk.language"], "nodejs");
  });
  await withEnv({
    OTEL_SERVICE_NAME: "edge",
    OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attrs",
  }, () => {
    assert.equal(buildResource("gw-1").attributes["service.name"], "edge");
  });
  await withEnv({ OTEL_RESOURCE_ATTRIBUTES: "a=1,bad" }, () => {
    // The spec: a malformed list is discarded whole.
    const attributes = buildResource("gw-1").attributes;
    assert.equal("a" in attributes, false);
    assert.equal(attributes["service.name"], "breakwater");
    assert.equal(attributes["process.runtime.name"], "deno");
  });
});

Deno.test("sampler from OTEL_TRACES_SAMPLER and _ARG", async () => {
  const describe = () => samplerFromEnv().toString();
  await withEnv({}, () => assert.match(describe(), /ParentBased\{root=AlwaysOnSampler/));
  await withEnv({ OTEL_TRACES_SAMPLER: "always_off" }, () => {
    assert.equal(describe(), "AlwaysOffSampler");
  });
  await withEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" }, () => {
    assert.equal(describe(), "TraceIdRatioBased{0.25}");
  });
  await withEnv({
    OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
    OTEL_TRACES_SAMPLER_ARG: "7",
  }, () => {
    const notices: Array<{ event: string }> = [];
    const sampler = samplerFromEnv(notices as never);
    assert.match(sampler.toString(), /TraceIdRatioBased\{1\}/);
    assert.deepEqual(notices.map((n) => n.event), ["otel_env_invalid"]);
  });
  await withEnv({ OTEL_TRACES_SAMPLER: "jaeger_remote" }, () => {
    const notices: Array<{ event: string }> = [];
    assert.match(samplerFromEnv(notices as never).toString(), /ParentBased/);
    assert.deepEqual(notices.map((n) => n.event), ["otel_sampler_unsupported"]);
  });
});

Deno.test("cgroup files: cpu.max and memory.max parsing", async () => {
  assert.equal(parseCpuMax("50000 100000\n"), 0.5);
  assert.equal(parseCpuMax("max 100000"), null);
  assert.equal(parseCpuMax("200000"), 2);
  assert.equal(parseCpuMax("garbage"), null);
  assert.equal(parseMemoryMax("1073741824\n"), 1073741824);
  assert.equal(parseMemoryMax("max\n"), null);
  assert.equal(parseMemoryMax("-1"), null);
  assert.deepEqual(readCgroupLimits("/nonexistent"), { cpuCores: null, memoryBytes: null });
  const root = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${root}/cpu.max`, "max 100000\n");
    await Deno.writeTextFile(`${root}/memory.max`, "268435456\n");
    assert.deepEqual(readCgroupLimits(root), { cpuCores: null, memoryBytes: 268435456 });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("breaker states and methods map to bounded values", () => {
  assert.equal(breakerStateValue("closed"), 0);
  assert.equal(breakerStateValue("half_open"), 1);
  assert.equal(breakerStateValue("open"), 2);
  assert.equal(breakerStateValue("forced_open"), 3);
  assert.equal(breakerStateValue("forced_closed"), 4);
  assert.equal(breakerStateValue("degraded"), null);
  assert.equal(normalizeMethod("GET"), "GET");
  assert.equal(normalizeMethod("patch"), "PATCH");
  assert.equal(normalizeMethod("PURGE"), "_OTHER");
});
