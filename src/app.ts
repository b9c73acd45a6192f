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
import { ConfigError, formatProblem } from "./config/schema.ts";
import { createAdminApp } from "./admin/admin_app.ts";
import { createTrafficStats, type TrafficStats } from "./admin/traffic_stats.ts";
import type { FleetBreaker } from "./breaker/mod.ts";
import {
  buildGeneration,
  closeUnshared,
  type Generation,
  type GenerationShared,
  retireGeneration,
} from "./gateway/generation.ts";
import { createPublicApp } from "./gateway/public_app.ts";
import { planReload } from "./gateway/reload.ts";
import { type Lifecycle, metricsSources, type PoolUsage, readiness } from "./gateway/status.ts";
import { createDeadlineScheduler } from "./proxy/deadlines.ts";
import type { UpstreamClient } from "./proxy/upstream_client.ts";
import { createLogger, createTelemetry, type Logger } from "./telemetry/mod.ts";
import { openGatewayKv } from "./kv.ts";
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
}

/** What a reload did, as `POST /admin/reload` answers it. */
export type ReloadResult =
  | {
    ok: true;
    /** Services routed from now on that were not before. */
    added: string[];
    /** Services no longer routed (their requests in flight finish). */
    removed: string[];
    /** Services with new settings. */
    changed: string[];
    /** Restart-only keys that differ in the file; the running values are kept. */
    ignored: string[];
  }
  | {
    ok: false;
    /** One line per problem, as start-up prints them. */
    problems: string[];
  };

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
  const traffic = createTrafficStats();
  const lifecycle: Lifecycle = { started: false, draining: false };
  const deadlines = createDeadlineScheduler({ now });
  const kvHandle = openGatewayKv(config.kv.path, logger);
  const shared: GenerationShared = {
    instanceId,
    logger,
    telemetry,
    traffic,
    deadlines,
    kv: kvHandle,
    now,
    client: options.client,
    draining: () => lifecycle.draining,
    live: new Set(),
  };
  const closingSignal = new AbortController();

  let current: Generation = buildGeneration(config, null, shared);
  const retiring = new Set<Promise<void>>();
  const ready = current.breaker.start().then(() => {
    lifecycle.started = true;
  });
  // The metrics read the generation in force at each collection.
  telemetry.observe(metricsSources(
    { views: () => current.breaker.views(), degraded: () => current.breaker.degraded() },
    {
      ...current.status,
      poolUsage: () => current.status.poolUsage(),
      upstreams: () => current.status.upstreams(),
    },
  ));

  let reloading: Promise<unknown> = Promise.resolve();
  const reload = (next: GatewayConfig): Promise<ReloadResult & { ok: true }> => {
    const run = reloading.then(async () => {
      await ready.catch(() => {});
      // A closing gateway builds nothing new: its parts are being closed.
      if (closing !== null) throw new Error("the gateway is closing; reload refused");
      const plan = planReload(current.config, next);
      if (plan.ignored.length > 0) {
        logger.warn("config keys need a restart; the running values are kept", {
          keys: plan.ignored,
        });
      }
      const previous = current;
      const built = buildGeneration(plan.config, { previous, plan }, shared);
      // A new breaker loads the fleet's state from KV before it decides for anyone.
      if (built.breaker !== previous.breaker) await built.breaker.start();
      current = built;
      const retired = retireGeneration(previous, shared, closingSignal).finally(() =>
        retiring.delete(retired)
      );
      retiring.add(retired);
      const result = {
        ok: true as const,
        added: plan.added,
        removed: plan.removed,
        changed: plan.changed,
        ignored: plan.ignored,
      };
      logger.info("config reloaded", { ...result });
      return result;
    });
    reloading = run.catch(() => {});
    return run;
  };
  const reloadConfig = async (): Promise<ReloadResult> => {
    if (options.readConfig === undefined) {
      return { ok: false, problems: ["reload is not available: the gateway reads no file"] };
    }
    let next: GatewayConfig;
    try {
      next = options.readConfig();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      const problems = error.problems.map(formatProblem);
      logger.error("config reload refused; the running config keeps serving", { problems });
      for (const problem of problems) logger.error(problem);
      return { ok: false, problems };
    }
    return await reload(next);
  };

  let closing: Promise<void> | null = null;
  const generationAdmin = new WeakMap<Generation, Hono>();
  const adminOf = (generation: Generation): Hono => {
    let app = generationAdmin.get(generation);
    if (app === undefined) {
      app = createAdminApp({
        breaker: generation.breaker,
        telemetry,
        adminToken,
        status: generation.status,
        traffic,
        logger,
        reload: reloadConfig,
      });
      generationAdmin.set(generation, app);
    }
    return app;
  };
  return {
    app: createPublicApp(() => {
      const generation = current;
      return {
        requestPath: generation.requestPath,
        readiness: () => readiness(lifecycle, instanceId, generation.breaker, generation.status),
      };
    }),
    adminApp: createForwardingApp(() => adminOf(current)),
    ready,
    get breaker() {
      return current.breaker;
    },
    get config() {
      return current.config;
    },
    drain() {
      lifecycle.draining = true;
    },
    inFlight: () => [...shared.live].reduce((sum, generation) => sum + generation.inFlight(), 0),
    poolUsage: () => current.status.poolUsage(),
    traffic,
    reload,
    reloadConfig,
    close() {
      lifecycle.draining = true;
      closing ??= ready.catch(() => {}).then(async () => {
        await reloading;
        closingSignal.abort();
        await Promise.all(retiring);
        shared.live.delete(current);
        await closeUnshared(current, []);
        await telemetry.shutdown();
        for (const closable of [options.client, deadlines, kvHandle]) closable?.close();
      });
      return closing;
    },
  };
}

/** A Hono app that hands every request to the app `current()` returns at that moment. */
function createForwardingApp(current: () => Hono): Hono {
  const app = new Hono();
  app.all("*", (c) => current().fetch(c.req.raw, c.env));
  return app;
}
