/**
 * Fallback while open (README, "Fallback while open"): what the request path does instead of
 * answering 503 `breaker_open` when a service's breaker refuses a request and the service has a
 * `fallback`. Either a static answer, built here, or the same request routed to another
 * service, whose own policy (breaker, limiter, retries) then applies, as if the client had
 * asked that service for the same resource.
 *
 * Only the breaker's refusal leads here (open, forced open, half-open with no probe slot free,
 * and the hold-back while a failure is counted): a full pool, an upstream's own 5xx or an
 * unreachable upstream keep their answers, because the breaker, not the fallback, decides when
 * a service is to be spared. A fallback is followed one hop: a request that is already a
 * fallback gets the fallback service's own answer, 503 `breaker_open` included.
 *
 * @module
 */
import {
  type FallbackConfig,
  isServiceFallback,
  type StaticFallback,
} from "../config/fallback_schema.ts";
import type { Routed } from "../routing/resolve_route.ts";
import { applyEscapedSlashes } from "../routing/normalize_path.ts";
import { ownsPath, upstreamPath } from "../routing/route_table.ts";
import type { ServiceRuntime } from "./service_runtime.ts";
import { fieldsResponse, rewriteFields } from "../server/static_body.ts";

/**
 * The header every fallback answer carries: `static` for a static answer, `service=<name>`
 * for one from another service (also when that service refused the request itself).
 */
export const FALLBACK_HEADER = "x-breakwater-fallback";

/** `static` or `service`: the `kind` attribute of `breakwater.fallback.responses`. */
export type FallbackKind = "static" | "service";

/** What a refused request turns into. */
export type FallbackPlan =
  | {
    kind: "static";
    /** The {@link FALLBACK_HEADER} value. */
    label: string;
    /** The answer's settings. */
    answer: StaticFallback;
  }
  | {
    kind: "service";
    /** The {@link FALLBACK_HEADER} value. */
    label: string;
    /** The request as the fallback service owns it. */
    routed: Routed<ServiceRuntime>;
  };

/**
 * The fallback of a request its service's breaker refused, or null when the service has none
 * (or names a service this gateway does not run, which validation rules out).
 *
 * @param routed the request as its own service owns it
 * @param serviceByName finds the fallback service's runtime
 * @example
 * ```ts
 * const plan = planFallback(routed, (name) => runtimes.get(name));
 * if (plan?.kind === "static") return staticFallbackResponse(plan.answer, requestId);
 * ```
 */
export function planFallback(
  routed: Routed<ServiceRuntime>,
  serviceByName: ((name: string) => ServiceRuntime | undefined) | undefined,
): FallbackPlan | null {
  const fallback: FallbackConfig | null = routed.target.config.fallback;
  if (fallback === null) return null;
  if (!isServiceFallback(fallback)) return { kind: "static", label: "static", answer: fallback };
  const target = serviceByName?.(fallback.service);
  if (target === undefined) return null;
  const owned = ownedByFallback(routed, target);
  if (owned === null) return null;
  return {
    kind: "service",
    label: `service=${fallback.service}`,
    routed: rerouted(owned, target),
  };
}

const ESCAPED_SLASH = /%2f|%5c/i;

/**
 * `routed` with its path as the fallback service's own `escapedSlashes` policy would have left
 * it, had the client asked that service (the refusing service's `keep` must not carry `%2F`
 * past a fallback that rejects it): null when that policy refuses the path, so the client
 * gets the refusing breaker's 503 rather than a fallback answer to a request it may not make.
 */
function ownedByFallback(
  routed: Routed<ServiceRuntime>,
  target: ServiceRuntime,
): Routed<ServiceRuntime> | null {
  if (!ESCAPED_SLASH.test(routed.path)) return routed;
  const decided = applyEscapedSlashes(routed.path, target.config.escapedSlashes);
  if ("error" in decided) return null;
  if (decided.path === routed.path) return routed;
  // Decoded and resolved: still the refusing service's resource, or no fallback at all.
  if (!ownsPath(routed.target.config.prefix, decided.path)) return null;
  return { ...routed, path: decided.path };
}

/**
 * The request re-rooted under the fallback service: the part of the path below the first
 * service's prefix goes below the fallback's prefix, whose `stripPrefix` then applies; the
 * query is kept. `/api/orders/7?x=1` from `/api/orders` to `/cache/orders` is routed as
 * `/cache/orders/7?x=1`.
 *
 * @example
 * ```ts
 * rerouted({ target: orders, path: "/api/orders/7", pathAndQuery: "/api/orders/7?x=1" }, cache);
 * // { target: cache, path: "/cache/orders/7", pathAndQuery: "/cache/orders/7?x=1" }
 * ```
 */
export function rerouted(
  routed: Routed<ServiceRuntime>,
  target: ServiceRuntime,
): Routed<ServiceRuntime> {
  const path = reroot(routed.path, routed.target.config.prefix, target.config.prefix);
  const queryAt = routed.pathAndQuery.indexOf("?");
  const query = queryAt < 0 ? "" : routed.pathAndQuery.slice(queryAt);
  const { prefix, stripPrefix } = target.config;
  return { target, path, pathAndQuery: upstreamPath(path, prefix, stripPrefix) + query };
}

/**
 * `path`, owned by `fromPrefix`, moved below `toPrefix` (segment-wise; both prefixes are
 * normalised by the config: no trailing slash except `/` itself).
 *
 * @example
 * ```ts
 * reroot("/api/orders/7", "/api/orders", "/cache"); // "/cache/7"
 * reroot("/api/orders", "/api/orders", "/");        // "/"
 * ```
 */
export function reroot(path: string, fromPrefix: string, toPrefix: string): string {
  const rest = fromPrefix === "/" ? path : path.slice(fromPrefix.length); // "" or "/..."
  if (toPrefix === "/") return rest === "" ? "/" : rest;
  return toPrefix + rest;
}

/** A static answer made ready for the wire: built once per config object, not per request. */
export interface PreparedStaticFallback {
  /** The status. */
  status: number;
  /** The header fields as pairs, checked and normalised once by `Headers`. */
  fields: [string, string][];
  /** The body's UTF-8 bytes; null for an empty body (and the null-body statuses). */
  bytes: Uint8Array<ArrayBuffer> | null;
}

/**
 * Prepared answers by config object. A reload parses a new config, whose fallback objects are
 * new keys (prepared again on their first use); the old entries go with the old config.
 */
const preparedAnswers = new WeakMap<StaticFallback, PreparedStaticFallback>();

/**
 * The static answer's status, fields and bytes, encoded once per config object (load and
 * reload): `content-type` is `text/plain;charset=UTF-8` for a body unless `headers` set one
 * (the `Response` constructor's rule).
 *
 * @example
 * ```ts
 * const ready = prepareStaticFallback(config.services.orders.fallback as StaticFallback);
 * ready.bytes; // the body's UTF-8, the same array on every request
 * ```
 */
export function prepareStaticFallback(answer: StaticFallback): PreparedStaticFallback {
  let ready = preparedAnswers.get(answer);
  if (ready !== undefined) return ready;
  const headers = new Headers(answer.headers);
  // A `Response` with a body refuses null-body statuses; validation keeps their body empty.
  const bytes = answer.body === "" ? null : new TextEncoder().encode(answer.body);
  if (bytes !== null && !headers.has("content-type")) {
    headers.set("content-type", "text/plain;charset=UTF-8");
  }
  ready = { status: answer.status, fields: [...headers], bytes };
  preparedAnswers.set(answer, ready);
  return ready;
}

/**
 * The static answer: the configured status, headers and body, as prepared once by
 * {@link prepareStaticFallback}; its `x-request-id` is the request's, as on every answer of the
 * gateway. The gateway's server writes the prepared fields and bytes without a `Headers` or a
 * body stream (`src/server/static_body.ts`).
 *
 * @example
 * ```ts
 * staticFallbackResponse({ status: 200, headers: { "content-type": "application/json" }, body: "[]" }, "req-1");
 * ```
 */
export function staticFallbackResponse(answer: StaticFallback, requestId: string): Response {
  const ready = prepareStaticFallback(answer);
  // Each response gets its own array: a response's fields may be rewritten in place.
  const fields = ready.fields.slice();
  fields.push(["x-request-id", requestId]);
  return fieldsResponse(ready.bytes, ready.status, "", fields);
}

/**
 * Marks `response` as a fallback answer (in place; the gateway's responses are mutable).
 *
 * @param pairs the gateway's own HTTP/1.1 server writes `response`: a response still made of
 *   pairs (`src/server/static_body.ts`) gets the field added to them, so the server writes the
 *   pairs as they are instead of a `Headers` filled from them. Any other server (`Deno.serve`)
 *   reads only the `Response`'s header list, which `headers` fills.
 */
export function markFallback(response: Response, label: string, pairs = false): Response {
  if (pairs && rewriteFields(response, (fields) => withFallbackField(fields, label))) {
    return response;
  }
  response.headers.set(FALLBACK_HEADER, label);
  return response;
}

/** `fields` with the fallback field set to `label` (any earlier one, in any case, replaced). */
function withFallbackField(fields: [string, string][], label: string): [string, string][] {
  const out = fields.filter(([name]) => name.toLowerCase() !== FALLBACK_HEADER);
  out.push([FALLBACK_HEADER, label]);
  return out;
}
