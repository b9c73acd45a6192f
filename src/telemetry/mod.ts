/**
 * Breakwater's telemetry: OpenTelemetry metrics (OTLP/HTTP export and Prometheus text from
 * one MeterProvider), traces of the request path, resource utilisation, and the structured
 * access log.
 *
 * @example
 * ```ts
 * import { createLogger, createTelemetry, logAccess } from "./src/telemetry/mod.ts";
 * const telemetry = createTelemetry({
 *   serviceNames: ["users"], prometheus: true,
 *   otlp: { endpoint: null, intervalMs: null }, instanceId: "gw-1", version: "0.1.0",
 * });
 * const span = telemetry.tracing.startServer({ method: "GET", headers: new Headers() });
 * ```
 *
 * @module
 */
export {
  createTelemetry,
  DEFAULT_TELEMETRY_SHUTDOWN_TIMEOUT_MS,
  type GatewayTelemetry,
  METER_NAME,
  type TelemetryOptions,
} from "./telemetry.ts";
export {
  ATTR,
  breakerStateValue,
  type ClientAttemptRecord,
  type GatewayRecorders,
  normalizeMethod,
  type ObservedSources,
  REQUEST_DURATION_BUCKETS_S,
  type ServerRequestRecord,
} from "./instruments.ts";
export { type OperatorRecorders } from "./operator_metrics.ts";
export {
  type ClientSpanHandle,
  type ClientSpanOutcome,
  type ClientSpanStart,
  createTracing,
  type GatewayTracing,
  type ServerSpanHandle,
  type ServerSpanOutcome,
  type ServerSpanStart,
  TRACER_NAME,
  type TracingOptions,
  withTraceHeaders,
} from "./tracing.ts";
export { runtimeTracingEnabled, withoutRuntimeTracing } from "./runtime_tracing.ts";
export { processStartTimeS } from "./process_info.ts";
export {
  accessLogEntry,
  type AccessLogInput,
  createLogger,
  LOG_LEVEL_ENV,
  logAccess,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  parseLogLevel,
  pathWithoutQuery,
} from "./access_log.ts";
export { PROMETHEUS_CONTENT_TYPE } from "./prometheus.ts";
export { type LogSink } from "./export_errors.ts";
export {
  type ExportPlan,
  type OtlpFileConfig,
  type OtlpProtocol,
  resolveExportPlan,
} from "./otlp_config.ts";
export { createOtlpExporter } from "./otlp_exporter.ts";
export { type CgroupLimits, readCgroupLimits } from "./cgroup.ts";
export { buildResource, DEFAULT_SERVICE_NAME } from "./resource.ts";
