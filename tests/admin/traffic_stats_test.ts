import assert from "node:assert/strict";
import { createTrafficStats, createTrafficTally } from "../../src/admin/traffic_stats.ts";

Deno.test("per-second counts, errors and percentiles", () => {
  let now = 1_000_000;
  const stats = createTrafficStats(300, () => now);
  for (let i = 1; i <= 100; i++) stats.record("s", i === 100 ? 503 : 200, i);
  now += 1000;
  stats.record("s", 200, 5);
  now += 1000;
  const series = stats.series("s", 3);
  assert.equal(series.length, 3);
  assert.deepEqual(series.map((p) => p.requests), [0, 100, 1]);
  assert.equal(series[1].errors, 1);
  // Within one ~12% bucket of the truth.
  assert.ok(series[1].p50Ms! >= 50 && series[1].p50Ms! <= 50 * 1.12 + 0.01, `${series[1].p50Ms}`);
  assert.ok(series[1].p99Ms! >= 99 && series[1].p99Ms! <= 99 * 1.12 + 0.01, `${series[1].p99Ms}`);
  assert.equal(series[0].p50Ms, null);
});

Deno.test("old seconds are overwritten, not mixed in", () => {
  let now = 0;
  const stats = createTrafficStats(10, () => now);
  stats.record("s", 200, 1);
  now = 10_000; // same ring slot, ten seconds later
  stats.record("s", 500, 1);
  now = 11_000;
  const last = stats.series("s", 1)[0];
  assert.equal(last.requests, 1);
  assert.equal(last.errors, 1);
  assert.deepEqual(stats.series("unknown", 2).map((p) => p.requests), [0, 0]);
});

Deno.test("a tally added in one step reads as the same requests recorded one by one", () => {
  let now = 1_000_000;
  const direct = createTrafficStats(300, () => now);
  const viaTally = createTrafficStats(300, () => now);
  const tally = createTrafficTally();
  for (let i = 1; i <= 100; i++) {
    const status = i % 10 === 0 ? 502 : 200;
    direct.record("s", status, i);
    tally.record("s", status, i);
  }
  tally.record("t", 200, 3);
  const taken = tally.take();
  assert.deepEqual(Object.keys(taken).sort(), ["s", "t"]);
  assert.equal(taken.s.requests, 100);
  assert.equal(taken.s.errors, 10);
  for (const [service, counts] of Object.entries(taken)) viaTally.add(service, counts);
  assert.deepEqual(tally.take(), {}, "take starts afresh");
  now += 1000;
  assert.deepEqual(viaTally.series("s", 1), direct.series("s", 1));
  assert.equal(viaTally.series("t", 1)[0].requests, 1);
});
