/**
 * Responses of known bytes (`bytesResponse`) written by the gateway's server without a stream:
 * the same bytes and framing as any response, HEAD without a body, keep-alive, and a body the
 * handler read itself not written twice.
 *
 * @module
 */
import assert from "node:assert/strict";
import { serveHttp1 } from "../../src/server/http1_server.ts";
import { bytesOf, bytesResponse } from "../../src/server/static_body.ts";
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
