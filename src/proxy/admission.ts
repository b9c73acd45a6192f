/**
 * The admit phase of the request path: the breaker's answer, as a ticket that is settled
 * exactly once. Every attempt's outcome is recorded on it; a request that ends without one
 * (no free slot, the client went away, a body that never arrived, an exception) hands its
 * admission back unjudged when the ticket is disposed, so no exit can keep a half-open probe
 * slot taken.
 *
 * @module
 */
import type { Admission, AttemptOutcome } from "../breaker/types.ts";

/** The breaker as the request path sees it: synchronous and memory-only. */
export interface AdmissionControl {
  /** May a request go to `service` now? */
  admit(service: string): Admission;
  /** The outcome of an admitted attempt; never blocks the caller. */
  record(
    service: string,
    admission: Admission & { allowed: true },
    outcome: AttemptOutcome,
  ): void;
}

/** What the breaker hears of a request that says nothing about the upstream. */
export const NO_VERDICT: AttemptOutcome = { error: "aborted", durationMs: 0 };

/** An admitted request's claim on its breaker; dispose it (`using`) when the request ends. */
export interface AdmissionTicket extends Disposable {
  /** This request is a half-open probe: its one outcome closes or re-opens the breaker. */
  readonly probe: boolean;
  /**
   * Records one attempt's outcome. Every attempt is recorded: a retry that hides a failure
   * from the client still cost the upstream a failed call.
   */
  record(outcome: AttemptOutcome): void;
}

/**
 * Wraps an allowed admission. Disposing a ticket on which nothing was recorded records
 * {@link NO_VERDICT}; disposing it again does nothing.
 *
 * @example
 * ```ts
 * const admission = breaker.admit("users");
 * if (admission.allowed) {
 *   using ticket = admissionTicket(breaker, "users", admission);
 *   ticket.record({ status: 200, durationMs: 12 });
 * }
 * ```
 */
export function admissionTicket(
  breaker: AdmissionControl,
  service: string,
  admission: Admission & { allowed: true },
): AdmissionTicket {
  return new Ticket(breaker, service, admission);
}

/** One object per request (no closures to allocate on the request path). */
class Ticket implements AdmissionTicket {
  readonly probe: boolean;
  private recorded = false;

  constructor(
    private readonly breaker: AdmissionControl,
    private readonly service: string,
    private readonly admission: Admission & { allowed: true },
  ) {
    this.probe = admission.probe;
  }

  record(outcome: AttemptOutcome): void {
    this.recorded = true;
    this.breaker.record(this.service, this.admission, outcome);
  }

  [Symbol.dispose](): void {
    if (this.recorded) return;
    this.recorded = true;
    this.breaker.record(this.service, this.admission, NO_VERDICT);
  }
}
