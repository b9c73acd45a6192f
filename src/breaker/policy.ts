/**
 * The breaker's state machine as pure functions: (policy, record, event, nowMs) -> record.
 *
 * The same functions drive the fleet record in KV (applied inside a compare-and-set) and each
 * instance's local breaker, so a degraded instance behaves exactly like the fleet would.
 *
 * States stored: `closed`, `open`, `forced_open`, `forced_closed`. `half_open` is derived: an
 * `open` record whose `probeAt` has passed. Deriving it means no instance has to win a write at
 * the probe time, and an instance that was asleep computes the same state as everyone else.
 *
 * Generations: every stored transition increments `generation`. Failure counters are keyed by
 * generation (a new generation starts from zero), probe leases are keyed by generation (each
 * half-open round has fresh slots), and an outcome admitted in an older generation is ignored
 * (a slow probe cannot close a breaker that another probe already re-opened).
 *
 * Clock going backwards: nothing here divides by elapsed time or trusts it to be positive.
 * Durations are clamped at 0; a failure stamped in the future counts as "now" (so it expires one
 * window later, not one window after the future moment); an open breaker whose `openedAt` lies
 * more than {@link CLOCK_SKEW_TOLERANCE_MS} in the future is treated as due for a probe — the
 * lease still limits that to `halfOpenProbes` requests, and if the probe fails the breaker
 * re-opens with timestamps from the new clock, so timing is back to normal after one round
 * instead of waiting out the size of the jump.
 *
 * @module
 */
import type { BreakerConfig } from "../config/schema.ts";
import type { BreakerState } from "./types.ts";

/** The states a record stores (`half_open` is derived from `open` and the time). */
export type StoredState = "closed" | "open" | "forced_open" | "forced_closed";

/** One breaker: the fleet's record in KV, or an instance's local breaker. */
export interface BreakerRecord {
  /** The stored state. */
  readonly state: StoredState;
  /** Incremented by every transition. */
  readonly generation: number;
  /** When the breaker opened (epoch ms), else null. */
  readonly openedAt: number | null;
  /** When an `open` breaker becomes half-open (epoch ms), else null. */
  readonly probeAt: number | null;
  /** Opens in the current outage: 1 after a trip, +1 per failed probe, 0 when closed. */
  readonly openCount: number;
}

/** What can happen to a breaker. Probe events name the generation they were admitted in. */
export type BreakerEvent =
  | { readonly type: "trip" }
  | { readonly type: "probe_success"; readonly generation: number }
  | { readonly type: "probe_failure"; readonly generation: number }
  | { readonly type: "force"; readonly action: ForceAction };

/** Operator actions: `open` -> forced_open, `close` -> forced_closed, `reset` -> closed. */
export type ForceAction = "open" | "close" | "reset";

/**
 * How far in the future `openedAt` may lie (clock skew between instances, small steps back)
 * before we stop trusting the clock and let a probe round decide.
 */
export const CLOCK_SKEW_TOLERANCE_MS = 1000;

/** A half-open breaker with no probe slot free tells callers to come back after this long. */
export const HALF_OPEN_RETRY_AFTER_MS = 1000;

/** The record of a breaker nobody has written yet: closed, generation 0. */
export const INITIAL_RECORD: BreakerRecord = Object.freeze({
  state: "closed",
  generation: 0,
  openedAt: null,
  probeAt: null,
  openCount: 0,
});

/** The timing and threshold keys of {@link BreakerConfig} the state machine reads. */
export type BreakerPolicy = Pick<
  BreakerConfig,
  | "failureThreshold"
  | "windowMs"
  | "recoveryTimeoutMs"
  | "maxRecoveryTimeoutMs"
  | "halfOpenProbes"
  | "minInstances"
>;

/**
 * How long a breaker stays open before probing: `recoveryTimeoutMs` after a trip, then
 * `recoveryTimeoutMs * 2^k` after the k-th failed probe, capped at `maxRecoveryTimeoutMs`.
 *
 * The first open is exact (operators and tests expect `recoveryTimeoutMs`); later ones are
 * jittered down by up to 20% so fleets of breakers in front of one upstream do not probe in
 * lock-step, and so the cap is never exceeded.
 *
 * @param openCount opens in this outage including the one being computed (1 = a trip)
 * @param random a number in [0, 1)
 */
export function openDurationMs(
  policy: BreakerPolicy,
  openCount: number,
  random: number,
): number {
  const base = Math.max(1, policy.recoveryTimeoutMs);
  const cap = Math.max(base, policy.maxRecoveryTimeoutMs);
  if (openCount <= 1) return Math.min(base, cap);
  // 2^k overflows to Infinity quickly; Math.min keeps that finite.
  const nominal = Math.min(cap, base * 2 ** Math.min(openCount - 1, 1023));
  const jitter = 0.8 + 0.2 * Math.min(Math.max(random, 0), 1);
  return Math.max(1, Math.floor(nominal * jitter));
}

/** True when an `open` record may send probes at `nowMs` (see the module note on clocks). */
export function isProbeDue(record: BreakerRecord, nowMs: number): boolean {
  if (record.state !== "open") return false;
  if (record.probeAt === null || nowMs >= record.probeAt) return true;
  return record.openedAt !== null && nowMs < record.openedAt - CLOCK_SKEW_TOLERANCE_MS;
}

/** The state callers see at `nowMs`: stored state, with `open` turned `half_open` when due. */
export function stateAt(record: BreakerRecord, nowMs: number): BreakerState {
  return record.state === "open" && isProbeDue(record, nowMs) ? "half_open" : record.state;
}

/**
 * How long a rejected caller should wait: until the probe time while open (never more than the
 * whole open duration, whatever the clock did), a short while when half-open with no probe slot
 * free, `recoveryTimeoutMs` while forced open (nobody knows when an operator will act).
 */
export function retryAfterMs(policy: BreakerPolicy, record: BreakerRecord, nowMs: number): number {
  switch (record.state) {
    case "open": {
      if (isProbeDue(record, nowMs) || record.probeAt === null) return HALF_OPEN_RETRY_AFTER_MS;
      const openForMs = record.openedAt === null
        ? policy.recoveryTimeoutMs
        : record.probeAt - record.openedAt;
      return Math.max(0, Math.min(record.probeAt - nowMs, openForMs));
    }
    case "forced_open":
      return policy.recoveryTimeoutMs;
    default:
      return 0;
  }
}

/**
 * Should a breaker trip, given the failures counted in the window and how many distinct
 * instances reported them? Exactly at the threshold trips.
 */
export function shouldTrip(
  policy: BreakerPolicy,
  failuresInWindow: number,
  reportingInstances: number,
): boolean {
  return failuresInWindow >= policy.failureThreshold &&
    reportingInstances >= policy.minInstances;
}

function opened(
  policy: BreakerPolicy,
  record: BreakerRecord,
  openCount: number,
  nowMs: number,
  random: number,
): BreakerRecord {
  return {
    state: "open",
    generation: record.generation + 1,
    openedAt: nowMs,
    probeAt: nowMs + openDurationMs(policy, openCount, random),
    openCount,
  };
}

/**
 * The state machine. Returns the SAME record object when the event does not apply, so callers
 * can tell "no transition" with `===` (and skip the KV write).
 *
 * | from \ event  | trip  | probe_success (same gen) | probe_failure (same gen) | force open / close / reset |
 * | ------------- | ----- | ------------------------ | ------------------------ | -------------------------- |
 * | closed        | open  | -                        | -                        | forced_open / forced_closed / closed |
 * | open          | -     | closed                   | open, longer             | forced_open / forced_closed / closed |
 * | forced_open   | -     | -                        | -                        | forced_open / forced_closed / closed |
 * | forced_closed | -     | -                        | -                        | forced_open / forced_closed / closed |
 *
 * Probe events from another generation never apply. Every applied event increments the
 * generation, including a force that names the current state (a "reset" of a closed breaker
 * still clears the fleet's failure counts).
 */
export function transition(
  policy: BreakerPolicy,
  record: BreakerRecord,
  event: BreakerEvent,
  nowMs: number,
  random: number,
): BreakerRecord {
  switch (event.type) {
    case "trip":
      return record.state === "closed" ? opened(policy, record, 1, nowMs, random) : record;
    case "probe_success":
      if (record.state !== "open" || event.generation !== record.generation) return record;
      return { ...INITIAL_RECORD, generation: record.generation + 1 };
    case "probe_failure":
      if (record.state !== "open" || event.generation !== record.generation) return record;
      return opened(policy, record, record.openCount + 1, nowMs, random);
    case "force": {
      const generation = record.generation + 1;
      if (event.action === "reset") return { ...INITIAL_RECORD, generation };
      if (event.action === "close") {
        return { state: "forced_closed", generation, openedAt: null, probeAt: null, openCount: 0 };
      }
      return { state: "forced_open", generation, openedAt: nowMs, probeAt: null, openCount: 0 };
    }
  }
}

/**
 * Checks that a value read from KV is a record this code can act on (another version of the
 * gateway, or a hand edit, may have written something else). Returns null when it is not.
 */
export function parseRecord(value: unknown): BreakerRecord | null {
  if (typeof value !== "object" || value === null) return null;
  const candidate = value as Record<string, unknown>;
  const states: readonly unknown[] = ["closed", "open", "forced_open", "forced_closed"];
  const isTime = (time: unknown) => time === null || Number.isFinite(time);
  if (
    !states.includes(candidate.state) || !Number.isSafeInteger(candidate.generation) ||
    !isTime(candidate.openedAt) || !isTime(candidate.probeAt) ||
    !Number.isSafeInteger(candidate.openCount)
  ) return null;
  return {
    state: candidate.state as StoredState,
    generation: candidate.generation as number,
    openedAt: candidate.openedAt as number | null,
    probeAt: candidate.probeAt as number | null,
    openCount: candidate.openCount as number,
  };
}
