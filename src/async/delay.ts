/**
 * Waiting a while, abortably (after Deno std's `async/delay.ts`).
 *
 * @module
 */

/** Options of {@link delay}. */
export interface DelayOptions {
  /** Ends the wait early: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Resolves after `ms` milliseconds, or rejects with `signal.reason` when the signal aborts
 * first. The timer and the abort listener are both gone once it settled.
 *
 * @throws {RangeError} when `ms` is negative or not a number
 * @example
 * ```ts
 * await delay(100);
 * await delay(backoffMs, { signal: request.signal }); // rejects when the client goes away
 * ```
 */
export function delay(ms: number, options: DelayOptions = {}): Promise<void> {
  if (!(ms >= 0)) throw new RangeError(`delay: ms must be a number >= 0, got ${ms}`);
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
