import assert from "node:assert/strict";
import {
  clientResponseHeaders,
  rewriteResponseFields,
  stripHopByHop,
  upstreamRequestHeaders,
} from "../../src/proxy/headers.ts";

Deno.test("hop-by-hop headers and those named in Connection are removed", () => {
  const headers = new Headers({
    connection: "keep-alive, X-Secret-Hop, bad token",
    "keep-alive": "timeout=5",
    "x-secret-hop": "1",
    te: "trailers",
    trailer: "x",
    upgrade: "websocket",
    "proxy-authorization": "Basic x",
    "proxy-connection": "close",
    "x-kept": "yes",
  });
  stripHopByHop(headers);
  assert.deepEqual([...headers.keys()], ["x-kept"]);
});

Deno.test("upstream request headers carry forwarding facts", () => {
  const incoming = new Headers({
    host: "gw.example",
    "x-forwarded-for": "10.0.0.1",
    via: "1.0 cdn",
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    cookie: "a=b",
  });
  const out = new Headers(upstreamRequestHeaders(incoming, {
    clientIp: "127.0.0.1",
    proto: "http",
    host: "gw.example",
    requestId: "req-1",
  }));
  assert.equal(out.get("host"), null);
  assert.equal(out.get("x-forwarded-for"), "10.0.0.1, 127.0.0.1");
  assert.equal(out.get("x-forwarded-proto"), "http");
  assert.equal(out.get("x-forwarded-host"), "gw.example");
  assert.equal(out.get("via"), "1.0 cdn, 1.1 breakwater");
  assert.equal(out.get("x-request-id"), "req-1");
  assert.equal(out.get("traceparent"), incoming.get("traceparent"));
  assert.equal(out.get("cookie"), "a=b");
  // Nothing the client did not send: no Accept-Encoding appears.
  assert.equal(out.get("accept-encoding"), null);
  assert.deepEqual(
    [...out.keys()].sort(),
    [
      "cookie",
      "traceparent",
      "via",
      "x-forwarded-for",
      "x-forwarded-host",
      "x-forwarded-proto",
      "x-request-id",
    ],
  );
});

Deno.test("a client's Accept-Encoding is kept as sent", () => {
  const out = new Headers(upstreamRequestHeaders(new Headers({ "accept-encoding": "gzip" }), {
    clientIp: null,
    proto: "https",
    host: null,
    requestId: "r",
  }));
  assert.equal(out.get("accept-encoding"), "gzip");
  assert.equal(out.has("x-forwarded-for"), false);
  assert.equal(out.has("x-forwarded-host"), false);
});

Deno.test("response headers keep every Set-Cookie", () => {
  const upstream = new Headers();
  upstream.append("set-cookie", "a=1; Path=/");
  upstream.append("set-cookie", "b=2; Path=/");
  upstream.set("connection", "close");
  upstream.set("content-type", "text/plain");
  const out = clientResponseHeaders(upstream, "rid");
  assert.deepEqual(out.getSetCookie(), ["a=1; Path=/", "b=2; Path=/"]);
  assert.equal(out.has("connection"), false);
  assert.equal(out.get("via"), "1.1 breakwater");
  assert.equal(out.get("x-request-id"), "rid");
});

Deno.test("headers named in Connection, spoofed forwarding headers and Host never go upstream", () => {
  const out = new Headers(upstreamRequestHeaders(
    new Headers({
      connection: "X-Secret, keep-alive",
      "x-secret": "1",
      "keep-alive": "timeout=1",
      "transfer-encoding": "chunked",
      "x-forwarded-host": "evil.example",
      "x-forwarded-proto": "https",
      "x-request-id": "spoofed",
      host: "gw",
      "x-kept": "yes",
    }),
    { clientIp: null, proto: "http", host: "gw", requestId: "real" },
  ));
  assert.deepEqual([...out.keys()].sort(), [
    "via",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-kept",
    "x-request-id",
  ]);
  assert.equal(out.get("x-forwarded-host"), "gw");
  assert.equal(out.get("x-forwarded-proto"), "http");
  assert.equal(out.get("x-request-id"), "real");
});

Deno.test("response fields as pairs come out as the Headers rewrite makes them, Via named in Connection too", () => {
  const cases: [string, string][][] = [
    [["Via", "1.0 a"], ["via", "1.1 b"], ["X-Request-Id", "spoof"], ["ETag", '"1"']],
    [["Connection", "via, x-drop"], ["Via", "1.0 a"], ["X-Drop", "1"], ["Keep-Alive", "5"]],
    [["connection", "close"], ["connection", "x-b"], ["x-b", "2"], ["Set-Cookie", "a=1"]],
  ];
  for (const fields of cases) {
    const pairs = rewriteResponseFields(fields, "rid-1");
    const fromPairs = [...new Headers(pairs)];
    const fromHeaders = [...clientResponseHeaders(new Headers(fields), "rid-1")];
    assert.deepEqual(fromPairs, fromHeaders);
  }
  // Connection named Via: the upstream's Via is hop-by-hop, only the gateway's own remains.
  const named = new Headers(rewriteResponseFields(cases[1], "rid-1"));
  assert.equal(named.get("via"), "1.1 breakwater");
  assert.equal(named.get("x-drop"), null);
});
