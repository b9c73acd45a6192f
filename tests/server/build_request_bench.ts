/**
 * What building the handler's `Request` costs, per way of building it (the server's hot path):
 * `deno bench tests/server/build_request_bench.ts`.
 */
const fields: [string, string][] = [
  ["Host", "127.0.0.1:8080"],
  ["User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"],
  ["Accept", "application/json"],
  ["Accept-Encoding", "gzip, br"],
  ["X-Request-Id", "3f1c2a9e-55b4-4c1b-9a57-1f0e2d3c4b5a"],
];
const url = "http://127.0.0.1:8080/api/users/7?expand=orders";

Deno.bench("Request: url + method only", () => {
  new Request(url, { method: "GET" });
});
Deno.bench("Request: fields as [name, value] pairs", { baseline: true }, () => {
  new Request(url, { method: "GET", headers: fields });
});
Deno.bench("Request: fields appended to a Headers first", () => {
  const headers = new Headers();
  for (const [name, value] of fields) headers.append(name, value);
  new Request(url, { method: "GET", headers });
});
Deno.bench("Request: pairs + signal (what the server builds)", () => {
  const abort = new AbortController();
  new Request(url, { method: "GET", headers: fields, signal: abort.signal });
});
Deno.bench("Request: pairs + signal + a null body", () => {
  const abort = new AbortController();
  new Request(url, { method: "GET", headers: fields, signal: abort.signal, body: null });
});
Deno.bench("url: concatenated from a cached prefix", () => {
  const prefix = "http://127.0.0.1:8080";
  (prefix + "/api/users/7?expand=orders").length;
});
