/**
 * A batch span processor that encodes each sampled span into OTLP protobuf bytes when it ends
 * and queues only those bytes. The SDK's `BatchSpanProcessor` holds the span objects (and their
 * attribute objects) until their batch is exported; under load that is long enough for them to
 * outlive a young-generation collection and be copied and promoted by V8's scavenger. Here a
 * span is garbage as soon as `end()` returns.
 *
 * Queue, batching, timers, export timeout, `forceFlush` and `shutdown` behave as the SDK's
 * `BatchSpanProcessorBase` (@opentelemetry/sdk-trace 3.1), configured by the same
 * `OTEL_BSP_*` settings.
 *
 * @module
 */
import { context, diag, TraceFlags } from "@opentelemetry/api";
import {
  type ExportResult,
  ExportResultCode,
  globalErrorHandler,
  suppressTracing,
} from "@opentelemetry/core";
import type { ReadableSpan, Span, SpanProcessor } from "@opentelemetry/sdk-trace";
import { createSpanBatchEncoder, type EncodedSpanBatch } from "./otlp_trace_protobuf.ts";

/** Where batches of encoded spans go (an OTLP exporter over {@link EncodedSpanBatch}). */
export interface EncodedSpanExporter {
  /** Tells it apart from an SDK `SpanExporter`. */
  readonly encoded: true;
  export(batch: EncodedSpanBatch, resultCallback: (result: ExportResult) => void): void;
  forceFlush?(): Promise<void>;
  shutdown(): Promise<void>;
}

/** Options of {@link createEncodedSpanProcessor}: the SDK batch processor's, same defaults. */
export interface EncodedSpanProcessorOptions {
  exporter: EncodedSpanExporter;
  /** `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`; default 512. */
  maxExportBatchSize?: number;
  /** `OTEL_BSP_MAX_QUEUE_SIZE`; spans beyond it are dropped; default 2048. */
  maxQueueSize?: number;
  /** `OTEL_BSP_SCHEDULE_DELAY`, milliseconds (the SDK's option name); default 5000. */
  scheduledDelayMillis?: number;
  /** `OTEL_BSP_EXPORT_TIMEOUT`, milliseconds; default 30000. */
  exportTimeoutMillis?: number;
}

/**
 * Creates the processor.
 *
 * @example
 * ```ts
 * const processor = createEncodedSpanProcessor({ exporter, ...batchConfigFromEnv() });
 * const provider = new BasicTracerProvider({ spanProcessors: [processor] });
 * ```
 */
export function createEncodedSpanProcessor(options: EncodedSpanProcessorOptions): SpanProcessor {
  const { exporter } = options;
  const maxQueueSize = options.maxQueueSize ?? 2048;
  let maxExportBatchSize = options.maxExportBatchSize ?? 512;
  const scheduledDelayMs = options.scheduledDelayMillis ?? 5000;
  const exportTimeoutMs = options.exportTimeoutMillis ?? 30_000;
  if (maxExportBatchSize > maxQueueSize) {
    diag.warn(
      "BatchSpanProcessor: maxExportBatchSize must be smaller or equal to maxQueueSize, setting maxExportBatchSize to match maxQueueSize",
    );
    maxExportBatchSize = maxQueueSize;
  }
  const encoder = createSpanBatchEncoder();
  /** Full batches waiting; the encoder holds the open one. */
  const closed: EncodedSpanBatch[] = [];
  let queued = 0;
  let dropped = 0;
  let exporting = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let shutdownPromise: Promise<void> | undefined;

  const clearTimer = () => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
  };

  const flushOneBatch = (): Promise<void> => {
    clearTimer();
    if (queued === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(() => reject(new Error("Timeout")), exportTimeoutMs);
      context.with(suppressTracing(context.active()), () => {
        const batch = closed.length > 0 ? closed.shift()! : encoder.take();
        queued -= batch.count;
        try {
          exporter.export(batch, (result) => {
            clearTimeout(timeout);
            if (result.code === ExportResultCode.SUCCESS) resolve();
            else reject(result.error ?? new Error("BatchSpanProcessor: span export failed"));
          });
        } catch (error) {
          // An exporter that throws instead of calling back: the timeout timer would otherwise
          // hold the process for the whole export timeout after the flush already failed.
          clearTimeout(timeout);
          reject(error);
        }
      });
    });
  };

  const flushAll = async (): Promise<void> => {
    // Closed batches are full (the open one is taken only when none is closed), so this is
    // the number of batches queued.
    const count = Math.ceil(queued / maxExportBatchSize);
    const promises: Promise<void>[] = [];
    for (let i = 0; i < count; i++) promises.push(flushOneBatch());
    await Promise.all(promises);
  };

  const maybeStartTimer = () => {
    if (exporting) return;
    const flush = () => {
      exporting = true;
      flushOneBatch().finally(() => {
        exporting = false;
        if (queued > 0) {
          clearTimer();
          maybeStartTimer();
        }
      }).catch((error) => {
        exporting = false;
        globalErrorHandler(error);
      });
    };
    if (queued >= maxExportBatchSize) return flush();
    if (timer !== undefined) return;
    timer = setTimeout(flush, scheduledDelayMs);
    // Pending spans alone do not keep the process alive (as the SDK's unref'd timer).
    Deno.unrefTimer(timer);
  };

  return {
    onStart(_span: Span) {},
    onEnd(span: ReadableSpan) {
      if (shutdownPromise !== undefined) return;
      if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
      if (queued >= maxQueueSize) {
        if (dropped === 0) diag.debug("maxQueueSize reached, dropping spans");
        dropped++;
        return;
      }
      if (dropped > 0) {
        diag.warn(`Dropped ${dropped} spans because maxQueueSize reached`);
        dropped = 0;
      }
      try {
        encoder.add(span);
      } catch (error) {
        // The official serializer would fail the whole export on this span; here only the
        // span is lost, and `end()` on the request path never throws.
        globalErrorHandler(error as Error);
        return;
      }
      queued++;
      if (encoder.count >= maxExportBatchSize) closed.push(encoder.take());
      maybeStartTimer();
    },
    forceFlush() {
      return shutdownPromise ?? flushAll();
    },
    shutdown() {
      shutdownPromise ??= Promise.resolve().then(flushAll).then(() => exporter.shutdown());
      return shutdownPromise;
    },
  };
}
