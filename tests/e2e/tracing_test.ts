/**
 * Tracing with real parts: a raw-socket upstream that records every header line as sent, the
 * gateway's HTTP/1.1 client, and an OTLP/HTTP receiver on loopback that decodes the exported
 * spans with the official opentelemetry-proto definitions.
 *
 * The module-level tests drive `telemetry.tracing` the way the request path does (server span
 * from the client's headers -> client span per attempt -> `traceparent` upstream -> export).
 * The gateway-level test runs a gateway process end to end.
 */
import assert from "node:assert/strict";
import {
  createTelemetry,
  type GatewayTelemetry,
  withTraceHeaders,
} from "../../src/telemetry/mod.ts";
import { createHttp1Client } from "../../src/proxy/http1_client.ts";
import { type RecordedRequest, startRecordingUpstream } from "../_helpers/raw_http.ts";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { attributesOf, type ReceivedSpan, startOtlpReceiver } from "../telemetry/_otlp_receiver.ts";
import { withEnv } from "../telemetry/_env.ts";

const CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN_ID = "b7ad6b7169203331";
const CLIENT_TRACEPARENT = `00-${CLIENT_TRACE_ID}-${CLIENT_SPAN_ID}-01`;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$/;

const SERVER = 2;
const CLIENT = 3;
const STATUS_ERROR = 2;

function headerValues(request: RecordedRequest, name: string): string[] {
  return request.headers.filter(([key]) => key === name).map(([, value]) => value);
}

/** Sends one request over the gateway's HTTP/1.1 client with the headers given. */
async function sendUpstream(
  client: ReturnType<typeof createHttp1Client>,
  origin: string,
  path: string,
  headers: [string, string][],
): Promise<number> {
  const response = await client.send({
    origin,
    pathAndQuery: path,
    method: "GET",
    headers,
    body: null,
    signal: AbortSignal.timeout(5000),
  });
  await response.body?.cancel();
  return response.status;
}

function spanNamed(spans: ReceivedSpan[], predicate: (span: ReceivedSpan) => boolean) {
  const found = spans.filter(predicate);
  assert.equal(found.length, 1, JSON.stringify(spans.map((s) => [s.name, s.kind])));
  return found[0];
}

async function telemetryTo(
  endpoint: string,
  env: Record<string, string> = {},
): Promise<GatewayTelemetry> {
  return await withEnv(env, () =>
    createTelemetry({
      serviceNames: ["users"],
      prometheus: false,
      otlp: { endpoint, intervalMs: 60_000 },
      instanceId: "trace-test",
      version: "0.0.0-test",
      logger: () => {},
    }));
}

Deno.test("server span -> retried client spans -> one traceparent upstream -> OTLP protobuf", async () => {
  const receiver = startOtlpReceiver();
  let calls = 0;
  // The first attempt gets a 503 (retried), the second a 200.
  const upstream = startRecordingUpstream(() =>
    ++calls === 1
      ? "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
      : "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
  );
  const client = createHttp1Client(() => ({ maxIdlePerHost: 1, idleTimeoutMs: 1000 }));
  const telemetry = await telemetryTo(receiver.baseUrl);
  try {
    assert.equal(telemetry.tracing.enabled, true);
    const incoming = new Headers({
      traceparent: CLIENT_TRACEPARENT,
      tracestate: "vendor=abc",
      "user-agent": "tracing-test",
    });
    const server = telemetry.tracing.startServer({
      method: "GET",
      headers: incoming,
      scheme: "http",
      path: "/api/users/1?token=secret",
      clientAddress: "127.0.0.1",
      host: "gw.test:8080",
      requestId: "req-1",
    })!;
    assert.equal(server.traceId, CLIENT_TRACE_ID, "the client's trace continues");
    assert.equal(server.sampled, true);
    server.setRoute("users", "/api/users");

    const port = Number(new URL(upstream.origin).port);
    const sent: string[] = [];
    for (let attempt = 0; attempt < 2; attempt++) {
      const span = server.startClient({
        method: "GET",
        origin: upstream.origin,
        address: "127.0.0.1",
        port,
        path: "/users/1?token=secret",
        resendCount: attempt,
      });
      // What the request path does: the client's headers, with the gateway's trace headers
      // replacing the client's (exactly one of each).
      const headers = new Headers(incoming);
      headers.set("traceparent", span.traceparent);
      if (span.tracestate === null) headers.delete("tracestate");
      else headers.set("tracestate", span.tracestate);
      sent.push(span.traceparent);
      const status = await sendUpstream(client, upstream.origin, "/users/1", [...headers]);
      span.end({ status });
    }
    server.end({ status: 200 });

    // The upstream saw exactly one traceparent per request, the gateway's client span's.
    assert.equal(upstream.requests.length, 2);
    for (const [i, request] of upstream.requests.entries()) {
      const values = headerValues(request, "traceparent");
      assert.deepEqual(values, [sent[i]]);
      const [, traceId, , sampled] = TRACEPARENT.exec(values[0])!;
      assert.equal(traceId, CLIENT_TRACE_ID);
      assert.equal(sampled, "1");
      assert.deepEqual(headerValues(request, "tracestate"), ["vendor=abc"]);
    }

    await telemetry.tracing.forceFlush();
    await receiver.waitUntil(() => receiver.spans().length >= 3, 5000, "3 spans");
    const traces = receiver.received.filter((r) => r.path === "/v1/traces");
    assert.ok(traces.every((r) => r.encoding === "protobuf"));
    assert.equal(traces[0].contentType, "application/x-protobuf");
    const spans = receiver.spans();
    const serverSpan = spanNamed(spans, (s) => s.kind === SERVER);
    assert.equal(serverSpan.name, "GET /api/users");
    assert.equal(serverSpan.scopeName, "breakwater");
    assert.equal(serverSpan.traceId, CLIENT_TRACE_ID);
    assert.equal(serverSpan.parentSpanId, CLIENT_SPAN_ID);
    assert.equal(serverSpan.spanId, server.spanId);
    assert.equal(serverSpan.resource["service.instance.id"], "trace-test");
    assert.equal(serverSpan.resource["service.version"], "0.0.0-test");
    const serverAttributes = attributesOf(serverSpan.attributes);
    assert.deepEqual(
      {
        method: serverAttributes["http.request.method"],
        route: serverAttributes["http.route"],
        scheme: serverAttributes["url.scheme"],
        path: serverAttributes["url.path"],
        status: serverAttributes["http.response.status_code"],
        service: serverAttributes["breakwater.service"],
        host: serverAttributes["server.address"],
        port: serverAttributes["server.port"],
        userAgent: serverAttributes["user_agent.original"],
        requestId: serverAttributes["breakwater.request_id"],
      },
      {
        method: "GET",
        route: "/api/users",
        scheme: "http",
        path: "/api/users/1",
        status: 200,
        service: "users",
        host: "gw.test",
        port: 8080,
        userAgent: "tracing-test",
        requestId: "req-1",
      },
    );
    assert.equal(serverSpan.status?.code ?? 0, 0, "a 200 leaves the status unset");

    // Retries are sibling client spans under the server span, one per attempt.
    const clientSpans = spans.filter((s) => s.kind === CLIENT)
      .sort((a, b) => Number(BigInt(a.startTimeUnixNano) - BigInt(b.startTimeUnixNano)));
    assert.equal(clientSpans.length, 2);
    for (const [i, span] of clientSpans.entries()) {
      assert.equal(span.parentSpanId, serverSpan.spanId);
      assert.equal(span.traceId, CLIENT_TRACE_ID);
      assert.equal(`00-${span.traceId}-${span.spanId}-01`, sent[i], "header parent = client span");
      assert.equal(span.name, "GET");
    }
    const [first, second] = clientSpans.map((s) => attributesOf(s.attributes));
    assert.equal(first["http.response.status_code"], 503);
    assert.equal(first["error.type"], "503");
    assert.equal(clientSpans[0].status?.code, STATUS_ERROR);
    assert.equal(first["http.request.resend_count"], undefined);
    assert.equal(second["http.request.resend_count"], 1);
    assert.equal(second["http.response.status_code"], 200);
    assert.equal(first["url.full"], `${upstream.origin}/users/1`, "no query in url.full");
    assert.equal(first["server.port"], port);
  } finally {
    client.close();
    await telemetry.shutdown();
    await upstream.close();
    await receiver.close();
  }
});

Deno.test("a breaker rejection is a server span with error.type and an error status", async () => {
  const receiver = startOtlpReceiver();
  const telemetry = await telemetryTo(receiver.baseUrl);
  try {
    const server = telemetry.tracing.startServer({ method: "POST", headers: new Headers() })!;
    assert.match(server.traceId, /^[0-9a-f]{32}$/, "a new trace when the client sent none");
    server.setRoute("users", "/api/users");
    server.end({
      status: 503,
      errorType: "breaker_open",
      message: 'the breaker of "users" is open',
    });
    await telemetry.tracing.forceFlush();
    await receiver.waitUntil(() => receiver.spans().length >= 1, 5000, "1 span");
    const [span] = receiver.spans();
    assert.equal(span.kind, SERVER);
    assert.equal(span.parentSpanId ?? "", "", "a root span");
    assert.equal(span.status?.code, STATUS_ERROR);
    assert.equal(span.status?.message, 'the breaker of "users" is open');
    const attributes = attributesOf(span.attributes);
    assert.equal(attributes["error.type"], "breaker_open");
    assert.equal(attributes["http.response.status_code"], 503);
  } finally {
    await telemetry.shutdown();
    await receiver.close();
  }
});

Deno.test("a client's duplicate or invalid traceparent is replaced by exactly one", async () => {
  const receiver = startOtlpReceiver();
  const telemetry = await telemetryTo(receiver.baseUrl);
  try {
    const incoming = new Headers();
    incoming.append("traceparent", CLIENT_TRACEPARENT);
    incoming.append("traceparent", "00-11111111111111111111111111111111-2222222222222222-01");
    const server = telemetry.tracing.startServer({ method: "GET", headers: incoming })!;
    // Two values are not a valid traceparent (W3C Trace Context): a new trace starts.
    assert.notEqual(server.traceId, CLIENT_TRACE_ID);
    const span = server.startClient({
      method: "GET",
      origin: "http://127.0.0.1:1",
      address: "127.0.0.1",
      port: 1,
    });
    const headers = new Headers(incoming);
    headers.set("traceparent", span.traceparent);
    assert.deepEqual(
      [...headers].filter(([name]) => name === "traceparent").map(([, value]) => value),
      [span.traceparent],
    );
    assert.ok(TRACEPARENT.test(span.traceparent));
    span.end({ errorType: "unreachable" });
    server.end({ status: 502, errorType: "upstream_unreachable" });
  } finally {
    await telemetry.shutdown();
    await receiver.close();
  }
});

Deno.test("sampling: sampled-out requests export nothing but still propagate their context", async () => {
  const receiver = startOtlpReceiver();
  const unsampledParent = `00-${CLIENT_TRACE_ID}-${CLIENT_SPAN_ID}-00`;
  // parentbased_always_on (the default) follows the client's "not sampled".
  const followsParent = await telemetryTo(receiver.baseUrl);
  // traceidratio 0: a root request is never sampled.
  const ratioZero = await telemetryTo(receiver.baseUrl, {
    OTEL_TRACES_SAMPLER: "traceidratio",
    OTEL_TRACES_SAMPLER_ARG: "0",
  });
  try {
    const fromParent = followsParent.tracing.startServer({
      method: "GET",
      headers: new Headers({ traceparent: unsampledParent }),
    })!;
    assert.equal(fromParent.sampled, false);
    assert.equal(fromParent.traceId, CLIENT_TRACE_ID);
    const attempt = fromParent.startClient({
      method: "GET",
      origin: "http://127.0.0.1:1",
      address: "127.0.0.1",
      port: 1,
    });
    const [, traceId, spanId, sampled] = TRACEPARENT.exec(attempt.traceparent)!;
    assert.equal(traceId, CLIENT_TRACE_ID);
    assert.equal(sampled, "0");
    assert.notEqual(spanId, CLIENT_SPAN_ID, "a span id of the gateway's, not the client's");
    attempt.end({ status: 200 });
    fromParent.end({ status: 200 });

    const root = ratioZero.tracing.startServer({ method: "GET", headers: new Headers() })!;
    assert.equal(root.sampled, false);
    const rootAttempt = root.startClient({
      method: "GET",
      origin: "http://127.0.0.1:1",
      address: "127.0.0.1",
      port: 1,
    });
    assert.equal(TRACEPARENT.exec(rootAttempt.traceparent)![1], root.traceId);
    assert.equal(TRACEPARENT.exec(rootAttempt.traceparent)![3], "0");
    rootAttempt.end({ status: 200 });
    root.end({ status: 200 });

    // A sampled request through the same tracer proves the pipeline works and is the only one.
    const sampledServer = followsParent.tracing.startServer({
      method: "GET",
      headers: new Headers({ traceparent: CLIENT_TRACEPARENT }),
    })!;
    sampledServer.end({ status: 204 });
    await followsParent.tracing.forceFlush();
    await ratioZero.tracing.forceFlush();
    await receiver.waitUntil(() => receiver.spans().length >= 1, 5000, "the sampled span");
    const spans = receiver.spans();
    assert.equal(spans.length, 1, JSON.stringify(spans.map((s) => s.name)));
    assert.equal(attributesOf(spans[0].attributes)["http.response.status_code"], 204);
  } finally {
    await followsParent.shutdown();
    await ratioZero.shutdown();
    await receiver.close();
  }
});

Deno.test("OTEL_TRACES_EXPORTER=none turns tracing off; JSON when asked", async () => {
  const receiver = startOtlpReceiver();
  const off = await telemetryTo(receiver.baseUrl, { OTEL_TRACES_EXPORTER: "none" });
  const json = await telemetryTo(receiver.baseUrl, {
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
  });
  try {
    assert.equal(off.tracing.enabled, false);
    assert.equal(off.tracing.startServer({ method: "GET", headers: new Headers() }), null);
    const server = json.tracing.startServer({
      method: "GET",
      headers: new Headers({ traceparent: CLIENT_TRACEPARENT }),
    })!;
    server.end({ status: 200 });
    await json.tracing.forceFlush();
    await receiver.waitUntil(() => receiver.spans().length >= 1, 5000, "a JSON span");
    const traces = receiver.received.filter((r) => r.path === "/v1/traces");
    assert.equal(traces.length, 1);
    assert.equal(traces[0].contentType, "application/json");
    const [span] = receiver.spans();
    assert.equal(span.traceId, CLIENT_TRACE_ID, "hex ids in OTLP/JSON");
    assert.equal(span.parentSpanId, CLIENT_SPAN_ID);
  } finally {
    await off.shutdown();
    await json.shutdown();
    await receiver.close();
  }
});

const CHILD = new URL("./_tracing_child.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../../deno.json", import.meta.url).pathname;

Deno.test("OTEL_DENO=true: one traceparent upstream (fetch and http1), no spans for the exports", async () => {
  const receiver = startOtlpReceiver();
  const upstream = startRecordingUpstream();
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", `--config=${DENO_JSON}`, "--allow-all", CHILD, upstream.origin],
      env: {
        OTEL_DENO: "true",
        OTEL_DENO_CONSOLE: "ignore",
        OTEL_SERVICE_NAME: "tracing-child",
        // Deno's own exporter and the gateway's go to the same receiver.
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.baseUrl,
        OTEL_METRIC_EXPORT_INTERVAL: "200",
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const output = await child.output();
    clearTimeout(timer);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    const report = JSON.parse(new TextDecoder().decode(output.stdout)) as {
      runtimeTracing: boolean;
      sent: Record<string, string>;
    };
    assert.equal(report.runtimeTracing, true, "Deno's tracing was on in the child");

    // Exactly one traceparent per request, the gateway's own, through both clients.
    for (const client of ["fetch", "http1"]) {
      const request = upstream.requests.find((r) => r.requestLine.includes(`/${client}`));
      assert.ok(request, `the ${client} request arrived`);
      assert.deepEqual(headerValues(request, "traceparent"), [report.sent[client]], client);
    }

    // The control shows what Deno does to a plain fetch: a second traceparent, its own.
    const control = upstream.requests.find((r) => r.requestLine.includes("/control"))!;
    const controlValues = headerValues(control, "traceparent");
    assert.equal(controlValues.length, 2, JSON.stringify(controlValues));
    assert.equal(controlValues[0], report.sent.control);

    // Deno's own exports arrive too (its fetch span proves they do), but none of its spans
    // is an export call of the gateway.
    await receiver.waitUntil(
      () => receiver.spans().some((s) => s.scopeName !== "breakwater"),
      10_000,
      "Deno's own spans",
    );
    const denoSpans = receiver.spans().filter((s) => s.scopeName !== "breakwater");
    const exportCalls = denoSpans.filter((s) =>
      String(attributesOf(s.attributes)["url.path"] ?? attributesOf(s.attributes)["url.full"])
        .includes("/v1/")
    );
    assert.deepEqual(exportCalls.map((s) => s.name), []);
    const ours = receiver.spans().filter((s) => s.scopeName === "breakwater");
    assert.equal(ours.filter((s) => s.kind === CLIENT).length, 3);
    assert.ok(
      receiver.received.some((r) => r.path === "/v1/metrics" && r.encoding === "protobuf"),
      "the gateway's metrics arrived",
    );
  } finally {
    await upstream.close();
    await receiver.close();
  }
});

Deno.test({
  name: "gateway: one traceparent upstream, server and client spans exported, trace_id logged",
  async fn() {
    const receiver = startOtlpReceiver();
    const upstream = startRecordingUpstream();
    const gateway = await startGatewayProcess({
      services: {
        users: { prefix: "/api/users", upstreams: [upstream.origin] },
      },
      telemetry: { otlp: { endpoint: receiver.baseUrl } },
    }, { env: { OTEL_BSP_SCHEDULE_DELAY: "100" } });
    try {
      const port = Number(new URL(gateway.url).port);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(new TextEncoder().encode(
          "GET /api/users/1?token=secret HTTP/1.1\r\nhost: gw:8080\r\n" +
            `traceparent: ${CLIENT_TRACEPARENT}\r\ntracestate: vendor=abc\r\n` +
            "connection: close\r\n\r\n",
        ));
        const buffer = new Uint8Array(4096);
        const read = await Promise.race([
          conn.read(buffer),
          new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000)),
        ]);
        assert.ok(read !== null, "the gateway answered");
      } finally {
        conn.close();
      }
      assert.equal(upstream.requests.length, 1);
      const [value] = headerValues(upstream.requests[0], "traceparent");
      assert.deepEqual(headerValues(upstream.requests[0], "traceparent"), [value]);
      assert.equal(TRACEPARENT.exec(value)![1], CLIENT_TRACE_ID);
      await receiver.waitUntil(() => receiver.spans().length >= 2, 10_000, "2 spans");
      const spans = receiver.spans();
      const server = spanNamed(spans, (s) => s.kind === SERVER);
      const client = spanNamed(spans, (s) => s.kind === CLIENT);
      assert.equal(server.parentSpanId, CLIENT_SPAN_ID);
      assert.equal(client.parentSpanId, server.spanId);
      assert.equal(TRACEPARENT.exec(value)![2], client.spanId);
      // The request path passes the target whole and no Host: the tracing cuts and reads them.
      const serverAttributes = attributesOf(server.attributes);
      assert.equal(serverAttributes["url.path"], "/api/users/1");
      assert.equal(serverAttributes["server.address"], "gw");
      assert.equal(serverAttributes["server.port"], 8080);
      const access = gateway.lines.find((line) => line.msg === "request");
      assert.equal(access?.trace_id, CLIENT_TRACE_ID);
      assert.equal(access?.span_id, server.spanId);
    } finally {
      await gateway.stop();
      await upstream.close();
      await receiver.close();
    }
  },
});

Deno.test("withTraceHeaders replaces every client trace header with the attempt's", async () => {
  const receiver = startOtlpReceiver();
  const telemetry = await telemetryTo(receiver.baseUrl);
  try {
    const server = telemetry.tracing.startServer({
      method: "GET",
      headers: new Headers({ traceparent: CLIENT_TRACEPARENT, tracestate: "vendor=abc" }),
    })!;
    const span = server.startClient({
      method: "GET",
      origin: "http://127.0.0.1:1",
      address: "127.0.0.1",
      port: 1,
    });
    const pairs: [string, string][] = [
      ["accept", "*/*"],
      ["Traceparent", CLIENT_TRACEPARENT],
      ["traceparent", "00-11111111111111111111111111111111-2222222222222222-01"],
      ["TRACESTATE", "other=1"],
    ];
    assert.deepEqual(withTraceHeaders(pairs, span), [
      ["accept", "*/*"],
      ["traceparent", span.traceparent],
      ["tracestate", "vendor=abc"],
    ]);
    assert.equal(withTraceHeaders(pairs, null), pairs, "tracing off: untouched");
    const plain: [string, string][] = [["accept", "*/*"], ["x-trace", "1"]];
    assert.deepEqual(withTraceHeaders(plain, span), [
      ["accept", "*/*"],
      ["x-trace", "1"],
      ["traceparent", span.traceparent],
      ["tracestate", "vendor=abc"],
    ]);
    assert.deepEqual(plain, [["accept", "*/*"], ["x-trace", "1"]], "the input is not changed");
    span.end({ status: 200 });
    server.end({ status: 200 });
  } finally {
    await telemetry.shutdown();
    await receiver.close();
  }
});
