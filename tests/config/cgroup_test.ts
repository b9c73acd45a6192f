/**
 * The one cgroup v2 reader and both of its users: the configuration's in-flight cap and the
 * telemetry gauges read the same files through `src/config/cgroup.ts`, so they agree.
 */
import assert from "node:assert/strict";
import { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import {
  type CgroupLimits,
  inFlightCapFor,
  parseCpuMax,
  parseMemoryMax,
  readCgroupLimits,
} from "../../src/config/cgroup.ts";
import * as telemetryCgroup from "../../src/telemetry/cgroup.ts";
import { registerProcessMetrics } from "../../src/telemetry/process_metrics.ts";

/** Collects on demand; nothing is exported anywhere. */
class CollectingReader extends MetricReader {
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** A temporary cgroup root holding the given files. */
async function cgroupRoot(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "breakwater-cgroup-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${root}/${name}`, text);
  }
  return root;
}

/** The cgroup gauges registerProcessMetrics exports for a root, by instrument name. */
async function cgroupGauges(root: string): Promise<{
  gauges: Record<string, number>;
  limits: CgroupLimits;
}> {
  const reader = new CollectingReader();
  const provider = new MeterProvider({ readers: [reader] });
  const { stop, limits } = registerProcessMetrics(provider.getMeter("cgroup-test"), {
    cgroupRoot: root,
    eventLoopSampleIntervalMs: 60_000,
  });
  try {
    const { resourceMetrics } = await reader.collect();
    const gauges: Record<string, number> = {};
    for (const scope of resourceMetrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        const name = metric.descriptor.name;
        if (!name.startsWith("breakwater.cgroup.")) continue;
        gauges[name] = metric.dataPoints[0].value as number;
      }
    }
    return { gauges, limits };
  } finally {
    stop();
    await provider.shutdown();
  }
}

Deno.test("cgroup: cpu.max parsing (quota/period in cores; max, zero, negative, garbage -> none)", () => {
  assert.equal(parseCpuMax("150000 100000\n"), 1.5);
  assert.equal(parseCpuMax("50000 100000"), 0.5);
  assert.equal(parseCpuMax("200000"), 2, "the period defaults to 100000 us");
  assert.equal(parseCpuMax("max 100000\n"), null);
  assert.equal(parseCpuMax("0 100000"), null);
  assert.equal(parseCpuMax("-1 100000"), null);
  assert.equal(parseCpuMax("50000 0"), null);
  assert.equal(parseCpuMax("garbage"), null);
  assert.equal(parseCpuMax(""), null);
});

Deno.test("cgroup: memory.max parsing (a positive decimal byte count; anything else -> none)", () => {
  assert.equal(parseMemoryMax("268435456\n"), 268435456);
  assert.equal(parseMemoryMax("max\n"), null);
  assert.equal(parseMemoryMax(""), null);
  assert.equal(parseMemoryMax("0"), null);
  assert.equal(parseMemoryMax("-1"), null);
  assert.equal(parseMemoryMax("1e9"), null);
  assert.equal(parseMemoryMax("1.5"), null);
  assert.equal(parseMemoryMax("99999999999999999999"), null, "beyond a safe integer");
});

Deno.test("cgroup: no files (cgroup v1, macOS) means no limits", () => {
  assert.deepEqual(readCgroupLimits("/nonexistent"), { cpuCores: null, memoryBytes: null });
  assert.equal(inFlightCapFor(readCgroupLimits("/nonexistent")), null);
});

Deno.test("cgroup: the config caps in-flight requests from the files it reads", async () => {
  const root = await cgroupRoot({ "cpu.max": "25000 100000\n", "memory.max": "max\n" });
  try {
    const limits = readCgroupLimits(root);
    assert.deepEqual(limits, { cpuCores: 0.25, memoryBytes: null });
    assert.equal(inFlightCapFor(limits), 25, "100 per core");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  assert.equal(inFlightCapFor({ cpuCores: 4, memoryBytes: 64 * 1024 * 1024 }), 64, "1 per MiB");
  assert.equal(inFlightCapFor({ cpuCores: 0.01, memoryBytes: null }), 10, "never below 10");
});

Deno.test("cgroup: telemetry gauges report the same limits the config reads", async () => {
  const root = await cgroupRoot({ "cpu.max": "150000 100000\n", "memory.max": "268435456\n" });
  try {
    const { gauges, limits } = await cgroupGauges(root);
    assert.deepEqual(limits, readCgroupLimits(root));
    assert.deepEqual(gauges, {
      "breakwater.cgroup.cpu.limit": 1.5,
      "breakwater.cgroup.memory.limit": 268435456,
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cgroup: no limit, no gauge", async () => {
  const root = await cgroupRoot({ "cpu.max": "max 100000\n" });
  try {
    const { gauges } = await cgroupGauges(root);
    assert.deepEqual(gauges, {});
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cgroup: telemetry's export path is the same reader", () => {
  assert.equal(telemetryCgroup.readCgroupLimits, readCgroupLimits);
  assert.equal(telemetryCgroup.parseCpuMax, parseCpuMax);
  assert.equal(telemetryCgroup.parseMemoryMax, parseMemoryMax);
});
