/**
 * Framing conformance of the HTTP/1.1 upstream client against raw TCP upstreams: every response
 * framing it accepts, every one it must refuse, and when a connection may be reused.
 */
import assert from "node:assert/strict";
import { createHttp1Client } from "../../src/proxy/http1_client.ts";
import { UpstreamError } from "../../src/proxy/upstream_client.ts";
import { readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";

const encoder = new TextEncoder();

function newClient() {
  return createHttp1Client(() => ({ maxIdlePerHost: 8, idleTimeoutMs: 5000 }));
}

function request(origin: string, init: { method?: string; signal?: AbortSignal } = {}) {
  return {
    origin,
    pathAndQuery: "/x",
    method: init.method ?? "GET",
    headers: [] as [string, string][],
    body: null,
    signal: init.signal ?? AbortSignal.timeout(10_000),
  };
}

/** An upstream answering every request on a connection with `answer` (raw bytes as text). */
function answering(answer: string | ((n: number) => string), closeAfter = false) {
  let n = 0;
  return startRawUpstream(async (conn) => {
    while (true) {
      const head = await readRequestHead(conn);
      if (head === "") return;
      const text = typeof answer === "string" ? answer : answer(n++);
      await conn.write(encoder.encode(text));
      if (closeAfter) return;
    }
  });
}

async function expectUnreachable(promise: Promise<unknown>) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof UpstreamError, String(error));
    assert.equal(error.kind, "unreachable");
    return true;
  });
}

/** Sends one GET and reads the body, expecting the read to fail. */
async function expectBodyFails(origin: string) {
  const client = newClient();
  try {
    const response = await client.send(request(origin));
    await assert.rejects(response.text());
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
  }
}

async function withUpstream(
  answer: string | ((n: number) => string),
  run: (origin: string, client: ReturnType<typeof newClient>) => Promise<void>,
  closeAfter = false,
) {
  const upstream = answering(answer, closeAfter);
  const client = newClient();
  try {
    await run(upstream.origin, client);
  } finally {
    client.close();
    await upstream.close();
  }
}

Deno.test("content-length body; the connection is reused", async () => {
  await withUpstream(
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
    async (o, c) => {
      for (let i = 0; i < 3; i++) {
        const response = await c.send(request(o));
        assert.equal(response.status, 200);
        assert.equal(response.statusText, "OK");
        assert.equal(response.headers.get("x-a"), "b");
        assert.equal(await response.text(), "hello");
      }
      assert.equal(c.openConnections(), 1);
    },
  );
});

Deno.test("chunked body with extensions and trailers (discarded)", async () => {
  const answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
    "5;ext=1;x\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\nX-More: u\r\n\r\n";
  await withUpstream(answer, async (o, c) => {
    for (let i = 0; i < 2; i++) {
      const response = await c.send(request(o));
      assert.equal(await response.text(), "hello 0123456789");
    }
    assert.equal(c.openConnections(), 1);
  });
});

Deno.test("chunked framing errors: bad size, overflow, missing CRLF, bad trailer", async () => {
  for (
    const body of [
      "zz\r\nab\r\n0\r\n\r\n",
      "FFFFFFFFFFFFFFFF\r\nab\r\n0\r\n\r\n",
      "2\r\nabc\r\n0\r\n\r\n",
      "2\nab\r\n0\r\n\r\n",
      "2\r\nab\r\n0\r\nbad trailer\r\n\r\n",
      "-2\r\nab\r\n0\r\n\r\n",
    ]
  ) {
    const upstream = answering("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body);
    try {
      await expectBodyFails(upstream.origin);
    } finally {
      await upstream.close();
    }
  }
});

Deno.test("a truncated content-length body fails; a truncated chunked body fails", async () => {
  for (
    const answer of [
      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ]
  ) {
    const upstream = answering(answer, true);
    try {
      await expectBodyFails(upstream.origin);
    } finally {
      await upstream.close();
    }
  }
});

Deno.test("close-delimited body is read to EOF and the connection is not reused", async () => {
  await withUpstream("HTTP/1.1 200 OK\r\n\r\nuntil the end", async (o, c) => {
    const response = await c.send(request(o));
    assert.equal(await response.text(), "until the end");
    assert.equal(c.openConnections(), 0);
  }, true);
});

Deno.test("1xx interim responses are skipped", async () => {
  const answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  await withUpstream(answer, async (o, c) => {
    const response = await c.send(request(o));
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("link"), null);
    assert.equal(await response.text(), "ok");
  });
});

Deno.test("204, 304 and HEAD have no body (even with a content-length); reused", async () => {
  const answers = [
    "HTTP/1.1 204 No Content\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend",
  ];
  await withUpstream((n) => answers[n], async (o, c) => {
    assert.equal((await c.send(request(o))).body, null);
    const notModified = await c.send(request(o));
    assert.equal(notModified.status, 304);
    assert.equal(notModified.body, null);
    const head = await c.send(request(o, { method: "HEAD" }));
    assert.equal(head.body, null);
    assert.equal(head.headers.get("content-length"), "50");
    assert.equal(await (await c.send(request(o))).text(), "end");
    assert.equal(c.openConnections(), 1);
  });
});

Deno.test("malformed heads are refused as unreachable", async () => {
  const heads = [
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
    "HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\nx",
    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nx",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nx",
    "HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nBad Name: a\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    "HTTP/1.1 700 Weird\r\nContent-Length: 0\r\n\r\n",
    "garbage\r\n\r\n",
  ];
  for (const head of heads) {
    const upstream = answering(head);
    const client = newClient();
    try {
      await expectUnreachable(client.send(request(upstream.origin)));
      assert.equal(client.openConnections(), 0, head);
    } finally {
      client.close();
      await upstream.close();
    }
  }
});

Deno.test("a head over 64 KiB is refused; one just under is accepted", async () => {
  const big = "HTTP/1.1 200 OK\r\nX-Big: " + "a".repeat(70 * 1024) +
    "\r\nContent-Length: 0\r\n\r\n";
  const upstream = answering(big);
  const client = newClient();
  try {
    await expectUnreachable(client.send(request(upstream.origin)));
  } finally {
    client.close();
    await upstream.close();
  }
  const fits = "HTTP/1.1 200 OK\r\nX-Big: " + "a".repeat(60 * 1024) +
    "\r\nContent-Length: 0\r\n\r\n";
  await withUpstream(fits, async (o, c) => {
    const response = await c.send(request(o));
    assert.equal(response.headers.get("x-big")?.length, 60 * 1024);
  });
});

Deno.test("a chunk-size line over the limit is refused", async () => {
  const answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + "e".repeat(8000) +
    "\r\na\r\n0\r\n\r\n";
  const upstream = answering(answer);
  try {
    await expectBodyFails(upstream.origin);
  } finally {
    await upstream.close();
  }
});

Deno.test("bytes after a response (pipelined garbage): the connection is not reused", async () => {
  await withUpstream(
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    async (o, c) => {
      assert.equal(await (await c.send(request(o))).text(), "ok");
      assert.equal(c.openConnections(), 0);
    },
  );
});

Deno.test("connection: close and HTTP/1.0 answers are not reused", async () => {
  const answers = [
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
    "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb",
  ];
  await withUpstream((n) => answers[n % 2], async (o, c) => {
    assert.equal(await (await c.send(request(o))).text(), "a");
    assert.equal(c.openConnections(), 0);
  });
  await withUpstream((n) => answers[(n + 1) % 2], async (o, c) => {
    assert.equal(await (await c.send(request(o))).text(), "b");
    assert.equal(c.openConnections(), 0);
  });
});

Deno.test("multiple Set-Cookie headers stay separate; obs-text values pass through", async () => {
  const answer = "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-L: caf\xe9\r\n" +
    "Content-Length: 0\r\n\r\n";
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    const bytes = new Uint8Array([...answer].map((ch) => ch.charCodeAt(0)));
    await conn.write(bytes);
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin));
    assert.deepEqual(response.headers.getSetCookie(), ["a=1", "b=2"]);
    assert.equal(response.headers.get("x-l"), "caf\xe9");
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a content-length body that arrives after the head streams; reused at its end", async () => {
  const upstream = startRawUpstream(async (conn) => {
    while (true) {
      if ((await readRequestHead(conn)) === "") return;
      await conn.write(encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhel"));
      await new Promise((resolve) => setTimeout(resolve, 10));
      await conn.write(encoder.encode("lo world"));
    }
  });
  const client = newClient();
  try {
    for (let i = 0; i < 3; i++) {
      const response = await client.send(request(upstream.origin));
      assert.equal(await response.text(), "hello world");
    }
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});
