import assert from "node:assert/strict";
import { createAdaptiveLimit } from "../../src/proxy/adaptive_limit.ts";

function limiter(overrides: { minLimit?: number; maxLimit?: number; initialLimit?: number } = {}) {
  let now = 0;
  const adaptive = createAdaptiveLimit({
    minLimit: 2,
    maxLimit: 50,
    tolerance: 2,
    sampleWindowMs: 100,
    minSamples: 10,
    now: () => now,
    ...overrides,
  });
  /** One window of `count` samples at `latencyMs` and `inFlight`. */
  const window = (latencyMs: number, inFlight: number, count = 20) => {
    let last: number | null = null;
    for (let i = 0; i < count; i++) {
      now += 100 / count;
      const next = adaptive.sample(latencyMs, inFlight);
      if (next !== null) last = next;
    }
    return last;
  };
  return { adaptive, window, advance: (ms: number) => (now += ms) };
}

Deno.test("steady latency keeps the limit at the pool's maximum", () => {
  const { adaptive, window } = limiter();
  for (let i = 0; i < 10; i++) window(10, 40);
  assert.equal(adaptive.limit(), 50);
  assert.equal(adaptive.view().baselineMs, 10);
});

Deno.test("latency beyond tolerance x baseline shrinks the limit, down to a small queue", () => {
  const { adaptive, window } = limiter();
  window(10, 40);
  const limits: number[] = [];
  for (let i = 0; i < 12; i++) {
    window(60, adaptive.limit());
    limits.push(adaptive.limit());
  }
  // Gradient clamped at 0.5: limit * 0.5 + sqrt(limit), each window.
  assert.deepEqual(limits.slice(0, 3), [32, 21, 15]);
  assert.ok(limits.at(-1)! <= 5, `settles low: ${limits}`);
  assert.ok(limits.every((limit) => limit >= 2), "never below minLimit");
});

Deno.test("latency within tolerance does not shrink it; recovery grows it by sqrt(limit)", () => {
  const { adaptive, window } = limiter();
  window(10, 40);
  window(19, 40);
  assert.equal(adaptive.limit(), 50);
  for (let i = 0; i < 6; i++) window(80, adaptive.limit());
  const low = adaptive.limit();
  assert.ok(low < 10);
  window(10, low);
  assert.ok(adaptive.limit() > low, "grows once latency is back");
  for (let i = 0; i < 30; i++) window(10, adaptive.limit());
  assert.equal(adaptive.limit(), 50, "back at the maximum, never above");
});

Deno.test("an idle service does not grow its limit", () => {
  const { adaptive, window } = limiter({ initialLimit: 10 });
  for (let i = 0; i < 5; i++) window(10, 2);
  assert.equal(adaptive.limit(), 10);
  window(10, 6);
  assert.equal(adaptive.limit(), 13);
});

Deno.test("a window closes only with enough samples and time", () => {
  const { adaptive, advance } = limiter();
  for (let i = 0; i < 5; i++) assert.equal(adaptive.sample(10, 40), null);
  advance(1000);
  for (let i = 0; i < 4; i++) assert.equal(adaptive.sample(10, 40), null);
  assert.equal(adaptive.view().lastWindowMs, null);
  adaptive.sample(10, 40);
  assert.equal(adaptive.view().lastWindowMs, 10);
});

Deno.test("minLimit above maxLimit is clamped to maxLimit", () => {
  const { adaptive, window } = limiter({ minLimit: 80, maxLimit: 20 });
  window(10, 20);
  for (let i = 0; i < 5; i++) window(100, 20);
  assert.equal(adaptive.limit(), 20);
});
