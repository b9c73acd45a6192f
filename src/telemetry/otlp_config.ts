/**
 * Where and how OTLP metrics are sent: the config file's `telemetry.otlp` merged with the
 * standard `OTEL_EXPORTER_OTLP_*` variables.
 *
 * @module
 */
import { envPositiveInt, envString, parseKeyValueList } from "./_env.ts";

/** The resolved OTLP/HTTP export settings. */
export interface OtlpSettings {
  /** Full URL the metrics are POSTed to, e.g. `http://collector:4318/v1/metrics`. */
  url: string;
  /** Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`, then `..._METRICS_HEADERS`). */
  headers: Record<string, string>;
  /** Per-export deadline, retries included; never above {@link OtlpSettings.intervalMs}. */
  timeoutMs: number;
  /** Time between exports. */
  intervalMs: number;
  /** The protocol asked for (`OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL`, default `http/json`). */
  requestedProtocol: string;
  /** Set when the requested protocol is not the one used (only OTLP/HTTP JSON is sent). */
  protocolWarning: string | null;
}

/** The OTLP/HTTP path of the metrics signal, appended to a base endpoint. */
export const METRICS_PATH = "v1/metrics";
/** The spec's default export timeout. */
export const DEFAULT_OTLP_TIMEOUT_MS = 10_000;

/**
 * `http://collector:4318` -> `http://collector:4318/v1/metrics`, as the spec does for
 * `OTEL_EXPORTER_OTLP_ENDPOINT`. A URL that already ends in `/v1/metrics` is kept.
 */
export function metricsUrlFromBase(base: string): string {
  const url = new URL(base);
  if (url.pathname.endsWith("/" + METRICS_PATH)) return url.href;
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.pathname += METRICS_PATH;
  return url.href;
}

/**
 * Resolves the export settings, or null when no endpoint is configured anywhere (no export).
 *
 * Endpoint precedence: `telemetry.otlp.endpoint` from the config file (a base URL like
 * `OTEL_EXPORTER_OTLP_ENDPOINT`; `/v1/metrics` is appended unless already there), then
 * `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as is), then `OTEL_EXPORTER_OTLP_ENDPOINT`.
 *
 * @throws {TypeError} when the chosen endpoint is not a valid URL
 * @example
 * ```ts
 * resolveOtlpSettings({ endpoint: null, intervalMs: 10000 }, { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" });
 * // { url: "http://c:4318/v1/metrics", timeoutMs: 10000, ... }
 * ```
 */
export function resolveOtlpSettings(
  otlp: { endpoint: string | null; intervalMs: number },
  env: Record<string, string | undefined>,
): OtlpSettings | null {
  const specific = envString(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
  const general = envString(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
  let url: string;
  if (otlp.endpoint !== null) url = metricsUrlFromBase(otlp.endpoint);
  else if (specific !== undefined) url = new URL(specific).href;
  else if (general !== undefined) url = metricsUrlFromBase(general);
  else return null;

  const headers = {
    ...parseKeyValueList(envString(env, "OTEL_EXPORTER_OTLP_HEADERS")),
    ...parseKeyValueList(envString(env, "OTEL_EXPORTER_OTLP_METRICS_HEADERS")),
  };
  const timeoutMs = envPositiveInt(env, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT") ??
    envPositiveInt(env, "OTEL_EXPORTER_OTLP_TIMEOUT") ?? DEFAULT_OTLP_TIMEOUT_MS;
  const requestedProtocol = envString(env, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") ??
    envString(env, "OTEL_EXPORTER_OTLP_PROTOCOL") ?? "http/json";
  return {
    url,
    headers,
    // The SDK's periodic reader refuses a timeout longer than the interval.
    timeoutMs: Math.min(timeoutMs, otlp.intervalMs),
    intervalMs: otlp.intervalMs,
    requestedProtocol,
    protocolWarning: requestedProtocol === "http/json"
      ? null
      : `OTLP protocol "${requestedProtocol}" is not supported; sending OTLP/HTTP JSON ` +
        `(OpenTelemetry collectors accept it on the same /v1/metrics endpoint)`,
  };
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
