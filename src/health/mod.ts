/**
 * Upstream health of one service: active health checks and passive outlier ejection, combined
 * into each endpoint's `available` flag that the balancer reads.
 *
 * @module
 */
import type { AttemptOutcome } from "../breaker/types.ts";
import type { HealthCheckConfig, OutlierConfig } from "../config/schema.ts";
import type { UpstreamEndpoint } from "../proxy/balancer.ts";
import { type HealthChecks, startHealthChecks } from "./active.ts";
import { createOutlierDetector, type OutlierDetector } from "./outlier.ts";

export { createHealthState, type HealthChecks, startHealthChecks } from "./active.ts";
export {
  createOutlierDetector,
  ejectionMs,
  maxEjectedCount,
  type OutlierDetector,
  type OutlierView,
} from "./outlier.ts";

/** The health of one upstream, for `/readyz` and the admin API. */
export interface UpstreamHealthView {
  /** Healthy as active checks see it (always true without health checks). */
  healthy: boolean;
  /** Ejected by passive outlier detection now. */
  ejected: boolean;
  /** Milliseconds until the ejection ends. */
  ejectedForMs: number;
  /** Ejections so far. */
  ejections: number;
}

/** Options of {@link createUpstreamHealth}. */
export interface UpstreamHealthOptions {
  /** The service's endpoints (the balancer's live objects; `available` is written here). */
  endpoints: readonly UpstreamEndpoint[];
  /** Active checks, or null when off. */
  healthCheck: HealthCheckConfig | null;
  /** Passive ejection, or null when off. */
  outlierDetection: OutlierConfig | null;
  /** Sends a health probe; resolves with the status (see {@link startHealthChecks}). */
  probe: (origin: string, path: string, signal: AbortSignal) => Promise<number>;
  /** Monotonic clock in milliseconds. */
  now: () => number;
  /** Called when an upstream enters or leaves the rotation (logs). */
  onChange?: (endpoint: UpstreamEndpoint, available: boolean, reason: string) => void;
}

/** The health of a service's upstreams. */
export interface UpstreamHealth {
  /** Feeds one attempt's outcome to outlier detection. */
  record(endpoint: UpstreamEndpoint, outcome: AttemptOutcome): void;
  /** Ends expired ejections; the balancer calls it before each pick (cheap when idle). */
  refresh(): void;
  /** The health of `endpoint`. */
  view(endpoint: UpstreamEndpoint): UpstreamHealthView;
  /** Stops health checks. */
  close(): Promise<void>;
}

/** True when an outcome counts against the upstream (5xx, refused, reset, timed out). */
export function isUpstreamFailure(outcome: Pick<AttemptOutcome, "status" | "error">): boolean {
  if (outcome.status !== undefined) return outcome.status >= 500;
  return outcome.error === "unreachable" || outcome.error === "timeout";
}

/**
 * Creates the health tracking of one service and starts its health checks (when configured).
 *
 * @example
 * ```ts
 * const health = createUpstreamHealth({
 *   endpoints: balancer.endpoints, healthCheck: config.healthCheck,
 *   outlierDetection: config.outlierDetection, probe, now: () => performance.now(),
 * });
 * ```
 */
export function createUpstreamHealth(options: UpstreamHealthOptions): UpstreamHealth {
  const { endpoints } = options;
  const indexOf = new Map(endpoints.map((endpoint, index) => [endpoint, index]));
  const outliers: OutlierDetector | null = options.outlierDetection === null
    ? null
    : createOutlierDetector({
      ...options.outlierDetection,
      upstreamCount: endpoints.length,
      now: options.now,
    });
  let checks: HealthChecks | null = null;

  const update = (index: number, reason: string) => {
    const endpoint = endpoints[index];
    const available = (checks?.state(index).healthy ?? true) &&
      !(outliers?.isEjected(index) ?? false);
    if (endpoint.available === available) return;
    endpoint.available = available;
    options.onChange?.(endpoint, available, reason);
  };

  if (options.healthCheck !== null) {
    checks = startHealthChecks({
      ...options.healthCheck,
      origins: endpoints.map((endpoint) => endpoint.origin),
      probe: options.probe,
      onChange: (index, healthy) =>
        update(index, healthy ? "health_check_passed" : "health_check_failed"),
    });
  }

  const refresh = () => {
    if (outliers === null) return;
    for (const index of outliers.refresh()) update(index, "ejection_ended");
  };

  return {
    record(endpoint, outcome) {
      if (outliers === null || outcome.error === "aborted") return;
      const index = indexOf.get(endpoint);
      if (index === undefined) return;
      refresh();
      if (outliers.record(index, isUpstreamFailure(outcome))) update(index, "outlier_ejected");
    },
    refresh,
    view(endpoint) {
      const index = indexOf.get(endpoint) ?? -1;
      const outlier = index >= 0 ? outliers?.view(index) : undefined;
      return {
        healthy: index >= 0 ? (checks?.state(index).healthy ?? true) : true,
        ejected: outlier?.ejected ?? false,
        ejectedForMs: outlier?.ejectedForMs ?? 0,
        ejections: outlier?.ejections ?? 0,
      };
    },
    async close() {
      await checks?.stop();
    },
  };
}
