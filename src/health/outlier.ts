/**
 * Passive outlier ejection, in the manner of Envoy's `consecutive_5xx` detector: an upstream
 * that fails `consecutiveFailures` times in a row leaves the rotation for
 * `baseEjectionMs * 2^(ejections - 1)` (capped at `maxEjectionMs`), while the other upstreams
 * of the service serve. Pure: the clock is passed in, no timers; expired ejections end on the
 * next {@link OutlierDetector.refresh}.
 *
 * @module
 */

/** Options of {@link createOutlierDetector}. */
export interface OutlierOptions {
  /** Failures in a row that eject an upstream. */
  consecutiveFailures: number;
  /** The first ejection's length, in milliseconds; each further one doubles it. */
  baseEjectionMs: number;
  /** The longest ejection, in milliseconds. */
  maxEjectionMs: number;
  /**
   * At most this share of the upstreams is ejected at once, in percent; at least one may be
   * ejected when there are two or more, and never all of them.
   */
  maxEjectionPercent: number;
  /** How many upstreams the service has. */
  upstreamCount: number;
  /** Monotonic clock in milliseconds. */
  now: () => number;
}

/** What the detector knows about one upstream. */
export interface OutlierView {
  /** Out of rotation now. */
  ejected: boolean;
  /** Milliseconds until the current ejection ends (0 when not ejected). */
  ejectedForMs: number;
  /** Ejections so far (decays: reset after `maxEjectionMs` without one). */
  ejections: number;
  /** Failures in a row since the last success. */
  consecutiveFailures: number;
}

/** Passive ejection state of a service's upstreams, addressed by index. */
export interface OutlierDetector {
  /**
   * Records one attempt's result on upstream `index`.
   * @returns true when this ejected it
   */
  record(index: number, failed: boolean): boolean;
  /**
   * Ends ejections whose time is up. Constant time when nothing is ejected.
   * @returns the indexes that came back
   */
  refresh(): number[];
  /** True while upstream `index` is ejected (as of the last refresh or record). */
  isEjected(index: number): boolean;
  /** The state of upstream `index`. */
  view(index: number): OutlierView;
}

interface UpstreamState {
  failures: number;
  ejections: number;
  ejectedUntil: number | null;
  lastEjectionEnd: number;
}

/**
 * The length of the `ejections`-th ejection: `base * 2^(ejections - 1)`, capped at `max`.
 *
 * @example
 * ```ts
 * ejectionMs(1, 30000, 300000); // 30000
 * ejectionMs(3, 30000, 300000); // 120000
 * ejectionMs(9, 30000, 300000); // 300000
 * ```
 */
export function ejectionMs(ejections: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(ejections - 1, 0), 30));
}

/** The most upstreams of `count` that may be ejected at once. */
export function maxEjectedCount(count: number, maxEjectionPercent: number): number {
  if (count < 2) return 0;
  return Math.min(count - 1, Math.max(1, Math.floor(count * maxEjectionPercent / 100)));
}

/**
 * Creates a detector for a service's upstreams.
 *
 * @example
 * ```ts
 * const detector = createOutlierDetector({
 *   consecutiveFailures: 5, baseEjectionMs: 30000, maxEjectionMs: 300000,
 *   maxEjectionPercent: 50, upstreamCount: 2, now: () => performance.now(),
 * });
 * if (detector.record(1, true)) console.log("upstream 1 ejected");
 * ```
 */
export function createOutlierDetector(options: OutlierOptions): OutlierDetector {
  const states: UpstreamState[] = Array.from(
    { length: options.upstreamCount },
    () => ({ failures: 0, ejections: 0, ejectedUntil: null, lastEjectionEnd: -Infinity }),
  );
  const cap = maxEjectedCount(options.upstreamCount, options.maxEjectionPercent);
  let ejectedCount = 0;
  let nextExpiry = Infinity;

  function refresh(): number[] {
    const now = options.now();
    if (now < nextExpiry) return [];
    const back: number[] = [];
    nextExpiry = Infinity;
    states.forEach((state, index) => {
      if (state.ejectedUntil === null) return;
      if (state.ejectedUntil <= now) {
        state.lastEjectionEnd = state.ejectedUntil;
        state.ejectedUntil = null;
        state.failures = 0;
        ejectedCount--;
        back.push(index);
      } else {
        nextExpiry = Math.min(nextExpiry, state.ejectedUntil);
      }
    });
    return back;
  }

  return {
    record(index, failed) {
      refresh();
      const state = states[index];
      if (!failed) {
        state.failures = 0;
        return false;
      }
      state.failures++;
      if (
        state.ejectedUntil !== null || state.failures < options.consecutiveFailures ||
        ejectedCount >= cap
      ) {
        return false;
      }
      const now = options.now();
      // The multiplier decays: a long quiet spell since the last ejection starts it over.
      if (now - state.lastEjectionEnd > options.maxEjectionMs) state.ejections = 0;
      state.ejections++;
      state.ejectedUntil = now + ejectionMs(
        state.ejections,
        options.baseEjectionMs,
        options.maxEjectionMs,
      );
      ejectedCount++;
      nextExpiry = Math.min(nextExpiry, state.ejectedUntil);
      return true;
    },
    refresh,
    isEjected: (index) => states[index].ejectedUntil !== null,
    view(index) {
      const state = states[index];
      return {
        ejected: state.ejectedUntil !== null,
        ejectedForMs: state.ejectedUntil === null
          ? 0
          : Math.max(0, Math.round(state.ejectedUntil - options.now())),
        ejections: state.ejections,
        consecutiveFailures: state.failures,
      };
    },
  };
}
