import assert from "node:assert/strict";
import { parseCpuMax, parseMemoryMax, readCgroupLimits } from "../../src/telemetry/cgroup.ts";
import { parseKeyValueList } from "../../src/telemetry/_env.ts";
import {
  breakerStateValue,
  normalizeMethod,
  resolveOtlpSettings,
  resourceAttributes,
} from "../../src/telemetry/mod.ts";

const otlp = (endpoint: string | null, intervalMs = 10_000) => ({ endpoint, intervalMs });

Deno.test("OTLP endpoint: config wins, then METRICS_ENDPOINT as is, then ENDPOINT + /v1/metrics", () => {
  const env = {
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://general:4318",
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://specific:4318/custom",
  };
  assert.equal(
    resolveOtlpSettings(otlp("http://cfg:4318"), env)?.url,
    "http://cfg:4318/v1/metrics",
  );
  assert.equal(
    resolveOtlpSettings(otlp("http://cfg:4318/v1/metrics"), env)?.url,
    "http://cfg:4318/v1/metrics",
  );
  assert.equal(
    resolveOtlpSettings(otlp("https://cfg.example/otlp/"), {})?.url,
    "https://cfg.example/otlp/v1/metrics",
  );
  assert.equal(resolveOtlpSettings(otlp(null), env)?.url, "http://specific:4318/custom");
  assert.equal(
    resolveOtlpSettings(otlp(null), { OTEL_EXPORTER_OTLP_ENDPOINT: "http://general:4318" })?.url,
    "http://general:4318/v1/metrics",
  );
  assert.equal(resolveOtlpSettings(otlp(null), {}), null);
  assert.equal(resolveOtlpSettings(otlp(null), { OTEL_EXPORTER_OTLP_ENDPOINT: "  " }), null);
  assert.throws(() => resolveOtlpSettings(otlp(null), { OTEL_EXPORTER_OTLP_ENDPOINT: "nope" }));
});

Deno.test("OTLP headers, timeout and protocol from the environment", () => {
  const settings = resolveOtlpSettings(otlp("http://c:4318", 5000), {
    OTEL_EXPORTER_OTLP_HEADERS: "api-key=general,x-a=1",
    OTEL_EXPORTER_OTLP_METRICS_HEADERS: "api-key=spe%2Ccific",
    OTEL_EXPORTER_OTLP_TIMEOUT: "20000",
    OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
  })!;
  assert.deepEqual(settings.headers, { "api-key": "spe,cific", "x-a": "1" });
  assert.equal(settings.timeoutMs, 5000, "clamped to the interval");
  assert.equal(settings.requestedProtocol, "grpc");
  assert.match(settings.protocolWarning ?? "", /grpc/);
  const defaults = resolveOtlpSettings(otlp("http://c:4318"), {
    OTEL_EXPORTER_OTLP_TIMEOUT: "abc",
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: "750",
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
  })!;
  assert.equal(defaults.timeoutMs, 750);
  assert.equal(defaults.protocolWarning, null);
  assert.equal(resolveOtlpSettings(otlp("http://c:4318"), {})!.timeoutMs, 10_000);
});

Deno.test("resource: OTEL_SERVICE_NAME over OTEL_RESOURCE_ATTRIBUTES, instance id from the gateway", () => {
  const fromEnv = resourceAttributes({
    OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attrs,service.instance.id=spoof,k=v%3Dw,bad",
  }, "gw-1");
  assert.equal(fromEnv["service.name"], "from-attrs");
  assert.equal(fromEnv["service.instance.id"], "gw-1");
  assert.equal(fromEnv.k, "v=w");
  assert.equal("bad" in fromEnv, false);
  const named = resourceAttributes({
    OTEL_SERVICE_NAME: "edge",
    OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attrs",
  }, "gw-1");
  assert.equal(named["service.name"], "edge");
  assert.equal(resourceAttributes({}, "gw-1")["service.name"], "breakwater");
  assert.equal(resourceAttributes({}, "gw-1")["process.runtime.name"], "deno");
});

Deno.test("key=value lists: percent-decoding, malformed entries dropped", () => {
  assert.deepEqual(parseKeyValueList(" a = 1 , b=%20x ,=no,c=%E0%A4%A"), { a: "1", b: " x" });
  assert.deepEqual(parseKeyValueList(undefined), {});
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
  assert.equal(breakerStateValue("forced_closed"), 0);
  assert.equal(breakerStateValue("half_open"), 1);
  assert.equal(breakerStateValue("open"), 2);
  assert.equal(breakerStateValue("forced_open"), 2);
  assert.equal(breakerStateValue("degraded"), null);
  assert.equal(normalizeMethod("GET"), "GET");
  assert.equal(normalizeMethod("patch"), "PATCH");
  assert.equal(normalizeMethod("PURGE"), "_OTHER");
});
