/**
 * Glue between a service's runtime and the resilience features that watch its attempts:
 * upstream health (active checks, outlier ejection) and the adaptive concurrency limit.
 *
 * @module
 */
import type { ServiceRuntime } from "../proxy/forward.ts";
import { type AdaptiveLimit, createAdaptiveLimit } from "../proxy/adaptive_limit.ts";
import type { UpstreamEndpoint } from "../proxy/balancer.ts";
import type { UpstreamClient } from "../proxy/upstream_client.ts";
import { createUpstreamHealth, type UpstreamHealth, type UpstreamHealthView } from "./mod.ts";

/** What {@link wireServiceResilience} needs from the gateway. */
export interface ResilienceDeps {
  /** Sends health probes (the gateway's pooled upstream client). */
  client: UpstreamClient;
  /** Monotonic clock in milliseconds. */
  now: () => number;
  /** Called when an upstream enters or leaves the rotation. */
  onAvailabilityChange?: (
    service: string,
    endpoint: UpstreamEndpoint,
    available: boolean,
    reason: string,
  ) => void;
  /** Called when the adaptive limit moved. */
  onLimitChange?: (service: string, limit: number) => void;
}

/** The wired features of one service. */
export interface ServiceResilience {
  /** Upstream health. */
  health: UpstreamHealth;
  /** The adaptive limit, or null when off. */
  adaptive: AdaptiveLimit | null;
  /** The health of one upstream, for `/readyz` and the admin API. */
  view(endpoint: UpstreamEndpoint): UpstreamHealthView;
  /** Stops health checks. */
  close(): Promise<void>;
}

/**
 * Starts health checks, outlier detection and the adaptive limit of `runtime` (each only when
 * configured): sets `runtime.onAttempt`, and wraps the balancer so expired ejections end
 * before each pick.
 */
export function wireServiceResilience(
  runtime: ServiceRuntime,
  deps: ResilienceDeps,
): ServiceResilience {
  const config = runtime.config;
  const health = createUpstreamHealth({
    endpoints: runtime.balancer.endpoints,
    healthCheck: config.healthCheck,
    outlierDetection: config.outlierDetection,
    now: deps.now,
    probe: async (origin, path, signal) => {
      const response = await deps.client.send({
        origin,
        pathAndQuery: path,
        method: "GET",
        headers: [["user-agent", "breakwater-health-check"]],
        body: null,
        signal,
      });
      await response.body?.cancel().catch(() => {});
      return response.status;
    },
    onChange: (endpoint, available, reason) =>
      deps.onAvailabilityChange?.(config.name, endpoint, available, reason),
  });

  const adaptive = config.adaptiveConcurrency.enabled
    ? createAdaptiveLimit({
      minLimit: config.adaptiveConcurrency.minLimit,
      maxLimit: config.pool.maxConnections,
      tolerance: config.adaptiveConcurrency.tolerance,
      sampleWindowMs: config.adaptiveConcurrency.sampleWindowMs,
      now: deps.now,
    })
    : null;

  const inner = runtime.balancer;
  if (config.outlierDetection !== null) {
    runtime.balancer = {
      endpoints: inner.endpoints,
      pick(exclude) {
        health.refresh();
        return inner.pick(exclude);
      },
    };
  }

  const previous = runtime.onAttempt;
  runtime.onAttempt = (endpoint, outcome) => {
    previous?.(endpoint, outcome);
    health.record(endpoint, outcome);
    if (adaptive !== null && outcome.error !== "aborted") {
      const next = adaptive.sample(outcome.durationMs, runtime.limiter.active());
      if (next !== null) {
        runtime.limiter.setLimit(next);
        deps.onLimitChange?.(config.name, next);
      }
    }
  };

  return {
    health,
    adaptive,
    view: (endpoint) => health.view(endpoint),
    close: () => health.close(),
  };
}
