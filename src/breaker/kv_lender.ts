/**
 * One KV handle lent to every fleet breaker of a gateway. A reload that changes a breaker
 * setting builds a new breaker while the old one still finishes its requests; if each opened
 * its own handle through the gateway's opener (which replaces, and so closes, the handle it
 * opened before), the new breaker's start would close the old one's handle, the old one would
 * go degraded and reopen, closing the new one's, and so on until the old one retired. Lent
 * handles are shared and closed only by their owner; a new one is opened only when a breaker
 * reports the current one failed.
 *
 * @module
 */

/** Lends the current handle; `stale` (the handle a breaker saw fail) asks for a fresh one. */
export type KvLender = (stale: Deno.Kv | null) => Promise<Deno.Kv>;

/**
 * Creates a lender over `open` (which owns the handles it returns and may close the previous
 * one when it opens the next). Pass it as `createFleetBreaker({ reopenKv: lender, kvIsLent:
 * true })`.
 *
 * @example
 * ```ts
 * const gatewayKv = openGatewayKv("./data/breakwater.kv", logger);
 * const lendKv = createKvLender(() => gatewayKv.open());
 * const breaker = createFleetBreaker({ kv: null, reopenKv: lendKv, kvIsLent: true, services, instanceId });
 * ```
 */
export function createKvLender(open: () => Promise<Deno.Kv>): KvLender {
  /** The handle being opened or lent now; null before the first and after a failed open. */
  let current: Promise<Deno.Kv> | null = null;
  /** The handle `current` resolved to, once it did. */
  let lent: Deno.Kv | null = null;
  return (stale) => {
    // Another breaker already replaced the handle this one saw fail (or an open is under way):
    // share that instead of replacing it again.
    if (current !== null && (lent === null || lent !== stale)) return current;
    const opening = open();
    current = opening;
    lent = null;
    opening.then(
      (handle) => {
        if (current === opening) lent = handle;
      },
      () => {
        if (current === opening) current = null;
      },
    );
    return opening;
  };
}
