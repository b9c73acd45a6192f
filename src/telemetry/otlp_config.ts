/**
 * Which signals are pushed over OTLP, in which encoding and how often: the config file's
 * `telemetry.otlp` merged with the OpenTelemetry environment variables, read through
 * `@opentelemetry/core`'s helpers. Endpoint, headers, per-request timeout, compression and
 * temporality are resolved by the exporter packages themselves (`otlp_exporter.ts`); this
 * module only decides what they cannot: whether to export at all, the protocol, the interval.
 *
 * Precedence, as in the OpenTelemetry SDK (options given in code win over the environment):
 * a value set in the config file wins, then the `OTEL_*` variable, then the default.
 *
 * @module
 */
import { getNumberFromEnv, getStringFromEnv, getStringListFromEnv } from "@opentelemetry/core";
import { getSharedConfigurationFromEnvironment } from "@opentelemetry/otlp-exporter-base/node-http";

/** The two signals the gateway exports. */
export type OtlpSignal = "metrics" | "traces";
/** The OTLP/HTTP encodings the gateway sends. */
export type OtlpProtocol = "http/protobuf" | "http/json";

/** The spec's default protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`). */
export const DEFAULT_OTLP_PROTOCOL: OtlpProtocol = "http/protobuf";
/**
 * Breakwater's metric export interval when neither `telemetry.otlp.intervalMs` nor
 * `OTEL_METRIC_EXPORT_INTERVAL` is set: 10 s (the spec's 60 s is coarse for a gateway's
 * error-rate dashboards).
 */
export const DEFAULT_METRIC_EXPORT_INTERVAL_MS = 10_000;
/** The spec's default for `OTEL_METRIC_EXPORT_TIMEOUT` (the reader's bound on one export). */
export const DEFAULT_METRIC_EXPORT_TIMEOUT_MS = 30_000;
/** The spec's default for `OTEL_EXPORTER_OTLP_TIMEOUT` (one HTTP request, retries included). */
export const DEFAULT_OTLP_TIMEOUT_MS = 10_000;

/** A line for the gateway's log about the export configuration. */
export interface ConfigNotice {
  level: "warn" | "error";
  event: string;
  msg: string;
  [field: string]: unknown;
}

/** How one signal is exported. */
export interface SignalExport {
  signal: OtlpSignal;
  protocol: OtlpProtocol;
  /**
   * The URL from the config file (`telemetry.otlp.endpoint` + `/v1/<signal>`), or undefined:
   * the exporter then resolves `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`, then
   * `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/<signal>`, then `http://localhost:4318/v1/<signal>`.
   */
  configUrl: string | undefined;
}

/** How metrics are exported: a signal plus the periodic reader's timing. */
export interface MetricsExport extends SignalExport {
  signal: "metrics";
  /** Time between exports. */
  intervalMs: number;
  /** The reader's bound on one export; never above the interval. */
  exportTimeoutMs: number;
  /** Per-request timeout for the exporter; never above the interval (exports do not pile up). */
  requestTimeoutMs: number;
}

/** What {@link resolveExportPlan} decided. */
export interface ExportPlan {
  /** Null: no OTLP metrics push (the Prometheus endpoint is the config's `telemetry.prometheus`). */
  metrics: MetricsExport | null;
  /** Null: no tracing at all (no spans, the client's trace headers pass through untouched). */
  traces: SignalExport | null;
  /** Misconfigurations to log once at start-up. */
  notices: ConfigNotice[];
}

/** The config file's `telemetry.otlp`. */
export interface OtlpFileConfig {
  /** Base URL of an OTLP/HTTP collector, e.g. `http://collector:4318`; null: not set. */
  endpoint: string | null;
  /** Metric export interval; null or undefined: not set. */
  intervalMs?: number | null;
}

const SIGNAL_ENV = { metrics: "METRICS", traces: "TRACES" } as const;

/**
 * `http://collector:4318` -> `http://collector:4318/v1/traces`, as the spec does for
 * `OTEL_EXPORTER_OTLP_ENDPOINT`. A URL that already ends in `/v1/<signal>` is kept.
 *
 * @throws {TypeError} when `base` is not a URL
 */
export function signalUrlFromBase(base: string, signal: OtlpSignal): string {
  const url = new URL(base);
  const path = `v1/${signal}`;
  if (url.pathname.endsWith("/" + path)) return url.href;
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.pathname += path;
  return url.href;
}

/**
 * The protocol of a signal: `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, then
 * `OTEL_EXPORTER_OTLP_PROTOCOL`, then `http/protobuf`. `grpc` and unknown values fall back to
 * `http/protobuf` with a notice.
 */
export function resolveProtocol(signal: OtlpSignal, notices: ConfigNotice[]): OtlpProtocol {
  const variable = `OTEL_EXPORTER_OTLP_${SIGNAL_ENV[signal]}_PROTOCOL`;
  const requested = getStringFromEnv(variable)?.trim() ??
    getStringFromEnv("OTEL_EXPORTER_OTLP_PROTOCOL")?.trim() ?? DEFAULT_OTLP_PROTOCOL;
  if (requested === "http/protobuf" || requested === "http/json") return requested;
  notices.push({
    level: "warn",
    event: "otlp_protocol_unsupported",
    msg: `OTLP protocol "${requested}" is not supported for ${signal}; sending http/protobuf ` +
      `(OTLP/HTTP, port 4318 on a collector)`,
    signal,
    protocol: requested,
  });
  return DEFAULT_OTLP_PROTOCOL;
}

/**
 * Whether a signal is pushed over OTLP. `OTEL_<SIGNAL>_EXPORTER` decides when set (`none`
 * turns it off, `otlp` on; other exporters are not built in); when unset, a signal is
 * exported once an endpoint is configured anywhere (config file,
 * `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`), so a gateway with
 * no collector neither records spans nor logs failed exports to localhost.
 */
function exportWanted(
  signal: OtlpSignal,
  configEndpoint: string | null,
  notices: ConfigNotice[],
): boolean {
  const exporters = getStringListFromEnv(`OTEL_${SIGNAL_ENV[signal]}_EXPORTER`);
  if (exporters !== undefined && exporters.length > 0) {
    if (exporters.includes("none")) return false;
    const unsupported = exporters.filter((name) =>
      name !== "otlp" && !(signal === "metrics" && name === "prometheus")
    );
    if (unsupported.length > 0) {
      notices.push({
        level: "warn",
        event: "otel_exporter_unsupported",
        msg: `OTEL_${SIGNAL_ENV[signal]}_EXPORTER names exporters the gateway does not have: ` +
          `${unsupported.join(", ")} (supported: otlp, none` +
          `${signal === "metrics" ? "; Prometheus is served on /metrics" : ""})`,
        signal,
        exporters: unsupported,
      });
    }
    return exporters.includes("otlp");
  }
  return configEndpoint !== null ||
    getStringFromEnv(`OTEL_EXPORTER_OTLP_${SIGNAL_ENV[signal]}_ENDPOINT`) !== undefined ||
    getStringFromEnv("OTEL_EXPORTER_OTLP_ENDPOINT") !== undefined;
}

/** An endpoint variable that is set but not a URL: the exporter would silently use localhost. */
function invalidEndpointVariable(signal: OtlpSignal): string | null {
  for (
    const variable of [
      `OTEL_EXPORTER_OTLP_${SIGNAL_ENV[signal]}_ENDPOINT`,
      "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
  ) {
    const value = getStringFromEnv(variable)?.trim();
    if (value !== undefined) return URL.canParse(value) ? null : variable;
  }
  return null;
}

function positiveNumber(variable: string, notices: ConfigNotice[]): number | undefined {
  const value = getNumberFromEnv(variable);
  if (value === undefined) return undefined;
  if (Number.isFinite(value) && value > 0) return value;
  notices.push({
    level: "warn",
    event: "otel_env_invalid",
    msg: `${variable} must be a positive number of milliseconds; the default is used`,
    variable,
  });
  return undefined;
}

/**
 * Decides, from the config file and the environment, which signals are exported and how.
 *
 * @example
 * ```ts
 * const plan = resolveExportPlan({ endpoint: "http://collector:4318", intervalMs: null });
 * // plan.metrics: { protocol: "http/protobuf", configUrl: "http://collector:4318/v1/metrics",
 * //                 intervalMs: 10000, ... }; plan.traces: { configUrl: ".../v1/traces", ... }
 * ```
 */
export function resolveExportPlan(config: OtlpFileConfig): ExportPlan {
  const notices: ConfigNotice[] = [];
  const signal = (name: OtlpSignal): SignalExport | null => {
    if (!exportWanted(name, config.endpoint, notices)) return null;
    let configUrl: string | undefined;
    if (config.endpoint !== null) {
      try {
        configUrl = signalUrlFromBase(config.endpoint, name);
      } catch (error) {
        notices.push({
          level: "error",
          event: "otlp_config_invalid",
          msg: `telemetry.otlp.endpoint is not a valid URL; ${name} are not exported`,
          signal: name,
          error: error instanceof Error ? error.message : String(error),
        });
        return null;
      }
    } else {
      const invalid = invalidEndpointVariable(name);
      if (invalid !== null) {
        notices.push({
          level: "error",
          event: "otlp_config_invalid",
          msg: `${invalid} is not a valid URL; ${name} are not exported`,
          signal: name,
          variable: invalid,
        });
        return null;
      }
    }
    return { signal: name, protocol: resolveProtocol(name, notices), configUrl };
  };

  const metricsSignal = signal("metrics");
  let metrics: MetricsExport | null = null;
  if (metricsSignal !== null) {
    const intervalMs = config.intervalMs ??
      positiveNumber("OTEL_METRIC_EXPORT_INTERVAL", notices) ??
      DEFAULT_METRIC_EXPORT_INTERVAL_MS;
    const exportTimeoutMs = positiveNumber("OTEL_METRIC_EXPORT_TIMEOUT", notices) ??
      DEFAULT_METRIC_EXPORT_TIMEOUT_MS;
    // The exporter package's own reading of OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT.
    const requestTimeoutMs = getSharedConfigurationFromEnvironment("METRICS").timeoutMillis ??
      DEFAULT_OTLP_TIMEOUT_MS;
    metrics = {
      ...metricsSignal,
      signal: "metrics",
      intervalMs,
      // The SDK's periodic reader refuses an export timeout longer than its interval.
      exportTimeoutMs: Math.min(exportTimeoutMs, intervalMs),
      requestTimeoutMs: Math.min(requestTimeoutMs, intervalMs),
    };
  }
  return { metrics, traces: signal("traces"), notices };
}

/** The URL without credentials, query or fragment: safe to write to a log. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return parsed.origin + parsed.pathname;
  } catch {
    return "(invalid url)";
  }
}
