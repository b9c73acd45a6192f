import assert from "node:assert/strict";
import { createLimiter, LimiterRejectedError, type Release } from "../../src/proxy/limiter.ts";

const take = async (slot: Release | Promise<Release>) =>
  slot instanceof Promise ? await slot : slot;

Deno.test("slots are granted synchronously up to the limit", () => {
  const limiter = createLimiter({ limit: 2, maxPending: 0, queueTimeoutMs: 1000 });
  const a = limiter.acquire();
  const b = limiter.acquire();
  assert.equal(typeof a, "function");
  assert.equal(typeof b, "function");
  assert.equal(limiter.active(), 2);
  (a as Release)();
  (a as Release)(); // twice is harmless
  assert.equal(limiter.active(), 1);
  (b as Release)();
  assert.equal(limiter.active(), 0);
});

Deno.test("a full queue rejects at once as saturated", async () => {
  const limiter = createLimiter({ limit: 1, maxPending: 1, queueTimeoutMs: 1000 });
  const first = await take(limiter.acquire());
  const waiting = limiter.acquire();
  await assert.rejects(
    Promise.resolve(limiter.acquire()),
    (e) => e instanceof LimiterRejectedError && e.reason === "saturated",
  );
  first();
  const second = await take(waiting);
  assert.equal(limiter.active(), 1);
  second();
});

Deno.test("waiters are served in order and time out", async () => {
  const limiter = createLimiter({ limit: 1, maxPending: 5, queueTimeoutMs: 30 });
  const holder = await take(limiter.acquire());
  const order: number[] = [];
  const w1 = take(limiter.acquire()).then((r) => {
    order.push(1);
    r();
  });
  const w2 = take(limiter.acquire()).then((r) => {
    order.push(2);
    r();
  });
  assert.equal(limiter.pending(), 2);
  holder();
  await Promise.all([w1, w2]);
  assert.deepEqual(order, [1, 2]);

  const blocker = await take(limiter.acquire());
  await assert.rejects(
    take(limiter.acquire()),
    (e) => e instanceof LimiterRejectedError && e.reason === "queue_timeout",
  );
  assert.equal(limiter.pending(), 0);
  blocker();
});

Deno.test("an aborted waiter leaves the queue", async () => {
  const limiter = createLimiter({ limit: 1, maxPending: 5, queueTimeoutMs: 5000 });
  const holder = await take(limiter.acquire());
  const controller = new AbortController();
  const waiting = take(limiter.acquire(controller.signal));
  controller.abort();
  await assert.rejects(waiting, (e) => e instanceof LimiterRejectedError && e.reason === "aborted");
  assert.equal(limiter.pending(), 0);
  holder();
  assert.equal(limiter.active(), 0);
});

Deno.test("a waiter stops listening to its signal once granted or timed out", async () => {
  const limiter = createLimiter({ limit: 1, maxPending: 5, queueTimeoutMs: 20 });
  const holder = await take(limiter.acquire());
  // A real signal, its listener count kept by its own add/remove calls.
  const controller = new AbortController();
  const signal = controller.signal;
  let listening = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = (...args: Parameters<typeof add>) => {
    listening++;
    add(...args);
  };
  signal.removeEventListener = (...args: Parameters<typeof remove>) => {
    listening--;
    remove(...args);
  };
  const granted = take(limiter.acquire(signal));
  assert.equal(listening, 1);
  holder();
  (await granted)();
  assert.equal(listening, 0, "granted: the request's signal holds no listener of the queue");

  const blocker = await take(limiter.acquire());
  const late = take(limiter.acquire(signal));
  assert.equal(listening, 1);
  await assert.rejects(
    late,
    (e) => e instanceof LimiterRejectedError && e.reason === "queue_timeout",
  );
  assert.equal(listening, 0, "timed out: no listener left either");
  blocker();
});

Deno.test("raising the limit admits waiters; metrics hooks see every change", async () => {
  let active = 0;
  let pending = 0;
  const limiter = createLimiter({
    limit: 1,
    maxPending: 5,
    queueTimeoutMs: 5000,
    onActiveChange: (d) => active += d,
    onPendingChange: (d) => pending += d,
  });
  const a = await take(limiter.acquire());
  const b = take(limiter.acquire());
  assert.equal(pending, 1);
  limiter.setLimit(2);
  const releaseB = await b;
  assert.equal(active, 2);
  assert.equal(pending, 0);
  a();
  releaseB();
  assert.equal(active, 0);
});
