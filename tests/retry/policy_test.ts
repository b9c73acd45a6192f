import assert from "node:assert/strict";
import {
  backoffDelayMs,
  createRetryBudget,
  isRetryableRequest,
  retryAfterMs,
} from "../../src/retry/policy.ts";

Deno.test("idempotent methods and idempotency keys are retryable; POST is not", () => {
  for (const method of ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]) {
    assert.equal(isRetryableRequest(method, new Headers()), true, method);
  }
  assert.equal(isRetryableRequest("POST", new Headers()), false);
  assert.equal(isRetryableRequest("PATCH", new Headers()), false);
  assert.equal(isRetryableRequest("POST", new Headers({ "idempotency-key": "k1" })), true);
});

Deno.test("full-jitter backoff stays within [0, min(max, base * 2^n))", () => {
  for (let n = 0; n < 12; n++) {
    const ceiling = Math.min(1000, 50 * 2 ** n);
    assert.equal(backoffDelayMs(n, 50, 1000, 0), 0);
    assert.ok(backoffDelayMs(n, 50, 1000, 0.999999) < ceiling);
    assert.ok(backoffDelayMs(n, 50, 1000, 0.999999) >= ceiling - 1);
  }
  assert.equal(backoffDelayMs(1000, 50, 1000, 0.5), 500); // no overflow for huge n
});

Deno.test("jitter spreads delays across the whole range", () => {
  let seed = 42;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const delays = Array.from({ length: 2000 }, () => backoffDelayMs(3, 50, 1000, random()));
  const quarters = [0, 0, 0, 0];
  for (const d of delays) quarters[Math.min(3, Math.floor(d / 100))]++;
  for (const q of quarters) assert.ok(q > 350 && q < 650, `quarters ${quarters}`);
});

Deno.test("Retry-After: seconds, HTTP date, garbage", () => {
  const now = Date.parse("2026-11-24T12:00:00Z");
  assert.equal(retryAfterMs("3", now), 3000);
  assert.equal(retryAfterMs("Tue, 24 Nov 2026 12:00:05 GMT", now), 5000);
  assert.equal(retryAfterMs("Tue, 24 Nov 2026 11:00:00 GMT", now), 0);
  assert.equal(retryAfterMs("soon", now), null);
  assert.equal(retryAfterMs(null, now), null);
});

Deno.test("the budget allows percent of requests plus a floor, in a sliding window", () => {
  let now = 0;
  const budget = createRetryBudget({
    budgetPercent: 20,
    minRetriesPerSecond: 0,
    windowMs: 10_000,
    now: () => now,
  });
  for (let i = 0; i < 100; i++) budget.recordRequest();
  let granted = 0;
  for (let i = 0; i < 100; i++) if (budget.tryAcquireRetry()) granted++;
  assert.equal(granted, 20);
  now = 10_500; // the window moved past every counted request
  assert.equal(budget.tryAcquireRetry(), false);
  assert.deepEqual(budget.snapshot(), { requests: 0, retries: 0, allowedRetries: 0 });
});

Deno.test("the floor lets a quiet service retry; a clock going back keeps counts", () => {
  let now = 50_000;
  const budget = createRetryBudget({ budgetPercent: 20, minRetriesPerSecond: 1, now: () => now });
  budget.recordRequest();
  let granted = 0;
  for (let i = 0; i < 50; i++) if (budget.tryAcquireRetry()) granted++;
  assert.equal(granted, 10); // floor: 1/s over a 10 s window
  now = 40_000;
  assert.equal(budget.tryAcquireRetry(), false);
  assert.equal(budget.snapshot().retries, 10);
});
