/**
 * Interim responses from a handler on the gateway's own HTTP/1.1 server (RFC 9110 §15.2): the
 * head as written, the 103 on the wire before the handler has even decided its final response,
 * none for HTTP/1.0, none once answered, and in order with the server's own `100 Continue`.
 */
import assert from "node:assert/strict";
import {
  informationalHead,
  MAX_INFORMATIONAL_PER_REQUEST,
} from "../../src/server/_informational.ts";
import {
  type DirectRequest,
  type Handler,
  type SendInformational,
  serveHttp1,
} from "../../src/server/http1_server.ts";
import { RawClient, within } from "./_raw_client.ts";

const decoder = new TextDecoder();
/** More than the loopback socket buffers hold: the 103 takes several writes to go out. */
const HUGE_BYTES = 8 * 1024 * 1024;

function serve(handler: Handler) {
  return serveHttp1({ hostname: "127.0.0.1", port: 0 }, handler);
}

/** A handler whose `direct` entry point is `direct`. */
function directHandler(direct: (request: DirectRequest) => Promise<Response>): Handler {
  return Object.assign(() => new Response("not direct", { status: 500 }), { direct });
}

Deno.test("informationalHead: status line, hop-by-hop fields dropped, invalid input refused", () => {
  const head = informationalHead(103, [
    ["Link", "</style.css>; rel=preload"],
    ["Connection", "x-hop, keep-alive"],
    ["X-Hop", "1"],
    ["Keep-Alive", "timeout=5"],
    ["Transfer-Encoding", "chunked"],
    ["Upgrade", "h2c"],
    ["Content-Length", "0"],
    ["Link", "</a.js>; rel=preload"],
  ]);
  assert.equal(
    decoder.decode(head!),
    "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\nlink: </a.js>; rel=preload" +
      "\r\n\r\n",
  );
  assert.equal(decoder.decode(informationalHead(102, [])!), "HTTP/1.1 102 Processing\r\n\r\n");
  for (const status of [99, 100, 101, 200, 103.5]) {
    assert.equal(informationalHead(status, []), null, String(status));
  }
  assert.equal(informationalHead(103, [["Link", "</a>\r\nX-Injected: 1"]]), null);
  assert.equal(informationalHead(103, [["Bad Name", "x"]]), null);
  assert.equal(informationalHead(103, [["x-nul", "a\0b"]]), null);
});

Deno.test("a 103 goes out before the handler decides its final response", async () => {
  const { promise: clientSaw103, resolve } = Promise.withResolvers<void>();
  let send: SendInformational | undefined;
  const server = serve(directHandler(async (request) => {
    send = request.sendInformational;
    assert.equal(send?.(103, [["Link", "</style.css>; rel=preload"]]), true);
    // The final response waits for the client to have read the 103: a server that held the
    // interim head back until the final one would time out here.
    await within(clientSaw103, 5000, "the client reading the 103");
    return new Response("final");
  }));
  const client = await RawClient.connect(server.addr.port);
  try {
    await client.send("GET /page HTTP/1.1\r\nHost: a\r\n\r\n");
    const hints = await client.response();
    assert.equal(hints.status, 103);
    assert.deepEqual(hints.fields, [["link", "</style.css>; rel=preload"]]);
    resolve();
    const final = await client.response();
    assert.equal(final.status, 200);
    assert.equal(final.body, "final");
    // Answered: nothing more may go out for this request.
    assert.equal(send!(103, [["Link", "</late>"]]), false);
    await client.send("GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    // The connection carries on, and its next request may send its own 103.
    assert.equal((await client.response()).status, 103);
    assert.equal((await client.response()).status, 200);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("the fetch-handler entry point gets sendInformational too; 16 per request", async () => {
  const results: boolean[] = [];
  const server = serve((_request, info) => {
    for (let i = 0; i <= MAX_INFORMATIONAL_PER_REQUEST; i++) {
      results.push(info.sendInformational!(103, [["Link", `</${i}>`]]));
    }
    return new Response("ok");
  });
  const client = await RawClient.connect(server.addr.port);
  try {
    await client.send("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    for (let i = 0; i < MAX_INFORMATIONAL_PER_REQUEST; i++) {
      const hints = await client.response();
      assert.equal(hints.status, 103);
      assert.deepEqual(hints.fields, [["link", `</${i}>`]]);
    }
    assert.equal((await client.response()).status, 200);
    assert.deepEqual(results, [...Array(MAX_INFORMATIONAL_PER_REQUEST).fill(true), false]);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("an HTTP/1.0 request is offered no interim response", async () => {
  let offered: unknown = "not called";
  const server = serve(directHandler((request) => {
    offered = request.sendInformational;
    return Promise.resolve(new Response("final"));
  }));
  const client = await RawClient.connect(server.addr.port);
  try {
    await client.send("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
    const raw = await client.readToEnd(3000);
    assert.equal(offered, undefined);
    assert.match(raw, /^HTTP\/1\.1 200 /);
    assert.ok(!raw.includes(" 103 "), raw);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("a 103 and the server's 100 Continue go out whole and in order", async () => {
  const server = serve(directHandler(async (request) => {
    request.sendInformational!(103, [["Link", "</" + "a".repeat(HUGE_BYTES) + ">"]]);
    // Reading the body makes the server send its 100 Continue while the 103 is still being
    // written (it is larger than the socket buffers): the two must not interleave.
    const body = await new Response(request.body).text();
    return new Response(`got ${body}`);
  }));
  const client = await RawClient.connect(server.addr.port);
  try {
    await client.send(
      "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n" +
        "Connection: close\r\n\r\n",
    );
    const hints = await client.response();
    assert.equal(hints.status, 103);
    assert.equal(hints.fields[0][1].length, HUGE_BYTES + 3);
    assert.equal((await client.response()).status, 100);
    await client.send("hello");
    const final = await client.response();
    assert.equal(final.status, 200);
    assert.equal(final.body, "got hello");
  } finally {
    client.close();
    await server.shutdown();
  }
});
