/**
 * Errors the client caused. Anything thrown as a {@link ClientError} (by the server while it
 * reads the request, by a request body stream, or by an upstream client that refuses to send
 * what the client asked for) is answered with a 4xx and never recorded against an upstream:
 * its breaker, outlier detection and adaptive limit only hear of the upstream's own failures.
 *
 * @module
 */

/** The gateway's answer to a request the client got wrong (the `x-breakwater-error` value). */
export type ClientErrorCode =
  | "bad_request"
  | "request_timeout"
  | "body_too_large"
  | "method_not_allowed";

/**
 * A failure the client caused: a malformed request, a body it broke off or stalled, a body
 * over the cap, a method the gateway does not forward.
 *
 * @example
 * ```ts
 * throw new ClientError("request_timeout", "no request body bytes for 60000 ms");
 * ```
 */
export class ClientError extends Error {
  /** The gateway's answer (400, 408, 413 or 405). */
  readonly code: ClientErrorCode;
  /**
   * @param code the gateway's answer
   * @param message what the client did, in words (goes into the problem's `detail`)
   * @param cause the underlying error
   */
  constructor(code: ClientErrorCode, message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "ClientError";
    this.code = code;
  }
}

/**
 * The {@link ClientError} in `error` or its `cause` chain, or null. Streams and `fetch` wrap
 * what a body stream threw, so the client's fault can arrive a few causes deep.
 */
export function findClientError(error: unknown): ClientError | null {
  for (let current = error, depth = 0; current != null && depth < 8; depth++) {
    if (current instanceof ClientError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return null;
}
