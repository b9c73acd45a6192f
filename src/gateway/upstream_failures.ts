/**
 * The latest failure of each upstream as this instance saw it, so a reader can say what an
 * upstream's state means: without health checks or outlier detection nothing takes an upstream
 * out of rotation, and "in rotation" alone would hide that it answers 503 to everything
 * ("no health check: not ejected, last 503 at 12:01:05, 14 in a row").
 *
 * Recording is one map lookup per attempt and two stores per failure; the wall clock is read
 * only for failures.
 *
 * @module
 */
import type { AttemptOutcome } from "../breaker/types.ts";
import { isUpstreamFailure } from "../health/mod.ts";

/** One upstream failure. */
export interface UpstreamFailure {
  /** When (epoch ms). */
  atMs: number;
  /** The upstream's status (5xx), or null when it did not answer. */
  status: number | null;
  /** Why there is no status (`unreachable`, `timeout`), or null. */
  error: string | null;
}

/** What is known of one upstream's failures. */
export interface UpstreamFailureView {
  /** Its latest failure, or null when none was seen. */
  lastFailure: UpstreamFailure | null;
  /** Failed attempts since its latest success. */
  failuresInARow: number;
}

/** Records and reads the failures of a service's upstreams. */
export interface UpstreamFailures {
  /** Notes one attempt's outcome (an aborted one says nothing about the upstream). */
  record(origin: string, outcome: Pick<AttemptOutcome, "status" | "error">): void;
  /** What is known of `origin`. */
  view(origin: string): UpstreamFailureView;
}

interface Entry {
  lastFailure: UpstreamFailure | null;
  failuresInARow: number;
}

/**
 * Creates the tracker of one service's upstreams.
 *
 * @param wallNow epoch milliseconds (default `Date.now`)
 * @example
 * ```ts
 * const failures = createUpstreamFailures();
 * failures.record("http://10.0.0.1:80", { status: 503 });
 * failures.view("http://10.0.0.1:80"); // { lastFailure: { atMs, status: 503, error: null }, failuresInARow: 1 }
 * ```
 */
export function createUpstreamFailures(wallNow: () => number = Date.now): UpstreamFailures {
  const entries = new Map<string, Entry>();
  return {
    record(origin, outcome) {
      if (outcome.error === "aborted") return;
      let entry = entries.get(origin);
      if (!isUpstreamFailure(outcome)) {
        if (entry !== undefined && entry.failuresInARow !== 0) entry.failuresInARow = 0;
        return;
      }
      if (entry === undefined) {
        entry = { lastFailure: null, failuresInARow: 0 };
        entries.set(origin, entry);
      }
      entry.failuresInARow++;
      entry.lastFailure = {
        atMs: wallNow(),
        status: outcome.status ?? null,
        error: outcome.status === undefined ? outcome.error ?? null : null,
      };
    },
    view(origin) {
      const entry = entries.get(origin);
      return {
        lastFailure: entry?.lastFailure ?? null,
        failuresInARow: entry?.failuresInARow ?? 0,
      };
    },
  };
}
