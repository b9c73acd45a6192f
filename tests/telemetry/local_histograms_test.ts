/**
 * The gateway-aggregated request-duration histograms read through a reader's producer: the same
 * buckets, count, sum, min and max the SDK's own histogram reports for the same recordings;
 * delta readers get the interval only; series past the cardinality limit overflow.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  AggregationTemporality,
  DataPointType,
  type HistogramMetricData,
  MeterProvider,
  MetricReader,
} from "@opentelemetry/sdk-metrics";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  createHistogramProducer,
  createLocalHistogram,
  MAX_HISTOGRAM_SERIES,
  recordValue,
} from "../../src/telemetry/local_histograms.ts";

class TestReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

const BOUNDARIES = [0.001, 0.01, 0.1, 1];
const VALUES = [0.0005, 0.001, 0.002, 0.05, 0.05, 0.5, 3, 0];
const resource = resourceFromAttributes({ "service.name": "t" });

function histogramOf(data: { scopeMetrics: { metrics: unknown[] }[] }, name: string) {
  for (const scope of data.scopeMetrics) {
    for (const metric of scope.metrics as HistogramMetricData[]) {
      if (metric.descriptor.name === name) return metric;
    }
  }
  return undefined;
}

Deno.test("local histogram: the same data points as the SDK's histogram", async () => {
  const local = createLocalHistogram({
    name: "local.duration",
    description: "d",
    unit: "s",
    boundaries: BOUNDARIES,
  });
  const attributes = Object.freeze({ "http.request.method": "GET", "breakwater.service": "a" });
  const cell = local.cell(attributes);
  assert.equal(local.cell({ "breakwater.service": "a", "http.request.method": "GET" }), cell);
  const reader = new TestReader({
    metricProducers: [
      createHistogramProducer(
        [local],
        () => resource,
        { name: "breakwater" },
        () => AggregationTemporality.CUMULATIVE,
      ),
    ],
  });
  const provider = new MeterProvider({ resource, readers: [reader] });
  const sdk = provider.getMeter("breakwater").createHistogram("sdk.duration", {
    unit: "s",
    advice: { explicitBucketBoundaries: BOUNDARIES },
  });
  for (const value of VALUES) {
    sdk.record(value, attributes);
    recordValue(local, cell, value);
  }
  recordValue(local, cell, -1); // dropped, as the SDK drops it
  const { resourceMetrics } = await reader.collect();
  const ours = histogramOf(resourceMetrics, "local.duration")!;
  const theirs = histogramOf(resourceMetrics, "sdk.duration")!;
  assert.equal(ours.dataPointType, DataPointType.HISTOGRAM);
  assert.equal(ours.aggregationTemporality, theirs.aggregationTemporality);
  assert.deepEqual(ours.dataPoints[0].value, theirs.dataPoints[0].value);
  assert.deepEqual(ours.dataPoints[0].attributes, theirs.dataPoints[0].attributes);
  assert.equal(ours.descriptor.unit, "s");
  await provider.shutdown();
});

Deno.test("local histogram: a delta reader gets what came since its last collection", async () => {
  const local = createLocalHistogram({
    name: "d",
    description: "d",
    unit: "s",
    boundaries: BOUNDARIES,
  });
  const cell = local.cell({ a: "1" });
  const producer = createHistogramProducer(
    [local],
    () => resource,
    { name: "breakwater" },
    () => AggregationTemporality.DELTA,
  );
  recordValue(local, cell, 0.05);
  recordValue(local, cell, 0.5);
  const first = histogramOf((await producer.collect()).resourceMetrics, "d")!;
  assert.equal(first.aggregationTemporality, AggregationTemporality.DELTA);
  assert.equal(first.dataPoints[0].value.count, 2);
  assert.equal((await producer.collect()).resourceMetrics.scopeMetrics.length, 0, "nothing new");
  recordValue(local, cell, 0.0001);
  const third = histogramOf((await producer.collect()).resourceMetrics, "d")!;
  assert.equal(third.dataPoints[0].value.count, 1);
  // The interval's sum is a difference of running sums: equal up to floating-point rounding.
  assert.ok(Math.abs(third.dataPoints[0].value.sum! - 0.0001) < 1e-12);
  assert.deepEqual(third.dataPoints[0].value.buckets.counts, [1, 0, 0, 0, 0]);
});

Deno.test("local histogram: series past the limit share the overflow series", () => {
  const local = createLocalHistogram({ name: "o", description: "o", unit: "s", boundaries: [] });
  for (let i = 0; i < MAX_HISTOGRAM_SERIES + 10; i++) local.cell({ i });
  assert.equal(local.cells().length, MAX_HISTOGRAM_SERIES);
  assert.deepEqual(local.cells().at(-1)!.attributes, { "otel.metric.overflow": true });
  assert.equal(local.cell({ i: 3 }), local.cells()[3], "a known set keeps its series");
});
