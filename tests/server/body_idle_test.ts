/**
 * The HTTP/2 upload idle bound (`src/server/_body_idle.ts`): a manual clock and the sweep
 * called by hand decide when a stalled body errors; reading many chunks makes no timer. The
 * bound through a real TLS server and Deno's HTTP/2 client: tests/server/tls_server_test.ts.
 */
import assert from "node:assert/strict";
import { createBodyIdleWatch } from "../../src/server/_body_idle.ts";
import { ClientError } from "../../src/proxy/client_error.ts";

/** One turn of the event loop: every pending promise reaction has run (no time passes). */
function eventLoopTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A body that yields `chunks` one-byte chunks, then waits until `release` is called. */
function stallingBody(chunks: number) {
  let sent = 0;
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent < chunks) {
        sent++;
        controller.enqueue(new Uint8Array([sent & 0xff]));
        return;
      }
      await released;
      controller.close();
    },
  });
  return { body, release };
}

Deno.test("body idle: a read that waits idleMs errors at the next sweep, request_timeout", async () => {
  const clock = { ms: 0 };
  const watch = createBodyIdleWatch(1000, () => clock.ms);
  const { body, release } = stallingBody(1);
  const reader = watch.bound(body).getReader();
  assert.equal((await reader.read()).value?.[0], 1);
  const stalled = reader.read();
  await eventLoopTurn(); // the stream's next pull has begun: a read outstanding from clock 0
  clock.ms = 999;
  watch.sweep();
  clock.ms = 1000;
  watch.sweep();
  await assert.rejects(stalled, (error) => {
    assert.ok(error instanceof ClientError);
    assert.equal(error.code, "request_timeout");
    assert.match(error.message, /sent nothing for 1000 ms/);
    return true;
  });
  assert.equal(watch.size(), 0, "a failed body is no longer watched");
  release();
});

Deno.test("body idle: a consumer that does not read is not idle; chunks reset the wait", async () => {
  const clock = { ms: 0 };
  const watch = createBodyIdleWatch(1000, () => clock.ms);
  const { body, release } = stallingBody(3);
  const reader = watch.bound(body).getReader();
  // Nobody reads for a long time (backpressure, the client is not to blame).
  clock.ms = 60_000;
  watch.sweep();
  for (let i = 1; i <= 3; i++) {
    assert.equal((await reader.read()).value?.[0], i);
    clock.ms += 900; // each chunk within the bound
    watch.sweep();
  }
  const last = reader.read();
  release();
  assert.equal((await last).done, true);
  assert.equal(watch.size(), 0, "an ended body is no longer watched");
});

Deno.test("body idle: a body nobody reads to its end leaves the watch when the exchange is over", async () => {
  const watch = createBodyIdleWatch(1000, () => 0);
  const { body, release } = stallingBody(1);
  const { promise: completed, resolve: complete } = Promise.withResolvers<void>();
  watch.bound(body, completed);
  assert.equal(watch.size(), 1);
  complete();
  await eventLoopTurn();
  assert.equal(watch.size(), 0);
  release();
});

Deno.test("body idle: an exchange that ends rejected (a reset stream) also removes its body, unhandled by nobody", async () => {
  const watch = createBodyIdleWatch(1000, () => 0);
  const { body, release } = stallingBody(1);
  const { promise: completed, reject } = Promise.withResolvers<void>();
  // The caller's own handling of its promise; the watch must not add an unhandled chain.
  completed.catch(() => {});
  watch.bound(body, completed);
  reject(new Error("stream reset"));
  await eventLoopTurn();
  assert.equal(watch.size(), 0);
  release();
});

Deno.test("body idle: reading 10,000 chunks sets no timer (one sweep checks every body)", async () => {
  const watch = createBodyIdleWatch(1000, () => performance.now());
  const { body, release } = stallingBody(10_000);
  const reader = watch.bound(body).getReader();
  const realSetTimeout = globalThis.setTimeout;
  let timers = 0;
  // Counts timers made while the chunks are read; the real setTimeout still runs them.
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    timers++;
    return realSetTimeout(...args);
  }) as typeof setTimeout;
  try {
    for (let i = 0; i < 10_000; i++) assert.equal((await reader.read()).done, false);
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  assert.equal(timers, 0);
  const last = reader.read();
  release();
  assert.equal((await last).done, true);
});
