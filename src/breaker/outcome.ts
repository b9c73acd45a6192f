/**
 * Classifying an upstream attempt: success, failure, or neither (the client went away).
 *
 * @module
 */
import type { BreakerConfig } from "../config/schema.ts";
import type { AttemptOutcome } from "./types.ts";

/** How an attempt counts for the breaker. `ignored`: it says nothing about the upstream. */
export type OutcomeKind = "success" | "failure" | "ignored";

/** An inclusive range of HTTP statuses. */
export interface StatusRange {
  /** Lowest status in the range. */
  from: number;
  /** Highest status in the range. */
  to: number;
}

/**
 * Parses `"500-599"`, `"502,503,504"` or `"500-503,599"` into inclusive ranges.
 *
 * The config schema already validated the syntax; a reversed range (`"599-500"`) is accepted
 * as if written the right way round.
 *
 * @example
 * ```ts
 * parseStatusRanges("500-503,599"); // [{ from: 500, to: 503 }, { from: 599, to: 599 }]
 * ```
 */
export function parseStatusRanges(text: string): StatusRange[] {
  return text.split(",").map((part) => part.trim()).filter((part) => part !== "").map(
    (part) => {
      const [low, high = low] = part.split("-").map((value) => Number(value.trim()));
      return { from: Math.min(low, high), to: Math.max(low, high) };
    },
  );
}

// Parsing per call would cost more than the rest of record(); policies are few and long-lived.
const rangeCache = new Map<string, StatusRange[]>();

function rangesOf(text: string): StatusRange[] {
  let ranges = rangeCache.get(text);
  if (ranges === undefined) {
    ranges = parseStatusRanges(text);
    rangeCache.set(text, ranges);
  }
  return ranges;
}

/**
 * How an outcome counts under the policy: network errors, timeouts, statuses in
 * `failureStatuses` and calls slower than `slowCallMs` are failures; `aborted` (the client went
 * away, so we learned nothing about the upstream) is ignored; anything else is a success.
 */
export function classifyOutcome(policy: BreakerConfig, outcome: AttemptOutcome): OutcomeKind {
  if (outcome.error === "aborted") return "ignored";
  if (outcome.error === "unreachable" || outcome.error === "timeout") return "failure";
  if (policy.slowCallMs !== null && outcome.durationMs > policy.slowCallMs) return "failure";
  const status = outcome.status;
  if (status === undefined) return "success";
  for (const range of rangesOf(policy.failureStatuses)) {
    if (status >= range.from && status <= range.to) return "failure";
  }
  return "success";
}

/**
 * Pure: does this outcome count as a failure under the policy (failureStatuses ranges, network
 * errors and timeouts, slowCallMs)? "aborted" (the client went away) is NOT a failure.
 *
 * @example
 * ```ts
 * isFailure(policy, { status: 503, durationMs: 12 }); // true with the default "500-599"
 * isFailure(policy, { status: 404, durationMs: 12 }); // false: 4xx are the caller's fault
 * ```
 */
export function isFailure(policy: BreakerConfig, outcome: AttemptOutcome): boolean {
  return classifyOutcome(policy, outcome) === "failure";
}
