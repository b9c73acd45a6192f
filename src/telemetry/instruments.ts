/**
 * The gateway's request-path instruments (README, "Telemetry") and cheap functions to record
 * them.
 *
 * Recording sits on the request path, so attribute objects are built once per distinct
 * combination and reused: the SDK then only hashes them (the counters), with no allocation of
 * ours; the two request-duration histograms are aggregated in process on the series cached
 * beside each set (`./local_histograms.ts`), with no hashing at all.
 *
 * @module
 */
import type { Attributes, Counter, Meter, Observable } from "@opentelemetry/api";
import {
  createLocalHistogram,
  type HistogramCell,
  type LocalHistogram,
  recordValue,
} from "./local_histograms.ts";

// deno-fmt-ignore -- a table of numbers reads better on a few lines than one per line
/**
 * Bucket boundaries (seconds) of both request-duration histograms: 100 us (an answer the
 * gateway makes itself) to 60 s (a long upstream call), denser where proxied calls land.
 */
export const REQUEST_DURATION_BUCKETS_S: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
  1, 2.5, 5, 7.5, 10, 30, 60
];

/** Attribute names: the OpenTelemetry HTTP semantic conventions' and the gateway's own. */
export const ATTR = {
  method: "http.request.method",
  status: "http.response.status_code",
  service: "breakwater.service",
  serverAddress: "server.address",
  serverPort: "server.port",
  errorType: "error.type",
  scheme: "url.scheme",
  route: "http.route",
  upstream: "breakwater.upstream",
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
 * `breakwater.breaker.state` value of a breaker state: 0 closed, 1 half-open, 2 open,
 * 3 forced_open, 4 forced_closed (an operator's override is visible as such); null for an
 * unknown state.
 */
export function breakerStateValue(state: string): number | null {
  switch (state) {
    case "closed":
      return 0;
    case "half_open":
    case "half-open":
      return 1;
    case "open":
      return 2;
    case "forced_open":
      return 3;
    case "forced_closed":
      return 4;
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
  /** `breakwater.kv.degraded`: true while this instance runs on local breakers (KV trouble). */
  kvDegraded?: () => boolean;
  /**
   * `breakwater.upstream.available`: every upstream of every service, by its configured
   * origin, and whether the balancer may pick it (health checks, outlier ejection).
   */
  upstreams?: () => Array<{ service: string; upstream: string; available: boolean }>;
  /** `breakwater.websocket.open`: upgraded WebSocket connections open per service. */
  websockets?: () => Array<{ service: string; open: number }>;
}

/** One finished request on the public port. */
export interface ServerRequestRecord {
  /** The method as received (normalised to the semantic conventions' set, else `_OTHER`). */
  method: string;
  /** Status sent to the client. */
  status: number;
  /** The service that owned the path, or null (no route). */
  service: string | null;
  /** Time from request to response head, in seconds. */
  durationS: number;
  /** `url.scheme`: `http` or `https` as the client spoke to the gateway. */
  scheme?: string;
  /** `http.route`: the matched service prefix (e.g. `/api/users`); never the raw path. */
  route?: string;
  /**
   * `error.type` of an answer the gateway made itself: its `x-breakwater-error` code
   * (`breaker_open`, `pool_saturated`, ...). Unset when the upstream answered, whatever the
   * status, so an upstream's own 503 and the gateway's breaker_open 503 stay apart.
   */
  errorType?: string;
}

/** One upstream attempt. */
export interface ClientAttemptRecord {
  /** The service the attempt was for. */
  service: string;
  /** `server.address` of the upstream. */
  address: string;
  /** `server.port` of the upstream. */
  port: number;
  /** `http.request.method` sent upstream (normalised like the server's). */
  method?: string;
  /** The upstream's status, when it answered. */
  status?: number;
  /** Why no usable answer came (`unreachable`, `timeout`, ...). */
  errorType?: string;
  /** Attempt duration in seconds. */
  durationS: number;
}

/** What the request path calls; every function is synchronous and allocation-light. */
export interface GatewayRecorders {
  /** One finished request on the public port (`http.server.request.duration`). */
  serverRequest(a: ServerRequestRecord): void;
  /** One upstream attempt (`http.client.request.duration`): a status, or an error type. */
  clientAttempt(a: ClientAttemptRecord): void;
  /** A request the gateway answered itself (`breakwater.requests.rejected`). */
  rejected(service: string | null, reason: string): void;
  /** A retried upstream attempt (`breakwater.retries`). */
  retry(service: string): void;
  /** A breaker state change (`breakwater.breaker.transitions`). */
  breakerTransition(service: string, from: string, to: string): void;
  /**
   * Sets (or replaces) the sources of the gauges read at collection time:
   * `breakwater.breaker.state`, `breakwater.pool.active`, `.pending`, `.usage`, `.limit`,
   * `breakwater.kv.degraded` and `breakwater.upstream.available`.
   */
  observe(sources: ObservedSources): void;
  /** The sources last given to {@link GatewayRecorders.observe}, or null. */
  sources(): ObservedSources | null;
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

/** One level of an {@link AttributeTree}: children by key, and the set cached at this path. */
interface TreeNode {
  children: Map<unknown, TreeNode>;
  value: Attributes | undefined;
  /** The series of `value` in its request-duration histogram, once recorded on. */
  cell?: HistogramCell;
}

/** Attribute sets cached by a path of raw values, bounded like {@link attributeCache}. */
interface AttributeTree {
  root: TreeNode;
  /** The child of `parent` at `key` (a detached, uncached node once the bound is reached). */
  node(parent: TreeNode, key: unknown): TreeNode;
}

function createAttributeTree(): AttributeTree {
  let entries = 0;
  return {
    root: { children: new Map(), value: undefined },
    node(parent, key) {
      let child = parent.children.get(key);
      if (child === undefined) {
        child = { children: new Map(), value: undefined };
        if (entries < MAX_CACHED_ATTRIBUTE_SETS) {
          parent.children.set(key, child);
          entries++;
        }
      }
      return child;
    },
  };
}

function buildServerAttributes(a: ServerRequestRecord): Attributes {
  const attributes: Attributes = {
    [ATTR.method]: normalizeMethod(a.method),
    [ATTR.status]: a.status,
    ...serviceAttributes(a.service),
  };
  if (a.scheme !== undefined) attributes[ATTR.scheme] = a.scheme;
  if (a.route !== undefined) attributes[ATTR.route] = a.route;
  if (a.errorType !== undefined) attributes[ATTR.errorType] = a.errorType;
  return attributes;
}

function buildClientAttributes(a: ClientAttemptRecord): Attributes {
  const attributes: Attributes = {
    [ATTR.service]: a.service,
    [ATTR.serverAddress]: a.address,
    [ATTR.serverPort]: a.port,
  };
  if (a.method !== undefined) attributes[ATTR.method] = normalizeMethod(a.method);
  if (a.status !== undefined) attributes[ATTR.status] = a.status;
  if (a.errorType !== undefined) attributes[ATTR.errorType] = a.errorType;
  else if (a.status === undefined) attributes[ATTR.errorType] = "_OTHER";
  return attributes;
}

const SERVER_DURATION_DESCRIPTION =
  "Duration of requests on the public port, gateway answers included";
const CLIENT_DURATION_DESCRIPTION = "Duration of each attempt to an upstream";

/** The SDK counters the request path records on (the durations are aggregated in process). */
interface RequestInstruments {
  rejected: Counter;
  retries: Counter;
  transitions: Counter;
}

/** The counters, in the order they have always been created (export order). */
function createRequestInstruments(meter: Meter): RequestInstruments {
  return {
    rejected: meter.createCounter("breakwater.requests.rejected", {
      unit: "{request}",
      description: "Requests the gateway answered itself, by x-breakwater-error reason",
    }),
    retries: meter.createCounter("breakwater.retries", {
      unit: "{retry}",
      description: "Upstream attempts that were retries",
    }),
    transitions: meter.createCounter("breakwater.breaker.transitions", {
      unit: "{transition}",
      description: "Breaker state changes seen by this instance",
    }),
  };
}

/** One service's pool as {@link ObservedSources.pools} reports it. */
type PoolSample = ReturnType<ObservedSources["pools"]>[number];

/**
 * Observes one value per pool on `instrument` at collection time; `valueOf` returns null to
 * leave a pool out.
 */
function observePools(
  instrument: Observable,
  sources: () => ObservedSources | null,
  forService: (service: string) => Attributes,
  valueOf: (pool: PoolSample) => number | null,
): void {
  instrument.addCallback((result) => {
    for (const pool of sources()?.pools() ?? []) {
      const value = valueOf(pool);
      if (value !== null) result.observe(value, forService(pool.service));
    }
  });
}

/**
 * The gauges read at collection time: the limiter and the breakers already know these
 * numbers, so they are read then instead of being counted on every request (measured ~0.8 us
 * per request). Created in the order they have always been (export order).
 */
function registerObservedGauges(
  meter: Meter,
  sources: () => ObservedSources | null,
  forService: (service: string) => Attributes,
): void {
  observePools(
    meter.createObservableUpDownCounter("breakwater.pool.active", {
      unit: "{request}",
      description: "Requests in flight to the service's upstreams",
    }),
    sources,
    forService,
    (pool) => pool.active,
  );
  observePools(
    meter.createObservableUpDownCounter("breakwater.pool.pending", {
      unit: "{request}",
      description: "Requests waiting for a free slot in the service's pool",
    }),
    sources,
    forService,
    (pool) => pool.pending,
  );
  meter.createObservableGauge("breakwater.breaker.state", {
    unit: "{state}",
    description: "Breaker state: 0 closed, 1 half-open, 2 open, 3 forced open, 4 forced closed",
  }).addCallback((result) => {
    for (const { service, state } of sources()?.breakerStates() ?? []) {
      const value = breakerStateValue(state);
      if (value !== null) result.observe(value, forService(service));
    }
  });
  observePools(
    meter.createObservableGauge("breakwater.pool.usage", {
      unit: "1",
      description: "Requests in flight / pool.maxConnections",
    }),
    sources,
    forService,
    ({ active, max }) => max > 0 ? active / max : null,
  );
  observePools(
    meter.createObservableGauge("breakwater.pool.limit", {
      unit: "{request}",
      description: "In-flight limit of the service's pool (moves with adaptive concurrency)",
    }),
    sources,
    forService,
    (pool) => pool.max,
  );
  meter.createObservableUpDownCounter("breakwater.websocket.open", {
    unit: "{connection}",
    description: "Upgraded WebSocket connections open to the service's upstreams",
  }).addCallback((result) => {
    for (const { service, open } of sources()?.websockets?.() ?? []) {
      result.observe(open, forService(service));
    }
  });
}

/**
 * Attribute sets cached by a path of six raw values. The hottest paths: nested maps keyed by
 * the raw values, so a recording builds no string and no object (the keys are arguments, not
 * an array) once its combination was seen; `build` makes the set the first time.
 */
function pathCachedAttributes<R>(
  build: (record: R) => Attributes,
): (
  record: R,
  k1: unknown,
  k2: unknown,
  k3: unknown,
  k4: unknown,
  k5: unknown,
  k6: unknown,
) => TreeNode & { value: Attributes } {
  const { root, node } = createAttributeTree();
  return (record, k1, k2, k3, k4, k5, k6) => {
    const leaf = node(node(node(node(node(node(root, k1), k2), k3), k4), k5), k6);
    leaf.value ??= Object.freeze(build(record));
    return leaf as TreeNode & { value: Attributes };
  };
}

/**
 * Records a request duration on the series cached beside each attribute set
 * (`./local_histograms.ts`: no attribute hashing per request).
 */
function durationRecorder<R>(
  local: LocalHistogram,
  leafOf: (record: R) => TreeNode & { value: Attributes },
): (record: R, valueS: number) => void {
  return (record, valueS) => {
    const leaf = leafOf(record);
    recordValue(local, leaf.cell ??= local.cell(leaf.value), valueS);
  };
}

/** The request-duration histograms, aggregated in process. */
export interface LocalDurationHistograms {
  /** `http.server.request.duration`. */
  server: LocalHistogram;
  /** `http.client.request.duration`. */
  client: LocalHistogram;
}

/**
 * The two request-duration histograms, aggregated in process (hand them to
 * {@link createGatewayRecorders} and, through `createHistogramProducer`, to every reader).
 *
 * @example
 * ```ts
 * const durations = createDurationHistograms();
 * const recorders = createGatewayRecorders(meter, ["users"], durations);
 * ```
 */
export function createDurationHistograms(): LocalDurationHistograms {
  return {
    server: createLocalHistogram({
      name: "http.server.request.duration",
      description: SERVER_DURATION_DESCRIPTION,
      unit: "s",
      boundaries: REQUEST_DURATION_BUCKETS_S,
    }),
    client: createLocalHistogram({
      name: "http.client.request.duration",
      description: CLIENT_DURATION_DESCRIPTION,
      unit: "s",
      boundaries: REQUEST_DURATION_BUCKETS_S,
    }),
  };
}

/**
 * Creates the request-path instruments on `meter` and returns the recorders; the request
 * durations go to `durations` (read through `createHistogramProducer`). `serviceNames` get
 * their zero-valued series up front, so `rate()` works from the first scrape.
 *
 * @example
 * ```ts
 * const durations = createDurationHistograms();
 * const recorders = createGatewayRecorders(provider.getMeter("breakwater"), ["users"], durations);
 * recorders.serverRequest({ method: "GET", status: 200, service: "users", durationS: 0.004 });
 * ```
 */
export function createGatewayRecorders(
  meter: Meter,
  serviceNames: string[],
  durations: LocalDurationHistograms,
): GatewayRecorders {
  const instruments = createRequestInstruments(meter);
  let sources: ObservedSources | null = null;
  const forService = attributeCache((service: string) => service, serviceAttributes);
  registerObservedGauges(meter, () => sources, forService);
  const rejectedAttributes = attributeCache(
    (service: string | null, reason: string) => `${service ?? ""}\n${reason}`,
    (service, reason) => ({ ...serviceAttributes(service), [ATTR.reason]: reason }),
  );
  const transitionAttributes = attributeCache(
    (service: string, from: string, to: string) => `${service}\n${from}\n${to}`,
    (service, from, to) => ({ [ATTR.service]: service, [ATTR.from]: from, [ATTR.to]: to }),
  );
  const serverSets = pathCachedAttributes(buildServerAttributes);
  const serverLeaf = (a: ServerRequestRecord) =>
    serverSets(a, a.service, a.method, a.status, a.errorType, a.scheme, a.route);
  const clientSets = pathCachedAttributes(buildClientAttributes);
  const clientLeaf = (a: ClientAttemptRecord) =>
    clientSets(a, a.service, a.address, a.port, a.method, a.status, a.errorType);
  const { rejected, retries, transitions } = instruments;
  for (const service of serviceNames) retries.add(0, forService(service));
  const recordServer = durationRecorder(durations.server, serverLeaf);
  const recordClient = durationRecorder(durations.client, clientLeaf);

  return {
    serverRequest(a) {
      recordServer(a, a.durationS);
    },
    clientAttempt(a) {
      recordClient(a, a.durationS);
    },
    rejected(service, reason) {
      rejected.add(1, rejectedAttributes(service, reason));
    },
    retry(service) {
      retries.add(1, forService(service));
    },
    breakerTransition(service, from, to) {
      transitions.add(1, transitionAttributes(service, from, to));
    },
    observe(next) {
      sources = next;
    },
    sources: () => sources,
  };
}
