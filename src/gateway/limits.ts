/**
 * Limits the gateway derives from its services' settings rather than reading them directly.
 * Pure, so each rule is a unit test.
 *
 * @module
 */
import type { GatewayConfig } from "../config/schema.ts";
import type { LimiterOptions } from "../proxy/limiter.ts";

/** What {@link deriveLimits} decides. */
export interface DerivedLimits {
  /**
   * The gateway-wide in-flight cap: `limits.maxConnections` slots; as many waiters as all
   * services may queue together; the longest wait any service allows.
   */
  global: LimiterOptions;
  /**
   * How long a half-open probe's lease lasts: the longest `timeoutMs` plus 5 s, because a
   * lease must outlive the probe itself or a second probe could start meanwhile.
   */
  probeLeaseMs: number;
}

/**
 * Derives the gateway-wide limits from the config.
 *
 * @example
 * ```ts
 * deriveLimits(config).global; // { limit: 100, maxPending: 200, queueTimeoutMs: 1000 }
 * ```
 */
export function deriveLimits(config: GatewayConfig): DerivedLimits {
  const services = Object.values(config.services);
  return {
    global: {
      limit: config.limits.maxConnections,
      maxPending: services.reduce((sum, service) => sum + service.pool.maxPending, 0),
      queueTimeoutMs: Math.max(...services.map((service) => service.pool.queueTimeoutMs)),
    },
    probeLeaseMs: Math.max(...services.map((service) => service.timeoutMs)) + 5000,
  };
}
