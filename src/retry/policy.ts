/**
 * Pure retry rules: which requests may be retried, after how long, and whether the budget
 * allows it. Every function takes its inputs (time, randomness) as arguments.
 *
 * @module
 */

const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/**
 * True when sending the request twice is safe: an idempotent method (RFC 9110 §9.2.2), or any
 * method carrying an `Idempotency-Key` header (the upstream promised to de-duplicate).
 */
export function isRetryableRequest(method: string, headers: Headers): boolean {
  return IDEMPOTENT_METHODS.has(method) || headers.has("idempotency-key");
}

/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"): a uniform draw in `[0, min(maxDelayMs, baseDelayMs * 2^retryIndex))`.
 *
 * @param retryIndex 0 for the first retry
 * @param random a uniform draw in `[0, 1)`
 * @example
 * ```ts
 * backoffDelayMs(0, 50, 1000, Math.random()); // somewhere in [0, 50)
 * backoffDelayMs(10, 50, 1000, 0.999);        // just under 1000
 * ```
 */
export function backoffDelayMs(
  retryIndex: number,
  baseDelayMs: number,
  maxDelayMs: number,
  random: number,
): number {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(retryIndex, 30));
  return Math.floor(ceiling * random);
}

/**
 * Reads `Retry-After` (delta seconds or an HTTP date) as milliseconds from `nowMs`, or null
 * when absent or unparseable. Negative results are clamped to 0.
 */
export function retryAfterMs(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - nowMs);
}

/** Options of {@link createRetryBudget}. */
export interface RetryBudgetOptions {
  /** Retries may add at most this share of recent requests, in percent. */
  budgetPercent: number;
  /** A floor so a quiet service can still retry now and then, per second. */
  minRetriesPerSecond: number;
  /** How far back "recent" reaches, in milliseconds (default 10 s, as Envoy and Finagle). */
  windowMs?: number;
  /** Monotonic clock in milliseconds. */
  now: () => number;
}

/** A sliding-window retry budget: requests deposit, retries withdraw. */
export interface RetryBudget {
  /** Counts one first attempt (not a retry). */
  recordRequest(): void;
  /** Takes one retry from the budget; false when it is spent. */
  tryAcquireRetry(): boolean;
  /** Requests and retries in the window, for tests and the admin view. */
  snapshot(): { requests: number; retries: number; allowedRetries: number };
}

/**
 * Creates a retry budget in the manner of Finagle's `RetryBudget` and Envoy's
 * `retry_budget`: within `windowMs`, retries may reach `budgetPercent` of requests plus
 * `minRetriesPerSecond * windowMs / 1000`. Counts live in ten buckets, so memory and time per
 * call are constant.
 */
export function createRetryBudget(options: RetryBudgetOptions): RetryBudget {
  const windowMs = options.windowMs ?? 10_000;
  const bucketCount = 10;
  const bucketMs = windowMs / bucketCount;
  const requests = new Array<number>(bucketCount).fill(0);
  const retries = new Array<number>(bucketCount).fill(0);
  let currentBucket = Math.floor(options.now() / bucketMs);

  function advance(): number {
    const bucket = Math.floor(options.now() / bucketMs);
    if (bucket < currentBucket) return currentBucket % bucketCount; // clock went back: keep counts
    const steps = Math.min(bucket - currentBucket, bucketCount);
    for (let i = 1; i <= steps; i++) {
      const index = (currentBucket + i) % bucketCount;
      requests[index] = 0;
      retries[index] = 0;
    }
    currentBucket = bucket;
    return bucket % bucketCount;
  }

  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
  const allowed = (requestCount: number) =>
    Math.floor(
      requestCount * options.budgetPercent / 100 + options.minRetriesPerSecond * windowMs / 1000,
    );

  return {
    recordRequest() {
      requests[advance()]++;
    },
    tryAcquireRetry() {
      const index = advance();
      if (sum(retries) + 1 > allowed(sum(requests))) return false;
      retries[index]++;
      return true;
    },
    snapshot() {
      advance();
      const requestCount = sum(requests);
      return {
        requests: requestCount,
        retries: sum(retries),
        allowedRetries: allowed(requestCount),
      };
    },
  };
}
