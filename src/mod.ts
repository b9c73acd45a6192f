/**
 * Breakwater as a library: build the gateway from a config object and serve its apps wherever
 * a `fetch` handler runs (Deno Deploy, another Hono app, `Deno.serve`).
 *
 * @example
 * ```ts
 * import { createGateway, parseConfig } from "./src/mod.ts";
 * const gateway = createGateway(parseConfig(JSON.parse(Deno.env.get("BREAKWATER_CONFIG_JSON")!)));
 * Deno.serve(gateway.app.fetch);
 * ```
 *
 * Mounted under a path of your own Hono app, the gateway routes what follows the mount point:
 * `/gw/api/users` reaches the service with prefix `/api`. The mount point is read from Hono's
 * match (`route()`, `basePath()`, also with parameters such as `/t/:tenant/gw`), so there is
 * nothing to repeat in the gateway's options.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * const app = new Hono();
 * app.route("/gw", gateway.app);
 * Deno.serve(app.fetch);
 * ```
 *
 * A new config is swapped in live with `gateway.reload(config)`: new services are routed,
 * removed ones finish their requests in flight, unchanged ones keep their pools; breaker state
 * and metrics carry over. `listen`, `admin`, `kv` and `telemetry` keep their running values.
 *
 * @example
 * ```ts
 * const { added, removed, changed } = await gateway.reload(parseConfig(nextRawConfig));
 * ```
 *
 * @module
 */
export { createGateway } from "./app.ts";
export type { Gateway, GatewayOptions, PoolUsage, ReloadResult } from "./app.ts";
export { ConfigError, formatProblem, parseConfig } from "./config/schema.ts";
export type { BreakerConfig, GatewayConfig, ServiceConfig } from "./config/schema.ts";
export type { UpstreamClient, UpstreamRequest } from "./proxy/upstream_client.ts";
