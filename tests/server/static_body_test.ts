/**
 * Responses of known bytes (`bytesResponse`) written by the gateway's server without a stream:
 * the same bytes and framing as any response, HEAD without a body, keep-alive, and a body the
 * handler read itself not written twice.
 *
 * @module
 */
import assert from "node:assert/strict";
import { serveHttp1 } from "../../src/server/http1_server.ts";
import { rewriteResponseFields, rewriteResponseHeaders } from "../../src/proxy/headers.ts";
import {
  bytesOf,
  bytesResponse,
  fieldsOf,
  fieldsResponse,
  rewriteFields,
  sortAndCombine,
} from "../../src/server/static_body.ts";
import { RawClient, within } from "./_raw_client.ts";

const encoder = new TextEncoder();

Deno.test("bytesResponse: the server writes its bytes with a content-length, keeps the connection, HEAD gets none", async () => {
  const server = serveHttp1(
    { hostname: "127.0.0.1", port: 0 },
    () =>
      bytesResponse(encoder.encode('{"ok":true}'), {
        status: 201,
        headers: [["content-type", "application/json"], ["x-a", "1"]],
      }),
  );
  const client = await RawClient.connect(server.addr.port);
  try {
    await client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n");
    const first = await client.response();
    assert.equal(first.status, 201);
    assert.equal(first.framing, "length");
    assert.equal(first.body, '{"ok":true}');
    assert.deepEqual(first.fields, [
      ["content-type", "application/json"],
      ["x-a", "1"],
      ["content-length", "11"],
    ]);
    const head = await client.response({ bodyless: true });
    assert.equal(head.status, 201);
    assert.equal(head.body, "");
  } finally {
    client.close();
    server.close();
    await within(server.shutdown(), 3000, "server shutdown");
  }
});

Deno.test("bytesOf: null once the body was read, and for ordinary responses", async () => {
  const response = bytesResponse(encoder.encode("abc"), {});
  assert.equal(new TextDecoder().decode(bytesOf(response)!), "abc");
  assert.equal(await response.text(), "abc");
  assert.equal(bytesOf(response), null);
  assert.equal(bytesOf(new Response("abc")), null);
});

Deno.test("fields as pairs go out exactly as Headers would yield them, rewritten or not", () => {
  const cases: [string, string][][] = [
    [["Content-Type", "text/plain"], ["X-B", "2"], ["x-a", "1"], ["X-A", "3"]],
    [["Set-Cookie", "a=1"], ["set-cookie", "b=2"], ["Via", "1.0 up"], ["via", "1.1 mid"]],
    [["Connection", "X-Secret, keep-alive"], ["X-Secret", "s"], ["Keep-Alive", "timeout=5"]],
    [["Transfer-Encoding", "chunked"], ["X-Request-Id", "upstream's"], ["TE", "trailers"]],
    [],
  ];
  for (const fields of cases) {
    const expected = new Headers(fields);
    assert.deepEqual(sortAndCombine(fields), [...expected], JSON.stringify(fields));
    rewriteResponseHeaders(expected, "rid-1");
    assert.deepEqual(
      sortAndCombine(rewriteResponseFields(fields, "rid-1")),
      [...expected],
      `rewritten: ${JSON.stringify(fields)}`,
    );
  }
});

Deno.test("fieldsResponse: headers built from the pairs on first read, clones keep them", async () => {
  const response = fieldsResponse(encoder.encode("abc"), 200, "OK", [["X-A", "1"], ["x-a", "2"]]);
  assert.deepEqual(fieldsOf(response), [["X-A", "1"], ["x-a", "2"]]);
  assert.ok(rewriteFields(response, (fields) => rewriteResponseFields(fields, "rid")));
  assert.equal(response.clone().headers.get("x-request-id"), "rid");
  assert.equal(fieldsOf(response), null); // the Headers are the truth now
  assert.equal(response.headers.get("x-a"), "1, 2");
  assert.equal(response.headers.get("via"), "1.1 breakwater");
  assert.equal(rewriteFields(response, () => []), false);
  assert.equal(await response.text(), "abc");
});
