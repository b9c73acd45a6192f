/**
 * A promise with a deadline (after Deno std's `async/deadline.ts`).
 *
 * @module
 */
import { abortable } from "./abortable.ts";

/** Thrown by {@link deadline} when the time was up before the promise settled. */
export class DeadlineError extends Error {
  /** The deadline that passed, in milliseconds. */
  readonly timeoutMs: number;
  /** @param timeoutMs the deadline that passed */
  constructor(timeoutMs: number) {
    super(`the deadline of ${timeoutMs} ms passed`);
    this.name = "DeadlineError";
    this.timeoutMs = timeoutMs;
  }
}

/** Options of {@link deadline}. */
export interface DeadlineOptions {
  /** Ends the wait early as well: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Settles as `promise` does if that happens within `ms` milliseconds, else rejects with a
 * {@link DeadlineError}. Unlike std's version, which builds on `AbortSignal.timeout`, the timer
 * is cleared as soon as the promise settles, so a won race leaves nothing pending (`deno test`'s
 * sanitizers, a process that should exit). `promise` itself is not cancelled.
 *
 * @throws {RangeError} when `ms` is negative or not a number
 * @example
 * ```ts
 * try {
 *   await deadline(server.shutdown(), 5000);
 * } catch (error) {
 *   if (!(error instanceof DeadlineError)) throw error;
 *   // requests were still in flight after 5 s
 * }
 * ```
 */
export function deadline<T>(
  promise: Promise<T>,
  ms: number,
  options: DeadlineOptions = {},
): Promise<T> {
  if (!(ms >= 0)) throw new RangeError(`deadline: ms must be a number >= 0, got ${ms}`);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DeadlineError(ms)), ms);
  const signal = options.signal === undefined
    ? controller.signal
    : AbortSignal.any([controller.signal, options.signal]);
  return abortable(promise, signal).finally(() => clearTimeout(timer));
}
