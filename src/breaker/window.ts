/**
 * Counting failures in `windowMs`: an exact sliding window for the local breaker, and the time
 * buckets the fleet counts in (KV keys cannot hold a sliding window).
 *
 * @module
 */
import type { BreakerPolicy } from "./policy.ts";

/**
 * Buckets per window for the fleet count. 10 makes the fleet window at most 10% longer than
 * `windowMs` (a failure counts until the bucket it fell in leaves the window) while a window
 * read touches at most 11 buckets per reporting instance.
 */
export const BUCKETS_PER_WINDOW = 10;

/**
 * Records a failure at `nowMs` in a local sliding window (timestamps, oldest first).
 *
 * Only the newest `failureThreshold` stamps are kept: the breaker trips at that many, so more
 * would cost memory and time under a failure storm and change no decision. Stamps from the
 * future (the clock went backwards) are pulled back to `nowMs`, so they expire one window from
 * now instead of one window after a moment that has not come yet.
 */
export function addFailure(
  window: readonly number[],
  policy: BreakerPolicy,
  nowMs: number,
): number[] {
  const oldestKept = nowMs - policy.windowMs;
  const kept: number[] = [];
  for (const stampMs of window) {
    if (stampMs > oldestKept) kept.push(Math.min(stampMs, nowMs));
  }
  kept.push(nowMs);
  const limit = Math.max(1, policy.failureThreshold);
  return kept.length > limit ? kept.slice(kept.length - limit) : kept;
}

/** Failures of a local window that lie within `windowMs` of `nowMs` (future stamps count). */
export function countFailures(
  window: readonly number[],
  policy: BreakerPolicy,
  nowMs: number,
): number {
  const oldestKept = nowMs - policy.windowMs;
  let count = 0;
  for (const stampMs of window) if (stampMs > oldestKept) count++;
  return count;
}

/** Width of one fleet counting bucket: `windowMs / 10`, rounded up, at least 1 ms. */
export function bucketWidthMs(policy: BreakerPolicy): number {
  return Math.max(1, Math.ceil(policy.windowMs / BUCKETS_PER_WINDOW));
}

/** The bucket a moment falls in. */
export function bucketIndex(nowMs: number, widthMs: number): number {
  return Math.floor(nowMs / widthMs);
}

/**
 * The buckets (inclusive) whose time overlaps the window ending at `nowMs`: the current one and
 * back to the one holding `nowMs - windowMs`.
 */
export function windowBuckets(
  policy: BreakerPolicy,
  nowMs: number,
): { first: number; last: number } {
  const widthMs = bucketWidthMs(policy);
  return {
    first: bucketIndex(nowMs - policy.windowMs, widthMs),
    last: bucketIndex(nowMs, widthMs),
  };
}

/** One instance's failure count in one bucket, as read from KV. */
export interface BucketCount {
  /** The bucket index ({@link bucketIndex}). */
  bucket: number;
  /** Who reported the failures. */
  instanceId: string;
  /** How many. */
  count: number;
}

/** Fleet totals in the window: failures, and how many distinct instances reported any. */
export interface WindowTotals {
  /** Failures in the window across all instances. */
  failures: number;
  /** Distinct instances with at least one failure in the window (for `minInstances`). */
  reportingInstances: number;
}

/** Sums bucket counts that fall in the window ending at `nowMs`. */
export function sumWindow(
  counts: readonly BucketCount[],
  policy: BreakerPolicy,
  nowMs: number,
): WindowTotals {
  const { first, last } = windowBuckets(policy, nowMs);
  let failures = 0;
  const reporters = new Set<string>();
  for (const entry of counts) {
    if (entry.bucket < first || entry.bucket > last || entry.count <= 0) continue;
    failures += entry.count;
    reporters.add(entry.instanceId);
  }
  return { failures, reportingInstances: reporters.size };
}
