/**
 * Helpers for the standard `OTEL_*` environment variables.
 *
 * @module
 */

/** The environment as a plain record; `{}` when env access is not permitted. */
export function processEnv(): Record<string, string | undefined> {
  try {
    return Deno.env.toObject();
  } catch {
    return {};
  }
}

/** A variable's value, or undefined when it is unset, empty or only whitespace. */
export function envString(
  env: Record<string, string | undefined>,
  key: string,
): string | undefined {
  const value = env[key];
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/**
 * Parses the W3C-baggage-like `key1=value1,key2=value2` list used by
 * `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`. Values are percent-decoded;
 * entries without a key or with a malformed encoding are dropped.
 *
 * @example
 * ```ts
 * parseKeyValueList("deployment.environment=prod,team=edge%20ops");
 * // { "deployment.environment": "prod", team: "edge ops" }
 * ```
 */
export function parseKeyValueList(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (raw === undefined) return out;
  for (const entry of raw.split(",")) {
    const equals = entry.indexOf("=");
    if (equals <= 0) continue;
    const key = entry.slice(0, equals).trim();
    if (key === "") continue;
    try {
      out[decodeURIComponent(key)] = decodeURIComponent(entry.slice(equals + 1).trim());
    } catch {
      // A malformed percent-encoding: the spec says to drop the entry, not the whole list.
    }
  }
  return out;
}

/** A positive integer from a variable, or undefined when unset or not a positive number. */
export function envPositiveInt(
  env: Record<string, string | undefined>,
  key: string,
): number | undefined {
  const raw = envString(env, key);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : undefined;
}
