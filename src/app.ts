/**
 * Wires the gateway together: config in, a public Hono app, an admin Hono app and `close()`
 * out. Nothing here listens, reads files or handles signals (that is `main.ts`), so the same
 * gateway runs embedded in another Hono app or on an edge runtime.
 *
 * Each part is built by a small builder of its own: the services (`gateway/build_service.ts`),
 * the limits derived from them (`gateway/limits.ts`), the status views (`gateway/status.ts`),
 * the request path (`proxy/request_path.ts`) and the apps (`gateway/public_app.ts`,
 * `admin/admin_app.ts`).
 *
 * @module
 */
import type { Hono } from "hono";
import type { GatewayConfig } from "./config/schema.ts";
import { createAdminApp } from "./admin/admin_app.ts";
import { createTrafficStats, type TrafficStats } from "./admin/traffic_stats.ts";
import { createFleetBreaker, type FleetBreaker } from "./breaker/mod.ts";
import { buildService, type BuildServiceDeps } from "./gateway/build_service.ts";
import { type DerivedLimits, deriveLimits } from "./gateway/limits.ts";
import { createPublicApp } from "./gateway/public_app.ts";
import { createRequestLog } from "./gateway/request_log.ts";
import {
  createStatusViews,
  type Lifecycle,
  metricsSources,
  type PoolUsage,
  readiness,
} from "./gateway/status.ts";
import { createServiceClients } from "./proxy/clients.ts";
import { createDeadlineScheduler } from "./proxy/deadlines.ts";
import { createLimiter } from "./proxy/limiter.ts";
import { createRequestPath } from "./proxy/request_path.ts";
import type { UpstreamClient } from "./proxy/upstream_client.ts";
import { buildRouteTable } from "./routing/route_table.ts";
import {
  createLogger,
  createTelemetry,
  type GatewayTelemetry,
  type Logger,
} from "./telemetry/mod.ts";
import { type GatewayKv, openGatewayKv } from "./kv.ts";
import { VERSION } from "./version.ts";

export type { ConnectionFacts } from "./proxy/request_path.ts";
export type { PoolUsage } from "./gateway/status.ts";

/** Options for {@link createGateway} beyond the config file. */
export interface GatewayOptions {
  /** Distinct per process; defaults to a random UUID. */
  instanceId?: string;
  /** Structured logger; defaults to JSON lines on stdout at `BREAKWATER_LOG_LEVEL`. */
  logger?: Logger;
  /** Environment for `OTEL_*` and `BREAKWATER_ADMIN_TOKEN`; defaults to `Deno.env`. */
  env?: Record<string, string | undefined>;
  /** Replaces the upstream client (another implementation of the interface). */
  client?: UpstreamClient;
  /** Monotonic clock in milliseconds for the request path (default `performance.now`). */
  now?: () => number;
}

/** A running gateway: two Hono apps and its lifecycle. */
export interface Gateway {
  /** The public app: health routes and forwarding. */
  app: Hono;
  /** The admin app: breakers, metrics, dashboard. */
  adminApp: Hono;
  /** Resolves once the fleet's breaker state was loaded and the gateway is ready to serve. */
  ready: Promise<void>;
  /** Starts draining: `/readyz` turns 503 and new requests are answered 503 `draining`. */
  drain(): void;
  /** Requests in flight through the public app right now. */
  inFlight(): number;
  /** The fleet breaker (for the admin API and tests). */
  breaker: FleetBreaker;
  /** Pool usage per service. */
  poolUsage(): Record<string, PoolUsage>;
  /** Per-service traffic of the last minutes (this instance). */
  traffic: TrafficStats;
  /** Flushes metrics and closes KV, timers and upstream connections. Idempotent. */
  close(): Promise<void>;
}

/**
 * Builds the gateway from a validated config.
 *
 * @example
 * ```ts
 * const gateway = createGateway(parseConfig(JSON.parse(Deno.readTextFileSync("breakwater.json"))));
 * await gateway.ready;
 * Deno.serve({ port: 8080 }, gateway.app.fetch);
 * ```
 */
export function createGateway(config: GatewayConfig, options: GatewayOptions = {}): Gateway {
  const adminToken = (options.env ?? Deno.env.toObject()).BREAKWATER_ADMIN_TOKEN ?? null;
  const instanceId = options.instanceId ?? crypto.randomUUID();
  const logger = options.logger ?? createLogger();
  const now = options.now ?? (() => performance.now());
  const telemetry = createTelemetry({
    serviceNames: Object.keys(config.services),
    prometheus: config.telemetry.prometheus,
    otlp: config.telemetry.otlp,
    instanceId,
    version: VERSION,
    logger: (line) => logger.warn(String(line.msg ?? "telemetry"), line),
  });

  // One client per service, never replaced silently: two services on one origin with different
  // `upstreamClient` choices get a pool each. `options.client` replaces them all (tests).
  const clients = createServiceClients(Object.values(config.services));
  const services = Object.values(config.services).map((service) =>
    buildService(service, {
      ...serviceEvents(telemetry, logger),
      client: options.client ?? clients.clientFor(service.name),
      now,
    })
  );
  const limits = deriveLimits(config);
  const kvHandle = openGatewayKv(config.kv.path, logger);
  const breaker = startBreaker(config, kvHandle, { instanceId, limits, telemetry, logger });
  const status = createStatusViews(services);
  telemetry.observe(metricsSources(breaker, status));

  const traffic = createTrafficStats();
  const lifecycle: Lifecycle = { started: false, draining: false };
  const ready = breaker.start().then(() => {
    lifecycle.started = true;
  });
  const deadlines = createDeadlineScheduler({ now });
  const routes = services.map((service) => ({ prefix: service.config.prefix, target: service }));
  const requestPath = createRequestPath({
    match: buildRouteTable(routes),
    escapedSlashes: config.escapedSlashes,
    maxBodyBytes: config.limits.maxBodyBytes,
    breaker,
    globalLimiter: createLimiter(limits.global),
    deadlines,
    now,
    random: Math.random,
    draining: () => lifecycle.draining,
    observer: telemetry,
    tracing: telemetry.tracing,
    onServed: createRequestLog({
      traffic,
      telemetry,
      logger,
      breakerState: (s) => breaker.view(s).state,
    }),
  });

  let closing: Promise<void> | null = null;
  return {
    app: createPublicApp(requestPath, () => readiness(lifecycle, instanceId, breaker, status)),
    adminApp: createAdminApp({ breaker, telemetry, adminToken, status, traffic, logger }),
    ready,
    breaker,
    drain() {
      lifecycle.draining = true;
    },
    inFlight: () => requestPath.inFlight(),
    poolUsage: () => status.poolUsage(),
    traffic,
    close() {
      lifecycle.draining = true;
      closing ??= ready.catch(() => {}).then(async () => {
        await Promise.all(services.map((service) => service.close()));
        await breaker.close();
        await telemetry.shutdown();
        for (const closable of [clients, options.client, deadlines, kvHandle]) closable?.close();
      });
      return closing;
    },
  };
}

/** The fleet breaker of every service on the gateway's KV; transitions go to metrics and logs. */
function startBreaker(
  config: GatewayConfig,
  kv: GatewayKv,
  context: {
    instanceId: string;
    limits: DerivedLimits;
    telemetry: GatewayTelemetry;
    logger: Logger;
  },
): FleetBreaker {
  const { telemetry, logger } = context;
  return createFleetBreaker({
    kv: null,
    reopenKv: () => kv.open(),
    services: Object.fromEntries(
      Object.values(config.services).map((service) => [service.name, service.breaker]),
    ),
    instanceId: context.instanceId,
    syncIntervalMs: config.kv.syncIntervalMs,
    probeLeaseMs: context.limits.probeLeaseMs,
    onTransition: (event) => {
      telemetry.breakerTransition(event.service, event.from, event.to);
      logger.info("breaker transition", { ...event });
    },
  });
}

/** Where a service's upstream availability and adaptive limit changes are reported. */
function serviceEvents(
  telemetry: GatewayTelemetry,
  logger: Logger,
): Pick<BuildServiceDeps, "onAvailabilityChange" | "onLimitChange"> {
  return {
    onAvailabilityChange: (service, endpoint, available, reason) => {
      telemetry.upstreamAvailability(service, endpoint.origin, available, reason);
      logger.info("upstream availability", {
        service,
        upstream: endpoint.origin,
        available,
        reason,
      });
    },
    onLimitChange: (service, limit) => logger.debug("adaptive limit", { service, limit }),
  };
}
