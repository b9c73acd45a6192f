/**
 * Distributed tracing for the request path with the OpenTelemetry JS SDK: one SERVER span per
 * request on the public port and one CLIENT span per upstream attempt (retries are sibling
 * client spans with `http.request.resend_count`), W3C Trace Context (`traceparent`,
 * `tracestate`) extracted from the client and injected upstream, batched OTLP/HTTP export.
 *
 * The gateway uses its own `TracerProvider` and passes every context explicitly; it never
 * touches the global `@opentelemetry/api` registrations, which Deno's built-in OpenTelemetry
 * takes over when `OTEL_DENO=true`.
 *
 * Cost: with tracing off, {@link GatewayTracing.startServer} returns null and nothing else runs.
 * The sampler is asked before any span exists; a request it drops gets a handle with ids only
 * (no SDK span, no attributes, one shared `traceparent` for all its attempts), so its context
 * still propagates with the sampled flag off and downstream parent-based samplers drop it too.
 *
 * @module
 */
import {
  type Attributes,
  type Context,
  type Link,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type TextMapGetter,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { getNumberFromEnv, getStringFromEnv, W3CTraceContextPropagator } from "@opentelemetry/core";
import type { Resource } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  type BatchSpanProcessorOptions,
  ParentBasedSampler,
  type ReadableSpan,
  type Sampler,
  SamplingDecision,
  type SamplingResult,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { createEncodedSpanProcessor, type EncodedSpanExporter } from "./encoded_span_processor.ts";
import { normalizeMethod } from "./instruments.ts";
import { type SpanIds, spanIds } from "./_span_ids.ts";
import type { ConfigNotice } from "./otlp_config.ts";

/** The instrumentation scope name of the gateway's spans. */
export const TRACER_NAME = "breakwater";

/** What {@link GatewayTracing.startServer} needs to know about a request. */
export interface ServerSpanStart {
  /** The method as received. */
  method: string;
  /** The client's request headers (`traceparent`, `tracestate`, `user-agent` are read). */
  headers: Headers;
  /** `url.scheme`: `http` or `https`. */
  scheme?: string;
  /** `url.path`: the request target; its query is left out (queries may hold secrets). */
  path?: string;
  /** `client.address`: the peer's address. */
  clientAddress?: string | null;
  /**
   * `server.address` (and `server.port`): the `Host` header as received; read from `headers`
   * when left out (only a sampled request reads it).
   */
  host?: string | null;
  /** The gateway's `X-Request-Id` for this request (`breakwater.request_id`). */
  requestId?: string;
}

/** What {@link ServerSpanHandle.startClient} needs to know about an upstream attempt. */
export interface ClientSpanStart {
  /** The method sent upstream. */
  method: string;
  /** The upstream origin, e.g. `http://10.0.0.5:9001`. */
  origin: string;
  /** `server.address` of the upstream. */
  address: string;
  /** `server.port` of the upstream. */
  port: number;
  /** Path sent upstream (its query is dropped from `url.full`). */
  path?: string;
  /** 0 for the first attempt, 1 for the first retry... (`http.request.resend_count`). */
  resendCount?: number;
}

/** How an upstream attempt ended. */
export interface ClientSpanOutcome {
  /** The upstream's status, when it answered. */
  status?: number;
  /** Why no usable answer came (`unreachable`, `timeout`, `aborted`, ...). */
  errorType?: string;
}

/** How a request ended. */
export interface ServerSpanOutcome {
  /** Status sent to the client. */
  status: number;
  /** The gateway's own error code when it answered itself (`breaker_open`, ...). */
  errorType?: string;
  /** A human-readable detail for the span status (the problem's `detail`). */
  message?: string;
  /** The `x-breakwater-fallback` value when the fallback answered (`breakwater.fallback`). */
  fallback?: string;
}

/** One upstream attempt's span and the trace headers to send with it. */
export interface ClientSpanHandle {
  /** The `traceparent` to send upstream: the gateway's client span as parent. */
  readonly traceparent: string;
  /** The `tracestate` to send upstream, or null to send none. */
  readonly tracestate: string | null;
  /** Ends the span (idempotent). */
  end(outcome: ClientSpanOutcome): void;
}

/** One request's span. */
export interface ServerSpanHandle {
  /** The trace id (32 hex digits), for the access log's `trace_id`. */
  readonly traceId: string;
  /** The server span's id (16 hex digits), for the access log's `span_id`. */
  readonly spanId: string;
  /** Whether the trace is sampled (recorded and exported). */
  readonly sampled: boolean;
  /** Names the span after its route once routing found the service (`GET /api/users`). */
  setRoute(service: string, route: string): void;
  /** Starts the span of one upstream attempt, a child of this one. */
  startClient(attempt: ClientSpanStart): ClientSpanHandle;
  /** Ends the span (idempotent). */
  end(outcome: ServerSpanOutcome): void;
}

/** The gateway's tracing. */
export interface GatewayTracing {
  /** False when tracing is off: {@link GatewayTracing.startServer} then returns null. */
  readonly enabled: boolean;
  /**
   * Starts a request's server span from the client's trace context; null when tracing is off
   * (the client's trace headers should then pass through untouched).
   */
  startServer(request: ServerSpanStart): ServerSpanHandle | null;
  /** Exports the spans ended so far. */
  forceFlush(): Promise<void>;
  /** Exports the last spans and stops; idempotent. */
  shutdown(): Promise<void>;
}

/** Options of {@link createTracing}. */
export interface TracingOptions {
  /**
   * Where finished spans go (batched): an SDK exporter behind the SDK's batch processor, or an
   * encoded-span exporter behind {@link createEncodedSpanProcessor}; null turns tracing off.
   */
  exporter: SpanExporter | EncodedSpanExporter | null;
  /** The resource every span carries (shared with the metrics). */
  resource: Resource;
  /** Default: from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` ({@link samplerFromEnv}). */
  sampler?: Sampler;
  /** Default: from `OTEL_BSP_*` ({@link batchConfigFromEnv}). */
  batch?: BatchSettings;
  /** The gateway's version, recorded as the tracer's version. */
  version?: string;
}

/** The batch span processor's settings. */
export type BatchSettings = Omit<BatchSpanProcessorOptions, "exporter">;

/** Reads `traceparent`/`tracestate` from a `Headers`. */
const headersGetter: TextMapGetter<Headers> = {
  get: (carrier, key) => carrier.get(key) ?? undefined,
  keys: (carrier) => [...carrier.keys()],
};

const DISABLED: GatewayTracing = Object.freeze({
  enabled: false,
  startServer: () => null,
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
});

/**
 * The sampler the spec's `OTEL_TRACES_SAMPLER` names (default `parentbased_always_on`):
 * `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`,
 * `parentbased_traceidratio`; the ratio is `OTEL_TRACES_SAMPLER_ARG` (default 1). Anything else
 * falls back to the default with a notice.
 */
export function samplerFromEnv(notices: ConfigNotice[] = []): Sampler {
  const name = getStringFromEnv("OTEL_TRACES_SAMPLER")?.trim().toLowerCase() ??
    "parentbased_always_on";
  const ratio = () => {
    const value = getNumberFromEnv("OTEL_TRACES_SAMPLER_ARG");
    if (value === undefined) return 1;
    if (value >= 0 && value <= 1) return value;
    notices.push({
      level: "warn",
      event: "otel_env_invalid",
      msg: "OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1; 1 is used",
      variable: "OTEL_TRACES_SAMPLER_ARG",
    });
    return 1;
  };
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio());
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) });
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    default:
      notices.push({
        level: "warn",
        event: "otel_sampler_unsupported",
        msg: `OTEL_TRACES_SAMPLER "${name}" is not supported; parentbased_always_on is used`,
        sampler: name,
      });
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/** The batch span processor's settings (all but the exporter) from `OTEL_BSP_*` (unset: the SDK's defaults). */
export function batchConfigFromEnv(): BatchSettings {
  const positive = (variable: string) => {
    const value = getNumberFromEnv(variable);
    return value !== undefined && value > 0 ? value : undefined;
  };
  return {
    scheduledDelayMillis: positive("OTEL_BSP_SCHEDULE_DELAY"),
    exportTimeoutMillis: positive("OTEL_BSP_EXPORT_TIMEOUT"),
    maxQueueSize: positive("OTEL_BSP_MAX_QUEUE_SIZE"),
    maxExportBatchSize: positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
  };
}

/** A `Host` value split into the span's `server.address` and `server.port`. */
type SplitHost = { address: string; port?: number } | null;

/** `host:port` (or `[v6]:port`) -> address and port; null when there is no usable host. */
function parseHost(host: string): SplitHost {
  const match = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host);
  if (match === null) return null;
  const address = match[1].startsWith("[") ? match[1].slice(1, -1) : match[1];
  return match[2] === undefined ? { address } : { address, port: Number(match[2]) };
}

/** Distinct `Host` values remembered by {@link splitHost}; past it the memory starts over. */
const HOST_CACHE_ENTRIES = 64;
const hostCache = new Map<string, SplitHost>();

/**
 * {@link parseHost}, remembered: a gateway sees a handful of `Host` values, and the regular
 * expression was a tenth of a sampled request's span work. The client chooses the value, so
 * the memory is bounded (cleared when full) rather than trusted to stay small.
 */
function splitHost(host: string | null | undefined): SplitHost {
  if (host === null || host === undefined || host === "") return null;
  let split = hostCache.get(host);
  if (split === undefined) {
    split = parseHost(host);
    if (hostCache.size >= HOST_CACHE_ENTRIES) hostCache.clear();
    hostCache.set(host, split);
  }
  return split;
}

/** The path part of a path-and-query. */
function pathOnly(pathAndQuery: string): string {
  const query = pathAndQuery.indexOf("?");
  return query < 0 ? pathAndQuery : pathAndQuery.slice(0, query);
}

/** What starting a server span needs, shared by every request of one {@link createTracing}. */
interface TracingState {
  sampler: Sampler;
  ids: SpanIds;
  /**
   * What was decided for the server span the SDK is about to start (synchronously, so no other
   * request can see it): the trace id a root request was sampled on (a ratio sampler decides on
   * the id, and the span must carry the id that was decided on) and the sampler's result, so
   * the SDK does not ask the sampler a second time.
   */
  decided: Decided;
  tracer: Tracer;
  propagator: W3CTraceContextPropagator;
}

/** See {@link TracingState.decided}. */
interface Decided {
  traceId: string | undefined;
  result: SamplingResult | undefined;
}

/**
 * The provider: a sampler and ids that honour {@link TracingState.decided} (the client spans,
 * never decided beforehand, go to `sampler`), batched export.
 */
function createProvider(
  options: TracingOptions & { exporter: SpanExporter | EncodedSpanExporter },
  sampler: Sampler,
  ids: SpanIds,
  decided: Decided,
): TracerProvider {
  return new TracerProvider({
    resource: options.resource,
    sampler: {
      shouldSample: (...args) => decided.result ?? sampler.shouldSample(...args),
      toString: () => sampler.toString(),
    },
    idGenerator: {
      generateTraceId: () => decided.traceId ?? ids.generateTraceId(),
      generateSpanId: () => ids.generateSpanId(),
    },
    spanProcessors: [
      // Protobuf: spans encoded as they end, so they die young (encoded_span_processor.ts).
      "encoded" in options.exporter
        ? createEncodedSpanProcessor({
          exporter: options.exporter,
          ...(options.batch ?? batchConfigFromEnv()),
        })
        : new BatchSpanProcessor({
          exporter: options.exporter,
          ...(options.batch ?? batchConfigFromEnv()),
        }),
    ],
  });
}

/**
 * The attribute map of a recording SDK span, to be written directly; null for any other span.
 *
 * Why: `Span.setAttribute` checks every value (sdk-trace 3.1's `isAnyValue` allocates a
 * `WeakSet` per value) and copies it for truncation, and `startSpan`'s `attributes` option runs
 * the same checks twice. The values written here are strings and numbers the gateway built,
 * valid attribute values by construction; the provider sets no value-length limit and a span
 * gets at most 14 of the 128 allowed, so the checks could never change or drop one. The span
 * stays the SDK's (`SpanImpl.attributes` is `ReadableSpan.attributes`, read by the exporters).
 */
function attributesOf(span: Span): Attributes | null {
  const attributes = (span as Partial<ReadableSpan>).attributes;
  return typeof attributes === "object" && attributes !== null && span.isRecording()
    ? attributes as Attributes
    : null;
}

/**
 * Writes one attribute of `span`: into `into`, its map from {@link attributesOf} (looked up
 * once per span), else through `setAttribute`.
 */
function setAttribute(
  span: Span,
  into: Attributes | null,
  key: string,
  value: string | number,
): void {
  if (into === null) span.setAttribute(key, value);
  else into[key] = value;
}

/** Writes the server span's request attributes (HTTP semantic conventions) into `attributes`. */
function writeServerSpanAttributes(
  attributes: Attributes,
  request: ServerSpanStart,
  method: string,
): void {
  attributes["http.request.method"] = method;
  if (method === "_OTHER") attributes["http.request.method_original"] = request.method;
  if (request.scheme !== undefined) attributes["url.scheme"] = request.scheme;
  if (request.path !== undefined) attributes["url.path"] = pathOnly(request.path);
  if (request.clientAddress) attributes["client.address"] = request.clientAddress;
  const host = splitHost(
    request.host !== undefined ? request.host : request.headers.get("host"),
  );
  if (host !== null) {
    attributes["server.address"] = host.address;
    if (host.port !== undefined) attributes["server.port"] = host.port;
  }
  const userAgent = request.headers.get("user-agent");
  if (userAgent !== null) attributes["user_agent.original"] = userAgent;
  if (request.requestId !== undefined) {
    attributes["breakwater.request_id"] = request.requestId;
  }
}

/**
 * What the sampler is shown of a span that has no attributes or links yet: shared, frozen
 * objects instead of two fresh ones per request (the SDK's samplers only read them).
 */
const NO_ATTRIBUTES: Attributes = Object.freeze({});
/** `startSpan`'s options, shared (the tracer only reads them). */
const SERVER_SPAN_OPTIONS: SpanOptions = Object.freeze({ kind: SpanKind.SERVER });
const CLIENT_SPAN_OPTIONS: SpanOptions = Object.freeze({ kind: SpanKind.CLIENT });
const NO_LINKS: Link[] = Object.freeze([]) as unknown as Link[];

/**
 * A request's handle: the sampler is asked first, on the client's context or a fresh trace
 * id; a dropped request gets ids only, a sampled one an SDK span.
 */
function startServerSpan(state: TracingState, request: ServerSpanStart): ServerSpanHandle {
  const { sampler, ids, decided, tracer, propagator } = state;
  const parent = propagator.extract(ROOT_CONTEXT, request.headers, headersGetter);
  const parentSpanContext = trace.getSpanContext(parent);
  const hasParent = parentSpanContext !== undefined &&
    trace.isSpanContextValid(parentSpanContext);
  const traceId = hasParent ? parentSpanContext.traceId : ids.generateTraceId();
  const method = normalizeMethod(request.method);
  const result = sampler.shouldSample(
    parent,
    traceId,
    method,
    SpanKind.SERVER,
    NO_ATTRIBUTES,
    NO_LINKS,
  );
  if (result.decision === SamplingDecision.NOT_RECORD) {
    return new UnsampledHandle(
      traceId,
      ids.generateSpanId(),
      hasParent ? parentSpanContext : undefined,
    );
  }
  decided.traceId = hasParent ? undefined : traceId;
  decided.result = result;
  let span: Span;
  try {
    span = tracer.startSpan(method, SERVER_SPAN_OPTIONS, parent);
  } finally {
    decided.traceId = undefined;
    decided.result = undefined;
  }
  const into = attributesOf(span);
  if (into !== null) writeServerSpanAttributes(into, request, method);
  else if (span.isRecording()) {
    const attributes: Attributes = {};
    writeServerSpanAttributes(attributes, request, method);
    span.setAttributes(attributes);
  }
  return createServerHandle(span, into, method, tracer);
}

/**
 * Creates the gateway's tracing on its own `TracerProvider` with a `BatchSpanProcessor`.
 *
 * @example
 * ```ts
 * const tracing = createTracing({ exporter, resource });
 * const server = tracing.startServer({ method: "GET", headers: request.headers, scheme: "http" });
 * server?.setRoute("users", "/api/users");
 * const attempt = server?.startClient({ method: "GET", origin, address, port, resendCount: 0 });
 * headers.set("traceparent", attempt.traceparent); // replaces the client's: exactly one
 * attempt?.end({ status: 200 });
 * server?.end({ status: 200 });
 * await tracing.shutdown();
 * ```
 */
export function createTracing(options: TracingOptions): GatewayTracing {
  const { exporter } = options;
  if (exporter === null) return DISABLED;
  const sampler = options.sampler ?? samplerFromEnv();
  const ids = spanIds();
  const decided: Decided = { traceId: undefined, result: undefined };
  const provider = createProvider({ ...options, exporter }, sampler, ids, decided);
  const state: TracingState = {
    sampler,
    ids,
    decided,
    tracer: provider.getTracer(TRACER_NAME, options.version),
    propagator: new W3CTraceContextPropagator(),
  };
  let shutdownPromise: Promise<void> | null = null;

  return {
    enabled: true,
    startServer: (request) => startServerSpan(state, request),
    async forceFlush() {
      await provider.forceFlush();
    },
    shutdown() {
      shutdownPromise ??= provider.shutdown();
      return shutdownPromise;
    },
  };
}

/**
 * The upstream header pairs with the client's `traceparent`/`tracestate` (any case, any count)
 * replaced by the attempt's: exactly one `traceparent` leaves the gateway (W3C Trace Context).
 * Without a span (tracing off) the pairs are returned as they are.
 *
 * @example
 * ```ts
 * const attempt = server?.startClient({ method, origin, address, port, resendCount });
 * const upstreamRequest = { ...request, headers: withTraceHeaders(headers, attempt) };
 * ```
 */
export function withTraceHeaders(
  pairs: [string, string][],
  span: ClientSpanHandle | null | undefined,
): [string, string][] {
  if (span === null || span === undefined) return pairs;
  // Clients rarely send trace headers: copy the pairs whole (one memcpy) unless one is there.
  let out: [string, string][] | null = null;
  for (let i = 0; i < pairs.length; i++) {
    if (isTraceHeader(pairs[i][0])) {
      out = pairs.filter((pair) => !isTraceHeader(pair[0]));
      break;
    }
  }
  out ??= pairs.slice();
  out.push(["traceparent", span.traceparent]);
  if (span.tracestate !== null) out.push(["tracestate", span.tracestate]);
  return out;
}

/** `traceparent` or `tracestate` in any case (the length first: most names are neither). */
function isTraceHeader(name: string): boolean {
  if (name.length !== 11 && name.length !== 10) return false;
  const lower = name.toLowerCase();
  return lower === "traceparent" || lower === "tracestate";
}

const NO_OP = () => {};

/**
 * The handle of a request the sampler dropped: no SDK span. Its attempts share one
 * `traceparent` naming the gateway's (unrecorded) span with the sampled flag off, and the
 * parent's `tracestate` passes through.
 */
class UnsampledHandle implements ServerSpanHandle {
  readonly sampled = false;
  #client: ClientSpanHandle | null = null;
  constructor(
    readonly traceId: string,
    readonly spanId: string,
    private readonly parent: SpanContext | undefined,
  ) {}
  setRoute(): void {}
  startClient(): ClientSpanHandle {
    // Written as W3CTraceContextPropagator.inject writes it (version 00, flags 00), without
    // its context objects and id checks: both ids are valid by construction.
    this.#client ??= {
      traceparent: `00-${this.traceId}-${this.spanId}-00`,
      tracestate: this.parent?.traceState?.serialize() ?? null,
      end: NO_OP,
    };
    return this.#client;
  }
  end(): void {}
}

/** The client span's request attributes (HTTP semantic conventions). */
function clientSpanAttributes(attempt: ClientSpanStart, method: string): Attributes {
  const attributes: Attributes = {
    "http.request.method": method,
    "server.address": attempt.address,
    "server.port": attempt.port,
    "url.full": attempt.origin + (attempt.path === undefined ? "/" : pathOnly(attempt.path)),
  };
  if (method === "_OTHER") attributes["http.request.method_original"] = attempt.method;
  if (attempt.resendCount !== undefined && attempt.resendCount > 0) {
    attributes["http.request.resend_count"] = attempt.resendCount;
  }
  return attributes;
}

/** Records how an attempt ended: every 4xx/5xx is an error of the call (semantic conventions). */
function recordClientOutcome(
  client: Span,
  into: Attributes | null,
  outcome: ClientSpanOutcome,
): void {
  if (outcome.status !== undefined) {
    setAttribute(client, into, "http.response.status_code", outcome.status);
  }
  const errorType = outcome.errorType ??
    (outcome.status === undefined
      ? "_OTHER"
      : outcome.status >= 400
      ? String(outcome.status)
      : undefined);
  if (errorType !== undefined) {
    setAttribute(client, into, "error.type", errorType);
    client.setStatus({ code: SpanStatusCode.ERROR });
  }
}

/** Records how a request ended: only 5xx is the server's error; a gateway answer names its code. */
function recordServerOutcome(
  span: Span,
  into: Attributes | null,
  outcome: ServerSpanOutcome,
): void {
  setAttribute(span, into, "http.response.status_code", outcome.status);
  const errorType = outcome.errorType ??
    (outcome.status >= 500 ? String(outcome.status) : undefined);
  if (errorType !== undefined) setAttribute(span, into, "error.type", errorType);
  if (outcome.fallback !== undefined) {
    setAttribute(span, into, "breakwater.fallback", outcome.fallback);
  }
  if (outcome.status >= 500) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.message ?? errorType });
  }
}

/**
 * The `traceparent` naming `spanContext`, written as `W3CTraceContextPropagator.inject` writes
 * it (version 00, the flags as two hex digits) without the context it would build per attempt
 * and the id checks it would repeat: a span the SDK started under the server span has valid
 * ids, and its context is never suppressed.
 */
function traceparentOf(spanContext: SpanContext): string {
  return `00-${spanContext.traceId}-${spanContext.spanId}-0${spanContext.traceFlags.toString(16)}`;
}

/** One attempt's CLIENT span, a child of `context`, and the trace headers naming it. */
function startClientSpan(
  context: Context,
  attempt: ClientSpanStart,
  tracer: Tracer,
): ClientSpanHandle {
  const clientMethod = normalizeMethod(attempt.method);
  const client = tracer.startSpan(clientMethod, CLIENT_SPAN_OPTIONS, context);
  const clientContext = client.spanContext();
  const clientRecording = client.isRecording();
  const into = clientRecording ? attributesOf(client) : null;
  if (into !== null) Object.assign(into, clientSpanAttributes(attempt, clientMethod));
  else if (clientRecording) client.setAttributes(clientSpanAttributes(attempt, clientMethod));
  let clientEnded = false;
  return {
    traceparent: traceparentOf(clientContext),
    tracestate: clientContext.traceState?.serialize() ?? null,
    end(outcome) {
      if (clientEnded) return;
      clientEnded = true;
      if (clientRecording) recordClientOutcome(client, into, outcome);
      client.end();
    },
  };
}

/** The key `trace.setSpan` stores a span under (`createContextKey` is `Symbol.for`, api 1.x). */
const SPAN_KEY = Symbol.for("OpenTelemetry Context Key SPAN");

/**
 * `trace.setSpan(ROOT_CONTEXT, span)` as one small object: the API's `BaseContext` copies its
 * `Map` and makes three closures per context, and the tracer only reads the span from it
 * (`trace.getSpan`, and the suppress-tracing key, never set here). Setting or deleting a value
 * gives the API's own context, so anything else behaves as with `trace.setSpan`.
 */
class SpanParentContext implements Context {
  constructor(private readonly span: Span) {}
  getValue(key: symbol): unknown {
    return key === SPAN_KEY ? this.span : undefined;
  }
  setValue(key: symbol, value: unknown): Context {
    return trace.setSpan(ROOT_CONTEXT, this.span).setValue(key, value);
  }
  deleteValue(key: symbol): Context {
    return trace.setSpan(ROOT_CONTEXT, this.span).deleteValue(key);
  }
}

function createServerHandle(
  span: Span,
  into: Attributes | null,
  method: string,
  tracer: Tracer,
): ServerSpanHandle {
  const spanContext = span.spanContext();
  const recording = span.isRecording();
  let context: Context | null = null;
  let ended = false;
  return {
    traceId: spanContext.traceId,
    spanId: spanContext.spanId,
    sampled: (spanContext.traceFlags & 1) === 1,
    setRoute(service, route) {
      if (!recording || ended) return;
      span.updateName(`${method} ${route}`);
      setAttribute(span, into, "http.route", route);
      setAttribute(span, into, "breakwater.service", service);
    },
    startClient(attempt) {
      context ??= new SpanParentContext(span);
      return startClientSpan(context, attempt, tracer);
    },
    end(outcome) {
      if (ended) return;
      ended = true;
      if (recording) recordServerOutcome(span, into, outcome);
      span.end();
    },
  };
}
