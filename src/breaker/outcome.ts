/**
 * Classifying an upstream attempt: success, failure, or neither (the client went away).
 *
 * @module
 */
import type { BreakerConfig } from "../config/schema.ts";
import { inStatusRanges } from "../config/status_ranges.ts";
import type { AttemptOutcome } from "./types.ts";

export { parseStatusRanges, type StatusRange } from "../config/status_ranges.ts";

/** How an attempt counts for the breaker. `ignored`: it says nothing about the upstream. */
export type OutcomeKind = "success" | "failure" | "ignored";

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
  return inStatusRanges(status, policy.failureStatuses) ? "failure" : "success";
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
