/**
 * An instance's own breaker over its own failures: a {@link BreakerRecord} driven by the same
 * state machine as the fleet's (`policy.ts`), an exact sliding window of failure stamps, and the
 * start times of local half-open probes.
 *
 * It decides while the fleet record is closed, and alone while KV is unavailable (degraded) or
 * absent. It lets an instance open at once on its own failures without waiting for KV, and it
 * is what `minInstances` leaves open when only this instance sees failures (a bad network
 * path): its rule for opening ignores the quorum. It also caps what one instance can send into
 * an outage at `failureThreshold` failing calls plus what is in flight, whatever KV does. Every
 * new fleet generation restarts it: a fleet-wide close or an operator reset ends local outages.
 *
 * @module
 */
import { type BreakerPolicy, type BreakerRecord, INITIAL_RECORD } from "./policy.ts";
import { addFailure, countFailures } from "./window.ts";

/** One service's local breaker. */
export interface LocalBreaker {
  /** The local record (its generation counts local transitions only). */
  record: BreakerRecord;
  /** Failure stamps in the window (epoch ms, oldest first, at most `failureThreshold`). */
  failures: number[];
  /** Start times of local half-open probes still running. */
  probeStartsMs: number[];
}

/** A closed local breaker in generation 0. */
export function createLocalBreaker(): LocalBreaker {
  return { record: INITIAL_RECORD, failures: [], probeStartsMs: [] };
}

/**
 * Takes `next` as the local record. A new generation forgets the old one's failures and
 * probes. Returns false when `next` is the record already held (the event did not apply).
 */
export function setLocalRecord(local: LocalBreaker, next: BreakerRecord): boolean {
  if (next === local.record) return false;
  if (next.generation !== local.record.generation) {
    local.failures = [];
    local.probeStartsMs = [];
  }
  local.record = next;
  return true;
}

/**
 * Starts the local breaker over in a generation of its own, in the state of `from`: the initial
 * record when the fleet moved to a new generation, the fleet's record when KV went away (so the
 * fleet's outage, or an operator's force, goes on locally).
 */
export function restartLocal(local: LocalBreaker, from: BreakerRecord): void {
  local.record = { ...from, generation: local.record.generation + 1 };
  local.failures = [];
  local.probeStartsMs = [];
}

/**
 * The local rule for opening: counts a failure of a request admitted in `generation` and says
 * whether the window reached `failureThreshold`. Failures of an older generation, or while the
 * breaker is not closed, are not counted.
 */
export function countLocalFailure(
  local: LocalBreaker,
  policy: BreakerPolicy,
  generation: number,
  atMs: number,
): boolean {
  if (local.record.state !== "closed" || generation !== local.record.generation) return false;
  local.failures = addFailure(local.failures, policy, atMs);
  // The local breaker ignores minInstances: it is the one that stops a lone bad path.
  return countFailures(local.failures, policy, atMs) >= policy.failureThreshold;
}

/** Failures in the local window at `atMs`. */
export function localFailuresInWindow(
  local: LocalBreaker,
  policy: BreakerPolicy,
  atMs: number,
): number {
  return countFailures(local.failures, policy, atMs);
}

/**
 * Takes one of the `halfOpenProbes` local probe slots of a half-open local breaker; false when
 * all are running. A probe whose outcome never came (a bug upstream of us) frees its slot
 * `probeLeaseMs` after it started.
 */
export function startLocalProbe(
  local: LocalBreaker,
  policy: BreakerPolicy,
  atMs: number,
  probeLeaseMs: number,
): boolean {
  const running = local.probeStartsMs;
  while (running.length > 0 && running[0] <= atMs - probeLeaseMs) running.shift();
  if (running.length >= policy.halfOpenProbes) return false;
  running.push(atMs);
  return true;
}

/** A local probe's outcome arrived: its slot is free again. */
export function finishLocalProbe(local: LocalBreaker): void {
  local.probeStartsMs.shift();
}
