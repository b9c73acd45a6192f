/**
 * One coarse timer for every request deadline. A `setTimeout`/`clearTimeout` pair per request
 * showed up at ~4% of the gateway's CPU under load (Deno 2.9 builds a Node-compatible `Timeout`
 * object for each); here a deadline is a push into a bucket, and one interval, running only
 * while deadlines are pending, fires the buckets that came due.
 *
 * @module
 */

/** Cancels a scheduled deadline; calling it after it fired (or twice) is harmless. */
export type CancelDeadline = () => void;

/** Fires callbacks at (or up to one tick after) their deadline. */
export interface DeadlineScheduler {
  /** Calls `fire` once `now() >= atMs` (within one tick), unless cancelled first. */
  schedule(atMs: number, fire: () => void): CancelDeadline;
  /** Deadlines not yet fired or cancelled. */
  pending(): number;
  /** Stops the timer; pending deadlines never fire. */
  close(): void;
}

interface Entry {
  fire: () => void;
  live: boolean;
}

/** Entries of one tick; a cancelled entry leaves its set at once, so nothing it holds (the
 * request's abort controller) stays reachable until its bucket would have come due. */
type Bucket = Set<Entry>;

/** Options of {@link createDeadlineScheduler}. */
export interface DeadlineSchedulerOptions {
  /** Resolution in milliseconds (default 10): deadlines fire up to this late. */
  tickMs?: number;
  /** Monotonic clock in milliseconds (default `performance.now`). */
  now?: () => number;
}

/**
 * Creates a scheduler.
 *
 * @example
 * ```ts
 * const deadlines = createDeadlineScheduler();
 * const cancel = deadlines.schedule(performance.now() + 1000, () => controller.abort());
 * // ... the request finished in time:
 * cancel();
 * ```
 */
export function createDeadlineScheduler(
  options: DeadlineSchedulerOptions = {},
): DeadlineScheduler {
  const tickMs = options.tickMs ?? 10;
  const now = options.now ?? (() => performance.now());
  const buckets = new Map<number, Bucket>();
  let live = 0;
  let nextBucket = Math.floor(now() / tickMs);
  let timer: ReturnType<typeof setInterval> | undefined;
  let closed = false;

  function tick(): void {
    const dueBucket = Math.floor(now() / tickMs);
    for (; nextBucket <= dueBucket; nextBucket++) {
      const entries = buckets.get(nextBucket);
      if (entries === undefined) continue;
      buckets.delete(nextBucket);
      for (const entry of entries) {
        if (!entry.live) continue;
        entry.live = false;
        live--;
        entry.fire();
      }
    }
    if (live === 0) stop();
  }

  function stop(): void {
    if (timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
    buckets.clear();
  }

  return {
    schedule(atMs, fire) {
      if (closed) return () => {};
      // Never file a deadline behind the cursor: it would be skipped.
      const bucket = Math.max(Math.ceil(atMs / tickMs), nextBucket);
      const entry: Entry = { fire, live: true };
      let entries = buckets.get(bucket);
      if (entries === undefined) {
        entries = new Set();
        buckets.set(bucket, entries);
      }
      entries.add(entry);
      live++;
      if (timer === undefined) {
        nextBucket = Math.min(nextBucket, Math.floor(now() / tickMs));
        timer = setInterval(tick, tickMs);
      }
      const owner = entries;
      return () => {
        if (!entry.live) return;
        entry.live = false;
        owner.delete(entry);
        live--;
        if (live === 0) stop();
      };
    },
    pending: () => live,
    close() {
      closed = true;
      live = 0;
      stop();
    },
  };
}
