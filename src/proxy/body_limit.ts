/**
 * Watches a streamed request body on its way upstream: caps its size without buffering it
 * (Hono's `bodyLimit` middleware reads a chunked body whole into memory first), turns a body the
 * client broke off into a {@link ClientError}, and tells whether the gateway is waiting on the
 * client, so a stalled body is the client's fault and not the upstream's.
 *
 * The wrapper is a byte stream that passes a consumer's BYOB buffer through to the source, so a
 * consumer that reads into one reused buffer (the HTTP/1.1 upstream client) streams any size with
 * no allocation per chunk, and each read pulls the client's socket only when the upstream took
 * the previous bytes: backpressure end to end.
 *
 * @module
 */
import { ClientError } from "./client_error.ts";

/** A body wrapped for forwarding, and what was seen of the client's side of it. */
export interface WatchedBody {
  /** The stream to forward. */
  stream: ReadableStream<Uint8Array>;
  /** Bytes read from the client so far. */
  bytesRead(): number;
  /**
   * Milliseconds spent so far waiting for the client's bytes. Subtracted from an attempt's
   * duration: a client that uploads slowly must not make the upstream look slow (`slowCallMs`,
   * the adaptive limit), or any client could trip a breaker by trickling its body.
   */
  clientWaitMs(): number;
  /**
   * The client's fault that ended the body, if one did. Kept here because `fetch` reports a
   * failed body stream as a bare `TypeError`, without the stream's error as its cause.
   */
  clientError(): ClientError | null;
  /**
   * True while the gateway waits for the client's next bytes: the upstream asked for more and
   * the client has not sent it. When the deadline passes in that state, the client stalled.
   */
  waitingOnClient(): boolean;
}

const CHUNK_BYTES = 64 * 1024;

/**
 * Wraps `body`. With `maxBytes`, reading more than that errors the stream with
 * `ClientError("body_too_large")`; a failing source errors it with `ClientError("bad_request")`
 * (a `ClientError` the source threw itself, such as the server's `request_timeout`, passes as is).
 *
 * @example
 * ```ts
 * const watched = watchRequestBody(request.body!, 10 * 1024 * 1024);
 * await client.send({ ...upstreamRequest, body: watched.stream });
 * ```
 */
export function watchRequestBody(
  body: ReadableStream<Uint8Array>,
  maxBytes: number | null,
): WatchedBody {
  let byob: ReadableStreamBYOBReader | null = null;
  let plain: ReadableStreamDefaultReader<Uint8Array> | null = null;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    plain = body.getReader();
  }
  let seen = 0;
  let waiting = false;
  let waitedMs = 0;
  let failure: ClientError | null = null;
  const fail = (controller: ReadableByteStreamController, error: ClientError) => {
    failure = error;
    controller.error(error);
  };

  const source: UnderlyingByteSource = {
    type: "bytes",
    autoAllocateChunkSize: CHUNK_BYTES,
    async pull(controller: ReadableByteStreamController) {
      const request = controller.byobRequest;
      const view = request?.view ?? null;
      waiting = true;
      const waitStartedMs = performance.now();
      let result: { done: boolean; value?: Uint8Array };
      try {
        // autoAllocateChunkSize makes every pull carry a BYOB request with a view.
        result = byob !== null
          ? await byob.read(new Uint8Array(view!.buffer, view!.byteOffset, view!.byteLength))
          : await plain!.read();
      } catch (error) {
        fail(
          controller,
          error instanceof ClientError
            ? error
            : new ClientError("bad_request", "the request body was broken off", error),
        );
        return;
      } finally {
        waiting = false;
        waitedMs += performance.now() - waitStartedMs;
      }
      const value = result.value;
      if (result.done) {
        controller.close();
        // A pending BYOB request must be answered, and its buffer now lives in `value`.
        if (byob !== null && value !== undefined) request!.respondWithNewView(value);
        return;
      }
      if (value === undefined) return; // a BYOB read that ended without bytes
      seen += value.byteLength;
      if (maxBytes !== null && seen > maxBytes) {
        fail(controller, new ClientError("body_too_large", `the body is over ${maxBytes} bytes`));
        (byob ?? plain)!.cancel().catch(() => {});
        return;
      }
      if (byob !== null) {
        request!.respondWithNewView(value);
      } else {
        controller.enqueue(value);
      }
    },
    cancel(reason: unknown) {
      return (byob ?? plain)!.cancel(reason);
    },
  };
  const stream = new ReadableStream(source) as ReadableStream<Uint8Array>;
  return {
    stream,
    bytesRead: () => seen,
    waitingOnClient: () => waiting,
    clientWaitMs: () => waitedMs,
    clientError: () => failure,
  };
}
