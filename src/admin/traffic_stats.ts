/**
 * Per-service traffic over the last minutes, for the dashboard: requests, errors and latency
 * percentiles per second. Recording is a few array writes; reading builds the series.
 *
 * Latencies go into fixed log-spaced buckets (about 12% wide), so p50/p99 come out within one
 * bucket of the truth at constant memory per second.
 *
 * @module
 */

/** One second of one service's traffic. */
export interface TrafficPoint {
  /** Start of the second, Unix epoch milliseconds. */
  atMs: number;
  /** Requests answered. */
  requests: number;
  /** Of those, 5xx answers (the upstream's or the gateway's own). */
  errors: number;
  /** Median latency in milliseconds, or null without requests. */
  p50Ms: number | null;
  /** 99th percentile latency in milliseconds, or null without requests. */
  p99Ms: number | null;
}

/**
 * Requests counted elsewhere over a short period (a worker's second, README "Workers"), to be
 * added in one step: requests, 5xx among them, and `[bucket, count, ...]` pairs of the latency
 * buckets that were hit.
 */
export interface TrafficTally {
  requests: number;
  errors: number;
  buckets: number[];
}

/** Records and reads per-service traffic. */
export interface TrafficStats {
  /** Counts one answered request. */
  record(service: string, status: number, durationMs: number): void;
  /** Counts a tally as answered in the current second (one step, whatever its size). */
  add(service: string, tally: TrafficTally): void;
  /** The last `seconds` seconds of a service, oldest first (complete seconds only). */
  series(service: string, seconds?: number): TrafficPoint[];
}

/** Bucket upper bounds in ms: 0.05 ms to ~100 s, each ~12% above the last. */
const BOUNDS_MS: number[] = (() => {
  const bounds: number[] = [];
  for (let bound = 0.05; bound < 120_000; bound *= 1.12) bounds.push(bound);
  return bounds;
})();

function bucketOf(durationMs: number): number {
  // Binary search: first bound >= duration.
  let low = 0;
  let high = BOUNDS_MS.length - 1;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (BOUNDS_MS[mid] >= durationMs) high = mid;
    else low = mid + 1;
  }
  return low;
}

interface Second {
  second: number;
  requests: number;
  errors: number;
  histogram: Uint32Array;
}

function percentile(histogram: Uint32Array, total: number, quantile: number): number | null {
  if (total === 0) return null;
  const rank = Math.ceil(total * quantile);
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i];
    if (seen >= rank) return BOUNDS_MS[i];
  }
  return BOUNDS_MS[BOUNDS_MS.length - 1];
}

/**
 * Creates the stats keeper.
 *
 * @param retainSeconds how much history to keep (default 300 s)
 * @param now wall clock in milliseconds (default `Date.now`)
 * @example
 * ```ts
 * const stats = createTrafficStats();
 * stats.record("users", 200, 3.2);
 * stats.series("users", 60);
 * ```
 */
export function createTrafficStats(
  retainSeconds = 300,
  now: () => number = Date.now,
): TrafficStats {
  const rings = new Map<string, Second[]>();

  function slot(service: string, second: number): Second {
    let ring = rings.get(service);
    if (ring === undefined) {
      ring = Array.from({ length: retainSeconds }, () => ({
        second: -1,
        requests: 0,
        errors: 0,
        histogram: new Uint32Array(BOUNDS_MS.length),
      }));
      rings.set(service, ring);
    }
    const entry = ring[second % retainSeconds];
    if (entry.second !== second) {
      entry.second = second;
      entry.requests = 0;
      entry.errors = 0;
      entry.histogram.fill(0);
    }
    return entry;
  }

  return {
    record(service, status, durationMs) {
      const entry = slot(service, Math.floor(now() / 1000));
      entry.requests++;
      if (status >= 500) entry.errors++;
      entry.histogram[bucketOf(durationMs)]++;
    },
    add(service, tally) {
      const entry = slot(service, Math.floor(now() / 1000));
      entry.requests += tally.requests;
      entry.errors += tally.errors;
      const { buckets } = tally;
      for (let at = 0; at < buckets.length; at += 2) {
        entry.histogram[buckets[at]] += buckets[at + 1];
      }
    },
    series(service, seconds = 60) {
      const current = Math.floor(now() / 1000);
      const ring = rings.get(service);
      const points: TrafficPoint[] = [];
      const span = Math.min(seconds, retainSeconds - 1);
      for (let second = current - span; second < current; second++) {
        const entry = ring?.[second % retainSeconds];
        if (entry === undefined || entry.second !== second) {
          points.push({ atMs: second * 1000, requests: 0, errors: 0, p50Ms: null, p99Ms: null });
          continue;
        }
        points.push({
          atMs: second * 1000,
          requests: entry.requests,
          errors: entry.errors,
          p50Ms: percentile(entry.histogram, entry.requests, 0.5),
          p99Ms: percentile(entry.histogram, entry.requests, 0.99),
        });
      }
      return points;
    },
  };
}

/**
 * Counts requests per service for a {@link TrafficStats} on another thread: recording is a
 * few array writes, `take()` hands over the tallies since the last take and starts afresh, so
 * what crosses threads is a few numbers per service, not one record per request.
 *
 * @example
 * ```ts
 * const tally = createTrafficTally();
 * tally.record("users", 200, 12.5);
 * for (const [service, counts] of Object.entries(tally.take())) stats.add(service, counts);
 * ```
 */
export function createTrafficTally(): {
  record(service: string, status: number, durationMs: number): void;
  take(): Record<string, TrafficTally>;
} {
  let counts = new Map<string, { requests: number; errors: number; histogram: Uint32Array }>();
  return {
    record(service, status, durationMs) {
      let count = counts.get(service);
      if (count === undefined) {
        count = { requests: 0, errors: 0, histogram: new Uint32Array(BOUNDS_MS.length) };
        counts.set(service, count);
      }
      count.requests++;
      if (status >= 500) count.errors++;
      count.histogram[bucketOf(durationMs)]++;
    },
    take() {
      const tallies: Record<string, TrafficTally> = {};
      for (const [service, count] of counts) {
        const buckets: number[] = [];
        count.histogram.forEach((hits, bucket) => {
          if (hits > 0) buckets.push(bucket, hits);
        });
        tallies[service] = { requests: count.requests, errors: count.errors, buckets };
      }
      counts = new Map();
      return tallies;
    },
  };
}
