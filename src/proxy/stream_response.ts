/**
 * The respond phase for an upstream's answer: its response re-headed for the client, with the
 * request's connection slots held for as long as the upstream connection is busy.
 *
 * @module
 */
import { bytesOf, rewriteFields } from "../server/static_body.ts";
import { rewriteResponseFields, rewriteResponseHeaders } from "./headers.ts";

/**
 * The upstream's response for the client; `finish` runs once its body was sent to the end,
 * failed, or was abandoned by the client.
 *
 * @param completed settles once the server sent the response (`ServeInfo.completed`): the body
 *   is then handed over untouched; without it (embedded use) the body is wrapped to learn when
 *   it ends
 * @param ownServer the gateway's own HTTP/1.1 server writes the response: it reads the http1
 *   client's pairs and bytes beside the `Response` (`src/server/static_body.ts`), so that
 *   response may go to it re-headed in place. Any other server (`Deno.serve`: the TLS port's
 *   HTTP/2, an embedding) reads the `Response`'s internal header list, which those pairs never
 *   filled: it gets a new `Response` whose headers were read through the getter.
 * @example
 * ```ts
 * return streamResponse(upstreamResponse, requestId, releaseSlots, info.completed, true);
 * ```
 */
export function streamResponse(
  upstream: Response,
  requestId: string,
  finish: () => void,
  completed: Promise<void> | undefined,
  ownServer = false,
): Response {
  // Built only when a new `Response` is made: reading `headers` (or `body`) of the http1
  // client's response would build what the server can do without.
  const init = () => ({
    status: upstream.status,
    statusText: upstream.statusText,
    headers: upstream.headers,
  });
  // A body of known bytes is not empty, and asking `body` would build its stream.
  if (bytesOf(upstream) === null && upstream.body === null) {
    finish();
    return rehead(new Response(null, init()), requestId);
  }
  if (completed !== undefined) {
    // Measured: 100 MiB through a JS pull wrapper raised RSS by ~25-75 MiB (every chunk
    // becomes a JS buffer awaiting GC); handed over untouched it stayed flat.
    completed.then(finish, finish);
    // The http1 client's responses are ours and their headers mutable: re-headed in place, the
    // same object goes to the server (no second `Response` and header copy, and a body of known
    // bytes stays known to the server). `fetch`'s responses have immutable headers: copied.
    if (ownServer && reheadInPlace(upstream, requestId)) return upstream;
    return rehead(new Response(upstream.body, init()), requestId);
  }
  return rehead(new Response(watchEnd(upstream.body!, finish), init()), requestId);
}

/** `source`, calling `finish` once it ended, failed or was cancelled. */
function watchEnd(
  source: ReadableStream<Uint8Array>,
  finish: () => void,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          finish();
          controller.close();
        } else {
          controller.enqueue(value);
        }
      } catch (error) {
        finish();
        controller.error(error);
      }
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** Rewrites `response`'s own headers; false when they are immutable (nothing was changed). */
function reheadInPlace(response: Response, requestId: string): boolean {
  // The http1 client's fields as pairs, not yet `Headers`: rewritten as pairs.
  if (rewriteFields(response, (fields) => rewriteResponseFields(fields, requestId))) return true;
  if (response.type !== "default") return false;
  try {
    rewriteResponseHeaders(response.headers, requestId);
    return true;
  } catch (error) {
    // The first write to immutable headers throws before anything changed.
    if (error instanceof TypeError) return false;
    throw error;
  }
}

function rehead(response: Response, requestId: string): Response {
  rewriteResponseHeaders(response.headers, requestId);
  return response;
}
