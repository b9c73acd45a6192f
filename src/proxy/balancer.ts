/**
 * Spreads a service's requests across its upstreams: least in-flight first, ties broken
 * round-robin, upstreams that health checks or outlier detection took out skipped.
 *
 * @module
 */

/** One upstream of a service and its live counters. */
export interface UpstreamEndpoint {
  /** The origin from the config, e.g. `http://127.0.0.1:9001`. */
  origin: string;
  /** Host name or address, for metrics (`server.address`). */
  address: string;
  /** Port, for metrics (`server.port`). */
  port: number;
  /** Requests in flight to it from this instance. */
  inFlight: number;
  /** False while health checks or outlier ejection keep it out of rotation. */
  available: boolean;
}

/** Picks the upstream for the next attempt. */
export interface Balancer {
  /** All upstreams of the service (live objects; counters are updated by the caller). */
  readonly endpoints: readonly UpstreamEndpoint[];
  /**
   * The least-loaded available upstream, skipping `exclude` (the one a retry just failed on)
   * when another exists. When none is available, every upstream is a candidate again: sending
   * to a possibly-bad upstream beats refusing all traffic (the breaker guards that case).
   */
  pick(exclude?: UpstreamEndpoint): UpstreamEndpoint;
}

/** Describes an origin for metrics. */
export function endpointOf(origin: string): UpstreamEndpoint {
  const url = new URL(origin);
  const port = url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  return { origin: url.origin, address: url.hostname, port, inFlight: 0, available: true };
}

/** Options of {@link createBalancer}. */
export interface BalancerOptions {
  /**
   * Runs before each pick: outlier detection ends expired ejections here, so an upstream comes
   * back on the first pick after its time without a timer of its own.
   */
  beforePick?: () => void;
}

/**
 * Creates a balancer over a service's upstreams.
 *
 * @example
 * ```ts
 * const balancer = createBalancer(["http://10.0.0.1:80", "http://10.0.0.2:80"].map(endpointOf));
 * const endpoint = balancer.pick();
 * ```
 */
export function createBalancer(
  endpoints: readonly UpstreamEndpoint[],
  options: BalancerOptions = {},
): Balancer {
  const { beforePick } = options;
  let next = 0;
  return {
    endpoints,
    pick(exclude) {
      beforePick?.();
      if (endpoints.length === 1) return endpoints[0];
      const start = next;
      next = (next + 1) % endpoints.length;
      let best: UpstreamEndpoint | null = null;
      let fallback: UpstreamEndpoint | null = null;
      for (let i = 0; i < endpoints.length; i++) {
        const endpoint = endpoints[(start + i) % endpoints.length];
        if (endpoint === exclude) {
          fallback ??= endpoint;
          continue;
        }
        if (!endpoint.available) continue;
        if (best === null || endpoint.inFlight < best.inFlight) best = endpoint;
      }
      if (best !== null) return best;
      // Everything is out of rotation: least-loaded of all, then the excluded one.
      let any: UpstreamEndpoint | null = null;
      for (const endpoint of endpoints) {
        if (endpoint === exclude) continue;
        if (any === null || endpoint.inFlight < any.inFlight) any = endpoint;
      }
      return any ?? fallback ?? endpoints[0];
    },
  };
}
