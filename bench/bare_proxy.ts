/**
 * The floor of what a fetch-based Deno proxy can do: a bare Hono app that forwards every request
 * with `fetch` and one pooled `Deno.createHttpClient`, streaming both ways, no features.
 *
 * Run: deno run --allow-net bench/bare_proxy.ts PORT UPSTREAM_ORIGIN
 *
 * @module
 */
import { Hono } from "hono";

const port = Number(Deno.args[0] ?? 9200);
const upstream = Deno.args[1] ?? "http://127.0.0.1:9100";
const client = Deno.createHttpClient({ poolMaxIdlePerHost: 256, poolIdleTimeout: 30_000 });

const app = new Hono();
app.all("*", (c) => {
  const incoming = c.req.raw;
  const url = new URL(incoming.url);
  const headers = new Headers(incoming.headers);
  headers.delete("host");
  headers.delete("connection");
  if (!headers.has("accept-encoding")) headers.set("accept-encoding", "identity");
  return fetch(upstream + url.pathname + url.search, {
    method: incoming.method,
    headers,
    body: incoming.body,
    client,
    signal: incoming.signal,
  });
});

Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, app.fetch);
console.log(JSON.stringify({ msg: "listening", port }));
