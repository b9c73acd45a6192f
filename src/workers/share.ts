/**
 * One worker's share of the instance's limits. Each worker has its own pools and limiters (a
 * limiter is a counter in one isolate's memory), so the configured totals are split evenly and
 * the instance as a whole keeps to them.
 *
 * @module
 */
import type { GatewayConfig } from "../config/schema.ts";

/** `total / workers` rounded down, at least 1 (a worker with no slot could serve nothing). */
export function shareOf(total: number, workers: number): number {
  return Math.max(1, Math.floor(total / workers));
}

/**
 * The config one of `workers` workers runs with: `limits.maxConnections`,
 * `limits.maxClientConnections` and each service's `pool.maxConnections`, `pool.maxPending`,
 * `websocket.maxConnections` and `websocket.maxConnectionsPerClient` divided by `workers` (at
 * least 1 each, so with fewer slots than workers the instance allows one per worker).
 * Everything else is the instance's config.
 *
 * @example
 * ```ts
 * workerShare(config, 2).services.users.pool.maxConnections; // 10 of 20
 * ```
 */
export function workerShare(config: GatewayConfig, workers: number): GatewayConfig {
  if (workers === 1) return config;
  const services = Object.fromEntries(
    Object.entries(config.services).map(([name, service]) => [name, {
      ...service,
      pool: {
        ...service.pool,
        maxConnections: shareOf(service.pool.maxConnections, workers),
        maxPending: shareOf(service.pool.maxPending, workers),
      },
      // Upgraded connections are counted per worker too. The per-client bound is split like
      // the cap it guards: whole, each worker's share of the cap (1000 / 16 = 62) would sit
      // under it (100) and one client could again hold every slot.
      websocket: {
        ...service.websocket,
        maxConnections: shareOf(service.websocket.maxConnections, workers),
        maxConnectionsPerClient: shareOf(service.websocket.maxConnectionsPerClient, workers),
      },
    }]),
  );
  return {
    ...config,
    limits: {
      ...config.limits,
      maxConnections: shareOf(config.limits.maxConnections, workers),
      maxClientConnections: config.limits.maxClientConnections === null
        ? null
        : shareOf(config.limits.maxClientConnections, workers),
    },
    services,
  };
}
