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

// reg-name = *( unreserved / pct-encoded / sub-delims ), which also covers IPv4 addresses.
const REG_NAME = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$/;
// The characters an IPv6 address (with an embedded IPv4 tail) can hold; the WHATWG URL parser
// then checks the grammar, so `[::1::2]` is refused too.
const IPV6_CHARS = /^[0-9A-Fa-f:.]+$/;
const PORT = /^[0-9]{1,5}$/;

/**
 * True when `value` is a valid `Host` field value: a reg-name, IPv4 or `[IPv6]`, optionally
 * followed by `:` and a decimal port up to 65535. The empty value (allowed by RFC 9110 for
 * targets without an authority) is valid. IPvFuture literals (`[v1.x]`) are refused: no
 * client sends them and no URL parser takes them.
 *
 * @example
 * ```ts
 * isValidHost("api.example.com:8443"); // true
 * isValidHost("x/api/orders#"); // false
 * isValidHost("h:99999"); // false
 * ```
 */
export function isValidHost(value: string): boolean {
  let host = value;
  let port: string | null = null;
  if (value.charCodeAt(0) === 0x5b /* [ */) {
    const close = value.indexOf("]");
    if (close === -1) return false;
    host = value.slice(0, close + 1);
    const rest = value.slice(close + 1);
    if (rest !== "") {
      if (rest.charCodeAt(0) !== 0x3a /* : */) return false;
      port = rest.slice(1);
    }
    const literal = host.slice(1, -1);
    if (!IPV6_CHARS.test(literal)) return false;
    if (!URL.canParse(`http://${host}/`)) return false;
  } else {
    const colon = value.indexOf(":");
    if (colon !== -1) {
      host = value.slice(0, colon);
      port = value.slice(colon + 1);
    }
    if (!REG_NAME.test(host)) return false;
  }
  if (port !== null && (!PORT.test(port) || Number(port) > 65535)) return false;
  return true;
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
