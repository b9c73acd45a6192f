/**
 * One generation of the gateway: everything built from one config's services (route table,
 * service runtimes, derived limits, the breaker, the request path, the status views). It never
 * changes after it is built; a reload builds the next one, reusing the runtimes (clients and
 * pools, limiter, balancer, health) of services whose settings did not change and the breaker
 * when no breaker setting did, and retires the old one once its requests in flight finished.
 *
 * @module
 */
import type { TrafficStats } from "../admin/traffic_stats.ts";
import { createFleetBreaker, type FleetBreaker, type KvLender } from "../breaker/mod.ts";
import type { GatewayConfig } from "../config/schema.ts";
import type { GatewayKv } from "../kv.ts";
import { createServiceClients, type ServiceClients } from "../proxy/clients.ts";
import type { DeadlineScheduler } from "../proxy/deadlines.ts";
import { createLimiter, type Limiter } from "../proxy/limiter.ts";
import { createRequestPath, type RequestPath } from "../proxy/request_path.ts";
import type { UpstreamClient } from "../proxy/upstream_client.ts";
import type { WebSocketSessions } from "../proxy/websocket_sessions.ts";
import type { FleetRetryBudgets } from "../retry/mod.ts";
import { buildRouteTable } from "../routing/route_table.ts";
import type { GatewayTelemetry, Logger } from "../telemetry/mod.ts";
import { buildService, type BuildServiceDeps, type BuiltService } from "./build_service.ts";
import { type DerivedLimits, deriveLimits } from "./limits.ts";
import type { ReloadPlan } from "./reload.ts";
import { sameValue } from "./reload.ts";
import { createRequestLog } from "./request_log.ts";
import { createStatusViews, type StatusViews } from "./status.ts";

/** What every generation of one gateway shares. */
export interface GenerationShared {
  instanceId: string;
  logger: Logger;
  telemetry: GatewayTelemetry;
  traffic: TrafficStats;
  deadlines: DeadlineScheduler;
  kv: GatewayKv;
  /**
   * The one KV handle every generation's breaker uses (`createKvLender` over `kv`): a new
   * breaker must not close the handle of the one still retiring.
   */
  lendKv: KvLender;
  /**
   * The fleet retry budgets of every generation: they follow the breaker in force (a new one
   * attaches them at its start) and keep their counts across reloads.
   */
  retryBudgets: FleetRetryBudgets;
  now: () => number;
  /** Replaces every service's client (tests). */
  client: UpstreamClient | undefined;
  /** Builds the breaker instead of the fleet breaker on KV (a worker's mirror). */
  breakerFactory?: (config: GatewayConfig) => FleetBreaker;
  /** Wraps each service's health probe (one prober per instance with workers). */
  probeThrough?: BuildServiceDeps["probeThrough"];
  draining: () => boolean;
  /** Open WebSocket sessions per service, across generations (the cap and the gauge). */
  websockets?: WebSocketSessions;
  /** The generations alive: the one in force and those still finishing requests. */
  live: Set<Generation>;
}

/** A service's runtime and the client set it was built with. */
interface OwnedService {
  runtime: BuiltService;
  clients: ServiceClients | null;
}

/** Everything built from one config. */
export interface Generation {
  readonly config: GatewayConfig;
  readonly services: ReadonlyMap<string, OwnedService>;
  readonly breaker: FleetBreaker;
  readonly globalLimiter: Limiter;
  readonly limits: DerivedLimits;
  readonly requestPath: RequestPath;
  readonly status: StatusViews;
  /** Requests of this generation between routing and the response head. */
  inFlight(): number;
}

/**
 * Builds a generation from `config`, reusing what `from.previous` built for the services the
 * plan calls unchanged.
 *
 * @example
 * ```ts
 * const first = buildGeneration(config, null, shared);
 * const next = buildGeneration(plan.config, { previous: first, plan }, shared);
 * ```
 */
export function buildGeneration(
  config: GatewayConfig,
  from: { previous: Generation; plan: ReloadPlan } | null,
  shared: GenerationShared,
): Generation {
  const previous = from?.previous ?? null;
  const reused = new Set(from?.plan.unchanged ?? []);
  const fresh = Object.values(config.services).filter((service) => !reused.has(service.name));
  // One client set per generation for its new services: unchanged services keep their pools.
  const clients = shared.client === undefined && fresh.length > 0
    ? createServiceClients(fresh)
    : null;
  const services = new Map<string, OwnedService>();
  for (const service of Object.values(config.services)) {
    const kept = reused.has(service.name) ? previous?.services.get(service.name) : undefined;
    services.set(
      service.name,
      kept ?? {
        runtime: buildService(service, {
          ...serviceEvents(shared),
          client: shared.client ?? clients!.clientFor(service.name),
          now: shared.now,
          retryBudgets: shared.retryBudgets,
          probeThrough: shared.probeThrough,
        }),
        clients,
      },
    );
  }
  const runtimes = [...services.values()].map((service) => service.runtime);
  const limits = deriveLimits(config);
  const breaker = previous !== null && breakerCarriesOver(previous, config, limits)
    ? previous.breaker
    : startBreaker(config, shared, limits);
  const globalLimiter = previous !== null && sameValue(previous.limits.global, limits.global)
    ? previous.globalLimiter
    : createLimiter(limits.global);
  const status = createStatusViews(runtimes);
  const routes = runtimes.map((service) => ({ prefix: service.config.prefix, target: service }));
  const requestPath = createRequestPath({
    match: buildRouteTable(routes),
    escapedSlashes: config.escapedSlashes,
    maxBodyBytes: config.limits.maxBodyBytes,
    breaker,
    globalLimiter,
    deadlines: shared.deadlines,
    now: shared.now,
    random: Math.random,
    draining: shared.draining,
    websockets: shared.websockets,
    observer: shared.telemetry,
    serviceByName: (name) => services.get(name)?.runtime,
    tracing: shared.telemetry.tracing,
    onServed: createRequestLog({
      traffic: shared.traffic,
      telemetry: shared.telemetry,
      logger: shared.logger,
      breakerState: (name) => breaker.view(name).state,
    }),
  });
  const generation: Generation = {
    config,
    services,
    breaker,
    globalLimiter,
    limits,
    requestPath,
    status,
    inFlight: () => requestPath.inFlight(),
  };
  shared.live.add(generation);
  return generation;
}

/** True while a request of `generation` holds or waits for a slot only it uses. */
function busy(generation: Generation, others: Generation[]): boolean {
  if (generation.requestPath.inFlight() > 0) return true;
  // A slot is held until the response body finished streaming (the limiter is released then).
  for (const { runtime } of generation.services.values()) {
    if (others.some((other) => usesRuntime(other, runtime))) continue;
    if (runtime.limiter.active() > 0 || runtime.limiter.pending() > 0) return true;
  }
  return false;
}

function usesRuntime(generation: Generation, runtime: BuiltService): boolean {
  for (const service of generation.services.values()) {
    if (service.runtime === runtime) return true;
  }
  return false;
}

/**
 * Waits until `old` has no request in flight (at most `shutdown.timeoutMs`, as a drain does),
 * then closes what no other live generation uses: health checks, client pools, the breaker.
 * `force` ends the wait at once (the gateway is closing).
 */
export async function retireGeneration(
  old: Generation,
  shared: GenerationShared,
  force: { signal: AbortSignal },
): Promise<void> {
  const others = () => [...shared.live].filter((generation) => generation !== old);
  const untilMs = Date.now() + old.config.shutdown.timeoutMs;
  // Polled rather than signalled: the request path and limiter have no idle event, and a
  // reload is rare enough that a 50 ms poll costs nothing.
  while (busy(old, others()) && Date.now() < untilMs && !force.signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (busy(old, others())) {
    shared.logger.warn("reload: requests of the previous config still in flight; closing", {
      inFlight: old.inFlight(),
    });
  }
  shared.live.delete(old);
  await closeUnshared(old, [...shared.live]);
  shared.logger.info("previous config retired", {
    services: [...old.services.keys()],
    waitedMs: Date.now() - (untilMs - old.config.shutdown.timeoutMs),
  });
}

/** Closes the parts of `generation` that none of `others` uses. */
export async function closeUnshared(generation: Generation, others: Generation[]): Promise<void> {
  const closing: Promise<void>[] = [];
  const clientSets = new Set<ServiceClients>();
  for (const { runtime, clients } of generation.services.values()) {
    if (others.some((other) => usesRuntime(other, runtime))) continue;
    closing.push(runtime.close());
    if (clients !== null) clientSets.add(clients);
  }
  for (const other of others) {
    for (const { clients } of other.services.values()) {
      if (clients !== null) clientSets.delete(clients);
    }
  }
  if (!others.some((other) => other.breaker === generation.breaker)) {
    closing.push(generation.breaker.close());
  }
  await Promise.all(closing);
  for (const clients of clientSets) clients.close();
}

/**
 * The breaker carries over when the services and their breaker settings are the same; else a
 * new one is built on the same KV handle, where the fleet's state (forced, open) lives and is
 * read back at its start. The fleet retry budgets move to it then (they are attached by
 * `start()`), the old one keeps answering its requests in flight until it is retired.
 */
function breakerCarriesOver(
  previous: Generation,
  config: GatewayConfig,
  limits: DerivedLimits,
): boolean {
  const policies = (c: GatewayConfig) =>
    Object.values(c.services).map((service) => [service.name, service.breaker]);
  return sameValue(policies(previous.config), policies(config)) &&
    previous.limits.probeLeaseMs === limits.probeLeaseMs;
}

/** The fleet breaker of every service on the gateway's KV; transitions go to metrics and logs. */
function startBreaker(
  config: GatewayConfig,
  shared: GenerationShared,
  limits: DerivedLimits,
): FleetBreaker {
  const { telemetry, logger } = shared;
  if (shared.breakerFactory !== undefined) return shared.breakerFactory(config);
  return createFleetBreaker({
    kv: null,
    reopenKv: shared.lendKv,
    kvIsLent: true,
    retryBudgets: shared.retryBudgets,
    // A KV Connect server (and Deno Deploy's KV, `kv.path: null`) delivers every instance's
    // writes by watch: no polling every few ms during an outage, which would load a remote KV
    // with a read per instance just when it is busiest. A shared SQLite file's watch does not
    // see other processes, so there the re-sync speeds up.
    watchIsShared: config.kv.path === null || /^https?:\/\//.test(config.kv.path),
    onAudit: (entry) => logger.info("breaker audit", { ...entry }),
    services: Object.fromEntries(
      Object.values(config.services).map((service) => [service.name, service.breaker]),
    ),
    instanceId: shared.instanceId,
    syncIntervalMs: config.kv.syncIntervalMs,
    probeLeaseMs: limits.probeLeaseMs,
    onTransition: (event) => {
      telemetry.breakerTransition(event.service, event.from, event.to);
      logger.info("breaker transition", { ...event });
    },
    onKvStateChange: (degraded) => {
      if (degraded) {
        logger.warn("kv degraded: breakers are local until KV answers again", {
          kv: config.kv.path,
        });
      } else {
        logger.info("kv recovered: breakers are shared with the fleet again", {
          kv: config.kv.path,
        });
      }
    },
  });
}

/** Where a service's upstream availability and adaptive limit changes are reported. */
function serviceEvents(shared: GenerationShared) {
  const { telemetry, logger } = shared;
  return {
    onAvailabilityChange: (
      service: string,
      endpoint: { origin: string },
      available: boolean,
      reason: string,
    ) => {
      telemetry.upstreamAvailability(service, endpoint.origin, available, reason);
      logger.info("upstream availability", {
        service,
        upstream: endpoint.origin,
        available,
        reason,
      });
    },
    onLimitChange: (service: string, limit: number) =>
      logger.debug("adaptive limit", { service, limit }),
  };
}
