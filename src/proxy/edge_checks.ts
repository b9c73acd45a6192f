/**
 * What the gateway refuses before a request is routed or any byte of it is forwarded: methods it
 * never forwards, a `Host` that is not a host, and body framing a proxy must not guess about.
 * The gateway's own server refuses most of this while parsing; these checks hold the same line
 * for a `Request` from any other server (the gateway embedded in another app, `Deno.serve`).
 *
 * @module
 */
import { ClientError } from "./client_error.ts";
import { isValidHost } from "../routing/request_target.ts";
import { TOKEN } from "../server/token.ts";

const DECIMAL = /^[0-9]{1,15}$/;

/**
 * Methods answered 405: TRACE and TRACK reflect the request (cross-site tracing; nginx answers
 * 405 as well), CONNECT would open a tunnel past every policy. Compared without case, since an
 * upstream that matches methods without case would otherwise still see them.
 */
const REFUSED_METHODS = new Set(["TRACE", "TRACK", "CONNECT"]);

/**
 * The client's mistake in `method` and `headers`, or null when the request may go on.
 *
 * - a method that is not a token: 400; TRACE / TRACK / CONNECT: 405. Any other token is
 *   forwarded as sent, case kept (methods are case-sensitive, RFC 9110 §9.1).
 * - a `Host` that is not `host[:port]` (RFC 9110 §7.2): 400.
 * - a `Content-Length` that is not one decimal number (a repeated field arrives joined with
 *   `, `, equal values or not: RFC 9112 §6.3 lets a proxy refuse it, and one that forwards it
 *   lets the two ends disagree on where the body ends): 400; one over `maxBodyBytes`: 413.
 * - `Content-Length` together with `Transfer-Encoding`: 400 (RFC 9112 §6.1: a smuggling vector).
 *
 * @example
 * ```ts
 * checkRequest("TRACE", new Headers({ host: "gw" }), 1024)?.code; // "method_not_allowed"
 * checkRequest("GET", new Headers({ host: "x/api#" }), 1024)?.code; // "bad_request"
 * ```
 */
export function checkRequest(
  method: string,
  headers: Headers,
  maxBodyBytes: number,
): ClientError | null {
  if (!TOKEN.test(method)) return new ClientError("bad_request", "the method is not a token");
  if (REFUSED_METHODS.has(method.toUpperCase())) {
    return new ClientError("method_not_allowed", `the gateway does not forward ${method}`);
  }
  const host = headers.get("host");
  if (host !== null && !isValidHost(host)) {
    return new ClientError("bad_request", "the Host header is not a valid host[:port]");
  }
  const length = headers.get("content-length");
  if (length !== null) {
    if (!DECIMAL.test(length)) {
      return new ClientError("bad_request", "Content-Length must be one decimal number");
    }
    if (headers.has("transfer-encoding")) {
      return new ClientError("bad_request", "Content-Length together with Transfer-Encoding");
    }
  }
  return checkDeclaredLength(headers, maxBodyBytes);
}

/**
 * Only the declared body size against `maxBodyBytes` (413): the one edge check the gateway's
 * own server cannot make, since the cap is the gateway's. Its requests were parsed strictly
 * already, so the request path runs just this one for them instead of {@link checkRequest}.
 *
 * @example
 * ```ts
 * checkDeclaredLength(new Headers({ "content-length": "2048" }), 1024)?.code; // "body_too_large"
 * ```
 */
export function checkDeclaredLength(headers: Headers, maxBodyBytes: number): ClientError | null {
  const length = headers.get("content-length");
  if (length !== null && Number(length) > maxBodyBytes) {
    return new ClientError("body_too_large", `the body is over ${maxBodyBytes} bytes`);
  }
  return null;
}
