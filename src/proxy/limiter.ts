/**
 * Bounded concurrency: at most `limit` holders at once, at most `maxPending` waiting, each
 * waiting at most `queueTimeoutMs`. `Deno.createHttpClient` opens as many sockets as there are
 * requests in flight, so this limiter is what bounds connections to an upstream.
 *
 * @module
 */

/** Gives back what {@link Limiter.acquire} took. Calling it twice is harmless. */
export type Release = () => void;

/** Why a slot was not granted. */
export type LimiterRejection = "saturated" | "queue_timeout" | "aborted";

/** Thrown (as a rejected promise) when no slot could be had. */
export class LimiterRejectedError extends Error {
  /** Why: the queue was full, the wait timed out, or the caller gave up. */
  readonly reason: LimiterRejection;
  /** @param reason why no slot was granted */
  constructor(reason: LimiterRejection) {
    super(`no slot: ${reason}`);
    this.name = "LimiterRejectedError";
    this.reason = reason;
  }
}

/** Options of {@link createLimiter}. */
export interface LimiterOptions {
  /** Holders at once. */
  limit: number;
  /** Waiters at once; 0 rejects as soon as the limit is reached. */
  maxPending: number;
  /** Longest wait for a slot, in milliseconds. */
  queueTimeoutMs: number;
  /** Called with +1/-1 as holders come and go (metrics). */
  onActiveChange?: (delta: number) => void;
  /** Called with +1/-1 as waiters come and go (metrics). */
  onPendingChange?: (delta: number) => void;
}

/** A counting semaphore with a bounded, timed FIFO queue. */
export interface Limiter {
  /**
   * Takes a slot: synchronously when one is free (no promise on the fast path), else a promise
   * that resolves once one frees up, or rejects with {@link LimiterRejectedError}.
   */
  acquire(signal?: AbortSignal): Release | Promise<Release>;
  /** Holders now. */
  active(): number;
  /** Waiters now. */
  pending(): number;
  /** The current limit. */
  limit(): number;
  /** Moves the limit (adaptive concurrency); waiters are admitted if it grew. */
  setLimit(limit: number): void;
}

interface Waiter {
  grant: (release: Release) => void;
  timer: ReturnType<typeof setTimeout>;
  done: boolean;
}

/**
 * Creates a limiter.
 *
 * @example
 * ```ts
 * const limiter = createLimiter({ limit: 20, maxPending: 100, queueTimeoutMs: 1000 });
 * const slot = limiter.acquire();
 * const release = slot instanceof Promise ? await slot : slot;
 * try { await work(); } finally { release(); }
 * ```
 */
export function createLimiter(options: LimiterOptions): Limiter {
  let limit = options.limit;
  let active = 0;
  const queue: Waiter[] = [];
  const onActive = options.onActiveChange;
  const onPending = options.onPendingChange;

  function makeRelease(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      active--;
      onActive?.(-1);
      drain();
    };
  }

  function take(): Release {
    active++;
    onActive?.(1);
    return makeRelease();
  }

  function drain(): void {
    while (active < limit && queue.length > 0) {
      const waiter = queue.shift()!;
      if (waiter.done) continue;
      waiter.done = true;
      clearTimeout(waiter.timer);
      onPending?.(-1);
      waiter.grant(take());
    }
  }

  return {
    acquire(signal) {
      if (active < limit && queue.length === 0) return take();
      if (queue.length >= options.maxPending) {
        return Promise.reject(new LimiterRejectedError("saturated"));
      }
      if (signal?.aborted) return Promise.reject(new LimiterRejectedError("aborted"));
      return new Promise<Release>((resolve, reject) => {
        const waiter: Waiter = {
          grant(release) {
            // A granted waiter no longer listens: the signal may outlive it by far.
            signal?.removeEventListener("abort", onAbort);
            resolve(release);
          },
          done: false,
          timer: setTimeout(() => leave("queue_timeout"), options.queueTimeoutMs),
        };
        const leave = (reason: LimiterRejection) => {
          if (waiter.done) return;
          waiter.done = true;
          clearTimeout(waiter.timer);
          signal?.removeEventListener("abort", onAbort);
          const index = queue.indexOf(waiter);
          if (index >= 0) queue.splice(index, 1);
          onPending?.(-1);
          reject(new LimiterRejectedError(reason));
        };
        const onAbort = () => leave("aborted");
        signal?.addEventListener("abort", onAbort, { once: true });
        queue.push(waiter);
        onPending?.(1);
      });
    },
    active: () => active,
    pending: () => queue.length,
    limit: () => limit,
    setLimit(next) {
      limit = Math.max(1, Math.floor(next));
      drain();
    },
  };
}

/**
 * Takes a slot of `first`, then one of `second` (a service's limiter, then the gateway's), as
 * one release: synchronously when both had a free slot, else a promise. A failure of the second
 * hands the first back.
 *
 * @throws {LimiterRejectedError} (as a rejected promise) when either has no slot
 * @example
 * ```ts
 * const release = await acquireBoth(serviceLimiter, globalLimiter, request.signal);
 * try { await forward(); } finally { release(); }
 * ```
 */
export function acquireBoth(
  first: Limiter,
  second: Limiter,
  signal: AbortSignal,
): Release | Promise<Release> {
  // Synchronous while both have a free slot: no promise on the usual path (one await fewer).
  const firstSlot = first.acquire(signal);
  if (firstSlot instanceof Promise) {
    return firstSlot.then((releaseFirst) => acquireSecond(releaseFirst, second, signal));
  }
  return acquireSecond(firstSlot, second, signal);
}

/** The second slot, given the first; the first is given back when the second is refused. */
function acquireSecond(
  releaseFirst: Release,
  second: Limiter,
  signal: AbortSignal,
): Release | Promise<Release> {
  const secondSlot = second.acquire(signal);
  if (secondSlot instanceof Promise) {
    return secondSlot.then((releaseSecond) => releaseBoth(releaseFirst, releaseSecond), (error) => {
      releaseFirst();
      throw error;
    });
  }
  return releaseBoth(releaseFirst, secondSlot);
}

function releaseBoth(releaseFirst: Release, releaseSecond: Release): Release {
  return () => {
    releaseSecond();
    releaseFirst();
  };
}
