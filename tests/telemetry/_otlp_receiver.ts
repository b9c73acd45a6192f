/**
 * A real OTLP/HTTP receiver for tests: `Deno.serve` on 127.0.0.1, port 0, for metrics
 * (`/v1/metrics`) and traces (`/v1/traces`). JSON payloads are decoded with `JSON.parse`;
 * protobuf payloads (`application/x-protobuf`, the spec's default `http/protobuf`) with
 * protobufjs from the official opentelemetry-proto definitions vendored in `./proto/` — an
 * independent decoder, not the exporter's own serializer. Gzip bodies are inflated first.
 * It can be told to answer normally, fail with a status, or hang until the client gives up.
 *
 * Both encodings land in the same shape (OTLP/JSON's: camelCase fields, 64-bit integers as
 * strings, trace and span ids as lowercase hex), so assertions do not care which was sent.
 *
 * @module
 */
import protobuf from "protobufjs";

/** OTLP JSON `AnyValue`. */
export interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
/** OTLP JSON `KeyValue`. */
export interface KeyValue {
  key: string;
  value: AnyValue;
}
/** A number data point (sum or gauge). */
export interface NumberDataPoint {
  attributes?: KeyValue[];
  asDouble?: number;
  asInt?: string | number;
  timeUnixNano: string;
}
/** A histogram data point. */
export interface HistogramDataPoint {
  attributes?: KeyValue[];
  count: string | number;
  sum?: number;
  bucketCounts: Array<string | number>;
  explicitBounds: number[];
}
/** One metric of the payload. */
export interface OtlpMetric {
  name: string;
  unit?: string;
  description?: string;
  sum?: { dataPoints: NumberDataPoint[]; isMonotonic?: boolean; aggregationTemporality?: number };
  gauge?: { dataPoints: NumberDataPoint[] };
  histogram?: { dataPoints: HistogramDataPoint[]; aggregationTemporality?: number };
}
/** `ExportMetricsServiceRequest` in its JSON encoding. */
export interface ExportRequest {
  resourceMetrics: Array<{
    resource: { attributes: KeyValue[] };
    scopeMetrics: Array<{ scope: { name: string }; metrics: OtlpMetric[] }>;
  }>;
}

/** One span, as OTLP/JSON encodes it (ids in hex). */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  /** 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind?: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: KeyValue[];
  events?: Array<{ name: string; attributes?: KeyValue[] }>;
  /** `code`: 0 unset, 1 ok, 2 error. */
  status?: { code?: number; message?: string };
}
/** `ExportTraceServiceRequest` in its JSON encoding. */
export interface TraceExportRequest {
  resourceSpans: Array<{
    resource: { attributes: KeyValue[] };
    scopeSpans: Array<{ scope: { name: string; version?: string }; spans: OtlpSpan[] }>;
  }>;
}

/** A span with the names of its resource's service and its scope, for assertions. */
export interface ReceivedSpan extends OtlpSpan {
  /** `service.name` of the resource that sent it. */
  serviceName: string;
  /** The instrumentation scope (`breakwater` for the gateway's own, `deno` for Deno's). */
  scopeName: string;
  /** The resource's attributes as a record. */
  resource: Record<string, unknown>;
}

/** What one POST carried. */
export interface ReceivedExport {
  path: string;
  contentType: string | null;
  headers: Headers;
  /** How the body was encoded (from its `Content-Type`). */
  encoding: "json" | "protobuf";
  /** Metrics of a `/v1/metrics` request (`resourceMetrics` is empty for other signals). */
  body: ExportRequest;
  /** Spans of a `/v1/traces` request (`resourceSpans` is empty for other signals). */
  traces: TraceExportRequest;
}

/** How the receiver answers. */
export type ReceiverMode = { kind: "ok" } | { kind: "fail"; status: number } | { kind: "hang" };

/** A running receiver. */
export interface OtlpReceiver {
  /** Base URL, e.g. `http://127.0.0.1:41234` (the exporter appends `/v1/metrics` itself). */
  baseUrl: string;
  /** Every request received, including failed and hung ones. */
  received: ReceivedExport[];
  /** Every span received so far, in arrival order. */
  spans(): ReceivedSpan[];
  /** Changes how later requests are answered. */
  setMode(mode: ReceiverMode): void;
  /** Resolves once `count` requests have arrived (rejects after `timeoutMs`). */
  waitFor(count: number, timeoutMs?: number): Promise<void>;
  /** Resolves once `predicate` holds after some request (rejects after `timeoutMs`). */
  waitUntil(predicate: () => boolean, timeoutMs?: number, what?: string): Promise<void>;
  /** Releases hung requests and stops the server. */
  close(): Promise<void>;
}

const PROTO_FILES = [
  "opentelemetry/proto/common/v1/common.proto",
  "opentelemetry/proto/resource/v1/resource.proto",
  "opentelemetry/proto/trace/v1/trace.proto",
  "opentelemetry/proto/metrics/v1/metrics.proto",
  "opentelemetry/proto/collector/trace/v1/trace_service.proto",
  "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
];

let protoRoot: protobuf.Root | null = null;

/** The official OTLP message definitions, parsed once. */
function otlpProtos(): protobuf.Root {
  if (protoRoot !== null) return protoRoot;
  const root = new protobuf.Root();
  const base = new URL("./proto/", import.meta.url);
  for (const file of PROTO_FILES) {
    protobuf.parse(Deno.readTextFileSync(new URL(file, base)), root, { keepCase: false });
  }
  root.resolveAll();
  protoRoot = root;
  return root;
}

/** Id fields that OTLP/JSON writes as hex where protobuf carries bytes. */
const ID_FIELDS = new Set(["traceId", "spanId", "parentSpanId"]);

function base64ToHex(value: string): string {
  const bytes = Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Rewrites base64 id fields to hex, recursively, in place. */
function idsToHex(value: unknown): void {
  if (Array.isArray(value)) {
    for (const item of value) idsToHex(item);
  } else if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const field = record[key];
      if (ID_FIELDS.has(key) && typeof field === "string") record[key] = base64ToHex(field);
      else idsToHex(field);
    }
  }
}

/**
 * Decodes an OTLP protobuf export request into its JSON shape.
 *
 * @param signal `metrics` or `traces`
 */
export function decodeProtobuf(signal: "metrics" | "traces", bytes: Uint8Array): unknown {
  const type = otlpProtos().lookupType(
    signal === "metrics"
      ? "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest"
      : "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
  );
  const message = type.decode(bytes);
  const object = type.toObject(message, {
    longs: String,
    enums: Number,
    bytes: String,
    defaults: false,
    arrays: true,
  });
  idsToHex(object);
  return object;
}

async function bodyBytes(request: Request): Promise<Uint8Array> {
  if (request.body === null) return new Uint8Array(0);
  const encoding = request.headers.get("content-encoding")?.toLowerCase();
  const stream = encoding === "gzip"
    ? request.body.pipeThrough(new DecompressionStream("gzip"))
    : request.body;
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Starts a receiver on 127.0.0.1, port 0. */
export function startOtlpReceiver(mode: ReceiverMode = { kind: "ok" }): OtlpReceiver {
  const received: ReceivedExport[] = [];
  const hung = new Set<() => void>();
  const waiters = new Set<() => void>();
  let current = mode;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const path = new URL(request.url).pathname;
      const contentType = request.headers.get("content-type");
      const bytes = await bodyBytes(request);
      const encoding = contentType?.includes("protobuf") ? "protobuf" : "json";
      const signal = path.endsWith("/traces") ? "traces" : "metrics";
      let decoded: unknown;
      try {
        decoded = encoding === "protobuf"
          ? decodeProtobuf(signal, bytes)
          : JSON.parse(new TextDecoder().decode(bytes));
      } catch (error) {
        return new Response(`undecodable ${encoding}: ${error}`, { status: 400 });
      }
      const entry: ReceivedExport = {
        path,
        contentType,
        headers: request.headers,
        encoding,
        body: { resourceMetrics: [] },
        traces: { resourceSpans: [] },
      };
      if (signal === "traces") {
        entry.traces = { resourceSpans: [], ...(decoded as Partial<TraceExportRequest>) };
      } else {
        entry.body = { resourceMetrics: [], ...(decoded as Partial<ExportRequest>) };
      }
      received.push(entry);
      for (const wake of [...waiters]) wake();
      if (current.kind === "fail") {
        return new Response("collector says no", { status: current.status });
      }
      if (current.kind === "hang") {
        await new Promise<void>((resolve) => {
          const release = () => {
            hung.delete(release);
            resolve();
          };
          // Held until close(), even after the client gave up on it.
          hung.add(release);
        });
        return new Response(null, { status: 503 });
      }
      // An empty ExportServiceResponse is an empty body in both encodings.
      return encoding === "protobuf"
        ? new Response(new Uint8Array(0), { headers: { "content-type": "application/x-protobuf" } })
        : Response.json({});
    },
  );

  function waitUntil(predicate: () => boolean, timeoutMs = 5000, what = "condition") {
    if (predicate()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        if (!predicate()) return;
        waiters.delete(wake);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(wake);
        reject(new Error(`${what} not met after ${timeoutMs} ms (${received.length} requests)`));
      }, timeoutMs);
      waiters.add(wake);
    });
  }

  return {
    baseUrl: `http://127.0.0.1:${server.addr.port}`,
    received,
    spans: () => received.flatMap(spansOf),
    setMode(next) {
      current = next;
    },
    waitFor(count, timeoutMs = 5000) {
      return waitUntil(
        () => received.length >= count,
        timeoutMs,
        `${count} exports (have ${received.length})`,
      );
    },
    waitUntil,
    async close() {
      for (const release of [...hung]) release();
      await server.shutdown();
    },
  };
}

/** The spans of one received request, with their service and scope names. */
export function spansOf(entry: ReceivedExport): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const resourceSpans of entry.traces.resourceSpans) {
    const resource = attributesOf(resourceSpans.resource?.attributes);
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        out.push({
          ...span,
          serviceName: String(resource["service.name"]),
          scopeName: scopeSpans.scope?.name ?? "",
          resource,
        });
      }
    }
  }
  return out;
}

/** A `KeyValue[]` as a plain record (ints as numbers). */
export function attributesOf(list: KeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of list ?? []) {
    out[key] = value.stringValue ??
      (value.intValue !== undefined
        ? Number(value.intValue)
        : value.doubleValue ?? value.boolValue);
  }
  return out;
}

/** The metric called `name` in the latest export that has it. */
export function latestMetric(received: ReceivedExport[], name: string): OtlpMetric | undefined {
  for (let i = received.length - 1; i >= 0; i--) {
    for (const resourceMetrics of received[i].body.resourceMetrics) {
      for (const scope of resourceMetrics.scopeMetrics) {
        const metric = scope.metrics.find((m) => m.name === name);
        if (metric !== undefined) return metric;
      }
    }
  }
  return undefined;
}

/** The numeric value of a sum/gauge data point. */
export function pointValue(point: NumberDataPoint): number {
  return point.asDouble ?? Number(point.asInt);
}

/** Data points whose attributes include every pair of `match`. */
export function pointsWhere<P extends { attributes?: KeyValue[] }>(
  points: P[],
  match: Record<string, unknown>,
): P[] {
  return points.filter((point) => {
    const attributes = attributesOf(point.attributes);
    return Object.entries(match).every(([key, value]) => attributes[key] === value);
  });
}
