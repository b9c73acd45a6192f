import assert from "node:assert/strict";
import { classifyOutcome, isFailure, parseStatusRanges } from "../../src/breaker/outcome.ts";
import type { AttemptOutcome } from "../../src/breaker/types.ts";
import {
  addFailure,
  bucketIndex,
  bucketWidthMs,
  countFailures,
  sumWindow,
  windowBuckets,
} from "../../src/breaker/window.ts";
import { policy } from "./_helpers.ts";

Deno.test("outcome: parseStatusRanges reads ranges, lists and reversed ranges", () => {
  assert.deepEqual(parseStatusRanges("500-599"), [{ from: 500, to: 599 }]);
  assert.deepEqual(parseStatusRanges(" 502 , 503,504 "), [
    { from: 502, to: 502 },
    { from: 503, to: 503 },
    { from: 504, to: 504 },
  ]);
  assert.deepEqual(parseStatusRanges("500 - 503,599"), [
    { from: 500, to: 503 },
    { from: 599, to: 599 },
  ]);
  assert.deepEqual(parseStatusRanges("599-500"), [{ from: 500, to: 599 }]);
});

Deno.test("outcome: classification table", () => {
  const defaults = policy();
  const slow = policy({ slowCallMs: 200, failureStatuses: parseStatusRanges("502,503,504") });
  const rows: Array<[string, typeof defaults, AttemptOutcome, string]> = [
    ["200", defaults, { status: 200, durationMs: 5 }, "success"],
    ["404 is the caller's fault", defaults, { status: 404, durationMs: 5 }, "success"],
    ["429", defaults, { status: 429, durationMs: 5 }, "success"],
    ["499 just below the range", defaults, { status: 499, durationMs: 5 }, "success"],
    ["500 at the range start", defaults, { status: 500, durationMs: 5 }, "failure"],
    ["599 at the range end", defaults, { status: 599, durationMs: 5 }, "failure"],
    ["unreachable", defaults, { error: "unreachable", durationMs: 1 }, "failure"],
    ["timeout", defaults, { error: "timeout", durationMs: 10_000 }, "failure"],
    ["aborted by the client", defaults, { error: "aborted", durationMs: 30 }, "ignored"],
    ["aborted even when slow", slow, { error: "aborted", durationMs: 30_000 }, "ignored"],
    ["no slowCallMs: slow 200 is fine", defaults, { status: 200, durationMs: 60_000 }, "success"],
    ["slowCallMs: exactly at the limit", slow, { status: 200, durationMs: 200 }, "success"],
    ["slowCallMs: over the limit", slow, { status: 200, durationMs: 201 }, "failure"],
    ["custom list: 500 not listed", slow, { status: 500, durationMs: 5 }, "success"],
    ["custom list: 503 listed", slow, { status: 503, durationMs: 5 }, "failure"],
    ["no status, no error", defaults, { durationMs: 5 }, "success"],
  ];
  for (const [name, p, outcome, expected] of rows) {
    assert.equal(classifyOutcome(p, outcome), expected, name);
    assert.equal(isFailure(p, outcome), expected === "failure", name);
  }
});

Deno.test("window: local sliding window counts within windowMs, exactly", () => {
  const p = policy({ windowMs: 1000, failureThreshold: 10 });
  let window: number[] = [];
  for (const stampMs of [0, 100, 500, 999]) window = addFailure(window, p, stampMs);
  assert.equal(countFailures(window, p, 999), 4);
  assert.equal(countFailures(window, p, 1000), 3, "the failure at 0 left the window at 1000");
  assert.equal(countFailures(window, p, 1099), 3);
  assert.equal(countFailures(window, p, 1100), 2);
  assert.equal(countFailures(window, p, 1998), 1);
  assert.equal(countFailures(window, p, 1999), 0);
});

Deno.test("window: keeps only failureThreshold stamps", () => {
  const p = policy({ windowMs: 1000, failureThreshold: 3 });
  let window: number[] = [];
  for (let stampMs = 0; stampMs < 100; stampMs++) window = addFailure(window, p, stampMs);
  assert.deepEqual(window, [97, 98, 99]);
});

Deno.test("window: clock going backwards pulls future stamps to now, then they expire", () => {
  const p = policy({ windowMs: 1000, failureThreshold: 10 });
  let window = addFailure([], p, 50_000);
  window = addFailure(window, p, 50_100);
  // The clock steps back an hour: the two failures count "now" and expire one window later.
  const back = 50_100 - 3_600_000;
  assert.equal(countFailures(window, p, back), 2);
  window = addFailure(window, p, back);
  assert.deepEqual(window, [back, back, back]);
  assert.equal(countFailures(window, p, back + 999), 3);
  assert.equal(countFailures(window, p, back + 1000), 0);
});

Deno.test("window: bucket width is a tenth of the window, at least 1 ms", () => {
  assert.equal(bucketWidthMs(policy({ windowMs: 10_000 })), 1000);
  assert.equal(bucketWidthMs(policy({ windowMs: 1005 })), 101);
  assert.equal(bucketWidthMs(policy({ windowMs: 3 })), 1);
  assert.equal(bucketIndex(12_345, 1000), 12);
});

Deno.test("window: fleet buckets cover the window plus at most one bucket", () => {
  const p = policy({ windowMs: 1000 });
  assert.deepEqual(windowBuckets(p, 5_000), { first: 40, last: 50 });
  assert.deepEqual(windowBuckets(p, 5_099), { first: 40, last: 50 });
  assert.deepEqual(windowBuckets(p, 5_100), { first: 41, last: 51 });
  const counts = [
    { bucket: 39, instanceId: "a", count: 100 }, // out of the window
    { bucket: 40, instanceId: "a", count: 2 },
    { bucket: 45, instanceId: "b", count: 1 },
    { bucket: 50, instanceId: "b", count: 3 },
    { bucket: 51, instanceId: "c", count: 7 }, // in the future (another instance's clock)
    { bucket: 46, instanceId: "d", count: 0 }, // zero does not make a reporter
  ];
  assert.deepEqual(sumWindow(counts, p, 5_000), { failures: 6, reportingInstances: 2 });
  assert.deepEqual(sumWindow(counts, p, 5_100), { failures: 11, reportingInstances: 2 });
});
