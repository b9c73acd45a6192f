/**
 * The tracing handles against the SDK's in-memory exporter: the `traceparent` an attempt sends
 * names the client span that is exported, the sampler is asked once per span, and the server
 * span's `server.address`/`server.port` come from the `Host` value, however many distinct values
 * arrive.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  AlwaysOnSampler,
  InMemorySpanExporter,
  type ReadableSpan,
  type Sampler,
  SamplingDecision,
} from "@opentelemetry/sdk-trace";
import { buildResource, createTracing, type GatewayTracing } from "../../src/telemetry/mod.ts";

/** A tracing that exports to memory, and a way to read what it exported. */
function memoryTracing(sampler: Sampler = new AlwaysOnSampler()) {
  const exporter = new InMemorySpanExporter();
  const tracing = createTracing({ exporter, resource: buildResource("test"), sampler });
  const exported = async (): Promise<ReadableSpan[]> => {
    await tracing.forceFlush();
    return exporter.getFinishedSpans();
  };
  return { tracing, exported };
}

/** One request with one attempt, ended. */
function oneRequest(tracing: GatewayTracing, headers: HeadersInit = {}, host = "gw:8080") {
  const server = tracing.startServer({
    method: "GET",
    headers: new Headers(headers),
    scheme: "http",
    path: "/api/users/1?token=x",
    host,
  });
  assert.ok(server !== null);
  const client = server.startClient({
    method: "GET",
    origin: "http://127.0.0.1:9001",
    address: "127.0.0.1",
    port: 9001,
    path: "/1",
  });
  client.end({ status: 200 });
  server.end({ status: 200 });
  return { server, client };
}

Deno.test("an attempt's traceparent names the exported client span; the parent's tracestate passes", async () => {
  const { tracing, exported } = memoryTracing();
  try {
    const parentTraceId = "0af7651916cd43dd8448eb211c80319c";
    const { server, client } = oneRequest(tracing, {
      traceparent: `00-${parentTraceId}-b7ad6b7169203331-01`,
      tracestate: "vendor=abc",
    });
    const spans = await exported();
    assert.equal(spans.length, 2);
    const clientSpan = spans.find((span) => span.kind === 2)!; // SpanKind.CLIENT
    const serverSpan = spans.find((span) => span.kind === 1)!; // SpanKind.SERVER
    const ids = clientSpan.spanContext();
    assert.equal(client.traceparent, `00-${parentTraceId}-${ids.spanId}-01`);
    assert.match(client.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.equal(client.tracestate, "vendor=abc");
    assert.equal(clientSpan.parentSpanContext?.spanId, server.spanId);
    assert.equal(serverSpan.spanContext().spanId, server.spanId);
    assert.equal(serverSpan.parentSpanContext?.spanId, "b7ad6b7169203331");
  } finally {
    await tracing.shutdown();
  }
});

Deno.test("the sampler is asked once per span, and a root span keeps the trace id it was sampled on", async () => {
  const asked: { traceId: string; kind: number }[] = [];
  const sampler: Sampler = {
    shouldSample(_context, traceId, _name, kind) {
      asked.push({ traceId, kind });
      return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    },
    toString: () => "counting",
  };
  const { tracing, exported } = memoryTracing(sampler);
  try {
    const { server } = oneRequest(tracing);
    const spans = await exported();
    assert.deepEqual(asked.map((call) => call.kind), [1, 2]); // SERVER, then CLIENT
    assert.equal(asked[0].traceId, server.traceId);
    for (const span of spans) assert.equal(span.spanContext().traceId, server.traceId);
    assert.ok(spans.every((span) => (span.spanContext().traceFlags & 1) === 1));
  } finally {
    await tracing.shutdown();
  }
});

Deno.test("server.address and server.port from Host, past the remembered values too", async () => {
  const { tracing, exported } = memoryTracing();
  try {
    const cases: [string, string | undefined, number | undefined][] = [
      ["gw:8080", "gw", 8080],
      ["gw", "gw", undefined],
      ["[::1]:9", "::1", 9],
      ["a:b:c", undefined, undefined],
      ["gw:", undefined, undefined],
    ];
    // 100 distinct hosts in between: more than are remembered, so the memory starts over.
    const hosts = [
      ...cases.map(([host]) => host),
      ...Array.from({ length: 100 }, (_, i) => `h${i}:${1000 + i}`),
      ...cases.map(([host]) => host),
    ];
    for (const host of hosts) oneRequest(tracing, {}, host);
    const servers = (await exported()).filter((span) => span.kind === 1);
    assert.equal(servers.length, hosts.length);
    type Split = readonly [string | undefined, number | undefined];
    const expected = new Map<string, Split>([
      ...cases.map(([host, address, port]): [string, Split] => [host, [address, port]]),
      ...Array.from({ length: 100 }, (_, i): [string, Split] => [`h${i}:${1000 + i}`, [
        `h${i}`,
        1000 + i,
      ]]),
    ]);
    servers.forEach((span, index) => {
      const [address, port] = expected.get(hosts[index])!;
      assert.equal(span.attributes["server.address"], address, hosts[index]);
      assert.equal(span.attributes["server.port"], port, hosts[index]);
    });
  } finally {
    await tracing.shutdown();
  }
});
