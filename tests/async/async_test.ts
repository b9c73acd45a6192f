import assert from "node:assert/strict";
import { abortable } from "../../src/async/abortable.ts";
import { deadline, DeadlineError } from "../../src/async/deadline.ts";
import { delay } from "../../src/async/delay.ts";

Deno.test("delay resolves after its time", async () => {
  const startedAt = performance.now();
  await delay(20);
  assert.ok(performance.now() - startedAt >= 19);
});

Deno.test("delay rejects with the signal's reason, at once when already aborted", async () => {
  const controller = new AbortController();
  const waiting = delay(10_000, { signal: controller.signal });
  const reason = new Error("gone");
  controller.abort(reason);
  await assert.rejects(waiting, (error) => error === reason);
  await assert.rejects(delay(10_000, { signal: controller.signal }), (error) => error === reason);
});

Deno.test("delay refuses a negative or NaN time, naming the field", () => {
  assert.throws(() => delay(-1), /ms must be a number >= 0, got -1/);
  assert.throws(() => delay(NaN), RangeError);
});

Deno.test("deadline passes a settled promise on and clears its timer", async () => {
  assert.equal(await deadline(Promise.resolve(7), 10_000), 7);
  await assert.rejects(deadline(Promise.reject(new Error("no")), 10_000), /no/);
});

Deno.test("deadline rejects with DeadlineError naming the time once it passed", async () => {
  const never = new Promise<never>(() => {});
  await assert.rejects(deadline(never, 10), (error) => {
    assert.ok(error instanceof DeadlineError);
    assert.equal(error.timeoutMs, 10);
    assert.match(error.message, /10 ms/);
    return true;
  });
});

Deno.test("deadline also ends on its signal", async () => {
  const controller = new AbortController();
  const waiting = deadline(new Promise<never>(() => {}), 10_000, { signal: controller.signal });
  controller.abort("stop");
  await assert.rejects(waiting, (error) => error === "stop");
});

Deno.test("abortable: the promise wins, or the signal's reason does", async () => {
  const controller = new AbortController();
  assert.equal(await abortable(Promise.resolve("x"), controller.signal), "x");
  const { promise, resolve } = Promise.withResolvers<string>();
  const waiting = abortable(promise, controller.signal);
  controller.abort("late");
  await assert.rejects(waiting, (error) => error === "late");
  resolve("too late");
  await assert.rejects(abortable(Promise.reject(new Error("swallowed")), controller.signal));
});
