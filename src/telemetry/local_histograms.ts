/**
 * Explicit-bucket histograms aggregated by the gateway itself and handed to the OpenTelemetry
 * SDK's readers as a `MetricProducer` (the SDK stays the reader and exporter: Prometheus text
 * and OTLP see ordinary histogram data).
 *
 * Why: the SDK's `Histogram.record(value, attributes)` finds its series by hashing the
 * attribute object on every call (`hashAttributes`: `Object.keys`, a sort and a
 * `JSON.stringify`), ~3% of a proxied request's CPU for the two request-duration histograms.
 * Here a series is a {@link HistogramCell} the caller keeps per attribute set (the request path
 * caches both), and recording is a few additions and a bucket search.
 *
 * Series are bounded like the SDK's default cardinality limit: past
 * {@link MAX_HISTOGRAM_SERIES}, new attribute sets are recorded in one series with
 * `otel.metric.overflow: true` (OpenTelemetry metrics SDK specification, "Cardinality limits").
 *
 * @module
 */
import { type Attributes, type HrTime, ValueType } from "@opentelemetry/api";
import {
  AggregationTemporality,
  type CollectionResult,
  DataPointType,
  type Histogram as HistogramValue,
  type MetricData,
  type MetricDescriptor,
  type MetricProducer,
} from "@opentelemetry/sdk-metrics";
import type { Resource } from "@opentelemetry/resources";
import type { InstrumentationScope } from "@opentelemetry/core";

/** The SDK's default cardinality limit per instrument, kept for these histograms too. */
export const MAX_HISTOGRAM_SERIES = 2000;

const OVERFLOW_ATTRIBUTES: Attributes = Object.freeze({ "otel.metric.overflow": true });

/** One series: the totals of every value recorded with one attribute set. */
export interface HistogramCell {
  readonly attributes: Attributes;
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Per bucket: `counts[i]` values <= `boundaries[i]` (and above the one before); one more. */
  readonly counts: number[];
}

/** A histogram aggregated in process. */
export interface LocalHistogram {
  /** Its name, unit and description as the SDK's histogram would describe them. */
  readonly descriptor: MetricDescriptor;
  /** The bucket upper bounds, ascending. */
  readonly boundaries: readonly number[];
  /** The series of `attributes` (the overflow series past the limit); keep it to record on. */
  cell(attributes: Attributes): HistogramCell;
  /** Every series, in the order they were made. */
  cells(): readonly HistogramCell[];
  /** When it was made (the start of cumulative data points). */
  readonly startTime: HrTime;
}

/** What {@link createLocalHistogram} needs. */
export interface LocalHistogramOptions {
  name: string;
  description: string;
  unit: string;
  /** Bucket upper bounds, ascending (as the SDK's `explicitBucketBoundaries` advice). */
  boundaries: readonly number[];
  /** Epoch milliseconds (default `Date.now`). */
  now?: () => number;
}

function hrTime(epochMs: number): HrTime {
  const seconds = Math.floor(epochMs / 1000);
  return [seconds, Math.round((epochMs - seconds * 1000) * 1e6)];
}

/** A key for an attribute set whatever its key order (made only when a series is new). */
function attributesKey(attributes: Attributes): string {
  return JSON.stringify(Object.keys(attributes).sort().map((key) => [key, attributes[key]]));
}

/**
 * Creates a histogram.
 *
 * @example
 * ```ts
 * const histogram = createLocalHistogram({
 *   name: "http.server.request.duration", description: "...", unit: "s",
 *   boundaries: [0.005, 0.01, 0.1, 1],
 * });
 * const cell = histogram.cell({ "http.request.method": "GET" }); // keep it per attribute set
 * recordValue(histogram, cell, 0.004);
 * ```
 */
export function createLocalHistogram(options: LocalHistogramOptions): LocalHistogram {
  const boundaries = [...options.boundaries];
  const byKey = new Map<string, HistogramCell>();
  const all: HistogramCell[] = [];
  let overflow: HistogramCell | null = null;
  const make = (attributes: Attributes): HistogramCell => {
    const cell: HistogramCell = {
      attributes,
      count: 0,
      sum: 0,
      min: Infinity,
      max: -Infinity,
      counts: new Array(boundaries.length + 1).fill(0),
    };
    all.push(cell);
    return cell;
  };
  return {
    descriptor: {
      name: options.name,
      description: options.description,
      unit: options.unit,
      valueType: ValueType.DOUBLE,
    },
    boundaries,
    startTime: hrTime((options.now ?? Date.now)()),
    cell(attributes) {
      const key = attributesKey(attributes);
      let cell = byKey.get(key);
      if (cell !== undefined) return cell;
      if (byKey.size >= MAX_HISTOGRAM_SERIES - 1) {
        return overflow ??= make(OVERFLOW_ATTRIBUTES);
      }
      cell = make(attributes);
      byKey.set(key, cell);
      return cell;
    },
    cells: () => all,
  };
}

/**
 * Records `value` in `cell` of `histogram`; a negative or non-finite value is dropped, as the
 * SDK drops a negative one.
 */
export function recordValue(histogram: LocalHistogram, cell: HistogramCell, value: number): void {
  if (!(value >= 0) || value === Infinity) return;
  const { boundaries } = histogram;
  let index = 0;
  // Linear: 21 boundaries, and most request durations land in the first few.
  while (index < boundaries.length && value > boundaries[index]) index++;
  cell.counts[index]++;
  cell.count++;
  cell.sum += value;
  if (value < cell.min) cell.min = value;
  if (value > cell.max) cell.max = value;
}

/** How a reader wants histograms: its temporality. */
export type TemporalityOf = () => AggregationTemporality;

/**
 * A `MetricProducer` of `histograms` for ONE reader (give each reader its own: a delta reader's
 * producer remembers what it reported last). Cumulative points start when the histogram was
 * made; delta points cover the time since the last collection and carry no min/max (the totals
 * cannot tell an interval's extremes).
 *
 * @example
 * ```ts
 * const producer = createHistogramProducer([server], resource, scope, () => reader.selectAggregationTemporality(InstrumentType.HISTOGRAM));
 * new PeriodicExportingMetricReader({ exporter, metricProducers: [producer] });
 * ```
 */
export function createHistogramProducer(
  histograms: readonly LocalHistogram[],
  resource: () => Resource,
  scope: InstrumentationScope,
  temporality: TemporalityOf,
  now: () => number = Date.now,
): MetricProducer {
  const reported = new Map<HistogramCell, { count: number; sum: number; counts: number[] }>();
  let lastCollection: HrTime | null = null;
  return {
    collect(): Promise<CollectionResult> {
      const endTime = hrTime(now());
      const delta = temporality() === AggregationTemporality.DELTA;
      const metrics: MetricData[] = [];
      for (const histogram of histograms) {
        const dataPoints = [];
        for (const cell of histogram.cells()) {
          if (cell.count === 0) continue;
          let value: HistogramValue;
          let startTime = histogram.startTime;
          if (delta) {
            const last = reported.get(cell);
            value = {
              buckets: {
                boundaries: [...histogram.boundaries],
                counts: cell.counts.map((count, i) => count - (last?.counts[i] ?? 0)),
              },
              count: cell.count - (last?.count ?? 0),
              sum: cell.sum - (last?.sum ?? 0),
            };
            reported.set(cell, { count: cell.count, sum: cell.sum, counts: [...cell.counts] });
            if (value.count === 0) continue;
            if (lastCollection !== null) startTime = lastCollection;
          } else {
            value = {
              buckets: { boundaries: [...histogram.boundaries], counts: [...cell.counts] },
              count: cell.count,
              sum: cell.sum,
              min: cell.min,
              max: cell.max,
            };
          }
          dataPoints.push({ attributes: cell.attributes, startTime, endTime, value });
        }
        if (dataPoints.length === 0) continue;
        metrics.push({
          descriptor: histogram.descriptor,
          aggregationTemporality: delta
            ? AggregationTemporality.DELTA
            : AggregationTemporality.CUMULATIVE,
          dataPointType: DataPointType.HISTOGRAM,
          dataPoints,
        });
      }
      lastCollection = endTime;
      return Promise.resolve({
        resourceMetrics: {
          resource: resource(),
          scopeMetrics: metrics.length === 0 ? [] : [{ scope, metrics }],
        },
        errors: [],
      });
    },
  };
}
