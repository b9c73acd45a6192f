/**
 * Surviving a shared SQLite KV file: retries on `database is locked`, and a time limit on any
 * KV call so a slow store turns into "degraded", not into slow requests.
 *
 * @module
 */

/** How often a locked database is retried before the error is passed on. */
export const LOCKED_ATTEMPTS = 30;
const LOCKED_BASE_DELAY_MS = 1;
const LOCKED_MAX_DELAY_MS = 8;

/**
 * True for the error SQLite raises when another process holds the write lock
 * (`TypeError: database is locked`): a reason to retry, not a broken store.
 */
export function isDatabaseLocked(error: unknown): boolean {
  return error instanceof Error && /database is (locked|busy)/i.test(error.message);
}

/**
 * Runs `operation` and runs it again while it fails with a locked database, after a short,
 * jittered, growing pause. `operation` must re-read whatever it checks, so a retry never
 * commits a decision made on stale data.
 */
export async function retryWhenLocked<T>(
  operation: () => Promise<T>,
  random: () => number,
): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await operation();
    } catch (error) {
      if (!isDatabaseLocked(error) || attempt >= LOCKED_ATTEMPTS) throw error;
      const ceilingMs = Math.min(LOCKED_MAX_DELAY_MS, LOCKED_BASE_DELAY_MS * 2 ** attempt);
      // Full jitter: two processes that collided must not retry in lock-step.
      await new Promise((resolve) => setTimeout(resolve, random() * ceilingMs));
    }
  }
}

/** Thrown by {@link withTimeout} when a KV call took longer than allowed. */
export class KvTimeoutError extends Error {
  /** @param timeoutMs the limit that passed */
  constructor(timeoutMs: number) {
    super(`KV did not answer within ${timeoutMs} ms`);
    this.name = "KvTimeoutError";
  }
}

/**
 * Settles like `promise`, or rejects with {@link KvTimeoutError} after `timeoutMs`. The timer is
 * always cleared, so a finished call leaves nothing behind for the test leak checks.
 */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new KvTimeoutError(timeoutMs)), timeoutMs);
  });
  // A call that loses the race may still fail later; that is no longer anyone's business.
  promise.catch(() => {});
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
