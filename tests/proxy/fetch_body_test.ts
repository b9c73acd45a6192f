/**
 * How the `fetch` client hands its response bodies on (`src/proxy/_fetch_body.ts`): a small
 * declared body that came with its head as bytes, a later one without holding the head back,
 * and default-reader chunks as exact-size copies instead of fetch's fresh 64 KiB buffers.
 */
import assert from "node:assert/strict";
import { createFetchClient } from "../../src/proxy/fetch_client.ts";
import type { UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { bytesOf } from "../../src/server/static_body.ts";
import { readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";
import { within } from "../_helpers/wait.ts";

const encoder = new TextEncoder();

function get(origin: string, path: string): UpstreamRequest {
  return {
    origin,
    pathAndQuery: path,
    method: "GET",
    headers: [],
    body: null,
    signal: AbortSignal.timeout(5000),
    bodyIdleTimeoutMs: 5000,
  };
}

/** A raw upstream: `/now` answers head and body in one write; `/later` sends the body on cue. */
function scriptedUpstream() {
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const upstream = startRawUpstream(async (conn) => {
    while (true) {
      const head = await readRequestHead(conn);
      if (head === "") return;
      if (head.startsWith("GET /now ")) {
        await conn.write(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"));
      } else if (head.startsWith("GET /later ")) {
        await conn.write(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"));
        await released;
        await conn.write(encoder.encode("later"));
      } else {
        // Chunked, three chunks in one write: a streamed body.
        await conn.write(encoder.encode(
          "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" +
            "3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n",
        ));
      }
    }
  });
  return { upstream, release };
}

Deno.test("fetch client: a small declared body that came with its head is handed over as bytes", async () => {
  const { upstream, release } = scriptedUpstream();
  const client = createFetchClient(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }));
  try {
    const response = await client.send(get(upstream.origin, "/now"));
    assert.deepEqual(bytesOf(response), encoder.encode("hello"));
    assert.equal(response.headers.get("content-length"), "5");
    assert.equal(await response.text(), "hello");
  } finally {
    release();
    client.close();
    await upstream.close();
  }
});

Deno.test("fetch client: a declared body still on its way does not hold the head back", async () => {
  const { upstream, release } = scriptedUpstream();
  const client = createFetchClient(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }));
  try {
    // The body is sent only after the head was handed on: waiting for it would time out.
    const response = await within(client.send(get(upstream.origin, "/later")), 3000, "the head");
    assert.equal(bytesOf(response), null);
    release();
    assert.equal(await within(response.text(), 3000, "the body"), "later");
  } finally {
    release();
    client.close();
    await upstream.close();
  }
});

Deno.test("fetch client: default-reader chunks are exact-size, never fetch's 64 KiB buffers", async () => {
  const { upstream, release } = scriptedUpstream();
  const client = createFetchClient(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }));
  try {
    const response = await client.send(get(upstream.origin, "/chunked"));
    const reader = response.body!.getReader();
    let text = "";
    while (true) {
      const { done, value } = await within(reader.read(), 3000, "a chunk");
      if (done) break;
      assert.equal(value.buffer.byteLength, value.byteLength, "a chunk owns its buffer exactly");
      text += new TextDecoder().decode(value);
    }
    assert.equal(text, "onetwothree");
  } finally {
    release();
    client.close();
    await upstream.close();
  }
});
