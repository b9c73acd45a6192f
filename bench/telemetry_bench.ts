/**
 * Per-request cost of the gateway's instrumentation: what the request path pays to record a
 * finished request (`serverRequest`) plus one upstream attempt (`clientAttempt`), with both a
 * Prometheus and an OTLP reader registered (the OTLP interval is long, so only recording is
 * measured); and what tracing adds per request (a server span, one client span with its
 * `traceparent`, both ended): off, on and sampled, sampled out by the client's flag, sampled
 * out by a ratio of 0. "Sampled" runs the production path of `http/protobuf`: each span is
 * encoded into its OTLP bytes when it ends (`encoded_span_processor.ts`) and the exporter writes
 * the request's resource and scope envelope around a batch's bytes (the serializer
 * `createEncodedSpanExporter` sends with), then the bytes are dropped: the export's CPU is in
 * the figure, no network is. For comparison: the same without the envelope, and the SDK's
 * `BatchSpanProcessor` (what `http/json` keeps) with the official protobuf serializer, and with
 * the export dropped.
 *
 * Run: deno bench --allow-env --allow-read --allow-net --allow-sys bench/telemetry_bench.ts
 */
import { ExportResultCode } from "@opentelemetry/core";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import {
  AlwaysOnSampler,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace";
import {
  accessLogEntry,
  buildResource,
  createLogger,
  createTelemetry,
  createTracing,
  type GatewayTracing,
} from "../src/telemetry/mod.ts";
import type { EncodedSpanExporter } from "../src/telemetry/encoded_span_processor.ts";
import {
  createEncodedTraceSerializer,
  type EncodedSpanBatch,
} from "../src/telemetry/otlp_trace_protobuf.ts";

const telemetry = createTelemetry({
  serviceNames: ["users", "orders"],
  prometheus: true,
  // An endpoint nobody listens on: the reader exists, but the interval never elapses here.
  otlp: { endpoint: "http://127.0.0.1:9/", intervalMs: 3_600_000 },
  instanceId: "bench",
  logger: () => {},
});

const statuses = [200, 200, 200, 200, 201, 204, 404, 500, 503];
let i = 0;

Deno.bench("baseline: loop and argument objects only", { group: "request" }, () => {
  i++;
  const status = statuses[i % statuses.length];
  const server = { method: "GET", status, service: "users", durationS: 0.004 };
  const client = {
    service: "users",
    address: "127.0.0.1",
    port: 9001,
    status,
    durationS: 0.003,
  };
  if (server.durationS + client.durationS < 0) throw new Error("unreachable");
});

Deno.bench("serverRequest + clientAttempt (one request)", {
  group: "request",
  baseline: true,
}, () => {
  i++;
  const status = statuses[i % statuses.length];
  telemetry.serverRequest({
    method: "GET",
    status,
    service: "users",
    durationS: 0.004,
    scheme: "http",
    route: "/api/users",
    errorType: status === 503 ? "breaker_open" : undefined,
  });
  telemetry.clientAttempt({
    service: "users",
    address: "127.0.0.1",
    port: 9001,
    method: "GET",
    status,
    durationS: 0.003,
  });
});

Deno.bench("serverRequest only", { group: "request" }, () => {
  i++;
  telemetry.serverRequest({
    method: "GET",
    status: statuses[i % statuses.length],
    service: "users",
    durationS: 0.004,
  });
});

Deno.bench("clientAttempt only", { group: "request" }, () => {
  i++;
  telemetry.clientAttempt({
    service: "users",
    address: "127.0.0.1",
    port: 9001,
    status: statuses[i % statuses.length],
    durationS: 0.003,
  });
});

const silent = createLogger({ level: "info", write: () => {} });
Deno.bench("access log line (JSON, discarded)", { group: "log" }, () => {
  silent.info(
    "request",
    accessLogEntry({
      method: "GET",
      path: "/api/users/42?token=x",
      service: "users",
      status: 200,
      durationMs: 3.2,
      upstream: "http://127.0.0.1:9001",
      requestId: "7d8e0c4a-2f5b-4e0e-9a55-3f1b7c1d9e21",
      breakerState: "closed",
    }),
  );
});

Deno.bench("prometheusText (scrape)", { group: "scrape", n: 200 }, async () => {
  await telemetry.prometheusText();
});

/** Serializes each batch with `serialize`, then drops it (an SDK exporter). */
function serializingExporterOf(serialize: (spans: ReadableSpan[]) => unknown): SpanExporter {
  return {
    export(spans: ReadableSpan[], done) {
      serialize(spans);
      done({ code: ExportResultCode.SUCCESS });
    },
    shutdown: () => Promise.resolve(),
  };
}
/** Passes each batch of spans encoded at their end to `write`, then drops it. */
function encodedExporterOf(write: (batch: EncodedSpanBatch) => unknown): EncodedSpanExporter {
  return {
    encoded: true,
    export(batch, done) {
      write(batch);
      done({ code: ExportResultCode.SUCCESS });
    },
    shutdown: () => Promise.resolve(),
  };
}
/** As the `http/protobuf` exporter serializes: the envelope around the spans' bytes. */
const envelope = createEncodedTraceSerializer();
const productionExporter = encodedExporterOf((batch) => envelope.serializeRequest(batch));
/** Spans encoded at their end, the batch dropped: the envelope's share is the difference. */
const encodedDroppingExporter = encodedExporterOf(() => {});
/** The SDK's batch processor with the official `ProtobufTraceSerializer`, for comparison. */
const officialSerializingExporter = serializingExporterOf((spans) =>
  ProtobufTraceSerializer.serializeRequest(spans)
);
/** The SDK's batch processor, each batch dropped: its request-path share alone. */
const droppingExporter: SpanExporter = {
  export(_spans: ReadableSpan[], done) {
    done({ code: ExportResultCode.SUCCESS });
  },
  shutdown: () => Promise.resolve(),
};
const resource = buildResource("bench");
/**
 * A queue no loop overfills: with the default (2048) a processor drops the spans a fast loop
 * ends between two exports, and a row would then measure spans that were never serialized.
 */
const batch = { maxQueueSize: 1 << 20 };
const tracingOff = createTracing({ exporter: null, resource });
const tracingOn = createTracing({
  exporter: productionExporter,
  resource,
  batch,
  sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
});
const tracingOnEncodedDropped = createTracing({
  exporter: encodedDroppingExporter,
  resource,
  batch,
  sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
});
const tracingOnOfficial = createTracing({
  exporter: officialSerializingExporter,
  resource,
  batch,
  sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
});
const tracingOnDropped = createTracing({
  exporter: droppingExporter,
  resource,
  batch,
  sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
});
const tracingRatioZero = createTracing({
  exporter: productionExporter,
  resource,
  batch,
  sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(0) }),
});
const sampledParent = new Headers({
  traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
  "user-agent": "bench",
});
const unsampledParent = new Headers({
  traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
});
const noParent = new Headers();

/** What the request path does per request with one upstream attempt. */
function tracedRequest(tracing: GatewayTracing, headers: Headers): string | undefined {
  const server = tracing.startServer({
    method: "GET",
    headers,
    scheme: "http",
    path: "/api/users/42",
    clientAddress: "127.0.0.1",
    host: "gw:8080",
    requestId: "7d8e0c4a-2f5b-4e0e-9a55-3f1b7c1d9e21",
  });
  if (server === null) return undefined;
  server.setRoute("users", "/api/users");
  const attempt = server.startClient({
    method: "GET",
    origin: "http://127.0.0.1:9001",
    address: "127.0.0.1",
    port: 9001,
    path: "/42",
  });
  attempt.end({ status: 200 });
  server.end({ status: 200 });
  return attempt.traceparent;
}

Deno.bench("tracing off", { group: "tracing", baseline: true }, () => {
  tracedRequest(tracingOff, sampledParent);
});
Deno.bench(
  "tracing on, sampled (2 spans, encoded at end + envelope: production)",
  { group: "tracing" },
  () => {
    tracedRequest(tracingOn, sampledParent);
  },
);
Deno.bench(
  "tracing on, sampled (2 spans, encoded at end, no envelope)",
  { group: "tracing" },
  () => {
    tracedRequest(tracingOnEncodedDropped, sampledParent);
  },
);
Deno.bench(
  "tracing on, sampled (2 spans, SDK batch + official serializer)",
  { group: "tracing" },
  () => {
    tracedRequest(tracingOnOfficial, sampledParent);
  },
);
Deno.bench("tracing on, sampled (2 spans, SDK batch, export dropped)", { group: "tracing" }, () => {
  tracedRequest(tracingOnDropped, sampledParent);
});
Deno.bench("tracing on, sampled out by the client's flag", { group: "tracing" }, () => {
  tracedRequest(tracingOn, unsampledParent);
});
Deno.bench("tracing on, sampled out by ratio 0 (root)", { group: "tracing" }, () => {
  tracedRequest(tracingRatioZero, noParent);
});

globalThis.addEventListener("unload", () => {
  telemetry.shutdown();
  tracingOn.shutdown();
  tracingOnEncodedDropped.shutdown();
  tracingOnOfficial.shutdown();
  tracingOnDropped.shutdown();
  tracingRatioZero.shutdown();
});
