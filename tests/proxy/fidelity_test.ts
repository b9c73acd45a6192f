/**
 * Fidelity matrix for both upstream clients, straight against a raw upstream that writes exact
 * bytes: client `Accept-Encoding` {none, gzip, br, identity} x upstream body {plain, gzip, br} x
 * framing {Content-Length, chunked}.
 *
 * - http1: the client receives exactly the status, headers and body bytes the upstream sent
 *   (compressed stays compressed, `content-length` kept), and the upstream receives exactly the
 *   request head the client sent, nothing added.
 * - fetch: the body bytes agree with the headers: with `content-encoding` still there they
 *   decode (`DecompressionStream`) to the plain body and match any `content-length`; without it
 *   they are the plain body.
 *
 * Plus backpressure on request bodies for both: an upstream that stops reading stops the
 * client's reads of the body stream.
 */
import assert from "node:assert/strict";
import { brotliCompressSync } from "node:zlib";
import { createFetchClient } from "../../src/proxy/fetch_client.ts";
import { createHttp1Client } from "../../src/proxy/http1_client.ts";
import type { UpstreamClient, UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";

const encoder = new TextEncoder();
const PLAIN = encoder.encode(
  Array.from({ length: 400 }, (_, i) => `line ${i}: the quick brown fox\n`).join(""),
);

async function gzipOf(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function decode(bytes: Uint8Array, coding: string): Promise<Uint8Array> {
  const format = coding === "br" ? "brotli" : coding as CompressionFormat;
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream(format));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const BODIES: Record<string, Uint8Array> = {
  plain: PLAIN,
  gzip: await gzipOf(PLAIN),
  br: new Uint8Array(brotliCompressSync(PLAIN)),
};

/** The exact response for `/{coding}/{framing}`: head lines (name, value) and body bytes. */
function answerFor(path: string): { lines: [string, string][]; wire: Uint8Array } {
  const [, coding, framing] = path.split("/");
  const body = BODIES[coding];
  const lines: [string, string][] = [["Content-Type", "text/plain; charset=utf-8"]];
  if (coding !== "plain") lines.push(["Content-Encoding", coding], ["Vary", "Accept-Encoding"]);
  lines.push(["ETag", `"${coding}-1"`]);
  let payload: Uint8Array;
  if (framing === "cl") {
    lines.push(["Content-Length", String(body.length)]);
    payload = body;
  } else {
    lines.push(["Transfer-Encoding", "chunked"]);
    // Two chunks, split mid-body, then the last chunk.
    const half = Math.floor(body.length / 2);
    const parts = [body.subarray(0, half), body.subarray(half)];
    const framed: Uint8Array[] = [];
    for (const part of parts) {
      framed.push(encoder.encode(`${part.length.toString(16)}\r\n`), part, encoder.encode("\r\n"));
    }
    framed.push(encoder.encode("0\r\n\r\n"));
    payload = new Uint8Array(framed.reduce((sum, part) => sum + part.length, 0));
    let offset = 0;
    for (const part of framed) {
      payload.set(part, offset);
      offset += part.length;
    }
  }
  const head = encoder.encode(
    "HTTP/1.1 200 OK\r\n" + lines.map(([name, value]) => `${name}: ${value}\r\n`).join("") +
      "\r\n",
  );
  const wire = new Uint8Array(head.length + payload.length);
  wire.set(head);
  wire.set(payload, head.length);
  return { lines, wire };
}

/** Answers every request with `answerFor(its path)`, keep-alive; records each request head. */
function matrixUpstream() {
  const heads: string[] = [];
  const upstream = startRawUpstream(async (conn) => {
    while (true) {
      const head = await readRequestHead(conn);
      if (head === "") return;
      heads.push(head);
      await conn.write(answerFor(head.split(" ")[1]).wire);
    }
  });
  return { ...upstream, heads };
}

const ACCEPTS = [null, "gzip", "br", "identity"];
const CODINGS = ["plain", "gzip", "br"];
const FRAMINGS = ["cl", "chunked"];

function matrixRequest(origin: string, path: string, accept: string | null): UpstreamRequest {
  const headers: [string, string][] = [["Accept", "text/plain"], ["X-Request-Id", "fid-1"]];
  if (accept !== null) headers.push(["Accept-Encoding", accept]);
  return {
    origin,
    pathAndQuery: path,
    method: "GET",
    headers,
    body: null,
    signal: AbortSignal.timeout(10_000),
  };
}

Deno.test("fidelity, http1: the upstream's exact bytes and headers back, the client's exact head out", async () => {
  const upstream = matrixUpstream();
  const client = createHttp1Client(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }));
  const host = new URL(upstream.origin).host;
  try {
    for (const accept of ACCEPTS) {
      for (const coding of CODINGS) {
        for (const framing of FRAMINGS) {
          const path = `/${coding}/${framing}`;
          const label = `${path} accept-encoding ${accept}`;
          const sent = matrixRequest(upstream.origin, path, accept);
          const response = await client.send(sent);
          const bytes = new Uint8Array(await response.arrayBuffer());
          assert.deepEqual(bytes, BODIES[coding], label);
          const expected = answerFor(path).lines.map((
            [name, value],
          ) => [name.toLowerCase(), value]);
          assert.deepEqual([...response.headers].sort(), expected.sort(), label);
          const head = upstream.heads.at(-1);
          assert.equal(
            head,
            `GET ${path} HTTP/1.1\r\nhost: ${host}\r\n` +
              sent.headers.map(([name, value]) => `${name}: ${value}\r\n`).join("") + "\r\n",
            label,
          );
        }
      }
    }
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("fidelity, fetch: body bytes always agree with the headers handed on", async () => {
  const upstream = matrixUpstream();
  const client = createFetchClient(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }));
  try {
    for (const accept of ACCEPTS) {
      for (const coding of CODINGS) {
        for (const framing of FRAMINGS) {
          const path = `/${coding}/${framing}`;
          const label = `${path} accept-encoding ${accept}`;
          const response = await client.send(matrixRequest(upstream.origin, path, accept));
          const bytes = new Uint8Array(await response.arrayBuffer());
          const contentEncoding = response.headers.get("content-encoding");
          const contentLength = response.headers.get("content-length");
          if (contentLength !== null) assert.equal(Number(contentLength), bytes.length, label);
          if (contentEncoding !== null) {
            assert.equal(contentEncoding, coding, label);
            assert.deepEqual(await decode(bytes, contentEncoding), PLAIN, label);
          } else {
            assert.deepEqual(bytes, PLAIN, label);
          }
          // The client's own headers arrive, its Accept-Encoding (or identity) included.
          const head = upstream.heads.at(-1)!.toLowerCase();
          assert.match(head, /\r\naccept: text\/plain\r\n/, label);
          assert.match(head, /\r\nx-request-id: fid-1\r\n/, label);
          assert.match(head, new RegExp(`\\r\\naccept-encoding: ${accept ?? "identity"}\\r\\n`));
        }
      }
    }
  } finally {
    client.close();
    await upstream.close();
  }
});

/** Polls until `read()` gives the same value three times in a row (bounded), and returns it. */
async function settled(read: () => number, timeoutMs = 5000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let last = -1;
  let same = 0;
  while (performance.now() < deadline) {
    const now = read();
    same = now === last ? same + 1 : 0;
    last = now;
    if (same >= 3) return now;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`still changing after ${timeoutMs} ms`);
}

const MiB = 1024 * 1024;

for (
  const [kind, make] of [
    ["http1", () => createHttp1Client(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }))],
    ["fetch", () => createFetchClient(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }))],
  ] as [string, () => UpstreamClient][]
) {
  Deno.test(`backpressure, ${kind}: an upstream that stops reading stops the body's reads`, async () => {
    let release = () => {};
    const held = new Promise<void>((resolve) => release = resolve);
    const upstream = startRawUpstream(async (conn) => {
      await readRequestHead(conn);
      await held;
      const buffer = new Uint8Array(64 * 1024);
      // Drains the chunked body to its last chunk (the data is all "a", so the last five bytes
      // seen, across reads, tell the end).
      let tail = "";
      while (tail !== "0\r\n\r\n") {
        const n = await conn.read(buffer);
        if (n === null) return;
        tail = (tail + String.fromCharCode(...buffer.subarray(Math.max(0, n - 5), n))).slice(-5);
      }
      await conn.write(encoder.encode(`HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok`));
    });
    const client = make();
    const size = 256 * MiB;
    let pulled = 0;
    const chunk = new Uint8Array(64 * 1024).fill(0x61);
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= size) return controller.close();
        controller.enqueue(chunk);
        pulled += chunk.length;
      },
    }, { highWaterMark: 0 });
    try {
      const sending = client.send({
        origin: upstream.origin,
        pathAndQuery: "/upload",
        method: "POST",
        headers: [],
        body,
        signal: AbortSignal.timeout(20_000),
      });
      const stalledAt = await settled(() => pulled);
      console.log(`${kind}: body reads stopped after ${(stalledAt / MiB).toFixed(1)} MiB`);
      // Socket buffers and the client's own queue, not the whole body.
      assert.ok(stalledAt < 64 * MiB, `read ${stalledAt} bytes ahead`);
      release();
      const response = await sending;
      assert.equal(await response.text(), "ok");
      assert.equal(pulled, size);
    } finally {
      release();
      client.close();
      await upstream.close();
    }
  });
}
