/**
 * The OpenTelemetry resource that identifies this gateway instance in every export.
 *
 * @module
 */
import { defaultResource, type Resource, resourceFromAttributes } from "@opentelemetry/resources";
import { envString, parseKeyValueList } from "./_env.ts";

/** `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one. */
export const DEFAULT_SERVICE_NAME = "breakwater";

/**
 * The resource attributes of this instance, in the precedence the OpenTelemetry spec gives:
 * `OTEL_RESOURCE_ATTRIBUTES` first, then `OTEL_SERVICE_NAME` over its `service.name`
 * (default `breakwater`), then `service.instance.id` from the gateway (it is also the
 * instance's identity in the shared breaker, so the environment cannot override it).
 *
 * @example
 * ```ts
 * resourceAttributes({ OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=prod" }, "i-1");
 * // { "deployment.environment": "prod", "service.name": "breakwater", "service.instance.id": "i-1", ... }
 * ```
 */
export function resourceAttributes(
  env: Record<string, string | undefined>,
  instanceId: string,
): Record<string, string | number> {
  const fromEnv = parseKeyValueList(envString(env, "OTEL_RESOURCE_ATTRIBUTES"));
  return {
    "process.runtime.name": "deno",
    "process.runtime.version": Deno.version.deno,
    "process.pid": Deno.pid,
    ...fromEnv,
    "service.name": envString(env, "OTEL_SERVICE_NAME") ?? fromEnv["service.name"] ??
      DEFAULT_SERVICE_NAME,
    "service.instance.id": instanceId,
  };
}

/** The SDK's default resource (`telemetry.sdk.*`) merged with {@link resourceAttributes}. */
export function buildResource(
  env: Record<string, string | undefined>,
  instanceId: string,
): Resource {
  return defaultResource().merge(resourceFromAttributes(resourceAttributes(env, instanceId)));
}
