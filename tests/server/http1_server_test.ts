/**
 * Breakwater's HTTP/1.1 server against raw sockets: strict parsing, timeouts, bodies both
 * ways, keep-alive and pipelining, clients that go away, shutdown. Every case sends bytes
 * exactly as written (no client library fixes a request up) and bounds every wait.
 */
import assert from "node:assert/strict";
import { ClientError, findClientError } from "../../src/proxy/client_error.ts";
import {
  type Handler,
  type Http1Server,
  type Http1ServerOptions,
  serveHttp1,
  type ServeInfo,
} from "../../src/server/http1_server.ts";
import { RawClient, type RawResponse, waitFor, within } from "./_raw_client.ts";

const FAST: Http1ServerOptions = {
  hostname: "127.0.0.1",
  port: 0,
  headerTimeoutMs: 300,
  idleTimeoutMs: 300,
  bodyIdleTimeoutMs: 300,
};

interface Harness {
  server: Http1Server;
  port: number;
  open(): Promise<RawClient>;
}

async function withServer(
  options: Http1ServerOptions,
  handler: Handler,
  run: (harness: Harness) => Promise<void>,
): Promise<void> {
  const server = serveHttp1({ ...FAST, ...options }, handler);
  const clients: RawClient[] = [];
  try {
    await run({
      server,
      port: server.addr.port,
      open: async () => {
        const client = await RawClient.connect(server.addr.port);
        clients.push(client);
        return client;
      },
    });
  } finally {
    for (const client of clients) client.close();
    server.close();
    await within(server.shutdown(), 3000, "server shutdown");
  }
}

/** Echoes what the server handed over, as JSON. */
const echo: Handler = async (request, info) => {
  const body = info.body === null ? null : await new Response(info.body).text();
  return Response.json({
    method: info.method,
    requestMethod: request.method,
    target: info.target,
    url: request.url,
    body,
    requestHasBody: request.body !== null,
    headers: [...request.headers],
  });
};

function field(response: RawResponse, name: string): string | undefined {
  return response.fields.find(([n]) => n === name)?.[1];
}

/** Asserts a problem+json answer from the server itself, then that the connection closes. */
async function expectProblem(
  client: RawClient,
  status: number,
  code: string,
  what: string,
): Promise<void> {
  const response = await client.response();
  assert.equal(response.status, status, `${what}: ${response.head}${response.body}`);
  assert.equal(field(response, "content-type"), "application/problem+json", what);
  assert.equal(field(response, "x-breakwater-error"), code, what);
  assert.equal(field(response, "connection"), "close", what);
  const problem = JSON.parse(response.body);
  assert.deepEqual(Object.keys(problem).sort(), ["code", "detail", "status", "title", "type"]);
  assert.equal(problem.status, status, what);
  assert.equal(problem.code, code, what);
  assert.equal(await client.closesWithin(1000), true, `${what}: the connection closes`);
}

Deno.test("malformed request heads are answered 400/405/505 problem+json and closed", async () => {
  let handled = 0;
  const handler: Handler = () => {
    handled++;
    return new Response("should not be reached");
  };
  const cases: [string, string, number, string][] = [
    // Content-Length: any repeat, even of the same value, and anything not decimal.
    [
      "repeated equal Content-Length",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
      400,
      "bad_request",
    ],
    [
      "Content-Length list",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na",
      400,
      "bad_request",
    ],
    [
      "Content-Length +1",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na",
      400,
      "bad_request",
    ],
    [
      "Content-Length -1",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "Content-Length hex",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "Content-Length empty",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
      400,
      "bad_request",
    ],
    // Transfer-Encoding: exactly chunked, never with a length, never on HTTP/1.0.
    [
      "TE with CL",
      "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "CL with TE",
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "TE gzip",
      "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "TE xchunked",
      "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "TE repeated",
      "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "TE on HTTP/1.0",
      "POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      400,
      "bad_request",
    ],
    // Host: exactly one on HTTP/1.1, and a valid host[:port].
    ["no Host", "GET /a HTTP/1.1\r\n\r\n", 400, "bad_request"],
    ["two Hosts", "GET /a HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "bad_request"],
    ["Host with a path", "GET /a HTTP/1.1\r\nHost: x/api/orders#\r\n\r\n", 400, "bad_request"],
    ["Host with a space", "GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request"],
    ["Host port too big", "GET /a HTTP/1.1\r\nHost: h:99999\r\n\r\n", 400, "bad_request"],
    ["Host empty port", "GET /a HTTP/1.1\r\nHost: h:\r\n\r\n", 400, "bad_request"],
    ["Host userinfo", "GET /a HTTP/1.1\r\nHost: u@h\r\n\r\n", 400, "bad_request"],
    ["Host bad IPv6", "GET /a HTTP/1.1\r\nHost: [::1::2]\r\n\r\n", 400, "bad_request"],
    ["Host open bracket", "GET /a HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, "bad_request"],
    // The request target: origin-form only (and * for OPTIONS).
    [
      "absolute-form with userinfo",
      "GET http://u@evil/a HTTP/1.1\r\nHost: x\r\n\r\n",
      400,
      "bad_request",
    ],
    [
      "absolute-form, other scheme",
      "GET ftp://evil/a HTTP/1.1\r\nHost: x\r\n\r\n",
      400,
      "bad_request",
    ],
    ["authority-form", "GET evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"],
    ["* with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"],
    ["fragment", "GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"],
    ["non-ASCII target", "GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"],
    // The request line and field lines.
    ["two spaces", "GET  /a HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"],
    ["method not a token", "G(T /a HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"],
    ["lower-case version", "GET /a http/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"],
    ["version junk", "GET /a HTTP/1.1x\r\nHost: x\r\n\r\n", 400, "bad_request"],
    ["obs-fold", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n", 400, "bad_request"],
    ["bare LF", "GET /a HTTP/1.1\nHost: x\n\n", 400, "bad_request"],
    ["bare LF in a field", "GET /a HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400, "bad_request"],
    ["bare CR", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, "bad_request"],
    ["NUL in a value", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400, "bad_request"],
    ["space before colon", "GET /a HTTP/1.1\r\nHost : x\r\n\r\n", 400, "bad_request"],
    ["no colon", "GET /a HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", 400, "bad_request"],
    ["empty name", "GET /a HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400, "bad_request"],
    // Versions other than 1.0 and 1.1.
    ["HTTP/2.0", "GET /a HTTP/2.0\r\nHost: x\r\n\r\n", 505, "bad_request"],
    ["HTTP/1.2", "GET /a HTTP/1.2\r\nHost: x\r\n\r\n", 505, "bad_request"],
    ["HTTP/0.9", "GET /a HTTP/0.9\r\n\r\n", 505, "bad_request"],
    // Methods that are never forwarded.
    ["TRACE", "TRACE /a HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"],
    ["TRACK", "TRACK /a HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"],
    ["CONNECT", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405, "method_not_allowed"],
    ["lower-case trace", "trace /a HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"],
  ];
  await withServer({}, handler, async ({ open }) => {
    for (const [what, bytes, status, code] of cases) {
      const client = await open();
      await client.send(bytes);
      await expectProblem(client, status, code, what);
      client.close();
    }
  });
  assert.equal(handled, 0, "no malformed request reached the handler");
});

Deno.test("405 answers carry no Allow field", async () => {
  await withServer({}, echo, async ({ open }) => {
    const client = await open();
    await client.send("TRACE / HTTP/1.1\r\nHost: x\r\n\r\n");
    const response = await client.response();
    assert.equal(response.status, 405);
    assert.equal(field(response, "allow"), undefined);
  });
});

Deno.test("a head over maxHeadBytes is answered 431", async () => {
  await withServer({ maxHeadBytes: 1024 }, echo, async ({ open }) => {
    const client = await open();
    await client.send(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(2000)}\r\n\r\n`);
    await expectProblem(client, 431, "bad_request", "big head");
    // A head that is complete but over the limit (the end is in the first read).
    const second = await open();
    await second.send(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(1100)}\r\n\r\n`);
    await expectProblem(second, 431, "bad_request", "complete big head");
    // Just under the limit passes.
    const third = await open();
    const head = `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(900)}\r\n\r\n`;
    assert.ok(head.length < 1024);
    await third.send(head);
    assert.equal((await third.response()).status, 200);
  });
});

Deno.test("the handler gets the method, target and fields as sent", async () => {
  await withServer({}, echo, async ({ open }) => {
    const client = await open();
    // A lower-case standard method: fetch upper-cases it on the Request; info keeps it.
    await client.send(
      "get /a/b?c=d&e HTTP/1.1\r\nHost: api.example:8443\r\nX-Multi: 1\r\n" +
        "X-Multi: 2\r\nX-Latin: caf\xe9\r\n\r\n",
    );
    let seen = JSON.parse((await client.response()).body);
    assert.equal(seen.method, "get");
    assert.equal(seen.requestMethod, "GET");
    assert.equal(seen.target, "/a/b?c=d&e");
    assert.equal(seen.url, "http://api.example:8443/a/b?c=d&e");
    const headers = new Map<string, string>(seen.headers);
    assert.equal(headers.get("x-multi"), "1, 2");
    assert.equal(headers.get("x-latin"), "caf\xe9");
    assert.equal(headers.get("host"), "api.example:8443");

    // A method fetch does not normalise stays as sent on both; an extension method passes.
    await client.send("patch /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    seen = JSON.parse((await client.response()).body);
    assert.deepEqual([seen.method, seen.requestMethod, seen.body], ["patch", "patch", "hi"]);
    await client.send("M-SEARCH /m HTTP/1.1\r\nHost: x\r\n\r\n");
    seen = JSON.parse((await client.response()).body);
    assert.deepEqual([seen.method, seen.requestMethod], ["M-SEARCH", "M-SEARCH"]);

    // Leading empty lines before a request line are ignored (RFC 9112 §2.2).
    await client.send("\r\n\r\nGET /after-crlf HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal(JSON.parse((await client.response()).body).target, "/after-crlf");

    // OPTIONS * keeps its target; the url gets a path so it parses.
    await client.send("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    seen = JSON.parse((await client.response()).body);
    assert.deepEqual([seen.target, seen.url], ["*", "http://x/*"]);
  });
});

Deno.test("absolute-form targets are accepted: the path routes, the authority stands for Host", async () => {
  await withServer({}, echo, async ({ open }) => {
    const client = await open();
    await client.send("GET http://evil.example:81/a/b?c HTTP/1.1\r\nHost: x\r\n\r\n");
    let seen = JSON.parse((await client.response()).body);
    assert.equal(seen.target, "/a/b?c");
    assert.equal(new Map<string, string>(seen.headers).get("host"), "evil.example:81");
    await client.send("GET HTTPS://evil.example HTTP/1.1\r\nHost: x\r\n\r\n");
    seen = JSON.parse((await client.response()).body);
    assert.equal(seen.target, "/");
    await client.send("GET http://evil.example?q=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    seen = JSON.parse((await client.response()).body);
    assert.equal(seen.target, "/?q=1");
  });
});

Deno.test("the url's host is the Host when a URL parser takes it, else localhost", async () => {
  await withServer({}, echo, async ({ open }) => {
    const client = await open();
    const urlFor = async (host: string | null, version = "1.1") => {
      const hostLine = host === null ? "" : `Host: ${host}\r\n`;
      await client.send(`GET /p HTTP/${version}\r\n${hostLine}Connection: keep-alive\r\n\r\n`);
      return JSON.parse((await client.response()).body).url;
    };
    assert.equal(await urlFor("[::1]:8080"), "http://[::1]:8080/p");
    assert.equal(await urlFor("127.0.0.1"), "http://127.0.0.1/p");
    // A valid RFC 3986 reg-name the WHATWG parser refuses (not an IPv4 address).
    assert.equal(await urlFor("1.2.3.999"), "http://localhost/p");
    assert.equal(await urlFor(""), "http://localhost/p");
    assert.equal(await urlFor(null, "1.0"), "http://localhost/p");
  });
});

Deno.test("a GET body is delivered in info.body, not on the Request", async () => {
  await withServer({}, echo, async ({ open }) => {
    const client = await open();
    await client.send("GET /with-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    const seen = JSON.parse((await client.response()).body);
    assert.equal(seen.body, "hello");
    assert.equal(seen.requestHasBody, false);
    // The connection carries on past the body.
    await client.send(
      "HEAD /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    const head = await client.response({ bodyless: true });
    assert.equal(head.status, 200);
    await client.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal(JSON.parse((await client.response()).body).target, "/next");
  });
});

Deno.test("pipelined requests are answered one by one, in order", async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const handler: Handler = async (request, info) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    // The first one is slowest: a server answering out of order would show it.
    if (info.target === "/1") await new Promise((resolve) => setTimeout(resolve, 30));
    const response = await echo(request, info);
    inFlight--;
    return response;
  };
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send(
      "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" +
        "POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
        "POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n" +
        "GET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    const seen = [];
    for (let i = 0; i < 4; i++) seen.push(JSON.parse((await client.response()).body));
    assert.deepEqual(seen.map((s) => s.target), ["/1", "/2", "/3", "/4"]);
    assert.deepEqual(seen.map((s) => s.body), [null, "abc", "de", null]);
    assert.equal(maxInFlight, 1);
    assert.equal(await client.closesWithin(1000), true);
  });
});

Deno.test("an unread small body is drained and the connection carries on", async () => {
  await withServer({}, () => new Response("ignored the body"), async ({ open }) => {
    const client = await open();
    await client.send(
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789" +
        "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n" +
        "GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    for (let i = 0; i < 3; i++) {
      const response = await client.response();
      assert.equal(response.status, 200);
      assert.equal(field(response, "connection"), undefined);
    }
  });
});

Deno.test("an unread body over the drain bound closes the connection after the response", async () => {
  await withServer({}, () => new Response("no thanks"), async ({ open }) => {
    const client = await open();
    await client.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123");
    const response = await client.response();
    assert.equal(response.status, 200);
    assert.equal(field(response, "connection"), "close", "announced, since it cannot be drained");
    assert.equal(await client.closesWithin(3000), true);
  });
});

Deno.test("a request body streamed straight back as the response body", async () => {
  const handler: Handler = (request) => new Response(request.body);
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    // The response streams the body, whose first read sends the 100 before the final head.
    const interim = await client.response();
    assert.equal(interim.status, 100);
    await client.send("5\r\nhello\r\n");
    await client.send("6\r\n world\r\n0\r\n\r\n");
    const echoed = await client.response();
    assert.equal(echoed.status, 200);
    assert.equal(echoed.framing, "chunked");
    assert.equal(echoed.body, "hello world");
    // And the connection carries on.
    await client.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert.equal((await client.response()).body, "abc");
  });
});

Deno.test("chunked uploads: extensions and trailers are read, framing errors are the client's", async () => {
  const errors: unknown[] = [];
  const handler: Handler = async (_request, info) => {
    try {
      return new Response(await new Response(info.body).text());
    } catch (error) {
      errors.push(error);
      throw error;
    }
  };
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send(
      "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "5\r\nhello\r\n4;name=value ; other\r\n abc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
    );
    assert.equal((await client.response()).body, "hello abc");
    // Upper-case hex, leading zeros, a chunk split across writes.
    await client.send(
      "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n00A\r\n01234",
    );
    await client.send("56789\r\n0\r\n\r\n");
    assert.equal((await client.response()).body, "0123456789");

    const bad = [
      "zz\r\nhello\r\n0\r\n\r\n", // size not hex
      "5\r\nhelloXX\r\n0\r\n\r\n", // data longer than its size
      "5\nhello\r\n0\r\n\r\n", // bare LF
      "5 x\r\nhello\r\n0\r\n\r\n", // junk after the size
      "-5\r\nhello\r\n0\r\n\r\n",
      "1234567890abc\r\n", // size over 12 hex digits
      "0\r\nbad trailer\r\n\r\n",
    ];
    for (const body of bad) {
      const one = await open();
      await one.send("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body);
      await expectProblem(one, 400, "bad_request", JSON.stringify(body));
    }
  });
  assert.equal(errors.length, 7);
  for (const error of errors) {
    const clientError = findClientError(error);
    assert.ok(clientError instanceof ClientError, String(error));
    assert.equal(clientError.code, "bad_request");
  }
});

Deno.test("a client that closes inside its body errors the body stream with bad_request", async () => {
  const seen = Promise.withResolvers<unknown>();
  const handler: Handler = async (_request, info) => {
    try {
      await new Response(info.body).arrayBuffer();
      seen.resolve(null);
    } catch (error) {
      seen.resolve(error);
    }
    return new Response("late");
  };
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-this");
    await client.conn.closeWrite();
    const error = await within(seen.promise, 2000, "body error");
    assert.equal(findClientError(error)?.code, "bad_request", String(error));
  });
});

Deno.test("a body that stalls errors with request_timeout after bodyIdleTimeoutMs", async () => {
  const seen = Promise.withResolvers<{ error: unknown; elapsedMs: number }>();
  const handler: Handler = async (_request, info) => {
    const started = performance.now();
    try {
      await new Response(info.body).arrayBuffer();
    } catch (error) {
      seen.resolve({ error, elapsedMs: performance.now() - started });
      throw error; // the server answers the client's fault itself: 408
    }
    return new Response("not reached");
  };
  await withServer({ bodyIdleTimeoutMs: 200 }, handler, async ({ open }) => {
    const client = await open();
    await client.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    const { error, elapsedMs } = await within(seen.promise, 2000, "body timeout");
    assert.equal(findClientError(error)?.code, "request_timeout", String(error));
    assert.ok(elapsedMs >= 190 && elapsedMs < 1500, `timed out after ${elapsedMs} ms`);
    await expectProblem(client, 408, "request_timeout", "stalled body");
  });
});

Deno.test("a slow consumer is not a stalled body: only a waiting read times out", async () => {
  const handler: Handler = async (_request, info) => {
    const reader = info.body!.getReader();
    let total = 0;
    while (true) {
      // Slower than bodyIdleTimeoutMs between reads: the client is not to blame.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
    }
    return new Response(String(total));
  };
  await withServer({ bodyIdleTimeoutMs: 100 }, handler, async ({ open }) => {
    const client = await open();
    await client.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabcdef");
    assert.equal((await client.response()).body, "6");
  });
});

Deno.test("Expect: 100-continue is answered when the body is first read", async () => {
  const handler: Handler = async (_request, info) => {
    if (info.target === "/ignore") return new Response("no body wanted");
    return new Response(`got ${await new Response(info.body).text()}`);
  };
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send(
      "POST /read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    const interim = await client.response();
    assert.equal(interim.status, 100);
    assert.equal(interim.head, "HTTP/1.1 100 Continue\r\n");
    await client.send("data");
    const final = await client.response();
    assert.equal(final.body, "got data");
    assert.equal(field(final, "connection"), undefined, "kept alive");

    // A handler that answers without reading: no 100, and the connection closes after.
    const other = await open();
    await other.send(
      "POST /ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    const response = await other.response();
    assert.equal(response.status, 200);
    assert.equal(field(response, "connection"), "close");
    assert.equal(await other.closesWithin(2000), true);
  });
});

Deno.test("a client that goes away aborts request.signal and settles completed", async () => {
  const started = Promise.withResolvers<{ request: Request; info: ServeInfo }>();
  const handler: Handler = async (request, info) => {
    started.resolve({ request, info });
    // A slow upstream that honours the signal.
    await new Promise((resolve) => request.signal.addEventListener("abort", resolve));
    return new Response("too late");
  };
  await withServer({}, handler, async ({ open, server }) => {
    const client = await open();
    await client.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    const { request, info } = await within(started.promise, 2000, "handler start");
    assert.ok(request instanceof Request);
    assert.ok(request.signal instanceof AbortSignal);
    assert.equal(request.signal.aborted, false);
    client.close();
    await waitFor(() => request.signal.aborted, 2000, "signal aborted");
    assert.equal(findClientError(request.signal.reason)?.code, "bad_request");
    await within(info.completed, 2000, "completed settles");
    await waitFor(() => server.connections() === 0, 2000, "connection closed");
  });
});

Deno.test("a client that goes away mid-response cancels the response body", async () => {
  const cancelled = Promise.withResolvers<void>();
  const handler: Handler = () =>
    new Response(
      new ReadableStream<Uint8Array>({
        pull(controller) {
          controller.enqueue(new Uint8Array(16 * 1024).fill(120));
          return new Promise((resolve) => setTimeout(resolve, 5));
        },
        cancel() {
          cancelled.resolve();
        },
      }),
    );
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    const response = await client.conn.read(new Uint8Array(1024));
    assert.ok(response !== null && response > 0);
    client.close();
    await within(cancelled.promise, 2000, "response body cancelled");
  });
});

Deno.test("head timeouts: a partial head gets 408, a silent connection is closed", async () => {
  await withServer({}, echo, async ({ open }) => {
    const partial = await open();
    const started = performance.now();
    await partial.send("GET /partial HTTP/1.1\r\nHost: x\r\n");
    await expectProblem(partial, 408, "request_timeout", "partial head");
    const elapsedMs = performance.now() - started;
    assert.ok(elapsedMs >= 280 && elapsedMs < 1500, `408 after ${elapsedMs} ms`);

    const silent = await open();
    const openedAt = performance.now();
    assert.equal(await silent.closesWithin(2000), true, "closed without a byte");
    const silentMs = performance.now() - openedAt;
    assert.ok(silentMs >= 280 && silentMs < 1500, `closed after ${silentMs} ms`);
  });
});

Deno.test("slowloris: a head dribbled a byte at a time is cut at headerTimeoutMs", async () => {
  await withServer({}, echo, async ({ open }) => {
    const client = await open();
    const head = "GET /slow HTTP/1.1\r\nHost: x\r\nX-Padding: " + "a".repeat(100);
    const started = performance.now();
    let answered = false;
    const answer = client.response({ ms: 3000 }).finally(() => {
      answered = true;
    });
    let sent = 0;
    // One byte every 20 ms: each byte arrives well within any per-read timeout.
    for (; sent < head.length && !answered; sent++) {
      try {
        await client.send(head[sent]);
      } catch {
        break; // the server closed
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const response = await answer;
    const elapsedMs = performance.now() - started;
    assert.equal(response.status, 408);
    assert.equal(field(response, "x-breakwater-error"), "request_timeout");
    assert.ok(elapsedMs >= 280 && elapsedMs < 1500, `cut after ${elapsedMs} ms`);
    assert.ok(sent < head.length, "the head never completed");
    assert.equal(await client.closesWithin(1000), true);
  });
});

Deno.test("an idle keep-alive connection is closed after idleTimeoutMs", async () => {
  await withServer({ idleTimeoutMs: 250, headerTimeoutMs: 5000 }, echo, async ({ open }) => {
    const client = await open();
    await client.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal((await client.response()).status, 200);
    const idleSince = performance.now();
    assert.equal(await client.closesWithin(2000), true);
    const idleMs = performance.now() - idleSince;
    assert.ok(idleMs >= 230 && idleMs < 1500, `closed after ${idleMs} ms idle`);
  });
});

Deno.test("shutdown closes idle connections, finishes the request in flight, then resolves", async () => {
  const gate = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  const handler: Handler = async (_request, info) => {
    if (info.target === "/slow") {
      entered.resolve();
      await gate.promise;
      return new Response("finished");
    }
    return new Response("quick");
  };
  await withServer({ idleTimeoutMs: 10_000, headerTimeoutMs: 10_000 }, handler, async (h) => {
    const idle = await h.open();
    await idle.send("GET /quick HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal((await idle.response()).body, "quick");
    const busy = await h.open();
    await busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    await within(entered.promise, 2000, "slow request started");
    assert.equal(h.server.connections(), 2);

    let resolved = false;
    const shutdown = h.server.shutdown().then(() => {
      resolved = true;
    });
    assert.equal(await idle.closesWithin(1000), true, "idle connection closed at once");
    await assert.rejects(
      within(Deno.connect({ hostname: "127.0.0.1", port: h.port }), 2000, "connect"),
      "no new connections",
    );
    assert.equal(resolved, false, "waits for the request in flight");
    gate.resolve();
    const response = await busy.response();
    assert.equal(response.body, "finished");
    assert.equal(field(response, "connection"), "close");
    assert.equal(await busy.closesWithin(2000), true);
    await within(shutdown, 2000, "shutdown resolves");
    assert.equal(h.server.connections(), 0);
  });
});

Deno.test("HTTP/1.0: close by default, keep-alive on request, close-delimited streams", async () => {
  const handler: Handler = (_request, info) => {
    if (info.target === "/stream") {
      let n = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            await new Promise((resolve) => setTimeout(resolve, 1));
            if (n++ === 3) return controller.close();
            controller.enqueue(new TextEncoder().encode(`part${n};`));
          },
        }),
      );
    }
    return new Response(`hello ${info.target}`);
  };
  await withServer({}, handler, async ({ open }) => {
    const plain = await open();
    await plain.send("GET /a HTTP/1.0\r\n\r\n");
    const first = await plain.response();
    assert.equal(first.body, "hello /a");
    assert.equal(first.framing, "length");
    assert.equal(field(first, "connection"), undefined);
    assert.equal(await plain.closesWithin(1000), true);

    const kept = await open();
    await kept.send("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const second = await kept.response();
    assert.equal(field(second, "connection"), "keep-alive");
    assert.equal(second.body, "hello /b");
    await kept.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const streamed = await kept.response();
    assert.equal(streamed.framing, "close");
    assert.equal(streamed.body, "part1;part2;part3;");
    assert.equal(field(streamed, "transfer-encoding"), undefined);
  });
});

Deno.test("responses: fields as given, Set-Cookie apart, no date or server, bodyless statuses", async () => {
  const handler: Handler = (_request, info) => {
    switch (info.target) {
      case "/cookies": {
        const headers = new Headers({ "X-Custom": "v" });
        headers.append("Set-Cookie", "a=1; Path=/");
        headers.append("Set-Cookie", "b=2, c=3");
        return new Response("ok", { headers, status: 201, statusText: "Made It" });
      }
      case "/head":
        return new Response("twelve bytes", { headers: { "content-length": "12" } });
      case "/204":
        return new Response(null, { status: 204 });
      case "/304":
        return new Response(null, { status: 304, headers: { "content-length": "42" } });
      case "/empty":
        return new Response(null);
      case "/close":
        return new Response("bye", {
          headers: { connection: "close", "transfer-encoding": "gzip" },
        });
      default:
        return new Response("x");
    }
  };
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send("GET /cookies HTTP/1.1\r\nHost: x\r\n\r\n");
    const cookies = await client.response();
    assert.ok(cookies.head.startsWith("HTTP/1.1 201 Made It\r\n"), cookies.head);
    assert.deepEqual(
      cookies.fields.filter(([name]) => name === "set-cookie").map(([, value]) => value),
      ["a=1; Path=/", "b=2, c=3"],
    );
    assert.ok(cookies.head.includes("\r\nx-custom: v\r\n"), "names lower-cased as Headers gives");
    assert.equal(field(cookies, "date"), undefined);
    assert.equal(field(cookies, "server"), undefined);
    assert.equal(field(cookies, "content-length"), "2");

    await client.send("HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n");
    const head = await client.response({ bodyless: true });
    assert.equal(field(head, "content-length"), "12");
    await client.send("GET /204 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal((await client.response()).status, 204);
    await client.send("GET /304 HTTP/1.1\r\nHost: x\r\n\r\n");
    const notModified = await client.response();
    assert.equal(field(notModified, "content-length"), "42");
    await client.send("GET /empty HTTP/1.1\r\nHost: x\r\n\r\n");
    const empty = await client.response();
    assert.equal(field(empty, "content-length"), "0");
    // Had any bodyless answer carried bytes, this response would not parse.
    await client.send("GET /last HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal((await client.response()).body, "x");
    // The handler's `connection: close` is honoured; its framing fields never reach the wire.
    await client.send("GET /close HTTP/1.1\r\nHost: x\r\n\r\n");
    const bye = await client.response();
    assert.deepEqual(bye.fields, [
      ["content-type", "text/plain;charset=UTF-8"],
      ["content-length", "3"],
      ["connection", "close"],
    ]);
    assert.equal(await client.closesWithin(1000), true);
  });
});

Deno.test("a body shorter than its Content-Length ends the connection; a streamed one is chunked", async () => {
  const handler: Handler = (_request, info) => {
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(new TextEncoder().encode("abc"));
        await new Promise((resolve) => setTimeout(resolve, 5));
        controller.enqueue(new TextEncoder().encode("def"));
        controller.close();
      },
    });
    if (info.target === "/short") {
      return new Response(stream, { headers: { "content-length": "10" } });
    }
    if (info.target === "/long") {
      return new Response(stream, { headers: { "content-length": "4" } });
    }
    return new Response(stream);
  };
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    await client.send("GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n");
    const chunked = await client.response();
    assert.equal(chunked.framing, "chunked");
    assert.equal(chunked.body, "abcdef");
    await client.send("GET /long HTTP/1.1\r\nHost: x\r\n\r\n");
    const long = await client.response();
    assert.equal(long.body, "abcd", "exactly the declared length");
    await client.send("GET /short HTTP/1.1\r\nHost: x\r\n\r\n");
    const text = await client.readToEnd(2000);
    assert.ok(text.endsWith("\r\n\r\nabcdef"), text);
    assert.equal(client.eof, true, "closed: the client sees a truncated body, not a complete one");
  });
});

Deno.test("a handler that throws gets a 500 and onError hears of it", async () => {
  const logged: unknown[] = [];
  const handler: Handler = (_request, info) => {
    if (info.target === "/client") throw new ClientError("body_too_large", "too big");
    throw new Error("boom");
  };
  await withServer({ onError: (error) => logged.push(error) }, handler, async ({ open }) => {
    const client = await open();
    await client.send("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n");
    const response = await client.response();
    assert.equal(response.status, 500);
    assert.equal(field(response, "content-type"), "application/problem+json");
    assert.equal(logged.length, 1);
    assert.equal((logged[0] as Error).message, "boom");
    // A ClientError thrown by the handler is answered with its own status and not logged.
    await client.send("GET /client HTTP/1.1\r\nHost: x\r\n\r\n");
    const tooLarge = await client.response();
    assert.equal(tooLarge.status, 413);
    assert.equal(field(tooLarge, "x-breakwater-error"), "body_too_large");
    assert.equal(logged.length, 1);
  });
});

Deno.test("maxConnections: connections beyond it are closed at once", async () => {
  await withServer({ maxConnections: 1 }, echo, async ({ open, server }) => {
    const first = await open();
    await first.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal((await first.response()).status, 200);
    const second = await open();
    assert.equal(await second.closesWithin(1000), true);
    assert.equal(server.connections(), 1);
  });
});

Deno.test("close() aborts requests in flight and closes every connection", async () => {
  const started = Promise.withResolvers<Request>();
  const server = serveHttp1(FAST, (request) => {
    started.resolve(request);
    return new Promise<Response>((resolve) =>
      request.signal.addEventListener("abort", () => resolve(new Response("aborted")))
    );
  });
  const client = await RawClient.connect(server.addr.port);
  try {
    await client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    const request = await within(started.promise, 2000, "request started");
    server.close();
    assert.equal(request.signal.aborted, true);
    assert.equal(await client.closesWithin(1000), true);
  } finally {
    client.close();
    server.close();
    await within(server.shutdown(), 2000, "shutdown after close");
  }
});

function rssMiB(): number {
  return Deno.memoryUsage().rss / 1024 / 1024;
}

Deno.test("a 100 MiB chunked upload to a slow consumer keeps memory flat", async () => {
  const size = 100 * 1024 * 1024;
  const chunkSize = 64 * 1024;
  let peakMiB = 0;
  const handler: Handler = async (_request, info) => {
    // A slow consumer: BYOB reads into one buffer, a pause every MiB.
    const reader = info.body!.getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(chunkSize);
    let total = 0;
    let sincePause = 0;
    while (true) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      buffer = value.buffer as ArrayBuffer;
      total += value.length;
      sincePause += value.length;
      if (sincePause >= 1024 * 1024) {
        sincePause = 0;
        peakMiB = Math.max(peakMiB, rssMiB());
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
    return new Response(String(total));
  };
  await withServer({}, handler, async ({ open }) => {
    const client = await open();
    // Warm up code paths and the allocator first, so the baseline is fair.
    await client.send(
      "POST /w HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert.equal((await client.response()).body, "3");
    const baselineMiB = rssMiB();
    await client.send("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    const frame = new Uint8Array(chunkSize + 9);
    frame.set(new TextEncoder().encode("10000\r\n"));
    frame.fill(97, 7, 7 + chunkSize);
    frame.set([13, 10], 7 + chunkSize);
    const frameBytes = frame.subarray(0, 7 + chunkSize + 2);
    for (let sent = 0; sent < size; sent += chunkSize) await client.send(frameBytes);
    await client.send("0\r\n\r\n");
    const response = await client.response({ ms: 20_000 });
    assert.equal(response.body, String(size));
    const growthMiB = peakMiB - baselineMiB;
    console.log(`100 MiB upload: RSS ${baselineMiB.toFixed(1)} -> peak ${peakMiB.toFixed(1)} MiB`);
    assert.ok(growthMiB < 16, `RSS grew ${growthMiB.toFixed(1)} MiB`);
  });
});

Deno.test("a 256 MiB streamed response keeps memory flat (byte stream and default stream)", async () => {
  const size = 256 * 1024 * 1024;
  const handler: Handler = (_request, info) => {
    let sent = 0;
    if (info.target === "/bytes") {
      // A byte stream: the server reads it with BYOB into its own buffer.
      return new Response(
        new ReadableStream({
          type: "bytes",
          pull(controller) {
            if (sent >= size) return controller.close();
            const request = controller.byobRequest;
            if (request === null) {
              // A default read (before the server switches to BYOB): a chunk of its own.
              const chunk = new Uint8Array(Math.min(64 * 1024, size - sent)).fill(98);
              sent += chunk.length;
              return controller.enqueue(chunk);
            }
            const view = request.view as Uint8Array;
            const n = Math.min(view.byteLength, size - sent);
            view.fill(98, 0, n);
            sent += n;
            request.respond(n);
          },
        }),
        { headers: { "content-length": String(size) } },
      );
    }
    const chunk = new Uint8Array(64 * 1024).fill(99);
    return new Response(
      new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= size / 4) return controller.close();
          controller.enqueue(chunk);
          sent += chunk.length;
        },
      }),
    );
  };
  await withServer({}, handler, async ({ open }) => {
    const warm = await open();
    await warm.send("GET /warm HTTP/1.1\r\nHost: x\r\n\r\n");
    await warm.response();
    const baselineMiB = rssMiB();
    let peakMiB = baselineMiB;
    const buffer = new Uint8Array(256 * 1024);
    /** Reads a whole `Connection: close` response, counting bytes and sampling RSS. */
    const drain = async (target: string) => {
      const client = await open();
      await client.send(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      let received = 0;
      let sinceSample = 0;
      let last = new Uint8Array(0);
      while (true) {
        const n = await within(client.conn.read(buffer), 5000, "response bytes");
        if (n === null) break;
        received += n;
        sinceSample += n;
        last = buffer.slice(Math.max(0, n - 7), n);
        if (sinceSample >= 4 * 1024 * 1024) {
          sinceSample = 0;
          peakMiB = Math.max(peakMiB, rssMiB());
        }
      }
      return { received, tail: new TextDecoder().decode(last) };
    };
    const bytes = await drain("/bytes");
    const afterBytesMiB = peakMiB;
    assert.ok(bytes.received > size && bytes.received < size + 200, String(bytes.received));
    const chunked = await drain("/default");
    assert.ok(chunked.received > size / 4, String(chunked.received));
    assert.equal(chunked.tail, "\r\n0\r\n\r\n");
    const growthMiB = peakMiB - baselineMiB;
    console.log(
      `streamed responses: RSS ${baselineMiB.toFixed(1)} MiB -> peak ${
        afterBytesMiB.toFixed(1)
      } MiB (256 MiB byte stream) -> peak ${peakMiB.toFixed(1)} MiB (64 MiB default stream)`,
    );
    // Each BYOB read transfers its ArrayBuffer, which V8 does by allocating: garbage the GC
    // takes back, so RSS rises by a bounded ~15-20 MiB (the same for 256 MiB and 1 GiB). Any
    // buffering of the body would show as hundreds of MiB.
    assert.ok(growthMiB < 40, `RSS grew ${growthMiB.toFixed(1)} MiB`);
  });
});
