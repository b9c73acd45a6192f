/**
 * Caps a streamed request body without buffering it. Hono's `bodyLimit` middleware reads a
 * chunked body whole into memory before passing it on, which would break streaming uploads,
 * so the gateway counts bytes as they flow instead.
 *
 * @module
 */

/** Thrown into the body stream (and so out of `fetch`) when the cap is passed. */
export class BodyTooLargeError extends Error {
  /** @param maxBytes the cap that was passed */
  constructor(maxBytes: number) {
    super(`request body exceeds ${maxBytes} bytes`);
    this.name = "BodyTooLargeError";
  }
}

/** A body wrapped with a byte cap, and a flag that says whether the cap was hit. */
export interface LimitedBody {
  /** The stream to forward. */
  stream: ReadableStream<Uint8Array>;
  /** True once more than the cap was read. */
  exceeded(): boolean;
}

/**
 * Wraps `body` so that reading more than `maxBytes` errors the stream.
 *
 * @example
 * ```ts
 * const limited = limitBody(request.body!, 10 * 1024 * 1024);
 * await fetch(url, { method: "POST", body: limited.stream });
 * ```
 */
export function limitBody(body: ReadableStream<Uint8Array>, maxBytes: number): LimitedBody {
  let seen = 0;
  let exceeded = false;
  const stream = body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen > maxBytes) {
          exceeded = true;
          controller.error(new BodyTooLargeError(maxBytes));
          return;
        }
        controller.enqueue(chunk);
      },
    }),
  );
  return { stream, exceeded: () => exceeded };
}
