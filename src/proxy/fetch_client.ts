/**
 * The `fetch` upstream client: Deno's `fetch` with one pooled `Deno.createHttpClient` per
 * origin, selectable per service (`upstreamClient: "fetch"`). Maintained by Deno and native both
 * ways, but not byte-transparent; this module makes what it sends and what it returns
 * consistent, and refuses what it would alter (README, "Upstream clients"). Measured with Deno
 * 2.9.6 (`tests/proxy/fetch_client_test.ts` pins every point):
 *
 * - It decodes `Content-Encoding: gzip` and `br` (one coding, any letter case; not `x-gzip`,
 *   `deflate`, `zstd` or a list) unless the request's `Accept-Encoding` is exactly `identity`
 *   or the request has a `Range` header, and keeps the coded `content-encoding` and
 *   `content-length`; there is no switch to keep the coding. Decoded responses lose both
 *   headers here, so the bytes match the headers, and are cut past `maxDecodedBodyBytes`
 *   (a compression bomb).
 * - Its response body allocates a fresh 64 KiB buffer per default-reader read: the body is
 *   read BYOB only (`./_fetch_body.ts`), and a small declared body that came with the head is
 *   handed over as bytes.
 * - It adds `accept-encoding: gzip,br` when absent: this client sends `identity` instead, so an
 *   upstream is never asked to compress what fetch would decode again.
 * - It upper-cases `delete`, `get`, `head`, `options`, `post` and `put` (the Fetch standard's
 *   normalisation; `patch` is sent as is), throws on `TRACE`, `TRACK`, `CONNECT` and on a
 *   GET/HEAD with a body, and rewrites targets through the URL parser (dot segments, `\`,
 *   percent-encoding of `"<>{}` and a backtick in the path, of `"'<>` in the query): all
 *   refused as `bad_request`.
 * - It sends a JavaScript body stream chunked even when its length is declared: declared
 *   bodies up to `maxBufferedBodyBytes` are read whole first and sent with their
 *   Content-Length; larger ones stay chunked.
 * - It reports a failed body stream as a bare `TypeError`: streams pass through a recorder
 *   here, so the server's `ClientError` comes out as itself.
 * - It adds `accept` (any type), `accept-language: *` and `user-agent: Deno/x.y.z` when
 *   absent, lower-cases header names and trims values: kept (harmless for HTTP semantics).
 *
 * @module
 */
import { ClientError, findClientError } from "./client_error.ts";
import { fieldsResponse } from "../server/static_body.ts";
import { fetchBody, type FirstRead, readWhole } from "./_fetch_body.ts";
import type { UpstreamTlsOptions } from "./upstream_tls.ts";
import {
  checkUpstreamRequest,
  classifyUpstreamFailure,
  type OriginPoolOptions,
  type UpstreamClient,
  UpstreamError,
  type UpstreamRequest,
} from "./upstream_client.ts";

/** Methods fetch upper-cases when they match case-insensitively (Fetch standard, "normalize"). */
const NORMALISED_METHODS = new Set(["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"]);
/** Methods fetch refuses to send ("Method is forbidden"), in any letter case. */
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);
/** Headers that are fetch's own: the URL names the host, fetch frames the body. */
const FRAMING_HEADERS = new Set(["host", "content-length", "transfer-encoding"]);
/**
 * Targets the WHATWG URL parser leaves as they are: unreserved and sub-delim characters, `:`,
 * `@`, `/` and `%` (never decoded or checked) in the path, the same and `?` in the query
 * (the percent-encode sets of the URL standard, §1.3, minus the characters they encode: `'`
 * only in the query, `"<>{}` and a backtick in the path). Others take the parser's check.
 */
const UNCHANGED_TARGET =
  /^\/[A-Za-z0-9\-._~!$&()*+,;=:@/%]*(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/%?]*)?$/;
/** A `.` or `..` segment, also percent-encoded: the parser would resolve it. */
const DOT_SEGMENT = /\/(?:\.|%2e){1,2}(?:[/?]|$)/i;
/** Codings Deno's fetch decodes. */
const DECODED_CODINGS = new Set(["gzip", "br"]);

/** Options of {@link createFetchClient}. */
export interface FetchClientOptions {
  /**
   * TLS for https origins: extra trusted CA certificates (besides Deno's default roots) and a
   * client certificate, for every pooled connection of this client.
   */
  tls?: UpstreamTlsOptions;
  /**
   * A streamed body with a declared length up to this many bytes is read whole before sending,
   * so it goes out with its Content-Length instead of re-framed as chunked. Default 1 MiB.
   */
  maxBufferedBodyBytes?: number;
}

/**
 * Would fetch decode this response? Only when the request allowed it (an `Accept-Encoding`
 * other than `identity`, no `Range`) and the response's single coding is gzip or br.
 * `acceptEncoding` is the value sent (fetch adds `gzip,br` when null).
 */
export function fetchDecodes(
  acceptEncoding: string | null,
  hasRange: boolean,
  contentEncoding: string | null,
): boolean {
  if (hasRange || contentEncoding === null) return false;
  if (acceptEncoding !== null && acceptEncoding.trim().toLowerCase() === "identity") return false;
  return DECODED_CODINGS.has(contentEncoding.trim().toLowerCase());
}

/** The headers to hand fetch, and what decides whether it will decode the answer. */
interface PreparedHeaders {
  headers: [string, string][];
  acceptEncoding: string;
  hasRange: boolean;
  declaredLength: number | null;
}

function prepareHeaders(request: UpstreamRequest): PreparedHeaders {
  const headers: [string, string][] = [];
  let acceptEncoding: string | null = null;
  let hasRange = false;
  let declaredLength: number | null = null;
  for (const pair of request.headers) {
    const lower = pair[0].toLowerCase();
    if (FRAMING_HEADERS.has(lower)) {
      if (lower === "content-length") declaredLength = validLength(pair[1].trim());
      continue;
    }
    if (lower === "accept-encoding") {
      // One line, so fetch judges the whole list (RFC 9110 §5.3 allows joining).
      acceptEncoding = acceptEncoding === null ? pair[1] : `${acceptEncoding}, ${pair[1]}`;
      continue;
    }
    if (lower === "range") hasRange = true;
    headers.push(pair);
  }
  // Without it fetch would ask for gzip/br on the client's behalf and decode the answer.
  acceptEncoding ??= "identity";
  headers.push(["accept-encoding", acceptEncoding]);
  return { headers, acceptEncoding, hasRange, declaredLength };
}

/** Refuses what fetch would send differently from what the client sent. */
function refuseAltered(request: UpstreamRequest, hasBody: boolean): string {
  const method = request.method;
  const upper = method.toUpperCase();
  if (FORBIDDEN_METHODS.has(upper)) {
    throw new ClientError("bad_request", `fetch cannot send ${method}`);
  }
  if (upper !== method && NORMALISED_METHODS.has(upper)) {
    throw new ClientError("bad_request", `fetch would send ${method} as ${upper}`);
  }
  if (hasBody && (method === "GET" || method === "HEAD")) {
    throw new ClientError("bad_request", `fetch cannot send a ${method} request with a body`);
  }
  const href = request.origin + request.pathAndQuery;
  // The usual target needs no parse here (fetch parses it once more anyway).
  if (UNCHANGED_TARGET.test(request.pathAndQuery) && !DOT_SEGMENT.test(request.pathAndQuery)) {
    return href;
  }
  const url = new URL(href);
  // The href keeps an empty query (`/p?`), which `pathname + search` would lose.
  const target = url.href.slice(url.origin.length);
  if (target !== request.pathAndQuery) {
    throw new ClientError(
      "bad_request",
      `fetch would send the target ${JSON.stringify(request.pathAndQuery)} as ` +
        JSON.stringify(target),
    );
  }
  return url.href;
}

/**
 * Reads a declared-length body whole; a length that does not match is the client's fault, and
 * what the stream throws (the server's `ClientError`s) passes as is. An abort (the deadline, or
 * the client gone) stops the wait like it would stop fetch.
 */
async function readDeclared(
  body: ReadableStream<Uint8Array>,
  length: number,
  signal: AbortSignal,
): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(length);
  let filled = 0;
  const reader = body.getReader();
  const onAbort = () => reader.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (signal.aborted) throw classifyUpstreamFailure(signal.reason, signal);
      if (done) break;
      if (filled + value.length > length) {
        throw new ClientError("bad_request", "request body longer than its content-length");
      }
      out.set(value, filled);
      filled += value.length;
    }
  } catch (error) {
    reader.cancel(error).catch(() => {});
    throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (filled !== length) {
    throw new ClientError("bad_request", "request body shorter than its content-length");
  }
  return out;
}

/**
 * Passes a request body stream through, remembering what its source threw: fetch reports a
 * failed body as a bare `TypeError`, which would lose the server's `ClientError`. One read per
 * pull, so fetch's own backpressure still reaches the source.
 */
function recordingBody(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  let failure: unknown = null;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        failure = error;
        controller.error(error);
        return;
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return { stream, failure: () => failure };
}

/**
 * A `fetch`-based client with one keep-alive pool per origin.
 *
 * @param poolFor the pool settings of an origin (the largest of the services naming it)
 * @param options TLS trust, and how much of a declared body may be buffered
 * @example
 * ```ts
 * const client = createFetchClient(() => ({ maxIdlePerHost: 20, idleTimeoutMs: 30000 }));
 * const response = await client.send({
 *   origin: "http://127.0.0.1:9001",
 *   pathAndQuery: "/orders",
 *   method: "GET",
 *   headers: [],
 *   body: null,
 *   signal: AbortSignal.timeout(5000),
 * });
 * ```
 */
export function createFetchClient(
  poolFor: (origin: string) => OriginPoolOptions,
  options: FetchClientOptions = {},
): UpstreamClient {
  const client: FetchClientState = {
    clients: new Map(),
    closed: false,
    poolFor,
    tls: options.tls ?? null,
    maxBufferedBodyBytes: options.maxBufferedBodyBytes ?? 1024 * 1024,
  };
  return {
    send: (request) => send(client, request),
    close() {
      client.closed = true;
      for (const httpClient of client.clients.values()) httpClient.close();
      client.clients.clear();
    },
  };
}

/** One fetch client's pools and settings. */
interface FetchClientState {
  /** One `Deno.HttpClient` (one pool) per origin. */
  readonly clients: Map<string, Deno.HttpClient>;
  closed: boolean;
  readonly poolFor: (origin: string) => OriginPoolOptions;
  readonly tls: UpstreamTlsOptions | null;
  readonly maxBufferedBodyBytes: number;
}

function httpClientFor(client: FetchClientState, origin: string): Deno.HttpClient {
  let httpClient = client.clients.get(origin);
  if (httpClient === undefined) {
    const pool = client.poolFor(origin);
    httpClient = Deno.createHttpClient({
      poolMaxIdlePerHost: pool.maxIdlePerHost,
      poolIdleTimeout: pool.idleTimeoutMs,
      // HTTP/1.1 to upstreams: plain-text h2c is not negotiated and a proxy gains nothing
      // from h2 multiplexing on loopback-like links, while keep-alive reuse is what counts.
      http2: false,
      ...httpClientTls(client.tls),
    });
    client.clients.set(origin, httpClient);
  }
  return httpClient;
}

/**
 * The TLS part of `Deno.createHttpClient`'s options: `caCerts` (added to the default roots)
 * and, for mTLS, `cert` and `key` (Deno 2's `TlsCertifiedKeyPem`).
 */
function httpClientTls(
  tls: UpstreamTlsOptions | null,
): { caCerts?: string[]; cert?: string; key?: string } {
  if (tls === null) return {};
  return {
    ...(tls.caCerts?.length ? { caCerts: tls.caCerts } : {}),
    ...(tls.cert !== undefined && tls.key !== undefined ? { cert: tls.cert, key: tls.key } : {}),
  };
}

async function send(client: FetchClientState, request: UpstreamRequest): Promise<Response> {
  if (client.closed) throw new UpstreamError("unreachable", "the upstream client is closed");
  checkUpstreamRequest(request);
  const prepared = prepareHeaders(request);
  let body = request.body;
  // An empty body is no body: fetch would refuse it on GET/HEAD and drop its header anyway.
  if (body instanceof Uint8Array && body.length === 0 && !isBodyMethod(request.method)) {
    body = null;
  }
  if (body instanceof ReadableStream && prepared.declaredLength === 0) {
    await body.cancel().catch(() => {});
    body = null;
  }
  const url = refuseAltered(request, body !== null);
  const { signal } = request;
  if (signal.aborted) throw classifyUpstreamFailure(signal.reason, signal);

  let recorded: ReturnType<typeof recordingBody> | null = null;
  if (body instanceof ReadableStream) {
    const length = prepared.declaredLength;
    if (length !== null && length <= client.maxBufferedBodyBytes) {
      body = await readDeclared(body, length, signal);
    } else {
      recorded = recordingBody(body);
      body = recorded.stream;
    }
  }

  let response: Response;
  try {
    response = await fetch(url, {
      method: request.method,
      headers: prepared.headers,
      body,
      signal,
      redirect: "manual",
      client: httpClientFor(client, request.origin),
    });
  } catch (error) {
    throw failureOf(error, recorded?.failure() ?? null, signal);
  }
  return await consistentResponse(response, prepared, request);
}

/**
 * What a failed fetch is: the request body's own failure first (the client's fault, or the
 * upstream's when it stopped reading), else what fetch threw.
 */
function failureOf(error: unknown, bodyFailure: unknown, signal: AbortSignal): Error {
  if (bodyFailure !== null) {
    const clientError = findClientError(bodyFailure);
    if (clientError !== null) return clientError;
    if (!signal.aborted) {
      return new UpstreamError("unreachable", "the request body failed", bodyFailure);
    }
  }
  return classifyUpstreamFailure(error, signal);
}

/** POST, PUT and PATCH keep an empty body (fetch then sends `content-length: 0`). */
function isBodyMethod(method: string): boolean {
  return method === "POST" || method === "PUT" || method === "PATCH";
}

/** A declared body up to this size that came with its head is handed over as bytes. */
const WHOLE_BODY_BYTES = 64 * 1024;

/**
 * The response with headers that match its bytes. Its body: the bytes, when a small declared
 * body came with the head (the server then writes head and body at once, as for the `http1`
 * client); else read through {@link fetchBody} when it must be watched (the idle guard) or
 * bounded (decoded bytes), so the gateway never reads fetch's body by default (a fresh 64 KiB
 * buffer per read). Its fields travel as pairs (`fieldsResponse`), so the server writes them
 * without a second `Headers`.
 */
async function consistentResponse(
  response: Response,
  prepared: PreparedHeaders,
  request: UpstreamRequest,
): Promise<Response> {
  const source = response.body;
  if (source === null) return response;
  // One pass over fetch's headers: the pairs, and the two that decide the body's handling.
  const fields: [string, string][] = [];
  let contentEncoding: string | null = null;
  let contentLength: string | null = null;
  for (const pair of response.headers) {
    if (pair[0] === "content-encoding") contentEncoding = pair[1];
    else if (pair[0] === "content-length") contentLength = pair[1];
    fields.push(pair);
  }
  const decoded = fetchDecodes(prepared.acceptEncoding, prepared.hasRange, contentEncoding);
  const idleTimeoutMs = request.bodyIdleTimeoutMs;
  const maxBytes = decoded ? request.maxDecodedBodyBytes ?? null : null;
  const wrap = idleTimeoutMs !== undefined || maxBytes !== null;
  if (!decoded && !wrap) return response;
  const { status, statusText } = response;
  // Decoded: the coded length and label no longer describe the bytes.
  const handed = decoded
    ? fields.filter(([name]) => name !== "content-encoding" && name !== "content-length")
    : fields;
  if (!wrap) return fieldsResponse(source, status, statusText, handed);
  const length = decoded || request.method === "HEAD" ? null : validLength(contentLength);
  let first: FirstRead | undefined;
  if (length !== null && length > 0 && length <= WHOLE_BODY_BYTES) {
    const whole = await readWhole(source, length);
    if (whole instanceof Uint8Array) return fieldsResponse(whole, status, statusText, handed);
    first = whole;
  }
  const body = fetchBody(source, {
    idleTimeoutMs,
    maxBytes,
    capName: "maxDecodedBodyBytes",
    signal: request.signal,
    onFailure: request.onBodyFailure,
    first,
  });
  return fieldsResponse(body, status, statusText, handed);
}

/** A valid `content-length` value as a number, else null. */
function validLength(text: string | null): number | null {
  return text !== null && /^[0-9]{1,15}$/.test(text) ? Number(text) : null;
}
