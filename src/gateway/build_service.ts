/**
 * Builds one service's runtime complete: its client, balancer, limiter, retry budget, upstream
 * health (active checks, outlier ejection) and adaptive limit, wired to each other before the
 * first request, so nothing is patched in afterwards.
 *
 * @module
 */
import type { AttemptOutcome } from "../breaker/types.ts";
import type { ServiceConfig } from "../config/schema.ts";
import { createUpstreamHealth, type UpstreamHealthView } from "../health/mod.ts";
import { type AdaptiveLimit, createAdaptiveLimit } from "../proxy/adaptive_limit.ts";
import { createBalancer, endpointOf, type UpstreamEndpoint } from "../proxy/balancer.ts";
import { createLimiter, type Limiter } from "../proxy/limiter.ts";
import type { ServiceRuntime } from "../proxy/service_runtime.ts";
import type { UpstreamClient } from "../proxy/upstream_client.ts";
import type { FleetRetryBudgets } from "../retry/fleet_budget.ts";
import { createRetryBudget, type RetryBudget } from "../retry/policy.ts";
import { createUpstreamFailures, type UpstreamFailureView } from "./upstream_failures.ts";

/** What {@link buildService} needs from the gateway. */
export interface BuildServiceDeps {
  /** The service's upstream client (also sends its health probes). */
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
  /**
   * The gateway's fleet retry budgets; a service with `retry.fleetBudget` takes its budget
   * from them. Without them every service keeps its own budget.
   */
  retryBudgets?: FleetRetryBudgets;
  /**
   * Wraps the service's health probe (the one that sends it through `client`): the workers of
   * one instance share one prober this way (README, "Workers").
   */
  probeThrough?: (probe: HealthProbe, service: ServiceConfig) => HealthProbe;
}

/** Sends one health probe; resolves with the status. */
export type HealthProbe = (origin: string, path: string, signal: AbortSignal) => Promise<number>;

/** A service's runtime and what the gateway needs of it beyond the request path. */
export interface BuiltService extends ServiceRuntime {
  /**
   * The health of one upstream, for `/readyz` and the admin API; undefined for a service that
   * configures neither health checks nor outlier detection (its views then carry no health).
   */
  healthOf(endpoint: UpstreamEndpoint): UpstreamHealthView | undefined;
  /** The latest failure of one upstream seen by this instance (the dashboard says what it means). */
  failuresOf(endpoint: UpstreamEndpoint): UpstreamFailureView;
  /** Stops health checks. */
  close(): Promise<void>;
}

/**
 * Builds the runtime of `config`, starting its health checks when configured.
 *
 * @example
 * ```ts
 * const service = buildService(config.services.users, { client, now: () => performance.now() });
 * service.balancer.pick();
 * await service.close();
 * ```
 */
export function buildService(config: ServiceConfig, deps: BuildServiceDeps): BuiltService {
  const endpoints = config.upstreams.map(endpointOf);
  const ownProbe: HealthProbe = (origin, path, signal) =>
    probeStatus(deps.client, origin, path, signal);
  const probe = deps.probeThrough?.(ownProbe, config) ?? ownProbe;
  const health = createUpstreamHealth({
    endpoints,
    healthCheck: config.healthCheck,
    outlierDetection: config.outlierDetection,
    now: deps.now,
    probe,
    onChange: (endpoint, available, reason) =>
      deps.onAvailabilityChange?.(config.name, endpoint, available, reason),
  });
  // Expired ejections end on the next pick; without outlier detection there are none.
  const balancer = createBalancer(
    endpoints,
    config.outlierDetection === null ? {} : { beforePick: () => health.refresh() },
  );
  const limiter = createLimiter({
    limit: config.pool.maxConnections,
    maxPending: config.pool.maxPending,
    queueTimeoutMs: config.pool.queueTimeoutMs,
  });
  const adaptive = adaptiveLimitOf(config, deps.now);
  const reportsHealth = config.healthCheck !== null || config.outlierDetection !== null;
  const failures = createUpstreamFailures();
  return {
    config,
    client: deps.client,
    balancer,
    limiter,
    retryBudget: retryBudgetOf(config, deps),
    onAttempt(endpoint, outcome) {
      health.record(endpoint, outcome);
      failures.record(endpoint.origin, outcome);
      adapt(adaptive, limiter, outcome, (limit) => deps.onLimitChange?.(config.name, limit));
    },
    healthOf: (endpoint) => reportsHealth ? health.view(endpoint) : undefined,
    failuresOf: (endpoint) => failures.view(endpoint.origin),
    close: () => health.close(),
  };
}

/**
 * The service's retry budget: its share of the fleet's (one floor for the whole fleet), or with
 * `retry.fleetBudget: false` its own percentage and floor, as Envoy and Finagle count them.
 */
function retryBudgetOf(config: ServiceConfig, deps: BuildServiceDeps): RetryBudget {
  const { budgetPercent, minRetriesPerSecond, fleetBudget } = config.retry;
  if (fleetBudget && deps.retryBudgets !== undefined) {
    return deps.retryBudgets.budget(config.name, { budgetPercent, minRetriesPerSecond });
  }
  return createRetryBudget({ budgetPercent, minRetriesPerSecond, now: deps.now });
}

/** The service's adaptive limit, or null when off. */
function adaptiveLimitOf(config: ServiceConfig, now: () => number): AdaptiveLimit | null {
  const settings = config.adaptiveConcurrency;
  if (!settings.enabled) return null;
  return createAdaptiveLimit({
    minLimit: settings.minLimit,
    maxLimit: config.pool.maxConnections,
    tolerance: settings.tolerance,
    sampleWindowMs: settings.sampleWindowMs,
    now,
  });
}

/** Feeds one attempt's latency to the adaptive limit and moves the limiter with it. */
function adapt(
  adaptive: AdaptiveLimit | null,
  limiter: Limiter,
  outcome: AttemptOutcome,
  onChange: (limit: number) => void,
): void {
  if (adaptive === null || outcome.error === "aborted") return;
  const next = adaptive.sample(outcome.durationMs, limiter.active());
  if (next === null) return;
  limiter.setLimit(next);
  onChange(next);
}

/** Sends one health probe through the service's own client; resolves with the status. */
async function probeStatus(
  client: UpstreamClient,
  origin: string,
  path: string,
  signal: AbortSignal,
): Promise<number> {
  const response = await client.send({
    origin,
    pathAndQuery: path,
    method: "GET",
    headers: [["user-agent", "breakwater-health-check"]],
    body: null,
    signal,
  });
  await response.body?.cancel().catch(() => {});
  return response.status;
}
