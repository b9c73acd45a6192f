/**
 * Wires the gateway together: config in, a public Hono app, an admin Hono app and `close()`
 * out. Nothing here listens, reads files or handles signals (that is `main.ts`), so the same
 * gateway runs embedded in another Hono app or on an edge runtime.
 *
 * @module
 */
import { Hono } from "hono";
import { requestId } from "hono/request-id";
import type { GatewayConfig } from "./config/schema.ts";
import { createAdminApp } from "./admin/admin_app.ts";
import { createTrafficStats, type TrafficStats } from "./admin/traffic_stats.ts";
import { createFleetBreaker, type FleetBreaker } from "./breaker/mod.ts";
import { type GatewayErrorCode, problemResponse } from "./problem.ts";
import { createBalancer, type UpstreamEndpoint } from "./proxy/balancer.ts";
import {
  forward,
  type ForwardDeps,
  type ForwardResult,
  type ServiceRuntime,
} from "./proxy/forward.ts";
import { checkRequest } from "./proxy/edge_checks.ts";
import { createLimiter } from "./proxy/limiter.ts";
import { createDeadlineScheduler } from "./proxy/deadlines.ts";
import type { UpstreamClient } from "./proxy/upstream_client.ts";
import { createServiceClients } from "./proxy/clients.ts";
import { createRetryBudget } from "./retry/policy.ts";
import { applyEscapedSlashes, normalizeTarget } from "./routing/normalize_path.ts";
import { targetOfUrl } from "./routing/request_target.ts";
import { buildRouteTable, upstreamPath } from "./routing/route_table.ts";
import {
  accessLogEntry,
  createLogger,
  createTelemetry,
  type GatewayTelemetry,
  type Logger,
} from "./telemetry/mod.ts";
import { openGatewayKv } from "./kv.ts";
import { VERSION } from "./version.ts";
import { type ServiceResilience, wireServiceResilience } from "./health/wire.ts";

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

/**
 * What the server knows about a request beyond the `Request` (the gateway's own server passes
 * all of it; `Deno.serve` passes `remoteAddr` and `completed`).
 */
export interface ConnectionFacts {
  /** The peer. */
  remoteAddr?: Deno.NetAddr;
  /** Settles when the response was fully written (or the connection died). */
  completed?: Promise<void>;
  /** The request target exactly as sent; the path is taken from it, never from `Host`. */
  target?: string;
  /** The method exactly as sent (a `Request` normalises some and refuses others). */
  method?: string;
  /** The body exactly as sent (a `Request` refuses one on GET and HEAD). */
  body?: ReadableStream<Uint8Array> | null;
}

/** Pool usage of one service, for `/readyz` and metrics. */
export interface PoolUsage {
  /** Requests in flight upstream. */
  active: number;
  /** Requests waiting for a slot. */
  pending: number;
  /** The current in-flight limit. */
  max: number;
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
  const env = options.env ?? Deno.env.toObject();
  const instanceId = options.instanceId ?? crypto.randomUUID();
  const logger = options.logger ?? createLogger();
  const now = options.now ?? (() => performance.now());
  const serviceNames = Object.keys(config.services);

  const telemetry: GatewayTelemetry = createTelemetry({
    serviceNames,
    prometheus: config.telemetry.prometheus,
    otlp: config.telemetry.otlp,
    instanceId,
    version: VERSION,
    logger: (line) => logger.warn(String(line.msg ?? "telemetry"), line),
  });

  // One client per service, never replaced silently: two services on one origin with different
  // `upstreamClient` choices get a pool each. `options.client` replaces them all (tests).
  const clients = createServiceClients(
    Object.values(config.services).map((service) => ({
      name: service.name,
      upstreamClient: service.upstreamClient,
      upstreams: service.upstreams,
      pool: service.pool,
    })),
  );
  const services = new Map<string, ServiceRuntime>();
  for (const service of Object.values(config.services)) {
    services.set(service.name, {
      config: service,
      client: options.client ?? clients.clientFor(service.name),
      balancer: createBalancer(service.upstreams),
      limiter: createLimiter({
        limit: service.pool.maxConnections,
        maxPending: service.pool.maxPending,
        queueTimeoutMs: service.pool.queueTimeoutMs,
      }),
      retryBudget: createRetryBudget({
        budgetPercent: service.retry.budgetPercent,
        minRetriesPerSecond: service.retry.minRetriesPerSecond,
        now,
      }),
    });
  }
  const match = buildRouteTable(
    [...services.values()].map((runtime) => ({ prefix: runtime.config.prefix, target: runtime })),
  );

  // Health checks, outlier ejection and adaptive limits watch each service's attempts.
  const resilience = new Map<string, ServiceResilience>();
  for (const runtime of services.values()) {
    resilience.set(
      runtime.config.name,
      wireServiceResilience(runtime, {
        client: runtime.client,
        now,
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
      }),
    );
  }
  // Health fields appear only for services that configure health checks or outlier detection.
  const healthOf = (service: string, endpoint: UpstreamEndpoint) => {
    const serviceConfig = config.services[service];
    if (serviceConfig?.healthCheck === null && serviceConfig?.outlierDetection === null) {
      return undefined;
    }
    return resilience.get(service)?.view(endpoint);
  };

  const kvHandle = openGatewayKv(config.kv.path, logger);
  const breaker = createFleetBreaker({
    kv: null,
    reopenKv: () => kvHandle.open(),
    services: Object.fromEntries(
      [...services.values()].map((runtime) => [runtime.config.name, runtime.config.breaker]),
    ),
    instanceId,
    syncIntervalMs: config.kv.syncIntervalMs,
    // A probe's lease must outlive the probe itself, or a second one could start meanwhile.
    probeLeaseMs: Math.max(...[...services.values()].map((s) => s.config.timeoutMs)) + 5000,
    onTransition: (event) => {
      telemetry.breakerTransition(event.service, event.from, event.to);
      logger.info("breaker transition", { ...event });
    },
  });

  const globalLimiter = createLimiter({
    limit: config.limits.maxConnections,
    maxPending: [...services.values()].reduce((sum, s) => sum + s.config.pool.maxPending, 0),
    queueTimeoutMs: Math.max(...[...services.values()].map((s) => s.config.pool.queueTimeoutMs)),
  });

  const deadlines = createDeadlineScheduler({ now });
  const deps: ForwardDeps = {
    breaker,
    globalLimiter,
    observer: telemetry,
    maxBodyBytes: config.limits.maxBodyBytes,
    now,
    deadlines,
    random: Math.random,
  };

  const poolUsage = (): Record<string, PoolUsage> =>
    Object.fromEntries(
      [...services.values()].map((runtime) => [runtime.config.name, {
        active: runtime.limiter.active(),
        pending: runtime.limiter.pending(),
        max: runtime.limiter.limit(),
      }]),
    );

  telemetry.observe({
    breakerStates: () =>
      breaker.views().map((view) => ({ service: view.service, state: view.state })),
    pools: () =>
      [...services.values()].map((runtime) => ({
        service: runtime.config.name,
        active: runtime.limiter.active(),
        pending: runtime.limiter.pending(),
        max: runtime.limiter.limit(),
      })),
    kvDegraded: () => breaker.degraded(),
    upstreams: () =>
      [...services.values()].flatMap((runtime) =>
        runtime.balancer.endpoints.map((endpoint) => ({
          service: runtime.config.name,
          upstream: endpoint.origin,
          available: endpoint.available,
        }))
      ),
  });

  const traffic = createTrafficStats();
  let started = false;
  let draining = false;
  let inFlight = 0;
  const ready = breaker.start().then(() => {
    started = true;
  });

  const app = new Hono<{ Variables: { requestId: string } }>();
  app.use(requestId({ limitLength: 128 }));

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", (c) => {
    const degraded = breaker.degraded();
    const status = !started ? "starting" : draining ? "draining" : degraded ? "degraded" : "ready";
    const pools = poolUsage();
    const body = {
      status,
      instanceId,
      kv: { degraded },
      services: Object.fromEntries(
        breaker.views().map((view) => [view.service, {
          breaker: view.state,
          failuresInWindow: view.failuresInWindow,
          pool: pools[view.service],
          upstreams: services.get(view.service)?.balancer.endpoints.map((endpoint) => ({
            origin: endpoint.origin,
            available: endpoint.available,
            inFlight: endpoint.inFlight,
            ...healthOf(view.service, endpoint),
          })),
        }]),
      ),
    };
    // Degraded still serves (local breakers), so it is ready; starting and draining are not.
    return c.json(body, started && !draining ? 200 : 503);
  });

  const defaultEscapedSlashes = config.escapedSlashes ?? "reject";
  const answer = (
    code: GatewayErrorCode,
    service: string | null,
    id: string,
    detail: string,
  ): ForwardResult => {
    telemetry.rejected(service, code);
    return {
      response: problemResponse(code, { requestId: id, detail, service }),
      upstream: null,
      error: code,
    };
  };

  /**
   * Route: the owner of the request target (never of the Host header), after the edge checks
   * and the owner's path policy. Returns the owner and the path to forward, or an answer.
   */
  const route = (
    raw: Request,
    facts: ConnectionFacts | undefined,
    method: string,
    id: string,
  ): { runtime: ServiceRuntime; pathAndQuery: string; path: string } | ForwardResult => {
    const refused = checkRequest(method, raw.headers, config.limits.maxBodyBytes);
    if (refused !== null) return answer(refused.code, null, id, refused.message);
    const target = normalizeTarget(facts?.target ?? targetOfUrl(raw.url));
    if ("error" in target) return answer("bad_request", null, id, target.error);
    let path = target.path;
    let found = match(path);
    if (target.escapedSlash) {
      const policy = found?.target.config.escapedSlashes ?? defaultEscapedSlashes;
      const decided = applyEscapedSlashes(path, policy);
      if ("error" in decided) {
        return answer("bad_request", found?.target.config.name ?? null, id, decided.error);
      }
      if (decided.path !== path) {
        path = decided.path;
        found = match(path);
      }
    }
    if (found === null) return answer("no_route", null, id, `${method} ${path}`);
    const runtime = found.target;
    const upstream = upstreamPath(path, found.prefix, runtime.config.stripPrefix);
    return { runtime, path, pathAndQuery: upstream + target.search };
  };

  app.all("*", async (c) => {
    const startedAt = now();
    const raw = c.req.raw;
    const id = c.get("requestId");
    const facts = c.env as ConnectionFacts | undefined;
    const method = facts?.method ?? raw.method;
    const scheme = raw.url.startsWith("https:") ? "https" : "http";
    const span = telemetry.tracing.startServer({
      method,
      headers: raw.headers,
      scheme,
      path: (facts?.target ?? targetOfUrl(raw.url)).split("?")[0],
      clientAddress: facts?.remoteAddr?.hostname ?? null,
      host: raw.headers.get("host"),
      requestId: id,
    });
    let result: ForwardResult;
    let runtime: ServiceRuntime | null = null;
    let path = "";
    if (draining) {
      result = answer("draining", null, id, "the gateway is shutting down");
      result.response.headers.set("retry-after", "1");
      result.response.headers.set("connection", "close");
    } else {
      const routed = route(raw, facts, method, id);
      if ("response" in routed) {
        result = routed;
      } else {
        runtime = routed.runtime;
        path = routed.path;
        span?.setRoute(runtime.config.name, runtime.config.prefix);
        inFlight++;
        try {
          result = await forward(
            {
              raw,
              method,
              body: facts?.body !== undefined ? facts.body : raw.body,
              pathAndQuery: routed.pathAndQuery,
              startedAt,
              completed: facts?.completed,
              trace: span,
              forwarding: {
                clientIp: facts?.remoteAddr?.hostname ?? null,
                proto: scheme,
                host: raw.headers.get("host"),
                requestId: id,
              },
            },
            runtime,
            deps,
          );
        } finally {
          inFlight--;
        }
      }
    }
    const durationMs = now() - startedAt;
    const serviceName = runtime?.config.name ?? null;
    if (serviceName !== null) traffic.record(serviceName, result.response.status, durationMs);
    span?.end({ status: result.response.status, errorType: result.error });
    telemetry.serverRequest({
      method,
      status: result.response.status,
      service: serviceName,
      durationS: durationMs / 1000,
      scheme,
      route: runtime?.config.prefix,
      errorType: result.error,
    });
    if (logger.level === "debug" || logger.level === "info") {
      logger.info(
        "request",
        accessLogEntry({
          method,
          path,
          service: serviceName,
          status: result.response.status,
          durationMs,
          upstream: result.upstream,
          requestId: id,
          breakerState: serviceName === null ? null : breaker.view(serviceName).state,
          error: result.error,
          traceId: span?.traceId,
          spanId: span?.spanId,
        }),
      );
    }
    return result.response;
  });

  const adminApp = createAdminApp({
    breaker,
    telemetry,
    adminToken: env.BREAKWATER_ADMIN_TOKEN ?? null,
    poolUsage,
    traffic,
    upstreams: () =>
      Object.fromEntries(
        [...services.values()].map((runtime) => [
          runtime.config.name,
          runtime.balancer.endpoints.map((endpoint) => ({
            origin: endpoint.origin,
            available: endpoint.available,
            inFlight: endpoint.inFlight,
            ...healthOf(runtime.config.name, endpoint),
          })),
        ]),
      ),
    services: Object.fromEntries(
      [...services.values()].map((runtime) => [runtime.config.name, {
        prefix: runtime.config.prefix,
        failureThreshold: runtime.config.breaker.failureThreshold,
      }]),
    ),
    serviceNames,
    logger,
  });

  let closing: Promise<void> | null = null;
  return {
    app: app as unknown as Hono,
    adminApp,
    ready,
    breaker,
    drain() {
      draining = true;
    },
    inFlight: () => inFlight,
    poolUsage,
    traffic,
    close() {
      closing ??= (async () => {
        draining = true;
        await ready.catch(() => {});
        await Promise.all([...resilience.values()].map((wired) => wired.close()));
        await breaker.close();
        await telemetry.shutdown();
        clients.close();
        options.client?.close();
        deadlines.close();
        kvHandle.close();
      })();
      return closing;
    },
  };
}
