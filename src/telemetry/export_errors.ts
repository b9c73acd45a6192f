/**
 * Logs OTLP export failures once per failure streak instead of once per attempt.
 *
 * @module
 */
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { PushMetricExporter, ResourceMetrics } from "@opentelemetry/sdk-metrics";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace";
import type { EncodedSpanExporter } from "./encoded_span_processor.ts";

/** A structured log sink: one object per line. */
export type LogSink = (line: Record<string, unknown>) => void;

/**
 * The streak bookkeeping of one exporter: call the returned function with every export result.
 * The first failure of a streak logs one `warn` line (`event: "otlp_export_failed"`), the first
 * success after a streak one `info` line (`event: "otlp_export_recovered"`, with how many
 * exports failed).
 */
export function createFailureStreak(
  log: LogSink,
  endpointForLog: string,
  signal: "metrics" | "traces",
): (result: ExportResult) => void {
  let failedExports = 0;
  return (result) => {
    if (result.code === ExportResultCode.SUCCESS) {
      if (failedExports > 0) {
        safeLog(log, {
          level: "info",
          event: "otlp_export_recovered",
          msg: `OTLP ${signal} export works again`,
          signal,
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
          msg: `OTLP ${signal} export failed; further failures are not logged until it recovers`,
          signal,
          endpoint: endpointForLog,
          error: describeError(result.error),
        });
      }
      failedExports++;
    }
  };
}

/** Calls `inner.export`, reporting its result once to `onResult` before `resultCallback`. */
function exportOnce<T>(
  inner: { export(items: T, cb: (result: ExportResult) => void): void },
  items: T,
  onResult: (result: ExportResult) => void,
  resultCallback: (result: ExportResult) => void,
): void {
  let settled = false;
  const once = (result: ExportResult) => {
    // An exporter must call back once; guard anyway so a streak is never counted twice.
    if (settled) return;
    settled = true;
    onResult(result);
    resultCallback(result);
  };
  try {
    inner.export(items, once);
  } catch (error) {
    once({ code: ExportResultCode.FAILED, error: error as Error });
  }
}

/**
 * Wraps a metric exporter with {@link createFailureStreak} logging. Results pass through
 * unchanged, and so do the exporter's temporality and aggregation choices.
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
  const onResult = createFailureStreak(log, endpointForLog, "metrics");
  const wrapped: PushMetricExporter = {
    export(metrics: ResourceMetrics, resultCallback) {
      exportOnce(inner, metrics, onResult, resultCallback);
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

/** {@link withFailureStreakLogging} for a span exporter. */
export function withSpanFailureStreakLogging(
  inner: SpanExporter,
  log: LogSink,
  endpointForLog: string,
): SpanExporter {
  const onResult = createFailureStreak(log, endpointForLog, "traces");
  return {
    export(spans: ReadableSpan[], resultCallback) {
      exportOnce(inner, spans, onResult, resultCallback);
    },
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
    shutdown: () => inner.shutdown(),
  };
}

/** {@link withFailureStreakLogging} for an exporter of spans encoded as they end. */
export function withEncodedSpanFailureStreakLogging(
  inner: EncodedSpanExporter,
  log: LogSink,
  endpointForLog: string,
): EncodedSpanExporter {
  const onResult = createFailureStreak(log, endpointForLog, "traces");
  return {
    encoded: true,
    export(batch, resultCallback) {
      exportOnce(inner, batch, onResult, resultCallback);
    },
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
    shutdown: () => inner.shutdown(),
  };
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
