/**
 * Prometheus text exposition of the gateway's own MeterProvider: a pull reader registered
 * next to the OTLP reader (one source of truth) and the exporter package's serializer.
 *
 * @module
 */
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import {
  DataPointType,
  type MetricData,
  type MetricProducer,
  MetricReader,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";

/** The `Content-Type` of the Prometheus text format (version 0.0.4). */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * A reader that only collects when asked (a scrape). Cumulative temporality, as Prometheus
 * expects. Subclassing is the SDK's only way to register a reader.
 */
class PullMetricReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * A reader to register on the MeterProvider, collected on each scrape; `metricProducers` add
 * metrics the SDK does not aggregate itself (`./local_histograms.ts`).
 */
export function createPullReader(metricProducers: MetricProducer[] = []): MetricReader {
  return new PullMetricReader({ metricProducers });
}

/** UCUM units of the OpenTelemetry -> Prometheus translation (the ones a gateway uses). */
const UNIT_WORDS: Record<string, string> = {
  d: "days",
  h: "hours",
  min: "minutes",
  s: "seconds",
  ms: "milliseconds",
  us: "microseconds",
  ns: "nanoseconds",
  By: "bytes",
  KiBy: "kibibytes",
  MiBy: "mebibytes",
  GiBy: "gibibytes",
  KBy: "kilobytes",
  MBy: "megabytes",
  GBy: "gigabytes",
  bit: "bits",
  "%": "percent",
  Hz: "hertz",
};

/**
 * The Prometheus unit suffix of an OpenTelemetry unit, per the spec's compatibility rules:
 * `s` -> `seconds`, `By` -> `bytes`, `1` -> `ratio` (gauges only), `{request}` -> none,
 * `By/s` -> `bytes_per_second`.
 */
export function prometheusUnitSuffix(unit: string, isGauge: boolean): string {
  const bare = unit.replace(/\{[^}]*\}/g, "").trim();
  if (bare === "") return "";
  if (bare === "1") return isGauge ? "ratio" : "";
  const slash = bare.indexOf("/");
  if (slash >= 0) {
    const per = bare.slice(slash + 1);
    const perWord = per === "s"
      ? "second"
      : per === "m"
      ? "minute"
      : per === "h"
      ? "hour"
      : per === "d"
      ? "day"
      : UNIT_WORDS[per] ?? per;
    return `${prometheusUnitSuffix(bare.slice(0, slash), false)}_per_${perWord}`.replace(/^_/, "");
  }
  return UNIT_WORDS[bare] ?? bare;
}

/**
 * The metric's name with the Prometheus unit suffix appended (once), before the serializer
 * turns dots into underscores and adds `_total` to counters.
 *
 * @example
 * ```ts
 * prometheusBaseName("http.server.request.duration", "s", false); // "http.server.request.duration_seconds"
 * ```
 */
export function prometheusBaseName(name: string, unit: string, isGauge: boolean): string {
  const suffix = prometheusUnitSuffix(unit, isGauge).replace(/[^A-Za-z0-9_]/g, "_");
  if (suffix === "") return name;
  const normalized = name.replace(/[^A-Za-z0-9_]/g, "_");
  return normalized.endsWith("_" + suffix) || normalized.endsWith("_" + suffix + "_total")
    ? name
    : `${name}_${suffix}`;
}

function isGaugeLike(metric: MetricData): boolean {
  return metric.dataPointType === DataPointType.GAUGE ||
    (metric.dataPointType === DataPointType.SUM && !metric.isMonotonic);
}

/** A copy of the collected metrics whose names carry Prometheus unit suffixes. */
export function withPrometheusNames(resourceMetrics: ResourceMetrics): ResourceMetrics {
  return {
    resource: resourceMetrics.resource,
    scopeMetrics: resourceMetrics.scopeMetrics.map((scopeMetrics) => ({
      scope: scopeMetrics.scope,
      metrics: scopeMetrics.metrics.map((metric) => {
        const gauge = isGaugeLike(metric);
        return {
          ...metric,
          descriptor: {
            ...metric.descriptor,
            name: prometheusBaseName(metric.descriptor.name, metric.descriptor.unit, gauge),
            unit: prometheusUnitSuffix(metric.descriptor.unit, gauge),
          },
        } as MetricData;
      }),
    })),
  };
}

/** Renders collected metrics as Prometheus text (`target_info` carries the resource). */
export function createPrometheusRenderer(): (resourceMetrics: ResourceMetrics) => string {
  const serializer = new PrometheusSerializer();
  return (resourceMetrics) => serializer.serialize(withPrometheusNames(resourceMetrics));
}
