import assert from "node:assert/strict";
import { createDeadlineScheduler } from "../../src/proxy/deadlines.ts";

Deno.test("deadlines fire within a tick; cancelled ones never do; the timer stops when idle", async () => {
  const deadlines = createDeadlineScheduler({ tickMs: 5 });
  const start = performance.now();
  const fired: number[] = [];
  const done = new Promise<void>((resolve) => {
    deadlines.schedule(start + 30, () => {
      fired.push(performance.now() - start);
      resolve();
    });
  });
  const cancel = deadlines.schedule(start + 20, () => fired.push(-1));
  cancel();
  cancel();
  assert.equal(deadlines.pending(), 1);
  await done;
  assert.equal(fired.length, 1);
  assert.ok(fired[0] >= 29 && fired[0] < 200, `fired after ${fired[0]} ms`);
  assert.equal(deadlines.pending(), 0); // and no interval left running: the leak check agrees
});

Deno.test("a deadline in the past fires on the next tick; close drops the rest", async () => {
  let now = 1000;
  const deadlines = createDeadlineScheduler({ tickMs: 1, now: () => now });
  let fired = 0;
  const done = new Promise<void>((resolve) => deadlines.schedule(now - 500, () => resolve()));
  deadlines.schedule(now + 1_000_000, () => fired++);
  now += 2;
  await done;
  deadlines.close();
  assert.equal(fired, 0);
  assert.equal(deadlines.pending(), 0);
  assert.doesNotThrow(() => deadlines.schedule(now, () => fired++)());
});
