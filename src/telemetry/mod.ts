/**
 * Breakwater's telemetry: OpenTelemetry metrics (OTLP/HTTP export and Prometheus text from
 * one MeterProvider), resource utilisation, and the structured access log.
 *
 * @example
 * ```ts
 * import { createLogger, createTelemetry, logAccess } from "./src/telemetry/mod.ts";
 * const telemetry = createTelemetry({
 *   serviceNames: ["users"], prometheus: true,
 *   otlp: { endpoint: null, intervalMs: 10000 }, instanceId: "gw-1",
 * });
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
  type GatewayRecorders,
  normalizeMethod,
  type ObservedSources,
  REQUEST_DURATION_BUCKETS_S,
} from "./instruments.ts";
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
export { type OtlpSettings, resolveOtlpSettings } from "./otlp_config.ts";
export { type CgroupLimits, readCgroupLimits } from "./cgroup.ts";
export { DEFAULT_SERVICE_NAME, resourceAttributes } from "./resource.ts";
