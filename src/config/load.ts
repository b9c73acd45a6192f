/**
 * Finds, reads and validates the config file, then applies what the environment says:
 * `PORT`, and container limits for defaults that the file did not set.
 *
 * @module
 */
import { type CgroupLimits, inFlightCapFor } from "./cgroup.ts";
import { ConfigError, type GatewayConfig, parseConfig } from "./schema.ts";
import { loadUpstreamTls } from "../proxy/upstream_tls.ts";

/** Where the config comes from: `--config PATH`, else `BREAKWATER_CONFIG`, else `./breakwater.json`. */
export function resolveConfigPath(
  args: readonly string[],
  env: Record<string, string | undefined>,
): string {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--config" && args[i + 1] !== undefined) return args[i + 1];
    if (arg.startsWith("--config=")) return arg.slice("--config=".length);
  }
  return env.BREAKWATER_CONFIG || "./breakwater.json";
}

/** Reads and parses the JSON file; every failure is a {@link ConfigError}. */
export function readConfigJson(path: string): unknown {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "file not found" : String(error);
    throw new ConfigError([{ path: "", message: `cannot read ${path}: ${reason}` }]);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ConfigError([{
      path: "",
      message: `${path} is not valid JSON: ${(error as Error).message}`,
    }]);
  }
}

/** What loading decided beyond the file, for the start-up log. */
export interface LoadNotes {
  /** The container limits seen. */
  cgroup: CgroupLimits;
  /** Defaults that were lowered because of them, as `path: from -> to`. */
  capped: string[];
}

function get(value: unknown, ...keys: string[]): unknown {
  let current = value;
  for (const key of keys) {
    if (typeof current !== "object" || current === null) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/**
 * Validates `raw`, applies `PORT` and caps the connection defaults that the file left unset to
 * what the container's CPU and memory limits allow.
 *
 * @throws {ConfigError} for an invalid file or `PORT`, or a service's `tls` file that cannot be
 *   read or is not what its key says
 */
export function loadConfig(
  raw: unknown,
  env: Record<string, string | undefined>,
  cgroup: CgroupLimits,
): { config: GatewayConfig; notes: LoadNotes } {
  const config = parseConfig(raw);
  // Read at every load, so a reload picks up rotated certificates (and refuses broken ones).
  loadUpstreamTls(config);
  if (env.PORT !== undefined && env.PORT !== "") {
    const port = Number(env.PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ConfigError([{ path: "PORT", message: "must be a port number (0-65535)" }]);
    }
    config.listen.port = port;
  }
  const capped: string[] = [];
  const cap = inFlightCapFor(cgroup);
  if (cap !== null) {
    if (get(raw, "limits", "maxConnections") === undefined && config.limits.maxConnections > cap) {
      capped.push(`limits.maxConnections: ${config.limits.maxConnections} -> ${cap}`);
      config.limits.maxConnections = cap;
    }
    for (const service of Object.values(config.services)) {
      const explicit = get(raw, "services", service.name, "pool", "maxConnections") !== undefined ||
        get(raw, "defaults", "pool", "maxConnections") !== undefined;
      if (!explicit && service.pool.maxConnections > config.limits.maxConnections) {
        capped.push(
          `services.${service.name}.pool.maxConnections: ${service.pool.maxConnections} -> ${config.limits.maxConnections}`,
        );
        service.pool.maxConnections = config.limits.maxConnections;
      }
    }
  }
  return { config, notes: { cgroup, capped } };
}
