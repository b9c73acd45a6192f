/**
 * The gateway's state as its readers see it: `/readyz`, the admin API, the dashboard and the
 * metrics all read these views, so a pool or an upstream is described once.
 *
 * @module
 */
import type { BreakerView } from "../breaker/types.ts";
import type { UpstreamHealthView } from "../health/mod.ts";
import type { ObservedSources } from "../telemetry/mod.ts";
import type { BuiltService } from "./build_service.ts";
import type { UpstreamFailureView } from "./upstream_failures.ts";

/** Pool usage of one service, for `/readyz` and metrics. */
export interface PoolUsage {
  /** Requests in flight upstream. */
  active: number;
  /** Requests waiting for a slot. */
  pending: number;
  /** The current in-flight limit. */
  max: number;
}

/**
 * An upstream as this instance sees it; the health fields appear only for services that
 * configure health checks or outlier detection.
 */
export interface UpstreamStatus extends Partial<UpstreamHealthView> {
  /** Its origin. */
  origin: string;
  /** False while health checks or outlier ejection keep it out of rotation. */
  available: boolean;
  /** Requests in flight to it from this instance. */
  inFlight: number;
}

/**
 * An upstream with what its state means, for the dashboard and `GET /admin/breakers`: what can
 * take it out of rotation for this service, whether something did, and its latest failure.
 */
export interface UpstreamState extends UpstreamStatus, UpstreamFailureView {
  /**
   * `in`: in rotation; `ejected`: taken out by outlier detection until `ejectedUntilMs`;
   * `failing_health_check`: taken out by active health checks until they pass again.
   */
  rotation: "in" | "ejected" | "failing_health_check";
  /** The health check path when the service has active checks, else null (nothing probes it). */
  healthCheckPath: string | null;
  /** True when the service has outlier detection (failures in a row can eject it). */
  outlierDetection: boolean;
  /** When the ejection ends (epoch ms), or null while not ejected. */
  ejectedUntilMs: number | null;
}

/** What the dashboard shows of a service that never changes. */
export interface ServiceFacts {
  /** Its path prefix. */
  prefix: string;
  /** Failures in the window that open its breaker. */
  failureThreshold: number;
}

/** This instance's view of its services. */
export interface StatusViews {
  /** Configured services, in config order. */
  serviceNames: string[];
  /** Static facts per service. */
  services: Record<string, ServiceFacts>;
  /** Pool usage per service. */
  poolUsage(): Record<string, PoolUsage>;
  /** Upstream status per service. */
  upstreams(): Record<string, UpstreamStatus[]>;
  /** Upstream status with what it means, per service (the dashboard, `GET /admin/breakers`). */
  upstreamStates(): Record<string, UpstreamState[]>;
}

/** The breaker as the status views read it. */
export interface BreakerReadings {
  /** Every service's breaker. */
  views(): BreakerView[];
  /** True while KV is unavailable and local breakers are in charge. */
  degraded(): boolean;
}

/**
 * The views over built services.
 *
 * @example
 * ```ts
 * const status = createStatusViews(services);
 * status.poolUsage().users; // { active: 0, pending: 0, max: 20 }
 * ```
 */
export function createStatusViews(
  services: readonly Pick<
    BuiltService,
    "config" | "limiter" | "balancer" | "healthOf" | "failuresOf"
  >[],
  wallNow: () => number = Date.now,
): StatusViews {
  return {
    serviceNames: services.map((service) => service.config.name),
    services: Object.fromEntries(services.map(({ config }) => [config.name, {
      prefix: config.prefix,
      failureThreshold: config.breaker.failureThreshold,
    }])),
    poolUsage: () =>
      Object.fromEntries(services.map(({ config, limiter }) => [config.name, {
        active: limiter.active(),
        pending: limiter.pending(),
        max: limiter.limit(),
      }])),
    upstreams: () =>
      Object.fromEntries(services.map((service) => [
        service.config.name,
        service.balancer.endpoints.map((endpoint) => ({
          origin: endpoint.origin,
          available: endpoint.available,
          inFlight: endpoint.inFlight,
          ...service.healthOf(endpoint),
        })),
      ])),
    upstreamStates: () => {
      const atMs = wallNow();
      return Object.fromEntries(services.map((service) => [
        service.config.name,
        service.balancer.endpoints.map((endpoint): UpstreamState => {
          const health = service.healthOf(endpoint);
          const ejected = health?.ejected ?? false;
          return {
            origin: endpoint.origin,
            available: endpoint.available,
            inFlight: endpoint.inFlight,
            ...health,
            ...service.failuresOf(endpoint),
            rotation: ejected
              ? "ejected"
              : health?.healthy === false
              ? "failing_health_check"
              : "in",
            healthCheckPath: service.config.healthCheck?.path ?? null,
            outlierDetection: service.config.outlierDetection !== null,
            ejectedUntilMs: ejected ? atMs + (health?.ejectedForMs ?? 0) : null,
          };
        }),
      ]));
    },
  };
}

/** Where the gateway is in its life, for `/readyz`. */
export interface Lifecycle {
  /** The fleet's breaker state was loaded. */
  started: boolean;
  /** Shutdown began. */
  draining: boolean;
}

/** The answer of `/readyz`. */
export interface Readiness {
  /** 200 when ready or degraded (local breakers still serve); 503 while starting or draining. */
  httpStatus: 200 | 503;
  /** The JSON body. */
  body: {
    status: "starting" | "draining" | "degraded" | "ready";
    instanceId: string;
    kv: { degraded: boolean };
    services: Record<string, {
      breaker: BreakerView["state"];
      failuresInWindow: number;
      pool: PoolUsage | undefined;
      upstreams: UpstreamStatus[] | undefined;
    }>;
  };
}

/**
 * The readiness of this instance and every service's breaker, pool and upstreams.
 *
 * @example
 * ```ts
 * const { httpStatus, body } = readiness(lifecycle, instanceId, breaker, status);
 * return c.json(body, httpStatus);
 * ```
 */
export function readiness(
  lifecycle: Lifecycle,
  instanceId: string,
  breaker: BreakerReadings,
  status: StatusViews,
): Readiness {
  const degraded = breaker.degraded();
  const { started, draining } = lifecycle;
  const pools = status.poolUsage();
  const upstreams = status.upstreams();
  return {
    httpStatus: started && !draining ? 200 : 503,
    body: {
      status: !started ? "starting" : draining ? "draining" : degraded ? "degraded" : "ready",
      instanceId,
      kv: { degraded },
      services: Object.fromEntries(
        breaker.views().map((view) => [view.service, {
          breaker: view.state,
          failuresInWindow: view.failuresInWindow,
          pool: pools[view.service],
          upstreams: upstreams[view.service],
        }]),
      ),
    },
  };
}

/**
 * What the metrics read at collection time (so the request path pays nothing for them).
 *
 * @example
 * ```ts
 * telemetry.observe(metricsSources(breaker, status));
 * ```
 */
export function metricsSources(breaker: BreakerReadings, status: StatusViews): ObservedSources {
  return {
    breakerStates: () =>
      breaker.views().map((view) => ({ service: view.service, state: view.state })),
    pools: () =>
      Object.entries(status.poolUsage()).map(([service, pool]) => ({ service, ...pool })),
    kvDegraded: () => breaker.degraded(),
    upstreams: () =>
      Object.entries(status.upstreams()).flatMap(([service, upstreams]) =>
        upstreams.map((upstream) => ({
          service,
          upstream: upstream.origin,
          available: upstream.available,
        }))
      ),
  };
}
