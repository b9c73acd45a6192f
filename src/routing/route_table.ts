/**
 * Longest, segment-aware prefix matching of a path to the service that owns it.
 *
 * @module
 */

/** One entry of the table: a service and the path prefix it owns. */
export interface Route<T> {
  /** `/api/users`; `/` owns everything no longer prefix claims. */
  prefix: string;
  /** What the match returns: the service, in the gateway. */
  target: T;
}

/** The result of a match: the owner and the path to forward. */
export interface RouteMatch<T> {
  /** The owning route's target. */
  target: T;
  /** The owning prefix. */
  prefix: string;
}

/** Finds the owner of a path. */
export type RouteMatcher<T> = (path: string) => RouteMatch<T> | null;

/**
 * Builds a matcher over the given routes. Prefixes are compared whole-segment:
 * `/api/users` owns `/api/users` and `/api/users/7` but not `/api/usersX`.
 *
 * @example
 * ```ts
 * const match = buildRouteTable([{ prefix: "/api", target: "a" }, { prefix: "/api/users", target: "u" }]);
 * match("/api/users/7")?.target; // "u"
 * match("/api/usersX")?.target;  // "a"
 * ```
 */
export function buildRouteTable<T>(routes: readonly Route<T>[]): RouteMatcher<T> {
  // Longest first, so the first hit is the longest matching prefix. Service counts are small
  // (tens), so a sorted scan beats a trie on constant factors.
  const sorted = [...routes].sort((a, b) => b.prefix.length - a.prefix.length);
  return (path) => {
    for (const route of sorted) {
      if (ownsPath(route.prefix, path)) return { target: route.target, prefix: route.prefix };
    }
    return null;
  };
}

/** True when `prefix` owns `path` on segment boundaries. */
export function ownsPath(prefix: string, path: string): boolean {
  if (prefix === "/") return path.startsWith("/");
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || path.charCodeAt(prefix.length) === 47 /* "/" */;
}

/**
 * The path to send upstream: the prefix removed when the service strips it, else unchanged.
 *
 * @example
 * ```ts
 * upstreamPath("/api/users/7", "/api/users", true); // "/7"
 * upstreamPath("/api/users", "/api/users", true);   // "/"
 * ```
 */
export function upstreamPath(path: string, prefix: string, stripPrefix: boolean): string {
  if (!stripPrefix || prefix === "/") return path;
  const rest = path.slice(prefix.length);
  return rest === "" ? "/" : rest;
}
