/**
 * Responses whose whole body is known bytes, so the server can write them without a stream.
 *
 * `new Response(bytes)` keeps its bytes inside, but reading them back means `response.body`: a
 * `ReadableStream` built on first access, a reader, and a few promise turns to learn that the
 * stream already holds everything. For the usual small proxied answer that was a few percent of
 * a request's CPU. A response made with {@link bytesResponse} carries its bytes beside it, and
 * the gateway's server writes them with the head in one write. Any other consumer still sees an
 * ordinary `Response`.
 *
 * @module
 */

const bodies = new WeakMap<Response, Uint8Array>();

/**
 * A `Response` with `bytes` as its whole body, which the gateway's server writes directly.
 *
 * @example
 * ```ts
 * const response = bytesResponse(new TextEncoder().encode("ok"), { status: 200 });
 * ```
 */
export function bytesResponse(bytes: Uint8Array<ArrayBuffer>, init: ResponseInit): Response {
  const response = new Response(bytes, init);
  bodies.set(response, bytes);
  return response;
}

/**
 * The bytes of a response made by {@link bytesResponse}, while nobody read its body; else null.
 */
export function bytesOf(response: Response): Uint8Array | null {
  const bytes = bodies.get(response);
  return bytes === undefined || response.bodyUsed ? null : bytes;
}
