/**
 * The HTTP/1.1 upstream client's pool, request serialisation, aborts and retries, against raw
 * TCP upstreams.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { ClientError, type ClientErrorCode } from "../../src/proxy/client_error.ts";
import { createHttp1Client } from "../../src/proxy/http1_client.ts";
import { UpstreamError, type UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { memoryKiB } from "../_helpers/process.ts";
import { byteStream, childUpstream, resetPeakRss } from "./_upstream_process.ts";
import { startRecordingUpstream } from "../_helpers/raw_http.ts";
import { freePort, readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";

const encoder = new TextEncoder();
const OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

function newClient(maxIdlePerHost = 8, idleTimeoutMs = 5000) {
  return createHttp1Client(() => ({ maxIdlePerHost, idleTimeoutMs }));
}

function request(origin: string, init: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return {
    origin,
    pathAndQuery: "/p?q=1",
    method: "GET",
    headers: [],
    body: null,
    // Bounded: a hung exchange fails the test instead of hanging the suite.
    signal: AbortSignal.timeout(10_000),
    ...init,
  };
}

async function expectKind(promise: Promise<unknown>, kind: string) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof UpstreamError, String(error));
    assert.equal(error.kind, kind);
    return true;
  });
}

async function expectClientError(promise: Promise<unknown>, code: ClientErrorCode) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ClientError, String(error));
    assert.equal(error.code, code);
    return true;
  });
}

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(parts.map((part) => encoder.encode(part)));
}

Deno.test("serialises the request: line, host from the origin, headers as given", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin, {
      headers: [["X-Case", "Kept"], ["host", "ignored"], ["accept", "a"], ["accept", "b"]],
    }));
    assert.equal(await response.text(), "ok");
    const [seen] = upstream.requests;
    assert.equal(seen.requestLine, "GET /p?q=1 HTTP/1.1");
    const port = new URL(upstream.origin).port;
    assert.deepEqual(seen.headers, [
      ["host", `127.0.0.1:${port}`],
      ["x-case", "Kept"],
      ["accept", "a"],
      ["accept", "b"],
    ]);
    assert.deepEqual(upstream.framingErrors, []);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("request bodies: fixed (Uint8Array), declared-length stream, chunked stream", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const bodies: UpstreamRequest[] = [
      request(upstream.origin, { method: "POST", body: encoder.encode("fixed body") }),
      request(upstream.origin, {
        method: "PUT",
        headers: [["content-length", "11"]],
        body: streamOf("declared", " ok"),
      }),
      request(upstream.origin, { method: "POST", body: streamOf("chunk", "ed", " body") }),
      request(upstream.origin, { method: "POST" }),
    ];
    for (const body of bodies) assert.equal(await (await client.send(body)).text(), "ok");
    assert.deepEqual(upstream.framingErrors, []);
    assert.deepEqual(upstream.requests.map((r) => r.body), [
      "fixed body",
      "declared ok",
      "chunked body",
      "",
    ]);
    const framing = upstream.requests.map((r) =>
      r.headers.filter(([name]) => name === "content-length" || name === "transfer-encoding")
    );
    assert.deepEqual(framing, [
      [["content-length", "10"]],
      [["content-length", "11"]],
      [["transfer-encoding", "chunked"]],
      [["content-length", "0"]],
    ]);
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("keep-alive: 20 sequential requests use one connection", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    for (let i = 0; i < 20; i++) {
      assert.equal(await (await client.send(request(upstream.origin))).text(), "ok");
    }
    assert.equal(upstream.accepted(), 1);
    assert.equal(upstream.requests.length, 20);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("concurrent requests use one connection each; maxIdlePerHost caps the idle ones", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient(2);
  try {
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => client.send(request(upstream.origin))),
    );
    assert.equal(upstream.accepted(), 5);
    for (const response of responses) await response.text();
    assert.equal(client.openConnections(), 2);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("idle connections close after idleTimeoutMs", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient(8, 50);
  try {
    await (await client.send(request(upstream.origin))).text();
    assert.equal(client.openConnections(), 1);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(client.openConnections(), 0);
    await (await client.send(request(upstream.origin))).text();
    assert.equal(upstream.accepted(), 2);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("an idle connection the peer closed is dropped from the pool at once", async () => {
  // Each connection answers one request and then closes without saying so.
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode(OK));
  });
  const client = newClient();
  try {
    for (const body of [null, encoder.encode("again"), streamOf("streamed")]) {
      const response = await client.send(request(upstream.origin, { method: "POST", body }));
      assert.equal(await response.text(), "ok");
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(client.openConnections(), 0);
    }
    assert.equal(upstream.accepted(), 3);
  } finally {
    client.close();
    await upstream.close();
  }
});

/** Answers the first request of each connection; takes the second and closes unanswered. */
function closingOnSecond() {
  return startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode(OK));
    await readRequestHead(conn);
  });
}

Deno.test("a reused connection closed before any answer: retried once on a fresh one", async () => {
  const upstream = closingOnSecond();
  const client = newClient();
  try {
    assert.equal(await (await client.send(request(upstream.origin))).text(), "ok");
    const response = await client.send(
      request(upstream.origin, { method: "POST", body: encoder.encode("again") }),
    );
    assert.equal(await response.text(), "ok");
    assert.equal(upstream.accepted(), 2);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a streamed body is not retried when a reused connection closes", async () => {
  const upstream = closingOnSecond();
  const client = newClient();
  try {
    await (await client.send(request(upstream.origin))).text();
    await expectKind(
      client.send(request(upstream.origin, { method: "POST", body: streamOf("x") })),
      "unreachable",
    );
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("connection refused -> unreachable", async () => {
  const client = newClient();
  try {
    await expectKind(client.send(request(`http://127.0.0.1:${freePort()}`)), "unreachable");
  } finally {
    client.close();
  }
});

Deno.test("the connection closed before any answer (fresh connection) -> unreachable", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    await expectKind(client.send(request(upstream.origin)), "unreachable");
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("aborts: during connect, waiting for the head, mid-body -> the signal's kind", async () => {
  let release = () => {};
  const hold = new Promise<void>((resolve) => release = resolve);
  const upstream = startRawUpstream(async (conn) => {
    const head = await readRequestHead(conn);
    if (head.includes("/body")) {
      await conn.write(encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart"));
    }
    await hold;
  });
  const client = newClient();
  try {
    // Connect phase: aborted before the socket is up.
    const connecting = new AbortController();
    const first = client.send(request(upstream.origin, { signal: connecting.signal }));
    connecting.abort(new UpstreamError("timeout", "deadline"));
    await expectKind(first, "timeout");

    // Head phase.
    const waiting = new AbortController();
    const second = client.send(request(upstream.origin, { signal: waiting.signal }));
    setTimeout(() => waiting.abort(new UpstreamError("timeout", "deadline")), 50);
    await expectKind(second, "timeout");

    // Body phase: the client went away (a plain abort is "aborted").
    const reading = new AbortController();
    const response = await client.send(
      request(upstream.origin, { pathAndQuery: "/body", signal: reading.signal }),
    );
    const reader = response.body!.getReader();
    assert.equal(new TextDecoder().decode((await reader.read()).value), "part");
    setTimeout(() => reading.abort(), 20);
    await assert.rejects(reader.read(), (error: unknown) => {
      assert.ok(error instanceof UpstreamError);
      assert.equal(error.kind, "aborted");
      return true;
    });
    assert.equal(client.openConnections(), 0);
  } finally {
    release();
    client.close();
    await upstream.close();
  }
});

Deno.test("a cancelled response body destroys the connection", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"));
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin));
    await response.body!.cancel();
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a request body stream that fails -> unreachable, connection destroyed", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await new Promise((resolve) => setTimeout(resolve, 200));
  });
  const client = newClient();
  try {
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulls++ === 0) controller.enqueue(encoder.encode("start"));
        else controller.error(new Error("client broke off"));
      },
    });
    await expectKind(
      client.send(request(upstream.origin, { method: "POST", body })),
      "unreachable",
    );
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("an early answer before the request body ended: connection not reused", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode("HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"));
    await readRequestHead(conn);
  });
  const client = newClient();
  let cancelled = false;
  try {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode("some"));
      },
      cancel() {
        cancelled = true;
      },
    });
    const response = await client.send(request(upstream.origin, { method: "POST", body }));
    assert.equal(response.status, 413);
    assert.equal(client.openConnections(), 0);
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(cancelled);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("close() destroys idle connections and refuses new requests", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    await (await client.send(request(upstream.origin))).text();
    assert.equal(client.openConnections(), 1);
    client.close();
    assert.equal(client.openConnections(), 0);
    await expectKind(client.send(request(upstream.origin)), "unreachable");
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("an invalid method, target or header is the client's fault, refused before any connection", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const invalid: Partial<UpstreamRequest>[] = [
      { pathAndQuery: "/a b" },
      { pathAndQuery: "/a#fragment" },
      { pathAndQuery: "no-slash" },
      { pathAndQuery: "/caf\u00e9" },
      { method: "GE T" },
      { method: "" },
      { method: "CONNECT" },
      { headers: [["x-a", "b\r\nx-evil: 1"]] },
      { headers: [["x-a", "nul\0"]] },
      { headers: [["x-a", "del\x7f"]] },
      { headers: [["bad name", "v"]] },
      { headers: [["x-a", "\u0100"]] },
    ];
    for (const init of invalid) {
      await expectClientError(client.send(request(upstream.origin, init)), "bad_request");
    }
    assert.equal(upstream.accepted(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("config: upstreamClient defaults to http1; fetch per service or in defaults", () => {
  const base = { prefix: "/a", upstreams: ["http://127.0.0.1:1"] };
  assert.equal(parseConfig({ services: { a: base } }).services.a.upstreamClient, "http1");
  const viaDefaults = parseConfig({ defaults: { upstreamClient: "fetch" }, services: { a: base } });
  assert.equal(viaDefaults.services.a.upstreamClient, "fetch");
  assert.throws(() => parseConfig({ services: { a: { ...base, upstreamClient: "h2" } } }));
});

Deno.test("https origins: TLS via Deno.connectTls, keep-alive reuse", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const made = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-days",
        "1",
        "-keyout",
        `${dir}/key.pem`,
        "-out",
        `${dir}/cert.pem`,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    assert.ok(made.success, "openssl failed");
    const cert = await Deno.readTextFile(`${dir}/cert.pem`);
    const key = await Deno.readTextFile(`${dir}/key.pem`);
    const ports = new Set<number>();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, cert, key, onListen: () => {} },
      (req, info) => {
        ports.add(info.remoteAddr.port);
        return new Response(`tls ${new URL(req.url).pathname}`);
      },
    );
    const client = createHttp1Client(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }), {
      tls: { caCerts: [cert] },
    });
    try {
      const origin = `https://localhost:${server.addr.port}`;
      for (let i = 0; i < 3; i++) {
        const response = await client.send(request(origin, { pathAndQuery: "/secure" }));
        assert.equal(await response.text(), "tls /secure");
      }
      assert.equal(ports.size, 1);
    } finally {
      client.close();
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a ClientError from the request body stream propagates as itself, before the head", async () => {
  // The upstream waits for the whole body, so the failure comes before any answer.
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const stalled = new ClientError("request_timeout", "no request body bytes for 60000 ms");
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulls++ === 0) controller.enqueue(encoder.encode("start"));
        else controller.error(stalled);
      },
    });
    await assert.rejects(
      client.send(request(upstream.origin, { method: "POST", body })),
      (error: unknown) => error === stalled,
    );
    assert.equal(client.openConnections(), 0);
    assert.deepEqual(upstream.requests, []);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a ClientError from the request body after the head errors the response body with it", async () => {
  // The upstream answers at once and streams its answer while the request body still flows.
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst"));
    const buffer = new Uint8Array(1024);
    while ((await conn.read(buffer)) !== null) {
      // drain until the client gives up
    }
  });
  const client = newClient();
  try {
    let fail = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode("part"));
        fail = () => controller.error(new ClientError("bad_request", "the client broke off"));
      },
    });
    const response = await client.send(request(upstream.origin, { method: "POST", body }));
    const reader = response.body!.getReader();
    assert.equal(new TextDecoder().decode((await reader.read()).value), "first");
    fail();
    await assert.rejects(reader.read(), (error: unknown) => {
      assert.ok(error instanceof ClientError, String(error));
      assert.equal(error.code, "bad_request");
      return true;
    });
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a request body longer or shorter than its content-length is the client's fault", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    const buffer = new Uint8Array(1024);
    while ((await conn.read(buffer)) !== null) {
      // never answers
    }
  });
  const client = newClient();
  try {
    for (const [declared, sent] of [["3", "four"], ["10", "four"]]) {
      const pending = client.send(request(upstream.origin, {
        method: "PUT",
        headers: [["content-length", declared]],
        body: streamOf(sent),
      }));
      await expectClientError(pending, "bad_request");
    }
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a byte-stream request body is read BYOB and framed exactly (chunked and declared)", async () => {
  const upstream = startRecordingUpstream((seen) => {
    const body = seen.body;
    let ok = body.length === 200_000;
    for (let i = 0; ok && i < body.length; i++) ok = body.charCodeAt(i) === i % 128;
    const text = ok ? "same" : "different";
    return `HTTP/1.1 200 OK\r\ncontent-length: ${text.length}\r\n\r\n${text}`;
  });
  const client = newClient();
  try {
    for (const headers of [[], [["content-length", "200000"]]] as [string, string][][]) {
      const response = await client.send(
        request(upstream.origin, { method: "POST", headers, body: byteStream(200_000) }),
      );
      assert.equal(await response.text(), "same");
    }
    assert.deepEqual(upstream.framingErrors, []);
    assert.deepEqual(
      upstream.requests.map((r) =>
        r.headers.filter(([name]) => name === "content-length" || name === "transfer-encoding")
      ),
      [[["transfer-encoding", "chunked"]], [["content-length", "200000"]]],
    );
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a BYOB consumer gets the response body in its own buffer; a default one gets copies", async () => {
  const payload = new Uint8Array(300_000).map((_, i) => i & 0xff);
  const upstream = startRawUpstream(async (conn) => {
    while (true) {
      if ((await readRequestHead(conn)) === "") return;
      const chunked = encoder.encode(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n`);
      await conn.write(chunked);
      for (let offset = 0; offset < payload.length; offset += 100_000) {
        await conn.write(encoder.encode("186a0\r\n"));
        await conn.write(payload.subarray(offset, offset + 100_000));
        await conn.write(encoder.encode("\r\n"));
      }
      await conn.write(encoder.encode("0\r\n\r\n"));
    }
  });
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin));
    const reader = response.body!.getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(64 * 1024);
    const received: number[] = [];
    while (true) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      // The same memory comes back each time (transferred, never reallocated).
      assert.equal(value.buffer.byteLength, 64 * 1024);
      assert.equal(value.byteOffset, 0);
      for (const byte of value) received.push(byte);
      buffer = value.buffer;
    }
    assert.deepEqual(new Uint8Array(received), payload);
    const again = await client.send(request(upstream.origin));
    assert.deepEqual(new Uint8Array(await again.arrayBuffer()), payload);
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("bodyIdleTimeoutMs: a flowing event stream passes intact; a stalled body is cut at ~idle", async () => {
  // 15 events 100 ms apart (1.5 s) under an idle limit of 1000 ms: never cut.
  const upstream = startRawUpstream(async (conn) => {
    const head = await readRequestHead(conn);
    if (head.includes("/events")) {
      await conn.write(
        encoder.encode(
          "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" +
            "transfer-encoding: chunked\r\n\r\n",
        ),
      );
      for (let i = 0; i < 15; i++) {
        const event = `data: ${i}\n\n`;
        await conn.write(encoder.encode(`${event.length.toString(16)}\r\n${event}\r\n`));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await conn.write(encoder.encode("0\r\n\r\n"));
      await readRequestHead(conn);
      return;
    }
    // Half of a declared body, then silence (until the client gives up).
    await conn.write(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf."));
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    const events = await client.send(
      request(upstream.origin, { pathAndQuery: "/events", bodyIdleTimeoutMs: 1000 }),
    );
    const text = await events.text();
    assert.equal(text, Array.from({ length: 15 }, (_, i) => `data: ${i}\n\n`).join(""));

    const stalled = await client.send(
      request(upstream.origin, { pathAndQuery: "/stall", bodyIdleTimeoutMs: 300 }),
    );
    const reader = stalled.body!.getReader();
    assert.equal(new TextDecoder().decode((await reader.read()).value), "half.");
    const startedMs = performance.now();
    await assert.rejects(reader.read(), (error: unknown) => {
      assert.ok(error instanceof UpstreamError, String(error));
      assert.equal(error.kind, "timeout");
      return true;
    });
    const waitedMs = performance.now() - startedMs;
    assert.ok(waitedMs >= 290 && waitedMs < 600, `cut after ${waitedMs} ms`);
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("bodyIdleTimeoutMs: a consumer that stops reading is not the upstream's idleness", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\none"));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await conn.write(encoder.encode("two"));
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin, { bodyIdleTimeoutMs: 100 }));
    const reader = response.body!.getReader();
    assert.equal(new TextDecoder().decode((await reader.read()).value), "one");
    // The consumer waits three idle limits before asking again: the bytes are there.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(new TextDecoder().decode((await reader.read()).value), "two");
    assert.equal((await reader.read()).done, true);
  } finally {
    client.close();
    await upstream.close();
  }
});

const MiB = 1024 * 1024;

Deno.test("flat memory: a 256 MiB download read BYOB into one buffer raises peak RSS < 16 MiB", async () => {
  const upstream = await childUpstream();
  const client = newClient();
  try {
    // Warm up the connection and the code paths first.
    await (await client.send(request(upstream.origin, { pathAndQuery: "/?size=1048576" })))
      .arrayBuffer();
    resetPeakRss();
    const before = memoryKiB(Deno.pid).rss;
    const size = 256 * MiB;
    const response = await client.send(
      request(upstream.origin, { pathAndQuery: `/?size=${size}` }),
    );
    const reader = response.body!.getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(64 * 1024);
    let total = 0;
    while (true) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      total += value.length;
      buffer = value.buffer;
    }
    const grownMiB = (memoryKiB(Deno.pid).peak - before) / 1024;
    console.log(`256 MiB download: peak RSS +${grownMiB.toFixed(1)} MiB`);
    assert.equal(total, size);
    assert.ok(grownMiB < 16, `peak RSS grew ${grownMiB.toFixed(1)} MiB`);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("flat memory: a 100 MiB chunked upload from a byte stream raises peak RSS < 16 MiB", async () => {
  const upstream = await childUpstream();
  const client = newClient();
  try {
    await (await client.send(
      request(upstream.origin, { method: "POST", body: byteStream(MiB) }),
    )).text();
    resetPeakRss();
    const before = memoryKiB(Deno.pid).rss;
    const size = 100 * MiB;
    const response = await client.send(
      request(upstream.origin, { method: "POST", body: byteStream(size) }),
    );
    const received = Number(await response.text());
    const grownMiB = (memoryKiB(Deno.pid).peak - before) / 1024;
    console.log(`100 MiB chunked upload: peak RSS +${grownMiB.toFixed(1)} MiB`);
    assert.equal(received, size);
    assert.ok(grownMiB < 16, `peak RSS grew ${grownMiB.toFixed(1)} MiB`);
  } finally {
    client.close();
    await upstream.close();
  }
});
