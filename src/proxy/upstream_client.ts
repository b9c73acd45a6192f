/**
 * The upstream client: the one place that speaks HTTP to upstreams, behind a small interface
 * so a faster implementation can replace it per upstream without touching the request path.
 *
 * The implementation here is `fetch` with one pooled `Deno.createHttpClient` per origin: it is
 * maintained, needs no Node layer, and was measured faster than every Node-based peer
 * (DESIGN.md, "The upstream client").
 *
 * @module
 */

/** Why an upstream attempt produced no response. */
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
  /** Headers already rewritten for the upstream (pairs, so `fetch` copies them only once). */
  headers: [string, string][];
  /** The body: streamed, buffered (for retries), or none. */
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
  /** Aborts the attempt: the client went away, or the deadline passed. */
  signal: AbortSignal;
  /**
   * After the response head: a response body that delivers no bytes for this long is cut with
   * `UpstreamError("timeout")` (nginx's `proxy_read_timeout`). Unset: no idle bound.
   */
  bodyIdleTimeoutMs?: number;
}

/** Sends requests to upstreams; the response body is streamed, never buffered. */
export interface UpstreamClient {
  /**
   * Sends one request. Resolves with the upstream's response as soon as its head arrived.
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

/**
 * A `fetch`-based client with one keep-alive pool per origin.
 *
 * @param poolFor the pool settings of an origin (its service's `pool`)
 * @example
 * ```ts
 * const client = createFetchClient(() => ({ maxIdlePerHost: 20, idleTimeoutMs: 30000 }));
 * ```
 */
export function createFetchClient(poolFor: (origin: string) => OriginPoolOptions): UpstreamClient {
  const clients = new Map<string, Deno.HttpClient>();
  let closed = false;

  function clientFor(origin: string): Deno.HttpClient {
    let client = clients.get(origin);
    if (client === undefined) {
      const pool = poolFor(origin);
      client = Deno.createHttpClient({
        poolMaxIdlePerHost: pool.maxIdlePerHost,
        poolIdleTimeout: pool.idleTimeoutMs,
        // HTTP/1.1 to upstreams: plain-text h2c is not negotiated and a proxy gains nothing
        // from h2 multiplexing on loopback-like links, while keep-alive reuse is what counts.
        http2: false,
      });
      clients.set(origin, client);
    }
    return client;
  }

  return {
    async send(request) {
      if (closed) throw new UpstreamError("unreachable", "the upstream client is closed");
      try {
        return await fetch(request.origin + request.pathAndQuery, {
          method: request.method,
          headers: request.headers,
          body: request.body,
          signal: request.signal,
          redirect: "manual",
          client: clientFor(request.origin),
        });
      } catch (error) {
        throw classifyFetchError(error, request.signal);
      }
    },
    close() {
      closed = true;
      for (const client of clients.values()) client.close();
      clients.clear();
    },
  };
}

/** Maps whatever `fetch` threw onto the three outcomes the gateway distinguishes. */
function classifyFetchError(error: unknown, signal: AbortSignal): UpstreamError {
  if (signal.aborted) {
    const reason = signal.reason;
    const kind = reason instanceof UpstreamError ? reason.kind : "aborted";
    return new UpstreamError(kind, `upstream request ${kind}`, error);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new UpstreamError("unreachable", message, error);
}
