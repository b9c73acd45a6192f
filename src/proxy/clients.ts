/**
 * One upstream client per service, as each service chose (`upstreamClient`), never replaced
 * behind its back: two services naming the same origin with different choices each get their
 * own kind, with separate connection pools. Services with different TLS settings (`tls`: trust,
 * client certificate) get separate clients too, so a connection made with one service's client
 * certificate or trust is never handed to another. Pools are keyed by (client kind, TLS
 * settings, origin) and sized by the largest service using them.
 *
 * @module
 */
import { createFetchClient } from "./fetch_client.ts";
import { createHttp1Client, type Http1Client } from "./http1_client.ts";
import type { OriginPoolOptions, UpstreamClient } from "./upstream_client.ts";
import { readUpstreamTls, type UpstreamTlsFiles, type UpstreamTlsOptions } from "./upstream_tls.ts";

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
  /**
   * Its `tls` block; `material` is the files' contents as loading read them (read here when
   * absent, e.g. a config parsed without loading). Null or absent: the default roots only.
   */
  tls?: (UpstreamTlsFiles & { material?: UpstreamTlsOptions & { digest: string } }) | null;
}

/** Options of {@link createServiceClients}. */
export interface ServiceClientsOptions {
  /** Extra trusted CA certificates (PEM) for https origins, for every service, both kinds. */
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
  /** Open connections of the `http1` clients (`fetch` does not tell its own). */
  openConnections(): number;
}

/** Used for an origin no service of that kind named (a health check or test may still ask). */
const DEFAULT_POOL: OriginPoolOptions = { maxIdlePerHost: 20, idleTimeoutMs: 30000 };

/** The pool of every origin the `services` (of one client) name, sized by the largest of them. */
function poolsOf(services: readonly ServiceClientSpec[]): Map<string, OriginPoolOptions> {
  const pools = new Map<string, OriginPoolOptions>();
  for (const service of services) {
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

/** A service's TLS options: its files' contents plus the extra CAs every service trusts. */
function tlsOf(service: ServiceClientSpec, extraCaCerts: string[]): UpstreamTlsOptions & {
  digest: string;
} {
  const files = service.tls ?? null;
  const material = files === null
    ? null
    : files.material ?? readUpstreamTls(files, `services.${service.name}.tls`);
  return {
    caCerts: [...extraCaCerts, ...(material?.caCerts ?? [])],
    cert: material?.cert,
    key: material?.key,
    digest: material?.digest ?? "",
  };
}

/**
 * Builds the clients: one `http1` or `fetch` client per kind and TLS settings the services
 * chose (created only when a service chose it), and a lookup by service name.
 *
 * @param services every service with its choice, origins and pool
 * @param options extra TLS trust for every https origin
 * @throws {ConfigError} when a service's `tls` files were not read yet and cannot be
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
  // One client per (kind, TLS settings): the services that may share connections.
  const groups = new Map<
    string,
    { kind: UpstreamClientKind; tls: UpstreamTlsOptions; services: ServiceClientSpec[] }
  >();
  const groupOf = new Map<string, string>();
  for (const service of services) {
    const tls = tlsOf(service, options.caCerts ?? []);
    const key = `${service.upstreamClient} ${tls.digest}`;
    const group = groups.get(key) ?? { kind: service.upstreamClient, tls, services: [] };
    group.services.push(service);
    groups.set(key, group);
    groupOf.set(service.name, key);
  }
  const http1Clients: Http1Client[] = [];
  const all: UpstreamClient[] = [];
  const byGroup = new Map<string, UpstreamClient>();
  for (const [key, group] of groups) {
    const tls = { caCerts: group.tls.caCerts, cert: group.tls.cert, key: group.tls.key };
    const pools = poolFor(poolsOf(group.services));
    let client: UpstreamClient;
    if (group.kind === "http1") {
      const http1 = createHttp1Client(pools, { tls });
      http1Clients.push(http1);
      client = http1;
    } else {
      client = createFetchClient(pools, { tls });
    }
    all.push(client);
    byGroup.set(key, client);
  }
  return {
    clientFor(service) {
      const key = groupOf.get(service);
      if (key === undefined) throw new Error(`no upstream client for service ${service}`);
      return byGroup.get(key)!;
    },
    close() {
      for (const client of all) client.close();
    },
    openConnections: () =>
      http1Clients.reduce((count, client) => count + client.openConnections(), 0),
  };
}
