/**
 * The route phase of the request path: which service owns a request target, and the path to
 * send it. The target is the one the client sent (never the `Host` header), normalised first;
 * an encoded slash is then settled by the owner's `escapedSlashes` policy (Envoy's
 * `path_with_escaped_slashes_action`), and a decoded path is matched again.
 *
 * @module
 */
import { applyEscapedSlashes, type EscapedSlashes, normalizeTarget } from "./normalize_path.ts";
import { type RouteMatcher, upstreamPath } from "./route_table.ts";

/** What a route target must tell about itself. */
export interface Routable {
  /** The service's name (for the problem's `service`). */
  name: string;
  /** Its path prefix. */
  prefix: string;
  /** Whether the prefix is removed before forwarding. */
  stripPrefix: boolean;
  /** Its policy for `%2F` / `%5C`. */
  escapedSlashes: EscapedSlashes;
}

/** A request that has an owner. */
export interface Routed<T> {
  /** The owner. */
  target: T;
  /** The normalised path the owner was found by. */
  path: string;
  /** What to send upstream: the path (prefix-stripped when configured) plus the query. */
  pathAndQuery: string;
}

/** A request that cannot be routed: answered `bad_request` or `no_route`. */
export interface Unroutable {
  /** The gateway's answer. */
  code: "bad_request" | "no_route";
  /** Why, in words. */
  detail: string;
  /** The service whose policy refused the path, when one was found. */
  service: string | null;
}

/**
 * Finds the owner of `target` (origin-form, as sent).
 *
 * @param method only for the `no_route` detail (`GET /nope`)
 * @param defaultEscapedSlashes the policy for a path no service owns before it is decoded
 * @example
 * ```ts
 * const match = buildRouteTable([{ prefix: "/api", target: service }]);
 * resolveRoute("/api/a/../b?x=1", "GET", match, "reject");
 * // { target: service, path: "/api/b", pathAndQuery: "/api/b?x=1" }
 * ```
 */
export function resolveRoute<T extends { config: Routable }>(
  target: string,
  method: string,
  match: RouteMatcher<T>,
  defaultEscapedSlashes: EscapedSlashes,
): Routed<T> | Unroutable {
  const normalized = normalizeTarget(target);
  if ("error" in normalized) {
    return { code: "bad_request", detail: normalized.error, service: null };
  }
  let path = normalized.path;
  let found = match(path);
  if (normalized.escapedSlash) {
    const owner = found?.target.config ?? null;
    const decided = applyEscapedSlashes(path, owner?.escapedSlashes ?? defaultEscapedSlashes);
    if ("error" in decided) {
      return { code: "bad_request", detail: decided.error, service: owner?.name ?? null };
    }
    if (decided.path !== path) {
      path = decided.path;
      found = match(path);
    }
  }
  if (found === null) return { code: "no_route", detail: `${method} ${path}`, service: null };
  const { config } = found.target;
  const forwarded = upstreamPath(path, found.prefix, config.stripPrefix);
  return { target: found.target, path, pathAndQuery: forwarded + normalized.search };
}
