/**
 * One upstream client per service, as each service chose (`upstreamClient`), never replaced
 * behind its back: two services naming the same origin with different choices each get their
 * own kind, with separate connection pools. Pools are keyed by (client kind, origin) and sized
 * by the largest service using them.
 *
 * @module
 */
import { createFetchClient } from "./fetch_client.ts";
import { createHttp1Client } from "./http1_client.ts";
import type { OriginPoolOptions, UpstreamClient } from "./upstream_client.ts";

/** Which client a service uses. */
export type UpstreamClientKind = "fetch" | "http1";

/** What a service tells the clients: its choice, its origins and its pool. */
export interface ServiceClientSpec {
  /** The service's name. */
  name: string;
  /** The client it chose. */
  upstreamClient: UpstreamClientKind;
  /** Its upstream origins, e.g. `http://127.0.0.1:9001`. */
  upstreams: string[];
  /** Its pool: `maxConnections` idle connections kept per origin, closed after `idleTimeoutMs`. */
  pool: { maxConnections: number; idleTimeoutMs: number };
}

/** Options of {@link createServiceClients}. */
export interface ServiceClientsOptions {
  /** Extra trusted CA certificates (PEM) for https origins, for both kinds. */
  caCerts?: string[];
}

/** The clients of every service. */
export interface ServiceClients {
  /**
   * The client of `service`.
   * @throws {Error} for a service that was not given
   */
  clientFor(service: string): UpstreamClient;
  /** Closes every pool of both kinds. */
  close(): void;
  /** Open connections of the `http1` client (`fetch` does not tell its own). */
  openConnections(): number;
}

/** Used for an origin no service of that kind named (a health check or test may still ask). */
const DEFAULT_POOL: OriginPoolOptions = { maxIdlePerHost: 20, idleTimeoutMs: 30000 };

/** The pool of every origin the services of one kind name, sized by the largest of them. */
function poolsOf(
  services: readonly ServiceClientSpec[],
  kind: UpstreamClientKind,
): Map<string, OriginPoolOptions> {
  const pools = new Map<string, OriginPoolOptions>();
  for (const service of services) {
    if (service.upstreamClient !== kind) continue;
    for (const upstream of service.upstreams) {
      const origin = new URL(upstream).origin;
      const prior = pools.get(origin);
      pools.set(origin, {
        maxIdlePerHost: Math.max(prior?.maxIdlePerHost ?? 0, service.pool.maxConnections),
        idleTimeoutMs: Math.max(prior?.idleTimeoutMs ?? 0, service.pool.idleTimeoutMs),
      });
    }
  }
  return pools;
}

/**
 * Builds the clients: one `http1` and one `fetch` client (each created only when a service
 * chose it), and a lookup by service name.
 *
 * @param services every service with its choice, origins and pool
 * @param options TLS trust for https origins
 * @example
 * ```ts
 * const clients = createServiceClients([
 *   { name: "orders", upstreamClient: "http1", upstreams: ["http://127.0.0.1:9001"],
 *     pool: { maxConnections: 20, idleTimeoutMs: 30000 } },
 *   { name: "legacy", upstreamClient: "fetch", upstreams: ["http://127.0.0.1:9001"],
 *     pool: { maxConnections: 5, idleTimeoutMs: 30000 } },
 * ]);
 * const response = await clients.clientFor("orders").send(upstreamRequest);
 * clients.close();
 * ```
 */
export function createServiceClients(
  services: readonly ServiceClientSpec[],
  options: ServiceClientsOptions = {},
): ServiceClients {
  const poolFor = (pools: Map<string, OriginPoolOptions>) => (origin: string) => {
    let key = origin;
    try {
      key = new URL(origin).origin;
    } catch {
      // not a URL: the client refuses it itself
    }
    return pools.get(key) ?? DEFAULT_POOL;
  };
  const kinds = new Set(services.map((service) => service.upstreamClient));
  const http1 = kinds.has("http1")
    ? createHttp1Client(poolFor(poolsOf(services, "http1")), { caCerts: options.caCerts })
    : null;
  const fetchClient = kinds.has("fetch")
    ? createFetchClient(poolFor(poolsOf(services, "fetch")), { caCerts: options.caCerts })
    : null;
  const byService = new Map<string, UpstreamClient>();
  for (const service of services) {
    byService.set(service.name, service.upstreamClient === "http1" ? http1! : fetchClient!);
  }
  return {
    clientFor(service) {
      const client = byService.get(service);
      if (client === undefined) throw new Error(`no upstream client for service ${service}`);
      return client;
    },
    close() {
      http1?.close();
      fetchClient?.close();
    },
    openConnections: () => http1?.openConnections() ?? 0,
  };
}
