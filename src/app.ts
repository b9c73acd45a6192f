/**
 * Wires the gateway together: config in, a public Hono app, an admin Hono app, `reload()` and
 * `close()` out. Nothing here listens, reads files or handles signals (that is `main.ts`), so
 * the same gateway runs embedded in another Hono app or on an edge runtime.
 *
 * Each part is built by a small builder of its own: the services (`gateway/build_service.ts`),
 * the limits derived from them (`gateway/limits.ts`), the status views (`gateway/status.ts`),
 * the request path (`proxy/request_path.ts`) and the apps (`gateway/public_app.ts`,
 * `admin/admin_app.ts`).
 *
 * Everything that depends on the services lives in one immutable generation
 * (`gateway/generation.ts`) behind a single reference; each request reads it once, so a reload
 * swaps the reference and requests in flight finish on the generation they started with (as
 * nginx's old workers finish their requests after `-s reload`).
 *
 * @module
 */
import { Hono } from "hono";
import type { GatewayConfig } from "./config/schema.ts";
import { createAdminApp } from "./admin/admin_app.ts";
import { createTrafficStats, type TrafficStats } from "./admin/traffic_stats.ts";
import type { FleetBreaker } from "./breaker/mod.ts";
import {
  buildGeneration,
  closeUnshared,
  type Generation,
  type GenerationShared,
} from "./gateway/generation.ts";
import { createReloader, type GenerationCell, type ReloadResult } from "./gateway/reloader.ts";
import { createPublicApp } from "./gateway/public_app.ts";
import { type Lifecycle, metricsSources, type PoolUsage, readiness } from "./gateway/status.ts";
import { createDeadlineScheduler } from "./proxy/deadlines.ts";
import type { UpstreamClient } from "./proxy/upstream_client.ts";
import { createWebSocketSessions, type WebSocketSessions } from "./proxy/websocket_sessions.ts";
import { createLogger, createTelemetry, type Logger } from "./telemetry/mod.ts";
import { openGatewayKv } from "./kv.ts";
import { createKvLender } from "./breaker/mod.ts";
import { createFleetRetryBudgets } from "./retry/mod.ts";
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
  /**
   * Reads and validates the config again for {@link Gateway.reloadConfig} (SIGHUP and
   * `POST /admin/reload`); throws {@link ConfigError} for an invalid one. Without it, those
   * answer that reload is not available (an embedded gateway reloads with `reload(config)`).
   */
  readConfig?: () => GatewayConfig;
  /**
   * Builds each generation's breaker instead of the fleet breaker on KV: a worker's mirror of
   * the instance's one breaker (README, "Workers"). Nothing opens KV then.
   */
  breakerFactory?: (config: GatewayConfig) => FleetBreaker;
  /** Where per-service traffic is recorded (default: a new {@link TrafficStats}). */
  traffic?: TrafficStats;
  /** Wraps each service's health probe (one prober for all workers; README, "Workers"). */
  probeThrough?: GenerationShared["probeThrough"];
}

export type { ReloadResult } from "./gateway/reloader.ts";

/** A running gateway: two Hono apps and its lifecycle. */
export interface Gateway {
  /** The public app: health routes and forwarding. */
  app: Hono;
  /** The admin app: breakers, metrics, dashboard, reload. */
  adminApp: Hono;
  /** Resolves once the fleet's breaker state was loaded and the gateway is ready to serve. */
  ready: Promise<void>;
  /** Starts draining: `/readyz` turns 503 and new requests are answered 503 `draining`. */
  drain(): void;
  /** Requests in flight through the public app right now (every generation). */
  inFlight(): number;
  /**
   * Resolves once no upgraded (WebSocket) connection is open. A drain closes them with 1001
   * through the server's shutdown; this waits for each session's end to be recorded (its
   * access-log line) before the gateway is closed.
   */
  websocketsClosed(): Promise<void>;
  /** The fleet breaker of the config in force (for the admin API and tests). */
  readonly breaker: FleetBreaker;
  /** The config in force. */
  readonly config: GatewayConfig;
  /** Pool usage per service. */
  poolUsage(): Record<string, PoolUsage>;
  /** Per-service traffic of the last minutes (this instance). */
  traffic: TrafficStats;
  /**
   * Swaps in a validated config: new services are routed, removed ones drain, changed ones
   * take their new settings; unchanged services keep their runtime and pools. Reloads run one
   * at a time.
   */
  reload(config: GatewayConfig): Promise<ReloadResult & { ok: true }>;
  /**
   * Reads the config through `options.readConfig` and reloads it; an invalid one is refused
   * (its problems logged one per line) and the running config keeps serving.
   */
  reloadConfig(): Promise<ReloadResult>;
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
 * // later, with a new config object:
 * await gateway.reload(nextConfig);
 * ```
 */
export function createGateway(config: GatewayConfig, options: GatewayOptions = {}): Gateway {
  const adminToken = (options.env ?? Deno.env.toObject()).BREAKWATER_ADMIN_TOKEN ?? null;
  const lifecycle: Lifecycle = { started: false, draining: false };
  const shared = createShared(config, options, lifecycle);
  const { telemetry, traffic, logger, instanceId } = shared;
  const closingSignal = new AbortController();
  const cell: GenerationCell = { current: buildGeneration(config, null, shared) };
  const ready = cell.current.breaker.start().then(() => {
    lifecycle.started = true;
  });
  observeCurrent(telemetry, cell, shared.websockets);
  const reloader = createReloader({
    cell,
    shared,
    ready,
    closing: closingSignal.signal,
    readConfig: options.readConfig,
    logger,
  });
  const adminOf = adminAppsOf(
    { telemetry, adminToken, traffic, logger },
    reloader.reloadConfig,
  );

  let closing: Promise<void> | null = null;
  return {
    app: createPublicApp(() => {
      const generation = cell.current;
      return {
        requestPath: generation.requestPath,
        readiness: () => readiness(lifecycle, instanceId, generation.breaker, generation.status),
      };
    }),
    adminApp: createForwardingApp(() => adminOf(cell.current)),
    ready,
    get breaker() {
      return cell.current.breaker;
    },
    get config() {
      return cell.current.config;
    },
    drain() {
      lifecycle.draining = true;
    },
    inFlight: () => [...shared.live].reduce((sum, generation) => sum + generation.inFlight(), 0),
    websocketsClosed: () => shared.websockets?.allClosed() ?? Promise.resolve(),
    poolUsage: () => cell.current.status.poolUsage(),
    traffic,
    reload: reloader.reload,
    reloadConfig: reloader.reloadConfig,
    close() {
      lifecycle.draining = true;
      closing ??= ready.catch(() => {}).then(async () => {
        await reloader.settled();
        closingSignal.abort();
        await reloader.retired();
        shared.live.delete(cell.current);
        await closeUnshared(cell.current, []);
        await telemetry.shutdown();
        for (const closable of [options.client, shared.deadlines, shared.kv]) closable?.close();
      });
      return closing;
    },
  };
}

/** The parts every generation shares: telemetry, traffic, the KV handle, deadlines, clocks. */
function createShared(
  config: GatewayConfig,
  options: GatewayOptions,
  lifecycle: Lifecycle,
): GenerationShared {
  const instanceId = options.instanceId ?? crypto.randomUUID();
  const logger = options.logger ?? createLogger();
  const now = options.now ?? (() => performance.now());
  const kv = openGatewayKv(config.kv.path, logger);
  return {
    instanceId,
    logger,
    telemetry: createTelemetry({
      serviceNames: Object.keys(config.services),
      prometheus: config.telemetry.prometheus,
      otlp: config.telemetry.otlp,
      instanceId,
      version: VERSION,
      logger: (line) => logger.warn(String(line.msg ?? "telemetry"), line),
    }),
    traffic: options.traffic ?? createTrafficStats(),
    deadlines: createDeadlineScheduler({ now }),
    kv,
    lendKv: createKvLender(() => kv.open()),
    retryBudgets: createFleetRetryBudgets(),
    now,
    client: options.client,
    breakerFactory: options.breakerFactory,
    probeThrough: options.probeThrough,
    draining: () => lifecycle.draining,
    websockets: createWebSocketSessions(),
    live: new Set(),
  };
}

/** The metrics read the generation in force at each collection. */
function observeCurrent(
  telemetry: GenerationShared["telemetry"],
  cell: GenerationCell,
  websockets?: WebSocketSessions,
): void {
  const sources = metricsSources(
    { views: () => cell.current.breaker.views(), degraded: () => cell.current.breaker.degraded() },
    {
      ...cell.current.status,
      poolUsage: () => cell.current.status.poolUsage(),
      upstreams: () => cell.current.status.upstreams(),
    },
  );
  telemetry.observe(websockets ? { ...sources, websockets: () => websockets.open() } : sources);
}

/** One admin app per generation (the dashboard reads its status views once, when built). */
function adminAppsOf(
  parts: {
    telemetry: GenerationShared["telemetry"];
    adminToken: string | null;
    traffic: TrafficStats;
    logger: Logger;
  },
  reload: () => Promise<ReloadResult>,
): (generation: Generation) => Hono {
  const apps = new WeakMap<Generation, Hono>();
  return (generation) => {
    let app = apps.get(generation);
    if (app === undefined) {
      app = createAdminApp({
        breaker: generation.breaker,
        status: generation.status,
        reload,
        ...parts,
      });
      apps.set(generation, app);
    }
    return app;
  };
}

/** A Hono app that hands every request to the app `current()` returns at that moment. */
function createForwardingApp(current: () => Hono): Hono {
  const app = new Hono();
  app.all("*", (c) => current().fetch(c.req.raw, c.env));
  return app;
}
