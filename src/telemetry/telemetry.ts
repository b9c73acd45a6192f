/**
 * `createTelemetry`: one MeterProvider for the whole gateway, read by a Prometheus pull
 * reader and, when an endpoint is configured, by a periodic OTLP/HTTP exporter.
 *
 * @module
 */
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import {
  MeterProvider,
  type MetricReader,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import { processEnv } from "./_env.ts";
import { createLogger } from "./access_log.ts";
import { type LogSink, withFailureStreakLogging } from "./export_errors.ts";
import { createGatewayRecorders, type GatewayRecorders } from "./instruments.ts";
import { redactUrl, resolveOtlpSettings } from "./otlp_config.ts";
import { registerProcessMetrics } from "./process_metrics.ts";
import { createPrometheusRenderer, createPullReader } from "./prometheus.ts";
import { buildResource } from "./resource.ts";

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
   * `telemetry.otlp`. The endpoint is a base URL (`/v1/metrics` is appended unless present);
   * when null, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` then `OTEL_EXPORTER_OTLP_ENDPOINT` are
   * used; `OTEL_EXPORTER_OTLP_[METRICS_]HEADERS`, `_TIMEOUT` and `_PROTOCOL` are honoured.
   */
  otlp: { endpoint: string | null; intervalMs: number };
  /** `service.instance.id` of the resource. */
  instanceId: string;
  /** Default `Deno.env.toObject()`: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_*`. */
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

/** The gateway's telemetry: recorders for the request path, a scrape, and shutdown. */
export interface GatewayTelemetry extends GatewayRecorders {
  /**
   * Prometheus text exposition of the same MeterProvider the OTLP exporter reads; null when
   * `prometheus` is off. After shutdown it returns the last text rendered.
   */
  prometheusText(): Promise<string | null>;
  /** Flushes the last metrics to OTLP (bounded in time) and shuts the provider down. Idempotent. */
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
  const env = options.env ?? processEnv();
  const log = options.logger ?? defaultSink();
  const readers: MetricReader[] = [];

  const pullReader = options.prometheus ? createPullReader() : null;
  if (pullReader !== null) readers.push(pullReader);

  let otlp = null;
  try {
    otlp = resolveOtlpSettings(options.otlp, env);
  } catch (error) {
    log({
      level: "error",
      event: "otlp_config_invalid",
      msg: "OTLP endpoint is not a valid URL; metrics are not exported",
      error: error instanceof Error ? error.message : String(error),
    });
  }
  if (otlp !== null) {
    if (otlp.protocolWarning !== null) {
      log({ level: "warn", event: "otlp_protocol_unsupported", msg: otlp.protocolWarning });
    }
    const exporter = new OTLPMetricExporter({
      url: otlp.url,
      headers: otlp.headers,
      timeoutMillis: otlp.timeoutMs,
    });
    readers.push(
      new PeriodicExportingMetricReader({
        exporter: withFailureStreakLogging(exporter, log, redactUrl(otlp.url)),
        exportIntervalMillis: otlp.intervalMs,
        exportTimeoutMillis: otlp.timeoutMs,
      }),
    );
  }

  const provider = new MeterProvider({
    resource: buildResource(env, options.instanceId),
    readers,
  });
  const meter = provider.getMeter(METER_NAME);
  const recorders = createGatewayRecorders(meter, options.serviceNames);
  // Nothing reads the resource metrics without a reader: no sampler timer then.
  const processMetrics = readers.length > 0
    ? registerProcessMetrics(meter, {
      cgroupRoot: options.cgroupRoot,
      eventLoopSampleIntervalMs: options.eventLoopSampleIntervalMs,
    })
    : null;
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

  async function shutdownOnce(): Promise<void> {
    processMetrics?.stop();
    const timeoutMs = options.shutdownTimeoutMs ?? DEFAULT_TELEMETRY_SHUTDOWN_TIMEOUT_MS;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    try {
      const outcome = await Promise.race([
        provider.shutdown().then(() => "done" as const),
        deadline,
      ]);
      if (outcome === "timeout") {
        log({
          level: "warn",
          event: "telemetry_shutdown_timeout",
          msg: "metrics flush did not finish in time; the last interval may be lost",
          timeoutMs,
        });
      }
    } catch (error) {
      log({
        level: "warn",
        event: "telemetry_shutdown_failed",
        msg: "metrics flush failed at shutdown",
        error: error instanceof Error ? error.message : String(error),
      });
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    ...recorders,
    prometheusText,
    shutdown() {
      shutdownPromise ??= shutdownOnce();
      return shutdownPromise;
    },
  };
}
