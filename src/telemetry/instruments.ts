/**
 * The gateway's instruments (INTERFACE.md, "Metrics") and cheap functions to record them.
 *
 * Recording sits on the request path, so attribute objects are built once per distinct
 * combination and reused: the SDK then only hashes them, with no allocation of ours.
 *
 * @module
 */
import type { Attributes, Meter } from "@opentelemetry/api";

/**
 * Bucket boundaries (seconds) of both request-duration histograms: 100 us (an answer the
 * gateway makes itself) to 60 s (a long upstream call), denser where proxied calls land.
 */
export const REQUEST_DURATION_BUCKETS_S: readonly number[] = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.25,
  0.5,
  0.75,
  1,
  2.5,
  5,
  7.5,
  10,
  30,
  60,
];

/** Attribute names, as in the OpenTelemetry HTTP semantic conventions and INTERFACE.md. */
export const ATTR = {
  method: "http.request.method",
  status: "http.response.status_code",
  service: "breakwater.service",
  serverAddress: "server.address",
  serverPort: "server.port",
  errorType: "error.type",
  reason: "reason",
  from: "from",
  to: "to",
} as const;

/** Methods kept as they are; any other becomes `_OTHER` (semantic conventions; bounds cardinality). */
const KNOWN_METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
]);

/** `get`/`GET` -> `GET`; `PURGE` -> `_OTHER`. */
export function normalizeMethod(method: string): string {
  if (KNOWN_METHODS.has(method)) return method;
  const upper = method.toUpperCase();
  return KNOWN_METHODS.has(upper) ? upper : "_OTHER";
}

/**
 * `breakwater.breaker.state` value of a breaker state: 0 closed, 1 half-open, 2 open
 * (`forced_open` counts as open, `forced_closed` as closed); null for an unknown state.
 */
export function breakerStateValue(state: string): number | null {
  switch (state) {
    case "closed":
    case "forced_closed":
      return 0;
    case "half_open":
    case "half-open":
      return 1;
    case "open":
    case "forced_open":
      return 2;
    default:
      return null;
  }
}

/** Live values read at collection time by the observable gauges. */
export interface ObservedSources {
  /** Every service's breaker state (`closed`, `open`, `half_open`, `forced_open`, `forced_closed`). */
  breakerStates: () => Array<{ service: string; state: string }>;
  /**
   * Every service's pool: requests in flight (`active`), waiting (`pending`) and the in-flight
   * limit (`max`). Read at collection time, so the request path pays nothing for pool metrics.
   */
  pools: () => Array<{ service: string; active: number; pending: number; max: number }>;
}

/** What the request path calls; every function is synchronous and allocation-light. */
export interface GatewayRecorders {
  /** One finished request on the public port (`http.server.request.duration`). */
  serverRequest(
    a: { method: string; status: number; service: string | null; durationS: number },
  ): void;
  /** One upstream attempt (`http.client.request.duration`): a status, or an error type. */
  clientAttempt(
    a: {
      service: string;
      address: string;
      port: number;
      status?: number;
      errorType?: string;
      durationS: number;
    },
  ): void;
  /** A request the gateway answered itself (`breakwater.requests.rejected`). */
  rejected(service: string | null, reason: string): void;
  /** A retried upstream attempt (`breakwater.retries`). */
  retry(service: string): void;
  /** A breaker state change (`breakwater.breaker.transitions`). */
  breakerTransition(service: string, from: string, to: string): void;
  /**
   * Sets (or replaces) the sources of `breakwater.breaker.state`, `breakwater.pool.active`,
   * `breakwater.pool.pending` and `breakwater.pool.usage`.
   */
  observe(sources: ObservedSources): void;
}

/** Above this many cached attribute sets per cache, new combinations are built per call. */
const MAX_CACHED_ATTRIBUTE_SETS = 10_000;

/** A string-keyed attribute cache with a size bound. */
function attributeCache<A extends unknown[]>(
  keyOf: (...args: A) => string,
  build: (...args: A) => Attributes,
): (...args: A) => Attributes {
  const cache = new Map<string, Attributes>();
  return (...args: A) => {
    const key = keyOf(...args);
    let attributes = cache.get(key);
    if (attributes === undefined) {
      attributes = Object.freeze(build(...args));
      if (cache.size < MAX_CACHED_ATTRIBUTE_SETS) cache.set(key, attributes);
    }
    return attributes;
  };
}

function serviceAttributes(service: string | null): Attributes {
  return service === null ? {} : { [ATTR.service]: service };
}

/**
 * Creates every instrument of INTERFACE.md's table on `meter` and returns the recorders.
 * `serviceNames` get their zero-valued series up front, so `rate()` works from the first scrape.
 */
export function createGatewayRecorders(meter: Meter, serviceNames: string[]): GatewayRecorders {
  const serverDuration = meter.createHistogram("http.server.request.duration", {
    unit: "s",
    description: "Duration of requests on the public port, gateway answers included",
    advice: { explicitBucketBoundaries: [...REQUEST_DURATION_BUCKETS_S] },
  });
  const clientDuration = meter.createHistogram("http.client.request.duration", {
    unit: "s",
    description: "Duration of each attempt to an upstream",
    advice: { explicitBucketBoundaries: [...REQUEST_DURATION_BUCKETS_S] },
  });
  const rejectedCounter = meter.createCounter("breakwater.requests.rejected", {
    unit: "{request}",
    description: "Requests the gateway answered itself, by x-breakwater-error reason",
  });
  const retriesCounter = meter.createCounter("breakwater.retries", {
    unit: "{retry}",
    description: "Upstream attempts that were retries",
  });
  const transitionsCounter = meter.createCounter("breakwater.breaker.transitions", {
    unit: "{transition}",
    description: "Breaker state changes seen by this instance",
  });
  let sources: ObservedSources | null = null;
  // Asynchronous up-down counters: the limiter already knows these numbers, so they are read at
  // collection time instead of being counted on every request (measured ~0.8 us per request).
  meter.createObservableUpDownCounter("breakwater.pool.active", {
    unit: "{request}",
    description: "Requests in flight to the service's upstreams",
  }).addCallback((result) => {
    for (const pool of sources?.pools() ?? []) {
      result.observe(pool.active, forService(pool.service));
    }
  });
  meter.createObservableUpDownCounter("breakwater.pool.pending", {
    unit: "{request}",
    description: "Requests waiting for a free slot in the service's pool",
  }).addCallback((result) => {
    for (const pool of sources?.pools() ?? []) {
      result.observe(pool.pending, forService(pool.service));
    }
  });
  meter.createObservableGauge("breakwater.breaker.state", {
    unit: "{state}",
    description: "Breaker state: 0 closed, 1 half-open, 2 open",
  }).addCallback((result) => {
    if (sources === null) return;
    for (const { service, state } of sources.breakerStates()) {
      const value = breakerStateValue(state);
      if (value !== null) result.observe(value, forService(service));
    }
  });
  meter.createObservableGauge("breakwater.pool.usage", {
    unit: "1",
    description: "Requests in flight / pool.maxConnections",
  }).addCallback((result) => {
    if (sources === null) return;
    for (const { service, active, max } of sources.pools()) {
      if (max > 0) result.observe(active / max, forService(service));
    }
  });

  const forService = attributeCache((service: string) => service, serviceAttributes);
  const rejectedAttributes = attributeCache(
    (service: string | null, reason: string) => `${service ?? ""}\n${reason}`,
    (service, reason) => ({ ...serviceAttributes(service), [ATTR.reason]: reason }),
  );
  const transitionAttributes = attributeCache(
    (service: string, from: string, to: string) => `${service}\n${from}\n${to}`,
    (service, from, to) => ({ [ATTR.service]: service, [ATTR.from]: from, [ATTR.to]: to }),
  );
  const clientAttributes = attributeCache(
    (service: string, address: string, port: number, status?: number, errorType?: string) =>
      `${service}\n${address}\n${port}\n${status ?? ""}\n${errorType ?? ""}`,
    (service, address, port, status, errorType) => {
      const attributes: Attributes = {
        [ATTR.service]: service,
        [ATTR.serverAddress]: address,
        [ATTR.serverPort]: port,
      };
      if (status !== undefined) attributes[ATTR.status] = status;
      if (errorType !== undefined) attributes[ATTR.errorType] = errorType;
      else if (status === undefined) attributes[ATTR.errorType] = "_OTHER";
      return attributes;
    },
  );

  // The hottest path: service -> raw method -> status, no string building per call.
  const serverCache = new Map<string | null, Map<string, Attributes[]>>();
  let serverCacheEntries = 0;
  function serverAttributes(method: string, status: number, service: string | null): Attributes {
    const cacheable = serverCacheEntries < MAX_CACHED_ATTRIBUTE_SETS;
    let byMethod = serverCache.get(service);
    if (byMethod === undefined) {
      byMethod = new Map();
      if (cacheable) {
        serverCache.set(service, byMethod);
        serverCacheEntries++;
      }
    }
    let byStatus = byMethod.get(method);
    if (byStatus === undefined) {
      byStatus = [];
      if (cacheable) {
        byMethod.set(method, byStatus);
        serverCacheEntries++;
      }
    }
    let attributes = byStatus[status];
    if (attributes === undefined) {
      attributes = Object.freeze({
        [ATTR.method]: normalizeMethod(method),
        [ATTR.status]: status,
        ...serviceAttributes(service),
      });
      if (cacheable && Number.isInteger(status) && status >= 100 && status <= 599) {
        byStatus[status] = attributes;
        serverCacheEntries++;
      }
    }
    return attributes;
  }

  for (const service of serviceNames) {
    retriesCounter.add(0, forService(service));
  }

  return {
    serverRequest({ method, status, service, durationS }) {
      serverDuration.record(durationS, serverAttributes(method, status, service));
    },
    clientAttempt({ service, address, port, status, errorType, durationS }) {
      clientDuration.record(durationS, clientAttributes(service, address, port, status, errorType));
    },
    rejected(service, reason) {
      rejectedCounter.add(1, rejectedAttributes(service, reason));
    },
    retry(service) {
      retriesCounter.add(1, forService(service));
    },
    breakerTransition(service, from, to) {
      transitionsCounter.add(1, transitionAttributes(service, from, to));
    },
    observe(next) {
      sources = next;
    },
  };
}
