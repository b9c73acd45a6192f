/**
 * OTLP/HTTP exporters for metrics and traces, protobuf or JSON, assembled from the official
 * OpenTelemetry JS parts — `convertLegacyHttpOptions` (endpoint, headers, timeout and
 * compression from the config and the `OTEL_EXPORTER_OTLP_*` variables), the otlp-transformer
 * serializers, the export delegate and the exporter base classes — exactly as the
 * `@opentelemetry/exporter-{metrics,trace}-otlp-{proto,http}` packages assemble them, with two
 * parts swapped: the transport, and the protobuf span serializer (`otlp_trace_protobuf.ts`: the
 * official one's bytes, written once; JSON and metrics keep the official serializers).
 *
 * The packages' transport is `node:http`, and Deno's built-in OpenTelemetry (`OTEL_DENO=true`)
 * instruments it like `fetch`: every export became a span of its own, with a `traceparent` the
 * collector never needed. This transport speaks HTTP/1.1 over `Deno.connect` with the
 * gateway's own client (`src/proxy/http1_client.ts`), which the runtime does not instrument.
 * It keeps the package transport's behaviour: 2xx succeeds, 429/502/503/504 and network errors
 * are retried with backoff inside the export timeout (honouring `Retry-After`), anything else
 * fails (OTLP/HTTP spec, "Failures"); response bodies are capped at 4 MiB; gzip when
 * `OTEL_EXPORTER_OTLP_[<SIGNAL>_]COMPRESSION=gzip`.
 *
 * @module
 */
import {
  createOtlpNetworkExportDelegate,
  ExporterMetrics,
  type ExportResponse,
  type IExporterTransport,
  type IOtlpExportDelegate,
  OTLPExporterBase,
  OTLPExporterError,
} from "@opentelemetry/otlp-exporter-base";
import { convertLegacyHttpOptions } from "@opentelemetry/otlp-exporter-base/node-http";
import {
  type IExporterMetricsHelper,
  type ISerializer,
  JsonMetricsSerializer,
  JsonTraceSerializer,
  MetricsExporterMetricsHelper,
  ProtobufMetricsSerializer,
  TraceExporterMetricsHelper,
} from "@opentelemetry/otlp-transformer";
import { OTLPMetricExporterBase } from "@opentelemetry/exporter-metrics-otlp-http";
import { getStringFromEnv } from "@opentelemetry/core";
import type { PushMetricExporter, ResourceMetrics } from "@opentelemetry/sdk-metrics";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace";
import { deadline, DeadlineError, delay } from "../async/mod.ts";
import { createHttp1Client } from "../proxy/http1_client.ts";
import type { UpstreamClient } from "../proxy/upstream_client.ts";
import type { OtlpProtocol, OtlpSignal } from "./otlp_config.ts";
import {
  createEncodedTraceSerializer,
  createProtobufTraceSerializer,
  type EncodedSpanBatch,
} from "./otlp_trace_protobuf.ts";
import type { EncodedSpanExporter } from "./encoded_span_processor.ts";

/** Largest collector response read (the package transport's limit). */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** Retry policy of the package's retrying transport. */
const RETRY = {
  maxRetries: 5,
  initialBackoffMs: 1000,
  maxBackoffMs: 5000,
  multiplier: 1.5,
  jitter: 0.2,
};

/** Options of {@link createOtlpExporter}. */
export interface OtlpExporterOptions {
  /** Encoding: `http/protobuf` (`application/x-protobuf`) or `http/json`. */
  protocol: OtlpProtocol;
  /** Full URL; undefined lets the package resolve it from the environment. */
  url?: string;
  /** Per-request timeout; undefined lets the package read `OTEL_EXPORTER_OTLP_*_TIMEOUT`. */
  timeoutMs?: number;
}

/** An exporter and where it sends. */
export interface OtlpExporter<E> {
  exporter: E;
  /** The resolved URL (for log lines; may carry credentials: redact before logging). */
  url: string;
}

/**
 * What every exporter here shares, as the packages assemble it: the resolved config, the
 * retrying transport, the export metrics, and the export delegate over `serializer`.
 */
function createDelegate<T>(
  signal: OtlpSignal,
  options: OtlpExporterOptions,
  serializer: ISerializer<T, unknown>,
  metricsHelper: IExporterMetricsHelper<T>,
): { delegate: IOtlpExportDelegate<T>; url: string } {
  const contentType = options.protocol === "http/json"
    ? "application/json"
    : "application/x-protobuf";
  const config = convertLegacyHttpOptions(
    { url: options.url, timeoutMillis: options.timeoutMs },
    signal === "metrics" ? "METRICS" : "TRACES",
    `v1/${signal}`,
    { "Content-Type": contentType },
  );
  const transport = withRetries(
    createDenoConnectTransport(config.url, config.headers, config.compression, caCertsFor(signal)),
  );
  const metrics = new ExporterMetrics<T>({
    componentType: signal === "metrics" ? "otlp_http_metric_exporter" : "otlp_http_span_exporter",
    metricsHelper,
    url: config.url,
    // No self-observability meter: the gateway logs failed exports instead.
    meterProvider: undefined,
    responseAttributesFromError: (error) =>
      error instanceof OTLPExporterError && error.code !== undefined
        ? { "http.response.status_code": error.code }
        : {},
  });
  const delegate = createOtlpNetworkExportDelegate(config, serializer, metrics, transport);
  return { delegate, url: config.url };
}

/** A metrics exporter (push), for a `PeriodicExportingMetricReader`. */
export function createOtlpExporter(
  signal: "metrics",
  options: OtlpExporterOptions,
): OtlpExporter<PushMetricExporter>;
/** A span exporter, for a `BatchSpanProcessor`. */
export function createOtlpExporter(
  signal: "traces",
  options: OtlpExporterOptions,
): OtlpExporter<SpanExporter>;
/**
 * Builds an OTLP/HTTP exporter for `signal`.
 *
 * @example
 * ```ts
 * const { exporter, url } = createOtlpExporter("traces", { protocol: "http/protobuf" });
 * // url: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, or
 * // http://localhost:4318/v1/traces
 * ```
 */
export function createOtlpExporter(
  signal: OtlpSignal,
  options: OtlpExporterOptions,
): OtlpExporter<PushMetricExporter | SpanExporter> {
  const json = options.protocol === "http/json";
  if (signal === "metrics") {
    const { delegate, url } = createDelegate<ResourceMetrics>(
      signal,
      options,
      json ? JsonMetricsSerializer : ProtobufMetricsSerializer,
      MetricsExporterMetricsHelper,
    );
    return { exporter: new OTLPMetricExporterBase(delegate), url };
  }
  // Protobuf spans through the serializer that writes the official one's bytes once
  // (otlp_trace_protobuf.ts says why); JSON through the official serializer.
  const { delegate, url } = createDelegate<ReadableSpan[]>(
    signal,
    options,
    json ? JsonTraceSerializer : createProtobufTraceSerializer(),
    TraceExporterMetricsHelper,
  );
  return { exporter: new OTLPExporterBase(delegate), url };
}

/** The export metrics' item count of an encoded batch (the official helper counts spans). */
const ENCODED_BATCH_METRICS_HELPER: IExporterMetricsHelper<EncodedSpanBatch> = {
  name: "span",
  countItems: (batch) => batch.count,
};

/**
 * A protobuf span exporter over batches encoded as spans end (encoded_span_processor.ts):
 * the same transport, retries, timeout and URL resolution as {@link createOtlpExporter}'s,
 * with the envelope written around the pre-encoded spans.
 *
 * @example
 * ```ts
 * const { exporter } = createEncodedSpanExporter({ protocol: "http/protobuf" });
 * const processor = createEncodedSpanProcessor({ exporter });
 * ```
 */
export function createEncodedSpanExporter(
  options: OtlpExporterOptions,
): OtlpExporter<EncodedSpanExporter> {
  const { delegate, url } = createDelegate(
    "traces",
    { ...options, protocol: "http/protobuf" },
    createEncodedTraceSerializer(),
    ENCODED_BATCH_METRICS_HELPER,
  );
  const base = new OTLPExporterBase(delegate);
  return {
    exporter: {
      encoded: true,
      export: (batch, resultCallback) => base.export(batch, resultCallback),
      forceFlush: () => base.forceFlush(),
      shutdown: () => base.shutdown(),
    },
    url,
  };
}

/** `OTEL_EXPORTER_OTLP_[<SIGNAL>_]CERTIFICATE`: extra trusted CAs for an https collector. */
function caCertsFor(signal: OtlpSignal): string[] | undefined {
  const variable = `OTEL_EXPORTER_OTLP_${signal === "metrics" ? "METRICS" : "TRACES"}_CERTIFICATE`;
  const path = getStringFromEnv(variable) ?? getStringFromEnv("OTEL_EXPORTER_OTLP_CERTIFICATE");
  if (path === undefined) return undefined;
  try {
    return [Deno.readTextFileSync(path.trim())];
  } catch {
    return undefined; // the package's env reader already warned about an unreadable file
  }
}

/** What a transport adds to every export request, fixed when it is created. */
interface TransportTarget {
  origin: string;
  pathAndQuery: string;
  headers: () => Promise<Record<string, string>>;
  compression: string;
  /** `Authorization` from the URL's userinfo, or null. */
  basicAuth: string | null;
}

/** Basic credentials in the URL become an Authorization header, as node:http does. */
function basicAuthOf(target: URL): string | null {
  if (target.username === "") return null;
  const user = decodeURIComponent(target.username);
  return `Basic ${btoa(`${user}:${decodeURIComponent(target.password)}`)}`;
}

/** The request's header pairs and body: the exporter's headers, gzip, user agent, credentials. */
async function exportRequest(
  target: TransportTarget,
  data: Uint8Array,
): Promise<{ pairs: [string, string][]; body: Uint8Array<ArrayBuffer> }> {
  const pairs: [string, string][] = Object.entries(await target.headers());
  let body: Uint8Array<ArrayBuffer> = data as Uint8Array<ArrayBuffer>;
  if (target.compression === "gzip") {
    body = await gzip(data);
    pairs.push(["Content-Encoding", "gzip"]);
  }
  pairs.push(["User-Agent", "breakwater OTel-OTLP-Exporter-JavaScript"]);
  const { basicAuth } = target;
  if (basicAuth !== null && !pairs.some(([name]) => name.toLowerCase() === "authorization")) {
    pairs.push(["Authorization", basicAuth]);
  }
  return { pairs, body };
}

/** The collector's answer as the export delegate wants it (OTLP/HTTP spec, "Failures"). */
function exportResponse(response: Response, bytes: Uint8Array | null): ExportResponse {
  if (bytes === null) {
    return {
      status: "failure",
      error: new Error(`OTLP export response body exceeded ${MAX_RESPONSE_BYTES} bytes`),
    };
  }
  if (response.status >= 200 && response.status <= 299) {
    return { status: "success", data: bytes };
  }
  if (isRetryableStatus(response.status)) {
    return {
      status: "retryable",
      retryInMillis: retryAfterMs(response.headers.get("retry-after")),
    };
  }
  return {
    status: "failure",
    error: new OTLPExporterError(
      response.statusText || `HTTP ${response.status}`,
      response.status,
      new TextDecoder().decode(bytes),
    ),
  };
}

/**
 * One POST and its answer, within `timeoutMs`: past it the request is aborted (its socket
 * closed) and the export is retryable with "Request timed out", as the package's transport.
 * Refused, reset, timed out: the collector may be back in a moment (as the package's transport
 * treats network errors).
 */
async function postExport(
  client: UpstreamClient,
  target: TransportTarget,
  data: Uint8Array,
  timeoutMs: number,
): Promise<ExportResponse> {
  const controller = new AbortController();
  const exchange = async () => {
    const { pairs, body } = await exportRequest(target, data);
    const response = await client.send({
      origin: target.origin,
      pathAndQuery: target.pathAndQuery,
      method: "POST",
      headers: pairs,
      body,
      signal: controller.signal,
    });
    return exportResponse(response, await readCapped(response, controller.signal));
  };
  try {
    // A negative time left (the retry loop's clock) times out at once, as a timer would.
    return await deadline(exchange(), Math.max(timeoutMs, 0));
  } catch (error) {
    if (error instanceof DeadlineError) controller.abort(new Error("Request timed out"));
    const reason = controller.signal.aborted ? controller.signal.reason : error;
    return {
      status: "retryable",
      error: reason instanceof Error ? reason : new Error(String(reason)),
    };
  }
}

/**
 * A transport that POSTs over the gateway's HTTP/1.1 client: one keep-alive connection per
 * collector, closed on shutdown.
 */
export function createDenoConnectTransport(
  url: string,
  headers: () => Promise<Record<string, string>>,
  compression: string,
  caCerts?: string[],
): IExporterTransport {
  const parsed = new URL(url);
  const target: TransportTarget = {
    origin: parsed.origin,
    pathAndQuery: parsed.pathname + parsed.search,
    headers,
    compression,
    basicAuth: basicAuthOf(parsed),
  };
  let client: UpstreamClient | null = null;
  return {
    send(data: Uint8Array, timeoutMillis: number): Promise<ExportResponse> {
      client ??= createHttp1Client(() => ({ maxIdlePerHost: 2, idleTimeoutMs: 30_000 }), {
        caCerts,
      });
      return postExport(client, target, data, timeoutMillis);
    },
    shutdown() {
      client?.close();
      client = null;
    },
  };
}

/** OTLP/HTTP spec: only these statuses are retryable. */
function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504;
}

/** `Retry-After` as milliseconds (seconds or an HTTP date), or undefined. */
function retryAfterMs(value: string | null): number | undefined {
  if (value === null) return undefined;
  const seconds = Number.parseInt(value, 10);
  if (Number.isInteger(seconds)) return seconds > 0 ? seconds * 1000 : 0;
  const delayMs = new Date(value).getTime() - Date.now();
  return Number.isFinite(delayMs) ? Math.max(delayMs, 0) : undefined;
}

async function gzip(data: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The response body, or null when it is larger than {@link MAX_RESPONSE_BYTES}. */
async function readCapped(
  response: Response,
  signal: AbortSignal,
): Promise<Uint8Array<ArrayBuffer> | null> {
  if (response.body === null) return new Uint8Array(0);
  const reader = response.body.getReader();
  const onAbort = () => reader.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > MAX_RESPONSE_BYTES) {
        await reader.cancel().catch(() => {});
        return null;
      }
      chunks.push(value);
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** The wait before the next retry: the collector's `Retry-After`, else the backoff with jitter. */
function retryWaitMs(result: ExportResponse, backoffMs: number): number {
  if (result.status === "retryable" && result.retryInMillis !== undefined) {
    return result.retryInMillis;
  }
  const jitter = 1 + (Math.random() * 2 - 1) * RETRY.jitter;
  return Math.min(backoffMs * jitter, RETRY.maxBackoffMs);
}

/**
 * Retries `retryable` answers with exponential backoff and jitter while the export's time
 * lasts, like the package's retrying transport (not exported by it).
 */
export function withRetries(inner: IExporterTransport): IExporterTransport {
  return {
    async send(data, timeoutMillis) {
      const deadlineAt = Date.now() + timeoutMillis;
      let backoffMs = RETRY.initialBackoffMs;
      let result = await inner.send(data, timeoutMillis);
      for (
        let retries = 0;
        result.status === "retryable" && retries < RETRY.maxRetries;
        retries++
      ) {
        const waitMs = retryWaitMs(result, backoffMs);
        backoffMs *= RETRY.multiplier;
        if (waitMs > deadlineAt - Date.now()) break;
        await delay(Math.max(waitMs, 0));
        result = await inner.send(data, deadlineAt - Date.now());
      }
      return result;
    },
    shutdown() {
      inner.shutdown();
    },
  };
}
