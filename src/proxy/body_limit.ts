/**
 * Watches a streamed request body on its way upstream: caps its size without buffering it
 * (Hono's `bodyLimit` middleware reads a chunked body whole into memory first), and tells
 * whose fault a failed attempt was. A client that disconnects mid-body or stalls until the
 * deadline must not count as an upstream failure, or any client could open any breaker.
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

/** A body wrapped for forwarding, and what was seen of the client's side of it. */
export interface MonitoredBody {
  /** The stream to forward. */
  stream: ReadableStream<Uint8Array>;
  /** True once more than the cap was read. */
  exceeded(): boolean;
  /** True once reading from the client failed (it disconnected or sent a broken body). */
  clientFailed(): boolean;
  /**
   * True while the gateway waits for the client's next bytes: the upstream asked for more and
   * the client has not sent it. When the deadline passes in that state, the client stalled.
   */
  waitingOnClient(): boolean;
}

/**
 * Declared bodies up to this size are watched; larger ones go to `fetch` as the server's own
 * stream. Measured: a JavaScript stream as `fetch`'s body loses backpressure (100 MiB raised
 * RSS by ~75 MiB), while the server's stream passes natively with flat memory.
 */
export const MONITORED_BODY_BYTES = 1024 * 1024;

/**
 * Wraps `body`. With `maxBytes`, reading more than that errors the stream.
 *
 * @example
 * ```ts
 * const monitored = monitorBody(request.body!, 10 * 1024 * 1024);
 * await fetch(url, { method: "POST", body: monitored.stream });
 * ```
 */
export function monitorBody(
  body: ReadableStream<Uint8Array>,
  maxBytes: number | null,
): MonitoredBody {
  const reader = body.getReader();
  let seen = 0;
  let exceeded = false;
  let clientFailed = false;
  let waiting = false;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      waiting = true;
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        clientFailed = true;
        controller.error(error);
        return;
      } finally {
        waiting = false;
      }
      if (result.done) {
        controller.close();
        return;
      }
      seen += result.value.byteLength;
      if (maxBytes !== null && seen > maxBytes) {
        exceeded = true;
        controller.error(new BodyTooLargeError(maxBytes));
        reader.cancel().catch(() => {});
        return;
      }
      controller.enqueue(result.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return {
    stream,
    exceeded: () => exceeded,
    clientFailed: () => clientFailed,
    waitingOnClient: () => waiting,
  };
}
