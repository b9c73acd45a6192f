import assert from "node:assert/strict";
import {
  createOutlierDetector,
  ejectionMs,
  maxEjectedCount,
  type OutlierOptions,
} from "../../src/health/outlier.ts";

function detector(overrides: Partial<OutlierOptions> = {}) {
  let now = 1_000;
  const options: OutlierOptions = {
    consecutiveFailures: 3,
    baseEjectionMs: 1000,
    maxEjectionMs: 5000,
    maxEjectionPercent: 50,
    upstreamCount: 2,
    now: () => now,
    ...overrides,
  };
  return { detector: createOutlierDetector(options), advance: (ms: number) => (now += ms) };
}

Deno.test("ejection length doubles per ejection and is capped", () => {
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => ejectionMs(n, 1000, 5000)), [
    1000,
    2000,
    4000,
    5000,
    5000,
  ]);
  assert.equal(ejectionMs(100, 30_000, 300_000), 300_000);
});

Deno.test("at most maxEjectionPercent, at least one of two or more, never all", () => {
  assert.equal(maxEjectedCount(1, 100), 0);
  assert.equal(maxEjectedCount(2, 10), 1);
  assert.equal(maxEjectedCount(2, 100), 1);
  assert.equal(maxEjectedCount(10, 50), 5);
  assert.equal(maxEjectedCount(10, 100), 9);
});

Deno.test("consecutive failures eject; a success in between resets the count", () => {
  const { detector: d } = detector();
  assert.equal(d.record(1, true), false);
  assert.equal(d.record(1, true), false);
  assert.equal(d.record(1, false), false);
  assert.equal(d.record(1, true), false);
  assert.equal(d.record(1, true), false);
  assert.equal(d.isEjected(1), false);
  assert.equal(d.record(1, true), true);
  assert.equal(d.isEjected(1), true);
  assert.equal(d.isEjected(0), false);
  assert.equal(d.view(1).ejectedForMs, 1000);
});

Deno.test("ejections end on time and grow: 1 s, 2 s, 4 s, capped at 5 s", () => {
  const { detector: d, advance } = detector();
  const ejectAgain = () => {
    for (let i = 0; i < 3; i++) d.record(1, true);
    assert.equal(d.isEjected(1), true);
  };
  for (const expected of [1000, 2000, 4000, 5000, 5000]) {
    ejectAgain();
    assert.equal(d.view(1).ejectedForMs, expected);
    advance(expected - 1);
    assert.deepEqual(d.refresh(), []);
    assert.equal(d.isEjected(1), true);
    advance(1);
    assert.deepEqual(d.refresh(), [1]);
    assert.equal(d.isEjected(1), false);
    // Back in rotation with a clean slate: one failure does not re-eject.
    assert.equal(d.record(1, true), false);
    assert.equal(d.isEjected(1), false);
  }
  assert.equal(d.view(1).ejections, 5);
});

Deno.test("the multiplier starts over after maxEjectionMs without an ejection", () => {
  const { detector: d, advance } = detector();
  for (let i = 0; i < 3; i++) d.record(0, true);
  advance(1000);
  d.refresh();
  for (let i = 0; i < 3; i++) d.record(0, true);
  assert.equal(d.view(0).ejectedForMs, 2000);
  advance(2000 + 5001);
  d.refresh();
  for (let i = 0; i < 3; i++) d.record(0, true);
  assert.equal(d.view(0).ejectedForMs, 1000);
  assert.equal(d.view(0).ejections, 1);
});

Deno.test("never ejects more than maxEjectionPercent: the last upstreams keep serving", () => {
  const { detector: d } = detector({ upstreamCount: 4, maxEjectionPercent: 50 });
  for (const index of [0, 1, 2, 3]) {
    for (let i = 0; i < 3; i++) d.record(index, true);
  }
  assert.deepEqual([0, 1, 2, 3].map((i) => d.isEjected(i)), [true, true, false, false]);
});

Deno.test("a single-upstream service is never ejected (the breaker's job)", () => {
  const { detector: d } = detector({ upstreamCount: 1 });
  for (let i = 0; i < 10; i++) assert.equal(d.record(0, true), false);
  assert.equal(d.isEjected(0), false);
});
