/**
 * Turns the raw request target into the path the gateway routes and forwards.
 *
 * Deno hands the request line to `Request.url` unnormalised (`/a/../b`, `/a/%2e%2e/b`,
 * `//host/x`, `/a\..\b` arrive as sent). Routing on that text would let a client name one
 * service's prefix and reach another path, so dot segments (plain or percent-encoded) and
 * backslashes are resolved with the WHATWG URL parser before any prefix is compared. The host
 * part of the URL is never used: upstream origins only ever come from the config.
 *
 * @module
 */

/** The path and query of a request, split and normalised. */
export interface RequestTarget {
  /** Absolute path, dot segments resolved, percent-encoding otherwise kept as sent. */
  path: string;
  /** The query string including its leading `?`, or the empty string. */
  search: string;
}

const SCHEME_SEPARATOR = "://";

/**
 * Splits `Request.url` into a normalised path and the query string.
 *
 * The fast path is a pair of `indexOf` calls; only targets that could hold a dot segment, a
 * backslash or an empty segment go through `new URL`.
 *
 * @example
 * ```ts
 * normalizeTarget("http://gw/api/users/../admin?x=1"); // { path: "/api/admin", search: "?x=1" }
 * ```
 */
export function normalizeTarget(url: string): RequestTarget {
  const authorityStart = url.indexOf(SCHEME_SEPARATOR);
  const pathStart = authorityStart < 0 ? 0 : url.indexOf("/", authorityStart + 3);
  if (pathStart < 0) return { path: "/", search: "" };
  const queryStart = url.indexOf("?", pathStart);
  let path = queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
  const search = queryStart < 0 ? "" : url.slice(queryStart);
  if (needsNormalizing(path)) {
    // A fixed, harmless origin: "http://n" + "//evil/x" still has host "n" and path "//evil/x".
    path = new URL("http://n" + path).pathname;
  }
  return { path, search };
}

function needsNormalizing(path: string): boolean {
  return path.includes("/.") || path.includes("%") || path.includes("\\");
}
