/**
 * What the request path holds per service: its config and the live parts built from it
 * (`src/gateway/build_service.ts` builds them, complete, before the first request).
 *
 * @module
 */
import type { AttemptOutcome } from "../breaker/types.ts";
import type { ServiceConfig } from "../config/schema.ts";
import type { RetryBudget } from "../retry/policy.ts";
import type { Balancer, UpstreamEndpoint } from "./balancer.ts";
import type { Limiter } from "./limiter.ts";
import type { UpstreamClient } from "./upstream_client.ts";

/** Everything the gateway keeps per service at run time. */
export interface ServiceRuntime {
  /** The service's validated config. */
  readonly config: ServiceConfig;
  /** Speaks HTTP to this service's upstreams (its `upstreamClient`, its own pools). */
  readonly client: UpstreamClient;
  /** Spreads attempts over the upstreams (upstreams out of rotation skipped). */
  readonly balancer: Balancer;
  /** Bounds concurrent upstream requests of this service. */
  readonly limiter: Limiter;
  /** Caps retries to a share of recent traffic. */
  readonly retryBudget: RetryBudget;
  /**
   * Hears each attempt the upstream is to blame or credit for (outlier detection, adaptive
   * limit); never an attempt that says nothing about the upstream.
   */
  onAttempt(endpoint: UpstreamEndpoint, outcome: AttemptOutcome): void;
}
