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
 * @module
 */
export { createGateway } from "./app.ts";
export type { Gateway, GatewayOptions, PoolUsage } from "./app.ts";
export { ConfigError, formatProblem, parseConfig } from "./config/schema.ts";
export type { BreakerConfig, GatewayConfig, ServiceConfig } from "./config/schema.ts";
export type { UpstreamClient, UpstreamRequest } from "./proxy/upstream_client.ts";
