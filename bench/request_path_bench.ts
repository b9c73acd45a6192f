/**
 * Per-request costs of the request path outside the breaker and telemetry (those have their
 * own benches): normalising the request target, longest-prefix route matching, and rewriting
 * headers both ways.
 *
 * Run: deno bench bench/request_path_bench.ts
 */
import { buildRouteTable } from "../src/routing/route_table.ts";
import { normalizeTarget } from "../src/routing/normalize_path.ts";
import { rewriteResponseHeaders, upstreamRequestHeaders } from "../src/proxy/headers.ts";

const prefixes = [
  "/api/users",
  "/api/orders",
  "/api/catalog",
  "/api/catalog/images",
  "/api/search",
  "/api/payments",
  "/api/inventory",
  "/api/shipping",
  "/api/reviews",
  "/static",
];
const match10 = buildRouteTable(prefixes.map((prefix) => ({ prefix, target: prefix })));
const match100 = buildRouteTable(
  Array.from({ length: 100 }, (_, index) => ({ prefix: `/svc${index}/v1`, target: index })),
);

const incoming = new Headers({
  host: "gw.example.com",
  "user-agent": "wrk/4.2",
  accept: "application/json",
  "accept-encoding": "gzip",
  connection: "keep-alive",
  traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
});
const upstream = new Headers({
  "content-type": "application/json",
  "content-length": "98",
  date: "Tue, 24 Nov 2026 21:00:00 GMT",
  connection: "keep-alive",
  "keep-alive": "timeout=5",
});

Deno.bench("normalizeTarget: clean path + query", { group: "route" }, () => {
  normalizeTarget("http://127.0.0.1:8080/api/catalog/items/42?page=2");
});
Deno.bench("normalizeTarget: dot segments (URL parser path)", { group: "route" }, () => {
  normalizeTarget("http://127.0.0.1:8080/api/users/%2e%2e/orders/7");
});
Deno.bench("route match: 10 services, hit", { group: "route" }, () => {
  match10("/api/catalog/items/42");
});
Deno.bench("route match: 10 services, miss", { group: "route" }, () => {
  match10("/nothing/here");
});
Deno.bench("route match: 100 services, last", { group: "route" }, () => {
  match100("/svc0/v1/x");
});
Deno.bench("upstreamRequestHeaders (6 headers in)", { group: "headers" }, () => {
  upstreamRequestHeaders(incoming, {
    clientIp: "127.0.0.1",
    proto: "http",
    host: "gw.example.com",
    requestId: "0193a6b2-7c1e-7d2a-9f00-1234567890ab",
  });
});
Deno.bench("response re-heading: new Response + rewriteResponseHeaders (5 headers in)", {
  group: "headers",
}, () => {
  const response = new Response(null, { headers: upstream });
  rewriteResponseHeaders(response.headers, "0193a6b2-7c1e-7d2a-9f00-1234567890ab");
});
