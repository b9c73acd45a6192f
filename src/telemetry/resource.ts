/**
 * The OpenTelemetry resource that identifies this gateway instance in every export, built
 * with `@opentelemetry/resources`' own environment detectors.
 *
 * @module
 */
import {
  defaultResource,
  detectResources,
  type Resource,
  resourceAttributesEnvDetector,
  resourceFromAttributes,
  serviceNameEnvDetector,
} from "@opentelemetry/resources";

/** `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one. */
export const DEFAULT_SERVICE_NAME = "breakwater";

/**
 * The resource of this instance, in the precedence the OpenTelemetry spec gives: the SDK's
 * defaults (`telemetry.sdk.*`), then the gateway's (`service.name` = `breakwater`, the Deno
 * runtime, `service.version` when known), then `OTEL_RESOURCE_ATTRIBUTES`, then
 * `OTEL_SERVICE_NAME`, and last `service.instance.id` from the gateway: it is also the
 * instance's identity in the shared breaker, so the environment cannot override it.
 *
 * @param instanceId the gateway's instance id
 * @param version the gateway's version (`deno.json` `version`), when the caller knows it
 * @example
 * ```ts
 * // OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod
 * buildResource("i-1", "0.1.0").attributes;
 * // { "service.name": "breakwater", "deployment.environment": "prod", "service.instance.id": "i-1", ... }
 * ```
 */
export function buildResource(instanceId: string, version?: string): Resource {
  const own: Record<string, string | number> = {
    "service.name": DEFAULT_SERVICE_NAME,
    "process.runtime.name": "deno",
    "process.runtime.version": Deno.version.deno,
    "process.pid": Deno.pid,
  };
  if (version !== undefined) own["service.version"] = version;
  return defaultResource()
    .merge(resourceFromAttributes(own))
    .merge(detectResources({ detectors: [resourceAttributesEnvDetector, serviceNameEnvDetector] }))
    .merge(resourceFromAttributes({ "service.instance.id": instanceId }));
}
