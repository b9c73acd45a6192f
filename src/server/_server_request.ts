/**
 * The fetch `Request` the handler gets, built as cheaply as the hot path allows.
 *
 * Its `signal` is the server's own: passing `signal` in `RequestInit` makes the `Request`
 * constructor build a dependent `AbortSignal` (weak references and a registry), which doubled
 * the cost of building a request (5 -> 11 us per request in a loop with GC included, Deno
 * 2.9.6). A subclass whose `signal` getter returns the server's signal costs nothing extra.
 * Caveat: `request.clone()` and `new Request(request)` take the internal, never-aborted
 * signal, as with any `Request` built without one; pass `request.signal` on explicitly.
 *
 * @module
 */
import type { Connection } from "./_connection.ts";
import type { RequestBody } from "./_request_body.ts";
import type { RequestHead } from "./_request_head.ts";

/** A `Request` whose `signal` aborts when the client goes away. */
class ServerRequest extends Request {
  readonly #signal: AbortSignal;

  constructor(url: string, init: RequestInit, signal: AbortSignal) {
    super(url, init);
    this.#signal = signal;
  }

  /** Aborts when the client goes away (EOF or an error on its connection). */
  override get signal(): AbortSignal {
    return this.#signal;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `http://` + a Host the URL parser takes, cached per connection (clients repeat theirs). */
function urlPrefix(connection: Connection, host: string | null): string {
  if (host === connection.lastHost) return connection.lastUrlPrefix;
  // The Host is a slice of the whole head's text, and V8 keeps a sliced string's parent
  // alive: an idle connection would hold its last head (up to maxHeadBytes). Keep a copy.
  const own = host === null ? null : decoder.decode(encoder.encode(host));
  let prefix = "http://localhost";
  if (own !== null && own !== "" && URL.canParse(`http://${own}/`)) prefix = `http://${own}`;
  connection.lastHost = own;
  connection.lastUrlPrefix = prefix;
  return prefix;
}

/**
 * Builds the handler's `Request`: url `http://{Host}{target}` (`localhost` when the Host is
 * absent or the WHATWG URL parser refuses it; `OPTIONS *` gets path `/*`), the method as sent,
 * every field as sent, and the body unless fetch refuses one for the method (GET, HEAD).
 */
export function buildRequest(
  connection: Connection,
  head: RequestHead,
  body: RequestBody | null,
  signal: AbortSignal,
): Request {
  const url = urlPrefix(connection, head.host) + (head.target === "*" ? "/*" : head.target);
  const upper = head.methodUpper;
  const withBody = body !== null && upper !== "GET" && upper !== "HEAD";
  return new ServerRequest(
    url,
    { method: head.method, headers: head.fields, body: withBody ? body.stream : null },
    signal,
  );
}
