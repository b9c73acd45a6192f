/**
 * Picks the upstream client per origin: `fetch` by default, the HTTP/1.1 client for origins
 * whose every naming service set `upstreamClient: "http1"` (an origin shared by services with
 * different choices uses `fetch`).
 *
 * @deprecated Replaced by `createServiceClients` (`./clients.ts`), which gives every service the
 * client it chose; kept only until `src/app.ts` uses it.
 * @module
 */
import { createFetchClient } from "./fetch_client.ts";
import { createHttp1Client } from "./http1_client.ts";
import type { OriginPoolOptions, UpstreamClient } from "./upstream_client.ts";
import type { ServiceRuntime } from "./forward.ts";

const DEFAULT_POOL: OriginPoolOptions = { maxIdlePerHost: 20, idleTimeoutMs: 30000 };

/** Builds the gateway's client: one of each kind, and a dispatcher by origin. */
export function createUpstreamClient(
  services: Iterable<ServiceRuntime>,
  poolByOrigin: Map<string, OriginPoolOptions>,
): UpstreamClient {
  const choice = new Map<string, "fetch" | "http1">();
  for (const runtime of services) {
    for (const endpoint of runtime.balancer.endpoints) {
      const prior = choice.get(endpoint.origin);
      const wanted = runtime.config.upstreamClient;
      choice.set(endpoint.origin, prior === undefined || prior === wanted ? wanted : "fetch");
    }
  }
  const poolFor = (origin: string) => poolByOrigin.get(origin) ?? DEFAULT_POOL;
  const fetchClient = createFetchClient(poolFor);
  if (![...choice.values()].includes("http1")) return fetchClient;
  const http1Client = createHttp1Client(poolFor);
  return {
    send(request) {
      return choice.get(request.origin) === "http1"
        ? http1Client.send(request)
        : fetchClient.send(request);
    },
    close() {
      fetchClient.close();
      http1Client.close();
    },
  };
}
