/**
 * The one-pass protobuf trace serializer against the official one: real SDK spans (a
 * `TracerProvider` into an `InMemorySpanExporter`), the bytes compared with
 * `ProtobufTraceSerializer`'s, and both decoded with protobufjs from the official
 * opentelemetry-proto definitions.
 */
import assert from "node:assert/strict";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags } from "@opentelemetry/api";
import { TraceState } from "@opentelemetry/core";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import {
  createEncodedTraceSerializer,
  createProtobufTraceSerializer,
  createSpanBatchEncoder,
} from "../../src/telemetry/otlp_trace_protobuf.ts";
import { decodeProtobuf } from "./_otlp_receiver.ts";

/** Finished spans from `record`, through a real provider with `resource`. */
async function spansOf(
  resource: Record<string, string | number>,
  record: (provider: TracerProvider) => void,
): Promise<ReadableSpan[]> {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({
    resource: resourceFromAttributes(resource),
    spanProcessors: [new SimpleSpanProcessor({ exporter })],
  });
  record(provider);
  await provider.forceFlush();
  const spans = exporter.getFinishedSpans();
  await provider.shutdown();
  return spans;
}

/** The gateway's shapes: a server span and its client span, HTTP attributes. */
function gatewaySpans(provider: TracerProvider, count: number): void {
  const tracer = provider.getTracer("breakwater", "0.1.0");
  for (let i = 0; i < count; i++) {
    const server = tracer.startSpan("GET /api", {
      kind: SpanKind.SERVER,
      attributes: {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": `/api/items/${i}`,
        "client.address": "127.0.0.1",
        "server.address": "gw.example.com",
        "server.port": 8080,
        "user_agent.original": "wrk/4.2",
        "breakwater.request_id": crypto.randomUUID(),
      },
    });
    const client = tracer.startSpan(
      "GET",
      { kind: SpanKind.CLIENT },
      trace.setSpan(ROOT_CONTEXT, server),
    );
    client.setAttributes({
      "http.request.method": "GET",
      "server.address": "10.0.0.5",
      "server.port": 9001,
      "url.full": `http://10.0.0.5:9001/api/items/${i}`,
      "http.response.status_code": i % 7 === 0 ? 503 : 200,
    });
    if (i % 7 === 0) client.setStatus({ code: SpanStatusCode.ERROR });
    client.end();
    server.setAttribute("http.response.status_code", 200);
    server.end();
  }
}

/** Everything the proto can carry that the SDK produces. */
function unusualSpans(provider: TracerProvider): void {
  const plain = provider.getTracer("plain");
  const versioned = provider.getTracer("versioned", "2.0.0", {
    schemaUrl: "https://opentelemetry.io/schemas/1.30.0",
  });
  const remoteParent = trace.setSpanContext(ROOT_CONTEXT, {
    traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
    spanId: "00f067aa0ba902b7",
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
    traceState: new TraceState("vendor=a1b2,other=x"),
  });
  const span = plain.startSpan("naïve ünïcode ✓ 名前", {
    kind: SpanKind.CONSUMER,
    attributes: {
      "ascii": "plain",
      "utf8": "€ and 𝄞",
      "int": 42,
      "negative": -7,
      "big": 2 ** 40 + 3,
      "double": 3.25,
      "nan": Number.NaN,
      "bool.true": true,
      "bool.false": false,
      "strings": ["a", "ß", ""],
      "numbers": [1, -2, 2.5],
      "bools": [true, false],
      "long": "x".repeat(20_000),
      "clé": "value",
    },
    links: [
      {
        context: {
          traceId: "0af7651916cd43dd8448eb211c80319c",
          spanId: "b7ad6b7169203331",
          traceFlags: TraceFlags.NONE,
          isRemote: true,
          traceState: new TraceState("k=v"),
        },
        attributes: { "link.kind": "follows", "link.n": 3 },
      },
      {
        context: {
          traceId: "0af7651916cd43dd8448eb211c80319d",
          spanId: "b7ad6b7169203332",
          traceFlags: TraceFlags.SAMPLED,
        },
      },
    ],
  }, remoteParent);
  span.addEvent("retry", { "attempt": 2, "why": "503 ⚠" });
  span.addEvent("bare");
  span.setStatus({ code: SpanStatusCode.ERROR, message: "upstream said 503 — überlastet" });
  span.end();
  const internal = versioned.startSpan("internal", { kind: SpanKind.INTERNAL });
  internal.setStatus({ code: SpanStatusCode.OK });
  internal.end();
  const producer = plain.startSpan("produce", { kind: SpanKind.PRODUCER });
  producer.end();
}

function assertSameAsOfficial(spans: ReadableSpan[]): Uint8Array {
  const official = ProtobufTraceSerializer.serializeRequest(spans);
  const ours = createProtobufTraceSerializer().serializeRequest(spans);
  assert.ok(official !== undefined && ours !== undefined);
  assert.deepEqual(decodeProtobuf("traces", ours), decodeProtobuf("traces", official));
  assert.deepEqual(ours, official, "byte-identical to ProtobufTraceSerializer");
  // The same spans encoded one by one as they end, then wrapped into the request.
  const encoder = createSpanBatchEncoder();
  for (const span of spans) encoder.add(span);
  const wrapped = createEncodedTraceSerializer().serializeRequest(encoder.take());
  assert.deepEqual(wrapped, official, "encoded at end: byte-identical to ProtobufTraceSerializer");
  return ours;
}

Deno.test("protobuf traces: the gateway's spans encode byte for byte as the official serializer", async () => {
  const spans = await spansOf(
    { "service.name": "breakwater", "service.instance.id": "i-1" },
    (provider) => gatewaySpans(provider, 50),
  );
  assert.equal(spans.length, 100);
  const bytes = assertSameAsOfficial(spans);
  const decoded = decodeProtobuf("traces", bytes) as {
    resourceSpans: { scopeSpans: { scope: { name: string }; spans: { name: string }[] }[] }[];
  };
  assert.equal(decoded.resourceSpans[0].scopeSpans[0].scope.name, "breakwater");
  assert.equal(decoded.resourceSpans[0].scopeSpans[0].spans.length, 100);
});

Deno.test("protobuf traces: UTF-8, every value type, events, links, trace state, status message, long values", async () => {
  const spans = await spansOf(
    { "service.name": "bräkwater", "host.id": 7 },
    unusualSpans,
  );
  assert.equal(spans.length, 3);
  assertSameAsOfficial(spans);
});

Deno.test("protobuf traces: several resources and scopes, and lengths past 2 MiB", async () => {
  const first = await spansOf({ "service.name": "a" }, (provider) => {
    gatewaySpans(provider, 6_000);
    unusualSpans(provider);
  });
  const second = await spansOf({ "service.name": "b" }, unusualSpans);
  const mixed = [...first.slice(0, 5), ...second, ...first.slice(5)];
  const bytes = assertSameAsOfficial(mixed);
  assert.ok(bytes.length > 2 * 1024 * 1024, `${bytes.length} bytes`);
});

Deno.test("protobuf traces: the kept buffer does not leak between exports", async () => {
  const big = await spansOf({ "service.name": "a" }, (provider) => gatewaySpans(provider, 40));
  const small = await spansOf({ "service.name": "b" }, unusualSpans);
  const serializer = createProtobufTraceSerializer();
  const firstBig = serializer.serializeRequest(big)!;
  const copy = firstBig.slice();
  const thenSmall = serializer.serializeRequest(small)!;
  assert.deepEqual(firstBig, copy, "an earlier export's bytes are not overwritten");
  assert.deepEqual(thenSmall, ProtobufTraceSerializer.serializeRequest(small));
  assert.deepEqual(serializer.serializeRequest(big), ProtobufTraceSerializer.serializeRequest(big));
  assert.deepEqual(serializer.serializeRequest([]), ProtobufTraceSerializer.serializeRequest([]));
});

Deno.test("protobuf traces: encoded batches own their bytes; an empty batch is an empty request", async () => {
  const big = await spansOf({ "service.name": "a" }, (provider) => gatewaySpans(provider, 40));
  const small = await spansOf({ "service.name": "b" }, unusualSpans);
  const encoder = createSpanBatchEncoder();
  const serializer = createEncodedTraceSerializer();
  for (const span of big) encoder.add(span);
  const first = encoder.take();
  for (const span of small) encoder.add(span);
  const second = encoder.take();
  assert.equal(first.count, big.length);
  assert.equal(second.count, small.length);
  assert.deepEqual(
    serializer.serializeRequest(first),
    ProtobufTraceSerializer.serializeRequest(big),
  );
  assert.deepEqual(
    serializer.serializeRequest(second),
    ProtobufTraceSerializer.serializeRequest(small),
  );
  assert.deepEqual(
    serializer.serializeRequest(encoder.take()),
    ProtobufTraceSerializer.serializeRequest([]),
  );
});

Deno.test("protobuf traces: responses are decoded by the official serializer", () => {
  const serializer = createProtobufTraceSerializer();
  const empty = new Uint8Array(0);
  assert.deepEqual(
    serializer.deserializeResponse(empty),
    ProtobufTraceSerializer.deserializeResponse(empty),
  );
});
