/**
 * Adaptive concurrency: a gradient limiter in the manner of Netflix concurrency-limits'
 * `GradientLimit` (and Envoy's adaptive concurrency filter). Latencies are averaged over a
 * sample window; the best window of the recent past is the no-load baseline; when a window is
 * slower than `tolerance` times the baseline the limit shrinks by the ratio, else it grows by
 * `sqrt(limit)` (the queue allowance, also added after a shrink, as Netflix's update does). Bounded by `[minLimit, maxLimit]` (`pool.maxConnections`).
 * A slowing upstream thus gets fewer concurrent requests and the excess waits (bounded by
 * `maxPending` and `queueTimeoutMs`) or is shed, instead of a queue growing at the upstream.
 *
 * Pure: the clock is passed in, no timers. The caller moves the service limiter with the result.
 *
 * @module
 */

/** Options of {@link createAdaptiveLimit}. */
export interface AdaptiveLimitOptions {
  /** The lowest limit. */
  minLimit: number;
  /** The highest limit (the service's `pool.maxConnections`). */
  maxLimit: number;
  /** Where the limit starts (default `maxLimit`: no throttling until latency says so). */
  initialLimit?: number;
  /** A window slower than `tolerance` times the baseline shrinks the limit. */
  tolerance: number;
  /** Length of a sample window, in milliseconds. */
  sampleWindowMs: number;
  /** Samples a window needs before it counts (default 10); until then it stays open. */
  minSamples?: number;
  /** Windows the baseline remembers (default 60): a lasting new latency becomes normal. */
  baselineWindows?: number;
  /** Monotonic clock in milliseconds. */
  now: () => number;
}

/** A latency-driven concurrency limit. */
export interface AdaptiveLimit {
  /**
   * Records one request's latency and the concurrency it ran at.
   * @returns the new limit when a window closed and the (whole) limit changed, else null
   */
  sample(latencyMs: number, inFlight: number): number | null;
  /** The current limit (a whole number). */
  limit(): number;
  /** Facts for tests and the admin view. */
  view(): { limit: number; baselineMs: number | null; lastWindowMs: number | null };
}

/**
 * Creates an adaptive limit.
 *
 * @example
 * ```ts
 * const adaptive = createAdaptiveLimit({
 *   minLimit: 1, maxLimit: 20, tolerance: 2, sampleWindowMs: 1000, now: () => performance.now(),
 * });
 * const next = adaptive.sample(12.5, limiter.active());
 * if (next !== null) limiter.setLimit(next);
 * ```
 */
export function createAdaptiveLimit(options: AdaptiveLimitOptions): AdaptiveLimit {
  const minLimit = Math.max(1, Math.min(options.minLimit, options.maxLimit));
  const maxLimit = Math.max(minLimit, options.maxLimit);
  const minSamples = options.minSamples ?? 10;
  const baselineWindows = Math.max(1, options.baselineWindows ?? 60);
  let limit = clamp(options.initialLimit ?? maxLimit, minLimit, maxLimit);
  const recent: number[] = []; // averages of the last windows, oldest first
  let windowStart = options.now();
  let sum = 0;
  let count = 0;
  let maxInFlight = 0;
  let lastWindowMs: number | null = null;

  const baseline = () => recent.length === 0 ? null : Math.min(...recent);

  function closeWindow(): number | null {
    const average = sum / count;
    const inFlightPeak = maxInFlight;
    sum = 0;
    count = 0;
    maxInFlight = 0;
    windowStart = options.now();
    lastWindowMs = average;
    recent.push(average);
    if (recent.length > baselineWindows) recent.shift();
    const best = baseline()!;
    const gradient = clamp(options.tolerance * best / Math.max(average, 1e-3), 0.5, 1);
    const before = Math.floor(limit);
    if (gradient < 1) {
      // Netflix's update: scale by the gradient, plus a queue allowance of sqrt(limit).
      limit = limit * gradient + Math.sqrt(limit);
    } else if (inFlightPeak >= limit / 2) {
      // Only grow a limit that is in use: an idle service proves nothing about more load.
      limit = limit + Math.sqrt(limit);
    }
    limit = clamp(limit, minLimit, maxLimit);
    return Math.floor(limit) !== before ? Math.floor(limit) : null;
  }

  return {
    sample(latencyMs, inFlight) {
      sum += latencyMs;
      count++;
      if (inFlight > maxInFlight) maxInFlight = inFlight;
      if (count < minSamples || options.now() - windowStart < options.sampleWindowMs) return null;
      return closeWindow();
    },
    limit: () => Math.floor(limit),
    view: () => ({ limit: Math.floor(limit), baselineMs: baseline(), lastWindowMs }),
  };
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}
