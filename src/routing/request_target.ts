/**
 * Where the path comes from: the request target alone, never the `Host` header.
 *
 * `Request.url` in `Deno.serve` is `http://` + the Host header + the target, so a Host such as
 * `x/api/orders/admin#` reads as a path (and hides the real one behind a fragment). The
 * gateway's own server hands the target over as sent; for a `Request` from elsewhere (the gateway
 * embedded in another server) the Host is validated first, after which the target is the rest
 * of the URL behind the authority.
 *
 * @module
 */

// RFC 3986 §3.2.2: reg-name (unreserved / pct-encoded / sub-delims), IPv4, or an IP-literal in
// brackets; then an optional decimal port (RFC 9110 §7.2). No "/", "?", "#", "@" or spaces.
const REG_NAME = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$/;
const IP_LITERAL = /^\[[0-9A-Fa-f:.]+\]$|^\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]$/;

/**
 * True when `host` is a valid `Host` field value: `host[:port]` as RFC 9110 §7.2 allows.
 *
 * @example
 * ```ts
 * isValidHost("api.example.com:8080"); // true
 * isValidHost("[::1]:8080");            // true
 * isValidHost("x/api/orders/admin#");   // false
 * ```
 */
export function isValidHost(host: string): boolean {
  if (host.length === 0 || host.length > 1024) return false;
  let name = host;
  const bracketEnd = host.lastIndexOf("]");
  const colon = host.lastIndexOf(":");
  if (colon > bracketEnd) {
    const port = host.slice(colon + 1);
    if (!/^[0-9]{0,5}$/.test(port) || (port !== "" && Number(port) > 65535)) return false;
    name = host.slice(0, colon);
  }
  if (name.startsWith("[")) return IP_LITERAL.test(name);
  return REG_NAME.test(name);
}

/**
 * The request target (origin-form path and query) of `url`, a `Request.url` whose authority was
 * built from a Host that {@link isValidHost} accepted, so the first `/` after `://` starts it.
 *
 * @example
 * ```ts
 * targetOfUrl("http://gw:8080/api/users/7?x=1"); // "/api/users/7?x=1"
 * ```
 */
export function targetOfUrl(url: string): string {
  const authorityStart = url.indexOf("://");
  if (authorityStart < 0) return url.startsWith("/") ? url : "/";
  const pathStart = url.indexOf("/", authorityStart + 3);
  if (pathStart < 0) {
    const queryStart = url.indexOf("?", authorityStart + 3);
    return queryStart < 0 ? "/" : "/" + url.slice(queryStart);
  }
  return url.slice(pathStart);
}
