/**
 * The upstream client interface: the one place that speaks HTTP to upstreams, behind a small
 * interface with two implementations chosen per service (README, "Upstream clients"): the
 * byte-transparent HTTP/1.1 client (`./http1_client.ts`, the default) and `fetch`
 * (`./fetch_client.ts`).
 *
 * Whose fault a failure is, is decided here too: anything wrong with the request itself is a
 * {@link ClientError} thrown before any connection is taken ({@link checkUpstreamRequest}); only
 * what the upstream did (refused, reset, broke the protocol, went silent) is an
 * {@link UpstreamError}.
 *
 * @module
 */
import { ClientError } from "./client_error.ts";
import { TOKEN } from "../server/token.ts";

/** Why an upstream attempt produced no response: the upstream's side of a failure. */
export type UpstreamErrorKind = "unreachable" | "timeout" | "aborted";

/** An attempt that produced no response: refused, reset, timed out or abandoned by the caller. */
export class UpstreamError extends Error {
  /** The class of failure, which decides the gateway's answer (502, 504, nothing). */
  readonly kind: UpstreamErrorKind;
  /**
   * @param kind the class of failure
   * @param message what happened
   * @param cause the underlying error
   */
  constructor(kind: UpstreamErrorKind, message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "UpstreamError";
    this.kind = kind;
  }
}

/** One request to one upstream. */
export interface UpstreamRequest {
  /** The upstream origin from the config, e.g. `http://127.0.0.1:9001`. */
  origin: string;
  /** Path and query, starting with `/`. */
  pathAndQuery: string;
  /** Method as the client sent it. */
  method: string;
  /**
   * Headers already rewritten for the upstream (pairs, so `fetch` copies them only once).
   * `host`, `content-length` and `transfer-encoding` are ignored: the origin names the host and
   * the client frames the body itself.
   */
  headers: [string, string][];
  /**
   * Every header name and value was checked already as {@link checkUpstreamRequest} checks
   * them (the client's, by the gateway's strict HTTP/1.1 parser; the forwarding headers, made
   * of those): the check skips them. Unset: they are checked.
   */
  headersChecked?: boolean;
  /** The body: streamed, buffered (for retries), or none. */
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
  /** Aborts the attempt: the client went away, or the deadline passed. */
  signal: AbortSignal;
  /**
   * After the response head arrived, a response body that delivers no bytes for this long
   * (while the consumer waits for them) errors with `UpstreamError("timeout")`, and the upstream
   * connection is closed. Unset: no limit beyond `signal`. A body that keeps flowing is never
   * cut, however long it lasts (server-sent events).
   */
  bodyIdleTimeoutMs?: number;
  /**
   * The `fetch` client only (the `http1` client never decodes): a response body that fetch
   * decoded (gzip, br) errors with `UpstreamError("unreachable")` once it has handed on more
   * than this many decoded bytes, so a compression bomb costs the gateway at most this much
   * work. Not reported to `onBodyFailure`: the limit is the gateway's, and the client chose
   * the decoding (Accept-Encoding), so it must not count against the upstream. Unset: no cap.
   */
  maxDecodedBodyBytes?: number;
  /**
   * Called once when the response body fails on the upstream's side after the head was
   * returned (a stall past `bodyIdleTimeoutMs`, a reset, a framing violation): the attempt's
   * late verdict, so an upstream that sends heads and then stalls its bodies still counts
   * against its breaker. Not called when the consumer cancels or the client goes away.
   */
  onBodyFailure?: (error: UpstreamError) => void;
  /**
   * Called with each interim (1xx) response that came before the final one, as it comes: its
   * status (102-199; a 101 fails the attempt) and its fields as received. Only the `http1`
   * client calls it; `fetch` gives no access to interim responses and drops them.
   */
  onInformational?: (status: number, fields: [string, string][]) => void;
}

/** Sends requests to upstreams; the response body is streamed, never buffered. */
export interface UpstreamClient {
  /**
   * Sends one request. Resolves with the upstream's response as soon as its head arrived.
   * @throws {ClientError} `bad_request` when the request cannot be sent as the client made
   *   it (before any connection is taken), or the error the request body stream raised
   * @throws {UpstreamError} when no response came
   */
  send(request: UpstreamRequest): Promise<Response>;
  /** Closes pooled connections. */
  close(): void;
}

/** Pool settings for the connections to one origin. */
export interface OriginPoolOptions {
  /** Idle keep-alive connections kept per host. */
  maxIdlePerHost: number;
  /** How long an idle connection is kept, in milliseconds. */
  idleTimeoutMs: number;
}

/** Field values: visible ASCII, obs-text, SP and HTAB; no CR, LF, NUL or other controls. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Origin-form (RFC 9112 §3.2.1): a `/` and then visible ASCII only, no fragment. */
const ORIGIN_FORM = /^\/[\x21-\x22\x24-\x7e]*$/;

/** True when `name` is a valid field name (a token). */
export function isToken(name: string): boolean {
  return TOKEN.test(name);
}

/** True when `value` may be sent as a field value on the wire (RFC 9110 §5.5). */
export function isFieldValue(value: string): boolean {
  return FIELD_VALUE.test(value);
}

/**
 * Refuses, with `ClientError("bad_request")`, a request no client may send upstream as it is:
 * a method that is no token, `CONNECT` (a tunnel the gateway does not open), a target that is
 * not origin-form visible ASCII, a header name that is no token or a value with CR, LF, NUL or
 * another control. Both clients call it before taking a connection, so these are never held
 * against an upstream.
 */
export function checkUpstreamRequest(request: UpstreamRequest): void {
  if (!TOKEN.test(request.method)) {
    throw new ClientError("bad_request", "the method is not a token");
  }
  if (request.method.toUpperCase() === "CONNECT") {
    throw new ClientError("bad_request", "CONNECT is not forwarded");
  }
  if (!ORIGIN_FORM.test(request.pathAndQuery)) {
    throw new ClientError("bad_request", "the request target is not origin-form visible ASCII");
  }
  if (request.headersChecked === true) return;
  for (const [name, value] of request.headers) {
    if (!TOKEN.test(name)) {
      throw new ClientError("bad_request", `invalid header name ${JSON.stringify(name)}`);
    }
    if (!FIELD_VALUE.test(value)) {
      throw new ClientError("bad_request", `invalid value of header ${JSON.stringify(name)}`);
    }
  }
}

/**
 * Maps what a failed attempt threw onto the gateway's outcomes: an aborted `signal` gives its
 * reason's kind (`timeout` for the deadline) or `aborted`; an {@link UpstreamError} passes;
 * anything else is `unreachable`.
 */
export function classifyUpstreamFailure(error: unknown, signal: AbortSignal): UpstreamError {
  if (signal.aborted) {
    const reason = signal.reason;
    const kind = reason instanceof UpstreamError ? reason.kind : "aborted";
    return new UpstreamError(kind, `upstream request ${kind}`, error);
  }
  if (error instanceof UpstreamError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new UpstreamError("unreachable", message, error);
}
