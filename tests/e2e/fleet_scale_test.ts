/**
 * The fleet as one system at size: ten instance processes (light ones: the breaker and the
 * retry budget in front of `fetch`, tests/breaker/_fleet_scale_child.ts) on one KV, counted at
 * the upstream.
 *
 * - A trip at size: ten instances at 50 req/s each (500 failing calls a second once the
 *   upstream goes dark). Target: at most 2 x failureThreshold on one KV file, failureThreshold
 *   + 3 over a KV Connect server; ten independent breakers let 50 through, and before the
 *   hold-back and the pulse (src/breaker/hold.ts) the fleet let 34-41 (file) and 40-49 (KV
 *   Connect) through. The figures vary with the machine's load (ten processes, the upstream and
 *   the KV server share two cores), so CI asserts 4 x failureThreshold and prints the count;
 *   the bench (`tests/breaker/_fleet_scale.ts` repeated) reports medians.
 * - A retry storm: ten instances at 10 req/s each in front of a dead upstream, two retries
 *   each allowed by the budget. Per instance the floors add up (10 x 3/s); the fleet budget
 *   pays one floor for the fleet.
 */
import assert from "node:assert/strict";
import { measureOutage, measureRetryStorm } from "../breaker/_fleet_scale.ts";

const THRESHOLD = 5;
const INSTANCES = 10;

for (const kv of ["file", "kv-connect"] as const) {
  Deno.test(`fleet scale (${kv}): ten instances at 50 req/s each stop a dead upstream near the threshold`, async () => {
    const result = await measureOutage({
      instances: INSTANCES,
      ratePerS: 50,
      kv,
      failureThreshold: THRESHOLD,
      // One call at a time per instance: calls in flight fail whatever anyone decides, and on
      // a loaded machine their number measures the load, not the breaker.
      maxInFlight: 1,
    });
    const lags = result.tripLagsMs.map((lag) => Math.round(lag));
    console.log(
      `${kv}: ${result.failedCalls} failed calls before all ${INSTANCES} rejected (threshold ${THRESHOLD}, ${INSTANCES} independent breakers: ${
        INSTANCES * THRESHOLD
      }); every instance rejecting ${
        Math.round(result.allRejectMs)
      } ms after the upstream went dark; lags after the threshold-th failure ${lags.join(", ")} ms`,
    );
    assert.equal(result.neverRejected, 0, "every instance stopped sending");
    assert.ok(result.failedCalls >= THRESHOLD);
    assert.ok(
      result.failedCalls <= 4 * THRESHOLD,
      `${result.failedCalls} failed calls (target ${
        kv === "file" ? 2 * THRESHOLD : THRESHOLD + 3
      }, CI bound ${4 * THRESHOLD})`,
    );
    assert.ok(Math.max(...lags) < 1000, `every instance stopped within 1 s: ${lags}`);
  });
}

Deno.test("fleet scale: behind a dead upstream, the fleet retry budget pays one floor, not ten", async () => {
  // A 2 s window keeps the test short; the budget's arithmetic is the same at 10 s.
  const storm = { instances: INSTANCES, ratePerS: 10, kv: "file", windowMs: 2000 } as const;
  const timing = { runForMs: 5000, measureFromMs: 2000 };
  const perInstance = await measureRetryStorm({ ...storm, ...timing, budget: "local" });
  const fleet = await measureRetryStorm({ ...storm, ...timing, budget: "fleet" });
  console.log(
    `retries received per second (first attempts ${
      perInstance.requestsPerS.toFixed(0)
    }/s): per-instance budgets ${
      perInstance.retriesPerS.toFixed(1)
    }/s (expected 10 x (20% x 10 + 3) = 50), fleet budget ${
      fleet.retriesPerS.toFixed(1)
    }/s (expected 20% x 100 + 3 = 23)`,
  );
  // The window counts in tenths, so a window is 1.8-2 s long: up to 11% more per second.
  assert.ok(fleet.retriesPerS <= 23 * 1.2 + 3, `fleet budget: ${fleet.retriesPerS} retries/s`);
  assert.ok(fleet.retriesPerS >= 10, `the fleet still retries: ${fleet.retriesPerS}/s`);
  assert.ok(
    fleet.retriesPerS < 0.7 * perInstance.retriesPerS,
    `fleet ${fleet.retriesPerS}/s against per-instance ${perInstance.retriesPerS}/s`,
  );
});
