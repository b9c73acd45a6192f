/**
 * Child process of `tracing_test.ts`, run with `OTEL_DENO=true`: sends one request upstream
 * with `fetch` under `withoutRuntimeTracing`, one with plain `fetch` (the control) and one with
 * the gateway's HTTP/1.1 client, each
 * carrying the gateway's client span `traceparent`, exports metrics and spans to
 * `OTEL_EXPORTER_OTLP_ENDPOINT`, and prints `{ runtimeTracing, sent }` as JSON.
 *
 * @module
 */
import {
  createTelemetry,
  runtimeTracingEnabled,
  withoutRuntimeTracing,
} from "../../src/telemetry/mod.ts";
import { createHttp1Client } from "../../src/proxy/http1_client.ts";

const [origin] = Deno.args;
const { hostname, port } = new URL(origin);
const telemetry = createTelemetry({
  serviceNames: ["users"],
  prometheus: false,
  otlp: { endpoint: null, intervalMs: null },
  instanceId: "tracing-child",
  logger: (line) => console.error(JSON.stringify(line)),
});
const server = telemetry.tracing.startServer({
  method: "GET",
  headers: new Headers({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }),
})!;
const sent: Record<string, string> = {};
const timeout = () => AbortSignal.timeout(5000);

{
  const span = server.startClient({ method: "GET", origin, address: hostname, port: Number(port) });
  sent.fetch = span.traceparent;
  const response = await withoutRuntimeTracing(() =>
    fetch(`${origin}/fetch`, {
      headers: { traceparent: span.traceparent },
      signal: timeout(),
    })
  );
  await response.body?.cancel();
  span.end({ status: response.status });
}
{
  // The control: plain fetch under Deno's tracing appends a traceparent of its own.
  const span = server.startClient({ method: "GET", origin, address: hostname, port: Number(port) });
  sent.control = span.traceparent;
  const response = await fetch(`${origin}/control`, {
    headers: { traceparent: span.traceparent },
    signal: timeout(),
  });
  await response.body?.cancel();
  span.end({ status: response.status });
}
{
  const span = server.startClient({ method: "GET", origin, address: hostname, port: Number(port) });
  sent.http1 = span.traceparent;
  const client = createHttp1Client(() => ({ maxIdlePerHost: 1, idleTimeoutMs: 1000 }));
  const response = await client.send({
    origin,
    pathAndQuery: "/http1",
    method: "GET",
    headers: [["traceparent", span.traceparent]],
    body: null,
    signal: timeout(),
  });
  await response.body?.cancel();
  span.end({ status: response.status });
  client.close();
}
server.end({ status: 200 });
telemetry.serverRequest({ method: "GET", status: 200, service: "users", durationS: 0.001 });
// Two metric exports pass through the interval before the final flush.
await new Promise((resolve) => setTimeout(resolve, 500));
await telemetry.shutdown();
console.log(JSON.stringify({ runtimeTracing: runtimeTracingEnabled(), sent }));
