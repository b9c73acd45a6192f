/**
 * A promise that settles early when a signal aborts (after Deno std's `async/abortable.ts`).
 *
 * @module
 */

/**
 * Resolves or rejects as `promise` does, or rejects with `signal.reason` as soon as `signal`
 * aborts, whichever comes first. `promise` itself is not cancelled: the caller owns whatever
 * it stands for (cancel a stream, close a socket) once the signal won.
 *
 * @example
 * ```ts
 * const bytes = await abortable(new Response(body).arrayBuffer(), request.signal);
 * ```
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    // The original keeps running; its rejection must not surface as unhandled.
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  const { promise: aborted, reject } = Promise.withResolvers<never>();
  const onAbort = () => reject(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  return Promise.race([promise, aborted]).finally(() => {
    signal.removeEventListener("abort", onAbort);
  });
}
