import assert from "node:assert/strict";
import { watchRequestBody } from "../../src/proxy/body_limit.ts";
import { ClientError } from "../../src/proxy/client_error.ts";

/** A byte stream of `total` bytes handed out at most `chunk` at a time into the reader's view. */
function byteSource(total: number, chunk: number): ReadableStream<Uint8Array> {
  let sent = 0;
  const source: UnderlyingByteSource = {
    type: "bytes",
    autoAllocateChunkSize: 65536,
    pull(controller) {
      const request = controller.byobRequest!;
      const view = request.view!;
      const n = Math.min(view.byteLength, chunk, total - sent);
      if (n === 0) {
        controller.close();
        request.respond(0);
        return;
      }
      new Uint8Array(view.buffer, view.byteOffset, n).fill(7);
      sent += n;
      request.respond(n);
    },
  };
  return new ReadableStream(source) as ReadableStream<Uint8Array>;
}

Deno.test("watchRequestBody passes a BYOB reader's buffer through to a byte source", async () => {
  const watched = watchRequestBody(byteSource(1_000_000, 10_000), null);
  const reader = watched.stream.getReader({ mode: "byob" });
  let buffer = new Uint8Array(65536);
  let total = 0;
  const buffers = new Set<ArrayBufferLike>();
  while (true) {
    const { done, value } = await reader.read(buffer);
    if (done || value === undefined) break;
    total += value.byteLength;
    buffers.add(value.buffer);
    buffer = new Uint8Array(value.buffer);
  }
  assert.equal(total, 1_000_000);
  assert.equal(watched.bytesRead(), 1_000_000);
  assert.equal(watched.clientError(), null);
});

Deno.test("watchRequestBody serves default readers from byte and plain sources", async () => {
  const bytes = watchRequestBody(byteSource(300_000, 70_000), null);
  assert.equal((await new Response(bytes.stream).arrayBuffer()).byteLength, 300_000);
  const plain = watchRequestBody(new Response("hello world").body!, null);
  assert.equal(await new Response(plain.stream).text(), "hello world");
});

Deno.test("watchRequestBody: over the cap is the client's body_too_large", async () => {
  const watched = watchRequestBody(byteSource(300_000, 70_000), 100_000);
  await assert.rejects(
    new Response(watched.stream).arrayBuffer(),
    (error: unknown) => error instanceof ClientError && error.code === "body_too_large",
  );
  assert.equal(watched.clientError()?.code, "body_too_large");
});

Deno.test("watchRequestBody: a failing source is the client's bad_request; its own ClientError stays", async () => {
  const broken = watchRequestBody(
    new ReadableStream<Uint8Array>({ pull: (c) => c.error(new Error("reset")) }),
    null,
  );
  await assert.rejects(
    new Response(broken.stream).arrayBuffer(),
    (error: unknown) => error instanceof ClientError && error.code === "bad_request",
  );
  const stalled = watchRequestBody(
    new ReadableStream<Uint8Array>({
      pull: (c) => c.error(new ClientError("request_timeout", "stalled")),
    }),
    null,
  );
  await assert.rejects(new Response(stalled.stream).arrayBuffer());
  assert.equal(stalled.clientError()?.code, "request_timeout");
});

Deno.test("watchRequestBody: waitingOnClient is true only while a read waits on the source", async () => {
  let release: (chunk: Uint8Array) => void = () => {};
  const source = new ReadableStream<Uint8Array>({
    pull: (c) =>
      new Promise<void>((resolve) => {
        release = (chunk) => {
          c.enqueue(chunk);
          c.close();
          resolve();
        };
      }),
  });
  const watched = watchRequestBody(source, null);
  assert.equal(watched.waitingOnClient(), false);
  const reader = watched.stream.getReader();
  const pending = reader.read();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(watched.waitingOnClient(), true);
  release(new Uint8Array([1, 2, 3]));
  assert.deepEqual([...(await pending).value!], [1, 2, 3]);
  assert.equal(watched.waitingOnClient(), false);
  await reader.cancel();
});
