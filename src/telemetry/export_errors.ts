/**
 * Logs OTLP export failures once per failure streak instead of once per attempt.
 *
 * @module
 */
import type { PushMetricExporter, ResourceMetrics } from "@opentelemetry/sdk-metrics";

/** `ExportResultCode` of `@opentelemetry/core` (not a direct dependency): 0 success, 1 failed. */
const ExportResultCode = { SUCCESS: 0, FAILED: 1 } as const;

/** A structured log sink: one object per line. */
export type LogSink = (line: Record<string, unknown>) => void;

/**
 * Wraps an exporter so that the first failed export of a streak logs one `warn` line
 * (`event: "otlp_export_failed"`) and the first success after a streak logs one `info` line
 * (`event: "otlp_export_recovered"`, with how many exports failed). Results pass through
 * unchanged.
 *
 * @example
 * ```ts
 * const exporter = withFailureStreakLogging(new OTLPMetricExporter({ url }), console.log, url);
 * ```
 */
export function withFailureStreakLogging(
  inner: PushMetricExporter,
  log: LogSink,
  endpointForLog: string,
): PushMetricExporter {
  let failedExports = 0;
  const wrapped: PushMetricExporter = {
    export(metrics: ResourceMetrics, resultCallback) {
      let settled = false;
      const onResult: typeof resultCallback = (result) => {
        // An exporter must call back once; guard anyway so a streak is never counted twice.
        if (settled) return;
        settled = true;
        if (result.code === ExportResultCode.SUCCESS) {
          if (failedExports > 0) {
            safeLog(log, {
              level: "info",
              event: "otlp_export_recovered",
              msg: "OTLP metrics export works again",
              endpoint: endpointForLog,
              failedExports,
            });
          }
          failedExports = 0;
        } else {
          if (failedExports === 0) {
            safeLog(log, {
              level: "warn",
              event: "otlp_export_failed",
              msg: "OTLP metrics export failed; further failures are not logged until it recovers",
              endpoint: endpointForLog,
              error: describeError(result.error),
            });
          }
          failedExports++;
        }
        resultCallback(result);
      };
      try {
        inner.export(metrics, onResult);
      } catch (error) {
        onResult({ code: ExportResultCode.FAILED, error: error as Error });
      }
    },
    forceFlush: () => inner.forceFlush(),
    shutdown: () => inner.shutdown(),
  };
  if (inner.selectAggregationTemporality) {
    wrapped.selectAggregationTemporality = inner.selectAggregationTemporality.bind(inner);
  }
  if (inner.selectAggregation) wrapped.selectAggregation = inner.selectAggregation.bind(inner);
  return wrapped;
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" ? `${error.message} (${code})` : error.message;
  }
  return error === undefined ? "unknown error" : String(error);
}

function safeLog(log: LogSink, line: Record<string, unknown>): void {
  try {
    log(line);
  } catch {
    // A broken log sink must not break metric export.
  }
}
