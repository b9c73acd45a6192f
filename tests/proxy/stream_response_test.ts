/**
 * The upstream's answer re-headed for the client: handed to the own server as the same object
 * (its pairs and bytes written directly), and to `Deno.serve` (the TLS port's HTTP/2, an
 * embedding) as a `Response` whose header list carries the upstream's fields, Via and the
 * request id (Deno.serve reads that list, never the pairs).
 *
 * @module
 */
import assert from "node:assert/strict";
import { streamResponse } from "../../src/proxy/stream_response.ts";
import { fieldsOf, fieldsResponse } from "../../src/server/static_body.ts";

function upstreamAnswer(): Response {
  return fieldsResponse(new TextEncoder().encode("hi"), 200, "OK", [
    ["Content-Type", "text/x-test"],
    ["X-Request-Id", "upstream-id"],
    ["Connection", "keep-alive"],
  ]);
}

Deno.test("streamResponse: the own server gets the same response, re-headed as pairs", () => {
  const upstream = upstreamAnswer();
  const response = streamResponse(upstream, "req-1", () => {}, Promise.resolve(), true);
  assert.equal(response, upstream);
  const fields = fieldsOf(response)!;
  assert.ok(fields.some(([name, value]) => name === "x-request-id" && value === "req-1"));
  assert.ok(!fields.some(([name]) => name.toLowerCase() === "connection"));
});

Deno.test("streamResponse: Deno.serve gets the upstream's fields on the wire", async () => {
  let finished = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (_, info) => streamResponse(upstreamAnswer(), "req-2", () => finished++, info.completed, false),
  );
  try {
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    assert.equal(await response.text(), "hi");
    assert.equal(response.headers.get("content-type"), "text/x-test");
    assert.equal(response.headers.get("x-request-id"), "req-2");
    assert.equal(response.headers.get("via"), "1.1 breakwater");
  } finally {
    await server.shutdown();
  }
  assert.equal(finished, 1);
});
