/**
 * The request body as the attempts send it. A small body is buffered when a retry could resend
 * it; every other body streams through {@link watchRequestBody} (the cap for bodies of
 * undeclared length, the client's faults, backpressure).
 *
 * @module
 */
import { abortable } from "../async/abortable.ts";
import { type AttemptVerdict, blameAttempt } from "./blame.ts";
import { watchRequestBody } from "./body_limit.ts";
import { ClientError } from "./client_error.ts";

/** The body to send, and what is known of the client's side of it. */
export interface OutgoingBody {
  /** Streamed, buffered, or none. */
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
  /** A buffered (or absent) body can be sent again. */
  replayable: boolean;
  /** True while the gateway waits for the client's next body bytes. */
  waitingOnClient: () => boolean;
  /** Milliseconds spent waiting for the client's body bytes so far (0 for a buffered body). */
  clientWaitMs: () => number;
  /** The client's fault that ended a streamed body, if one did. */
  clientError: () => ClientError | null;
}

/** What {@link prepareBody} reads. */
export interface IncomingBody {
  /** The body exactly as the client sent it, or null. */
  body: ReadableStream<Uint8Array> | null;
  /** The client's `Content-Length`, already validated by the edge checks. */
  declaredLength: string | null;
  /** The client's request signal. */
  clientSignal: AbortSignal;
}

const notWaiting = () => false;
const noWait = () => 0;
const noError = () => null;

/** What {@link prepareBody} gives for a request without a body, without a promise. */
export const NO_BODY: OutgoingBody = Object.freeze({
  body: null,
  replayable: true,
  waitingOnClient: notWaiting,
  clientWaitMs: noWait,
  clientError: noError,
});

/**
 * Prepares the body: none, empty, buffered (declared length within `bufferUpToBytes`, so a
 * retry can resend it) or streamed. A buffered body the client breaks off, stalls past the
 * deadline or abandons gives the verdict on it instead.
 *
 * @param maxBodyBytes the cap on a streamed body of undeclared length
 * @param bufferUpToBytes buffer a declared body up to this size; null never buffers
 * @param signal the attempts' signal (deadline, client gone)
 * @example
 * ```ts
 * const prepared = await prepareBody(incoming, 10 * 1024 * 1024, 65536, scope.signal);
 * if (!("body" in prepared)) return prepared; // the client's fault
 * ```
 */
export async function prepareBody(
  incoming: IncomingBody,
  maxBodyBytes: number,
  bufferUpToBytes: number | null,
  signal: AbortSignal,
): Promise<OutgoingBody | AttemptVerdict> {
  const fixed = {
    replayable: true,
    waitingOnClient: notWaiting,
    clientWaitMs: noWait,
    clientError: noError,
  };
  const { body } = incoming;
  if (body === null) return NO_BODY;
  const declaredBytes = incoming.declaredLength === null ? null : Number(incoming.declaredLength);
  if (declaredBytes === 0) {
    body.cancel().catch(() => {});
    return { body: new Uint8Array(0), ...fixed };
  }
  if (bufferUpToBytes !== null && declaredBytes !== null && declaredBytes <= bufferUpToBytes) {
    const buffered = await readWithin(body, signal);
    if (buffered instanceof Uint8Array) {
      return { body: buffered as Uint8Array<ArrayBuffer>, ...fixed };
    }
    return blameAttempt({
      status: null,
      error: buffered,
      durationMs: 0,
      clientGone: incoming.clientSignal.aborted,
      waitingOnClient: true,
    });
  }
  const watched = watchRequestBody(body, declaredBytes === null ? maxBodyBytes : null);
  return {
    body: watched.stream,
    replayable: false,
    waitingOnClient: watched.waitingOnClient,
    clientWaitMs: watched.clientWaitMs,
    clientError: watched.clientError,
  };
}

/** Buffers a small body for retries; the client's failure or the signal ends it. */
async function readWithin(
  body: ReadableStream<Uint8Array>,
  signal: AbortSignal,
): Promise<Uint8Array<ArrayBuffer> | unknown> {
  try {
    return new Uint8Array(await abortable(new Response(body).arrayBuffer(), signal));
  } catch (error) {
    if (signal.aborted && error === signal.reason) {
      body.cancel().catch(() => {});
      return signal.reason;
    }
    return error instanceof ClientError
      ? error
      : new ClientError("bad_request", "the request body was broken off", error);
  }
}
