/**
 * `createTelemetry`: one MeterProvider for the whole gateway, read by a Prometheus pull
 * reader and, when OTLP export is configured, by a periodic OTLP/HTTP exporter; and the
 * gateway's tracing, on the same resource.
 *
 * @module
 */
import type { Meter } from "@opentelemetry/api";
import type { Resource } from "@opentelemetry/resources";
import {
  InstrumentType,
  MeterProvider,
  type MetricProducer,
  type MetricReader,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import { deadline, DeadlineError } from "../async/mod.ts";
import { createLogger } from "./access_log.ts";
import {
  type LogSink,
  withEncodedSpanFailureStreakLogging,
  withFailureStreakLogging,
  withSpanFailureStreakLogging,
} from "./export_errors.ts";
import {
  createDurationHistograms,
  createGatewayRecorders,
  type GatewayRecorders,
  type LocalDurationHistograms,
} from "./instruments.ts";
import { createHistogramProducer } from "./local_histograms.ts";
import { createOperatorRecorders, type OperatorRecorders } from "./operator_metrics.ts";
import {
  type ConfigNotice,
  type ExportPlan,
  type OtlpFileConfig,
  redactUrl,
  resolveExportPlan,
} from "./otlp_config.ts";
import { createEncodedSpanExporter, createOtlpExporter } from "./otlp_exporter.ts";
import { registerProcessInfo } from "./process_info.ts";
import { registerProcessMetrics } from "./process_metrics.ts";
import { createPrometheusRenderer, createPullReader } from "./prometheus.ts";
import { buildResource } from "./resource.ts";
import { createTracing, type GatewayTracing, samplerFromEnv } from "./tracing.ts";

/** The instrumentation scope name of every gateway instrument. */
export const METER_NAME = "breakwater";
/** Upper bound on {@link GatewayTelemetry.shutdown} unless `shutdownTimeoutMs` says otherwise. */
export const DEFAULT_TELEMETRY_SHUTDOWN_TIMEOUT_MS = 5_000;

/** Options of {@link createTelemetry}. */
export interface TelemetryOptions {
  /** Configured services: their zero-valued series exist from the start. */
  serviceNames: string[];
  /** `telemetry.prometheus`: serve {@link GatewayTelemetry.prometheusText}. */
  prometheus: boolean;
  /**
   * `telemetry.otlp`. The endpoint is a base URL for both signals (`/v1/metrics` and
   * `/v1/traces` are appended); a value set here wins over the `OTEL_*` variables
   * (README, "Telemetry"), which the OpenTelemetry SDK reads from the process environment.
   */
  otlp: OtlpFileConfig;
  /** `service.instance.id` of the resource. */
  instanceId: string;
  /** The gateway's version (`deno.json` `version`): `service.version`, `breakwater.build.info`. */
  version?: string;
  /**
   * @deprecated Ignored: `OTEL_*` variables are read from the process environment by the
   * OpenTelemetry SDK's own helpers, so what the gateway and its exporters see cannot differ.
   */
  env?: Record<string, string | undefined>;
  /** Sink for telemetry's own log lines (export failures once per streak). Default: JSON on stdout. */
  logger?: LogSink;
  /** Where cgroup v2 is mounted (default `/sys/fs/cgroup`); tests point it elsewhere. */
  cgroupRoot?: string;
  /** Sampling period of `breakwater.event_loop.delay` (default 100 ms). */
  eventLoopSampleIntervalMs?: number;
  /** Bound on {@link GatewayTelemetry.shutdown} (default 5000 ms). */
  shutdownTimeoutMs?: number;
}

/** The gateway's telemetry: recorders for the request path, tracing, a scrape, and shutdown. */
export interface GatewayTelemetry extends GatewayRecorders, OperatorRecorders {
  /** Spans of the request path (off unless traces are exported: README, "Telemetry"). */
  tracing: GatewayTracing;
  /**
   * Prometheus text exposition of the same MeterProvider the OTLP exporter reads; null when
   * `prometheus` is off. After shutdown it returns the last text rendered.
   */
  prometheusText(): Promise<string | null>;
  /** Flushes the last metrics and spans (bounded in time) and shuts down. Idempotent. */
  shutdown(): Promise<void>;
}

function defaultSink(): LogSink {
  const logger = createLogger();
  return (line) => {
    const { level, msg, ...fields } = line;
    const text = typeof msg === "string" ? msg : "telemetry";
    if (level === "error") logger.error(text, fields);
    else if (level === "warn") logger.warn(text, fields);
    else if (level === "debug") logger.debug(text, fields);
    else logger.info(text, fields);
  };
}

/** The OTLP metrics reader of `plan`, or null when metrics are not exported. */
function otlpMetricReader(
  plan: ExportPlan["metrics"],
  log: LogSink,
  producer: (reader: () => MetricReader) => MetricProducer,
): MetricReader | null {
  if (plan === null) return null;
  const { exporter, url } = createOtlpExporter("metrics", {
    protocol: plan.protocol,
    url: plan.configUrl,
    timeoutMs: plan.requestTimeoutMs,
  });
  const reader: MetricReader = new PeriodicExportingMetricReader({
    exporter: withFailureStreakLogging(exporter, log, redactUrl(url)),
    exportIntervalMillis: plan.intervalMs,
    exportTimeoutMillis: plan.exportTimeoutMs,
    metricProducers: [producer(() => reader)],
  });
  return reader;
}

/**
 * A producer of the gateway-aggregated request durations for one reader, asking that reader
 * for its histogram temporality when it collects.
 */
function durationsProducer(
  durations: LocalDurationHistograms,
  resource: Resource,
  version: string | undefined,
): (reader: () => MetricReader) => MetricProducer {
  return (reader) =>
    createHistogramProducer(
      [durations.server, durations.client],
      () => resource,
      { name: METER_NAME, version },
      () => reader().selectAggregationTemporality(InstrumentType.HISTOGRAM),
    );
}

/** Tracing exporting to `plan`'s collector, or tracing off when traces are not exported. */
function tracingFor(
  plan: ExportPlan["traces"],
  resource: Resource,
  version: string | undefined,
  log: LogSink,
): GatewayTracing {
  if (plan === null) return createTracing({ exporter: null, resource });
  const samplerNotices: ConfigNotice[] = [];
  const sampler = samplerFromEnv(samplerNotices);
  for (const notice of samplerNotices) log(notice);
  if (plan.protocol === "http/protobuf") {
    // Spans encoded as they end (encoded_span_processor.ts); the same failure-streak logging.
    const { exporter, url } = createEncodedSpanExporter({
      protocol: plan.protocol,
      url: plan.configUrl,
    });
    return createTracing({
      exporter: withEncodedSpanFailureStreakLogging(exporter, log, redactUrl(url)),
      resource,
      sampler,
      version,
    });
  }
  const { exporter, url } = createOtlpExporter("traces", {
    protocol: plan.protocol,
    url: plan.configUrl,
  });
  return createTracing({
    exporter: withSpanFailureStreakLogging(exporter, log, redactUrl(url)),
    resource,
    sampler,
    version,
  });
}

/** Every instrument on `meter`: the request path's, the operator's and the process's. */
function registerInstruments(
  meter: Meter,
  options: TelemetryOptions,
  hasReaders: boolean,
  durations: LocalDurationHistograms,
) {
  const recorders = createGatewayRecorders(meter, options.serviceNames, durations);
  const operator = createOperatorRecorders(meter, options.serviceNames, recorders.sources);
  registerProcessInfo(meter, { version: options.version });
  // Nothing reads the resource metrics without a reader: no sampler timer then.
  const processMetrics = hasReaders
    ? registerProcessMetrics(meter, {
      cgroupRoot: options.cgroupRoot,
      eventLoopSampleIntervalMs: options.eventLoopSampleIntervalMs,
    })
    : null;
  return { recorders, operator, processMetrics };
}

/**
 * Flushes and shuts down the metrics and the tracing within `timeoutMs`; a flush that fails
 * or overruns is logged, never thrown (shutdown goes on without it).
 */
async function flushWithin(
  provider: MeterProvider,
  tracing: GatewayTracing,
  timeoutMs: number,
  log: LogSink,
): Promise<void> {
  try {
    // A negative bound times out at once, as a timer of that length would.
    const flush = Promise.all([provider.shutdown(), tracing.shutdown()]);
    await deadline(flush, Math.max(timeoutMs, 0));
  } catch (error) {
    if (error instanceof DeadlineError) {
      log({
        level: "warn",
        event: "telemetry_shutdown_timeout",
        msg: "telemetry flush did not finish in time; the last metrics and spans may be lost",
        timeoutMs,
      });
      return;
    }
    log({
      level: "warn",
      event: "telemetry_shutdown_failed",
      msg: "telemetry flush failed at shutdown",
      error: error instanceof Error ? error.message : String(error),
    });
  }
}

/**
 * Builds the MeterProvider, its readers and every instrument.
 *
 * @example
 * ```ts
 * const telemetry = createTelemetry({
 *   serviceNames: ["users"], prometheus: true,
 *   otlp: { endpoint: null, intervalMs: 10000 }, instanceId: crypto.randomUUID(),
 * });
 * telemetry.serverRequest({ method: "GET", status: 200, service: "users", durationS: 0.004 });
 * const text = await telemetry.prometheusText(); // for GET /metrics
 * await telemetry.shutdown();
 * ```
 */
export function createTelemetry(options: TelemetryOptions): GatewayTelemetry {
  const log = options.logger ?? defaultSink();
  const resource = buildResource(options.instanceId, options.version);
  // The request durations are aggregated in process and read through each reader's producer.
  const durations = createDurationHistograms();
  const producer = durationsProducer(durations, resource, options.version);
  let pullReader: MetricReader | null = null;
  if (options.prometheus) pullReader = createPullReader([producer(() => pullReader!)]);
  const plan = resolveExportPlan(options.otlp);
  for (const notice of plan.notices) log(notice);
  const otlpReader = otlpMetricReader(plan.metrics, log, producer);
  const readers = [pullReader, otlpReader].filter((reader) => reader !== null);
  const tracing = tracingFor(plan.traces, resource, options.version, log);
  const provider = new MeterProvider({ resource, readers });
  const meter = provider.getMeter(METER_NAME, options.version);
  const { recorders, operator, processMetrics } = registerInstruments(
    meter,
    options,
    readers.length > 0,
    durations,
  );
  const render = createPrometheusRenderer();
  let lastText = "";
  let shutdownPromise: Promise<void> | null = null;

  async function prometheusText(): Promise<string | null> {
    if (pullReader === null) return null;
    if (shutdownPromise !== null) return lastText;
    const { resourceMetrics } = await pullReader.collect();
    lastText = render(resourceMetrics);
    return lastText;
  }

  return {
    ...recorders,
    ...operator,
    tracing,
    prometheusText,
    shutdown() {
      if (shutdownPromise === null) {
        processMetrics?.stop();
        const timeoutMs = options.shutdownTimeoutMs ?? DEFAULT_TELEMETRY_SHUTDOWN_TIMEOUT_MS;
        shutdownPromise = flushWithin(provider, tracing, timeoutMs, log);
      }
      return shutdownPromise;
    },
  };
}
