/**
 * Validation of the `Host` field value (RFC 9110 §7.2): `uri-host [ ":" port ]`, where uri-host
 * is a reg-name, an IPv4 address or an IP-literal in brackets (RFC 3986 §3.2.2).
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
