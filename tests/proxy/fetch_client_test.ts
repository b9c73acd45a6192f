/**
 * The fetch upstream client against raw TCP upstreams that write exact bytes: what Deno's fetch
 * does on its own (pinned, so a Deno upgrade that changes it fails here), and what the client
 * does about it (consistent bytes, refusals before any connection, the client's faults kept
 * as `ClientError`s, the response body idle timeout).
 */
import assert from "node:assert/strict";
import { brotliCompressSync, deflateSync, gzipSync, zstdCompressSync } from "node:zlib";
import { ClientError, type ClientErrorCode } from "../../src/proxy/client_error.ts";
import { createFetchClient, fetchDecodes } from "../../src/proxy/fetch_client.ts";
import {
  type UpstreamClient,
  UpstreamError,
  type UpstreamRequest,
} from "../../src/proxy/upstream_client.ts";
import { memoryKiB } from "../_helpers/process.ts";
import { startRecordingUpstream } from "../_helpers/raw_http.ts";
import { readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";
import { byteStream, childUpstream, resetPeakRss } from "./_upstream_process.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const PLAIN = encoder.encode("breakwater ".repeat(200));

function newClient() {
  return createFetchClient(() => ({ maxIdlePerHost: 8, idleTimeoutMs: 5000 }));
}

function request(origin: string, init: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return {
    origin,
    pathAndQuery: "/p",
    method: "GET",
    headers: [],
    body: null,
    // Bounded: a hung exchange fails the test instead of hanging the suite.
    signal: AbortSignal.timeout(10_000),
    ...init,
  };
}

async function expectClientError(promise: Promise<unknown>, code: ClientErrorCode) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ClientError, String(error));
    assert.equal(error.code, code);
    return true;
  });
}

/** The bytes of a response: its head, then its body as given. */
function responseBytes(head: string, body: Uint8Array): Uint8Array {
  const headBytes = encoder.encode(head);
  const out = new Uint8Array(headBytes.length + body.length);
  out.set(headBytes);
  out.set(body, headBytes.length);
  return out;
}

/**
 * An upstream answering bodyless requests with `answer(head)` (exact bytes), keep-alive, and
 * recording every request head.
 */
function exactUpstream(answer: (head: string) => Uint8Array) {
  const heads: string[] = [];
  const upstream = startRawUpstream(async (conn) => {
    while (true) {
      const head = await readRequestHead(conn);
      if (head === "") return;
      heads.push(head);
      await conn.write(answer(head));
    }
  });
  return { ...upstream, heads };
}

/** PLAIN in each coding (a list applies left to right, RFC 9110 §8.4). */
const CODERS: Record<string, (bytes: Uint8Array) => Uint8Array> = {
  gzip: (bytes) => gzipSync(bytes),
  "x-gzip": (bytes) => gzipSync(bytes),
  br: (bytes) => brotliCompressSync(bytes),
  deflate: (bytes) => deflateSync(bytes),
  zstd: (bytes) => zstdCompressSync(bytes),
  identity: (bytes) => bytes,
};

function coded(coding: string): Uint8Array {
  let bytes: Uint8Array = PLAIN;
  for (const token of coding.split(",")) bytes = CODERS[token.trim().toLowerCase()](bytes);
  return new Uint8Array(bytes); // not a node Buffer, so deepEqual compares bytes only
}

/** The response a request's `x-coding` header asks for: PLAIN coded so, with a Content-Length. */
function codedAnswer(head: string): Uint8Array {
  const coding = /\r\nx-coding: ([^\r]*)/.exec(head)?.[1] ?? "gzip";
  const body = coded(coding);
  return responseBytes(
    `HTTP/1.1 200 OK\r\ncontent-encoding: ${coding}\r\ncontent-length: ${body.length}\r\n\r\n`,
    body,
  );
}

Deno.test("Deno's fetch decodes exactly what fetchDecodes says (gzip/br, unless identity or Range)", async () => {
  // Plain fetch, no client of ours: this pins the behaviour the client compensates for.
  const upstream = exactUpstream(codedAnswer);
  const http = Deno.createHttpClient({ http2: false });
  try {
    const codings = ["gzip", "GZIP", "x-gzip", "br", "deflate", "zstd", "gzip, br", "identity"];
    const accepts = [null, "gzip", "br", "identity", "Identity", "identity;q=1", "*"];
    for (const coding of codings) {
      for (const accept of accepts) {
        for (const range of [false, true]) {
          const headers: [string, string][] = [["x-coding", coding]];
          if (accept !== null) headers.push(["accept-encoding", accept]);
          if (range) headers.push(["range", "bytes=0-"]);
          const response = await fetch(`${upstream.origin}/`, {
            headers,
            client: http,
            signal: AbortSignal.timeout(5000),
          });
          const bytes = new Uint8Array(await response.arrayBuffer());
          const label = `${coding} / ${accept} / range ${range}`;
          const expected = fetchDecodes(accept, range, coding) ? PLAIN : coded(coding);
          assert.deepEqual(bytes, expected, label);
          // ...and fetch keeps the coded headers even when it decoded.
          assert.equal(response.headers.get("content-encoding"), coding, label);
        }
      }
    }
  } finally {
    http.close();
    await upstream.close();
  }
});

Deno.test("decoded bodies lose content-encoding and content-length; coded ones keep both", async () => {
  const upstream = exactUpstream(codedAnswer);
  const client = newClient();
  try {
    for (const coding of ["gzip", "br", "x-gzip", "deflate"]) {
      for (const accept of [null, "gzip, br", "identity"]) {
        const headers: [string, string][] = [["x-coding", coding]];
        if (accept !== null) headers.push(["accept-encoding", accept]);
        const response = await client.send(request(upstream.origin, { headers }));
        const bytes = new Uint8Array(await response.arrayBuffer());
        const label = `${coding} / ${accept}`;
        if (response.headers.has("content-encoding")) {
          assert.equal(response.headers.get("content-length"), String(bytes.length), label);
          assert.notDeepEqual(bytes, PLAIN, label);
        } else {
          assert.deepEqual(bytes, PLAIN, label);
          assert.equal(response.headers.get("content-length"), null, label);
        }
        // Decoded only when the client accepted something other than identity (without an
        // Accept-Encoding the client sends identity) and the coding is one fetch decodes.
        const decodable = coding === "gzip" || coding === "br";
        const allowed = accept !== null && accept !== "identity";
        assert.equal(!response.headers.has("content-encoding"), decodable && allowed, label);
      }
    }
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("what fetch adds and changes in the request head (kept), and accept-encoding identity", async () => {
  const upstream = exactUpstream(() =>
    responseBytes("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", encoder.encode("ok"))
  );
  const client = newClient();
  try {
    await (await client.send(request(upstream.origin, {
      headers: [["X-Case", "Kept"], ["x-spaced", " value "], ["host", "ignored"]],
    }))).text();
    await (await client.send(request(upstream.origin, {
      headers: [["accept-encoding", "gzip"], ["accept-encoding", "br"], ["user-agent", "mine"]],
    }))).text();
    const [first, second] = upstream.heads.map((head) => head.toLowerCase());
    // Added by fetch when absent:
    assert.match(first, /\r\naccept: \*\/\*\r\n/);
    assert.match(first, /\r\naccept-language: \*\r\n/);
    assert.match(first, /\r\nuser-agent: deno\/\d/);
    // Added by this client instead of fetch's `gzip,br`:
    assert.match(first, /\r\naccept-encoding: identity\r\n/);
    // Names lower-cased, values trimmed, host from the origin:
    assert.match(upstream.heads[0], /\r\nx-case: Kept\r\n/);
    assert.match(first, /\r\nx-spaced: value\r\n/);
    assert.match(first, new RegExp(`\\r\\nhost: 127\\.0\\.0\\.1:${new URL(upstream.origin).port}`));
    // The client's own values pass, several accept-encoding lines as one list:
    assert.match(second, /\r\naccept-encoding: gzip, br\r\n/);
    assert.match(second, /\r\nuser-agent: mine\r\n/);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("methods fetch would alter or refuse are bad_request before any connection", async () => {
  const upstream = exactUpstream(() =>
    responseBytes("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", encoder.encode("ok"))
  );
  const client = newClient();
  try {
    for (const method of ["get", "Get", "post", "put", "delete", "head", "options"]) {
      await expectClientError(client.send(request(upstream.origin, { method })), "bad_request");
    }
    for (const method of ["TRACE", "trace", "TRACK", "CONNECT", "connect"]) {
      await expectClientError(client.send(request(upstream.origin, { method })), "bad_request");
    }
    for (const method of ["GET", "HEAD"]) {
      const body = encoder.encode("x");
      await expectClientError(
        client.send(request(upstream.origin, { method, body })),
        "bad_request",
      );
    }
    assert.equal(upstream.accepted(), 0);
    // What fetch sends as given: `patch` (not normalised), extension methods, an empty GET body.
    for (const method of ["patch", "PROPFIND", "M-SEARCH"]) {
      await (await client.send(request(upstream.origin, { method }))).text();
    }
    await (await client.send(request(upstream.origin, { body: new Uint8Array(0) }))).text();
    assert.deepEqual(upstream.heads.map((head) => head.split(" ")[0]), [
      "patch",
      "PROPFIND",
      "M-SEARCH",
      "GET",
    ]);
    assert.ok(!upstream.heads[3].toLowerCase().includes("content-length"));
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("targets the URL parser would rewrite are bad_request; the rest pass byte for byte", async () => {
  const upstream = exactUpstream(() =>
    responseBytes("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", encoder.encode("ok"))
  );
  const client = newClient();
  try {
    const rewritten = [
      "/a/../b",
      "/a/./b",
      "/a/%2e%2e/b",
      "/a\\b",
      '/a"b',
      "/a{b}",
      "/a`b",
      "/p?q='x'",
      "/p?q=<x>",
    ];
    for (const pathAndQuery of rewritten) {
      await expectClientError(
        client.send(request(upstream.origin, { pathAndQuery })),
        "bad_request",
      );
    }
    assert.equal(upstream.accepted(), 0);
    const kept = [
      "/p?",
      "/a%2Fb",
      "/a;b=c",
      "//double",
      "/p?q=a%20b&r",
      "/~user/!$&()*+,=@:",
      "/a^b|c",
      "/[x]",
      "/p?q={`x`}",
    ];
    for (const pathAndQuery of kept) {
      await (await client.send(request(upstream.origin, { pathAndQuery }))).text();
    }
    assert.deepEqual(upstream.heads.map((head) => head.split(" ")[1]), kept);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("request framing: bytes and small declared streams keep Content-Length; others chunked", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const bodies: Partial<UpstreamRequest>[] = [
      { body: encoder.encode("fixed body") },
      {
        headers: [["content-length", "11"]],
        body: ReadableStream.from([encoder.encode("declared"), encoder.encode(" ok")]),
      },
      { body: ReadableStream.from([encoder.encode("chunked"), encoder.encode(" body")]) },
      { headers: [["transfer-encoding", "chunked"]], body: encoder.encode("not re-framed") },
    ];
    for (const init of bodies) {
      const response = await client.send(request(upstream.origin, { method: "POST", ...init }));
      assert.equal(await response.text(), "ok");
    }
    assert.deepEqual(upstream.framingErrors, []);
    assert.deepEqual(upstream.requests.map((r) => r.body), [
      "fixed body",
      "declared ok",
      "chunked body",
      "not re-framed",
    ]);
    assert.deepEqual(
      upstream.requests.map((r) =>
        r.headers.filter(([name]) => name === "content-length" || name === "transfer-encoding")
      ),
      [
        [["content-length", "10"]],
        [["content-length", "11"]],
        [["transfer-encoding", "chunked"]],
        [["content-length", "13"]],
      ],
    );
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a ClientError from the request body stream propagates as itself", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  // A declared body over maxBufferedBodyBytes streams (chunked) instead of being buffered.
  const streaming = createFetchClient(() => ({ maxIdlePerHost: 8, idleTimeoutMs: 5000 }), {
    maxBufferedBodyBytes: 10,
  });
  try {
    const cases: [UpstreamClient, [string, string][]][] = [
      [client, []],
      [client, [["content-length", "100"]]],
      [streaming, [["content-length", "100"]]],
    ];
    for (const [sender, headers] of cases) {
      const broke = new ClientError("bad_request", "the client broke off");
      let pulls = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (pulls++ === 0) controller.enqueue(encoder.encode("start"));
          else controller.error(broke);
        },
      });
      await assert.rejects(
        sender.send(request(upstream.origin, { method: "POST", headers, body })),
        (error: unknown) => error === broke,
      );
    }
    // Anything else a body stream throws is no evidence against the upstream either way:
    // reported as the body's failure.
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulls++ === 0) controller.enqueue(encoder.encode("start"));
        else controller.error(new Error("lost"));
      },
    });
    await assert.rejects(
      client.send(request(upstream.origin, { method: "POST", body })),
      (error: unknown) => {
        assert.ok(error instanceof UpstreamError, String(error));
        assert.equal(error.kind, "unreachable");
        assert.equal((error.cause as Error).message, "lost");
        return true;
      },
    );
    assert.deepEqual(upstream.requests, []);
  } finally {
    client.close();
    streaming.close();
    await upstream.close();
  }
});

Deno.test("a declared body the client stalls: the deadline stops the buffering with its kind", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode("only part"));
      },
    });
    const deadline = new AbortController();
    const sending = client.send(request(upstream.origin, {
      method: "POST",
      headers: [["content-length", "100"]],
      body,
      signal: deadline.signal,
    }));
    setTimeout(() => deadline.abort(new UpstreamError("timeout", "deadline")), 50);
    await assert.rejects(sending, (error: unknown) => {
      assert.ok(error instanceof UpstreamError, String(error));
      assert.equal(error.kind, "timeout");
      return true;
    });
    assert.equal(upstream.accepted(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("fetch's response body supports BYOB reads", async () => {
  const upstream = exactUpstream(() =>
    responseBytes("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", encoder.encode("hello"))
  );
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin));
    const reader = response.body!.getReader({ mode: "byob" });
    const { value } = await reader.read(new Uint8Array(16));
    assert.equal(decoder.decode(value), "hello");
    assert.equal((await reader.read(new Uint8Array(16))).done, true);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("bodyIdleTimeoutMs (fetch): an event stream passes intact; a stall is cut at ~idle", async () => {
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
    await conn.write(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf."));
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    const events = await client.send(
      request(upstream.origin, { pathAndQuery: "/events", bodyIdleTimeoutMs: 1000 }),
    );
    // Read BYOB into one buffer, as the gateway's server does.
    const reader = events.body!.getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(1024);
    let text = "";
    while (true) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      text += decoder.decode(value);
      buffer = value.buffer;
    }
    assert.equal(text, Array.from({ length: 15 }, (_, i) => `data: ${i}\n\n`).join(""));

    const stalled = await client.send(
      request(upstream.origin, { pathAndQuery: "/stall", bodyIdleTimeoutMs: 300 }),
    );
    const stalledReader = stalled.body!.getReader();
    assert.equal(decoder.decode((await stalledReader.read()).value), "half.");
    const startedMs = performance.now();
    await assert.rejects(stalledReader.read(), (error: unknown) => {
      assert.ok(error instanceof UpstreamError, String(error));
      assert.equal(error.kind, "timeout");
      return true;
    });
    const waitedMs = performance.now() - startedMs;
    assert.ok(waitedMs >= 290 && waitedMs < 600, `cut after ${waitedMs} ms`);
  } finally {
    client.close();
    await upstream.close();
  }
});

const MiB = 1024 * 1024;

Deno.test("fetch: a 100 MiB chunked byte-stream upload is bounded (peak RSS measured)", async () => {
  // fetch reads a JavaScript body with a default reader (a byte stream then allocates a chunk
  // per read) and queues it into its own resource: bounded by backpressure, not flat.
  const upstream = await childUpstream();
  const client = newClient();
  try {
    await (await client.send(request(upstream.origin, { method: "POST", body: byteStream(MiB) })))
      .text();
    resetPeakRss();
    const before = memoryKiB(Deno.pid).rss;
    const size = 100 * MiB;
    const response = await client.send(
      request(upstream.origin, { method: "POST", body: byteStream(size) }),
    );
    const received = Number(await response.text());
    const grownMiB = (memoryKiB(Deno.pid).peak - before) / 1024;
    console.log(`fetch, 100 MiB chunked byte-stream upload: peak RSS +${grownMiB.toFixed(1)} MiB`);
    assert.equal(received, size);
    assert.ok(grownMiB < 64, `peak RSS grew ${grownMiB.toFixed(1)} MiB`);
  } finally {
    client.close();
    await upstream.close();
  }
});
