/**
 * Header rewriting in both directions: hop-by-hop headers out (RFC 9110 §7.6.1 plus every
 * header named in `Connection`), forwarding headers in.
 *
 * @module
 */

/** Hop-by-hop headers that never cross a proxy, whatever `Connection` says. */
export const HOP_BY_HOP_HEADERS: readonly string[] = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];

/** The `Via` token this gateway adds (RFC 9110 §7.6.3). */
export const VIA_TOKEN = "1.1 breakwater";

/** Removes hop-by-hop headers and those named in `Connection`, in place. */
export function stripHopByHop(headers: Headers): void {
  const connection = headers.get("connection");
  if (connection) {
    for (const name of connection.split(",")) {
      const trimmed = name.trim();
      // A malformed token would make Headers.delete throw; it names nothing we could forward.
      if (trimmed !== "" && /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(trimmed)) headers.delete(trimmed);
    }
  }
  for (const name of HOP_BY_HOP_HEADERS) headers.delete(name);
}

/** Facts about the incoming request that the forwarding headers carry. */
export interface ForwardingContext {
  /** The peer's IP address as the gateway saw it, or null when unknown. */
  clientIp: string | null;
  /** `http` or `https`, as the client spoke to the gateway. */
  proto: string;
  /** The `Host` the client asked for. */
  host: string | null;
  /** The request id to send upstream. */
  requestId: string;
}

/**
 * The headers to send upstream: the client's minus hop-by-hop and `Host`, plus
 * `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `Via` and
 * `X-Request-Id`. `traceparent`/`tracestate` pass through untouched.
 *
 * `Accept-Encoding: identity` is set when the client sent none: Deno's `fetch` would otherwise
 * ask for gzip/br on the client's behalf and decompress the answer while its headers still say
 * it is compressed. With an explicit value fetch neither adds nor decodes anything.
 */
export function upstreamRequestHeaders(incoming: Headers, context: ForwardingContext): Headers {
  const headers = new Headers(incoming);
  stripHopByHop(headers);
  headers.delete("host");
  if (context.clientIp !== null) {
    const prior = headers.get("x-forwarded-for");
    headers.set("x-forwarded-for", prior ? `${prior}, ${context.clientIp}` : context.clientIp);
  }
  headers.set("x-forwarded-proto", context.proto);
  if (context.host !== null) headers.set("x-forwarded-host", context.host);
  const via = headers.get("via");
  headers.set("via", via ? `${via}, ${VIA_TOKEN}` : VIA_TOKEN);
  headers.set("x-request-id", context.requestId);
  if (!headers.has("accept-encoding")) headers.set("accept-encoding", "identity");
  return headers;
}

/**
 * The headers to send back to the client: the upstream's minus hop-by-hop, plus `Via` and the
 * request id. Repeated headers (several `Set-Cookie`) survive because `Headers` keeps them.
 */
export function clientResponseHeaders(upstream: Headers, requestId: string): Headers {
  const headers = new Headers(upstream);
  stripHopByHop(headers);
  const via = headers.get("via");
  headers.set("via", via ? `${via}, ${VIA_TOKEN}` : VIA_TOKEN);
  headers.set("x-request-id", requestId);
  return headers;
}
