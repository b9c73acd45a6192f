/**
 * Breakwater's own HTTP/1.1 server for the public port, over `Deno.listen`.
 *
 * Why not `Deno.serve`: it has no request-head timeout and no idle keep-alive timeout (a partial
 * head, an idle connection, a byte every 2 s all stay open forever), lets the `Host` header
 * steer `Request.url`, accepts a repeated identical `Content-Length`, and its `Request` refuses
 * or rewrites some methods. An edge gateway must bound all of that itself:
 *
 * - strict parsing (RFC 9112): origin- or absolute-form targets, one valid `Host`, no obs-fold, bare
 *   CR/LF or controls, no repeated `Content-Length`, `Transfer-Encoding` exactly `chunked` and
 *   never with a length; every refusal is a problem+json answer and the connection closes;
 * - timeouts: the whole head within `headerTimeoutMs` of its first byte (a slowloris client is
 *   cut, not kept alive byte by byte), idle keep-alive connections closed after
 *   `idleTimeoutMs`, a request body stalled for `bodyIdleTimeoutMs` errors its stream;
 * - bodies streamed both ways with backpressure (see `_request_body.ts`, `_response_writer.ts`);
 * - keep-alive and pipelining, one request at a time per connection, in order;
 * - the client going away aborts `request.signal` and cancels the response body.
 *
 * Timers: one coarse sweep over all connections (every `tickMs`, by default a tenth of the
 * shortest timeout, at most 1 s) instead of a timer per connection: a keep-alive request then
 * costs a clock read, not a `setTimeout` and a `clearTimeout`, and 10k idle connections cost
 * one pass over a Set per tick (20-300 us for 10k in a replica loop). Timeouts fire up to a
 * tick late.
 *
 * Measured on the 2-core development machine (Deno 2.9.6, loopback, other work running):
 * - 10,000 idle keep-alive connections (one request each, then silent): server RSS 38 -> 196
 *   MiB (about 16.5 KB per connection: 2 KiB read buffer, ~5 KB of JavaScript objects, the
 *   rest Deno's socket), 10,025 file descriptors (10,000 sockets + 25). `Deno.serve` under the
 *   same load: 34 -> 188 MiB (about 16 KB per connection), 10,025 descriptors.
 * - Trivial handler, wrk -t1 -c32 -d5s after a 3 s warm-up, ~100-byte body: 25.8-29.1k req/s
 *   at 24-25 us of CPU per request; `Deno.serve` 52.6-74.4k req/s at 9.6-10 us. The difference
 *   is the JavaScript per request (`Request`, `Response` and its stream, the async steps);
 *   both pay the same kernel time for the socket writes.
 * - Streaming: a 100 MiB chunked upload to a slow consumer raised RSS by ~3 MiB; a 256 MiB
 *   response by ~10-20 MiB (garbage from V8's ArrayBuffer transfers on BYOB reads, bounded:
 *   the same for 1 GiB).
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import { ClientError, findClientError } from "../proxy/client_error.ts";
import {
  Connection,
  PHASE_ACTIVE,
  PHASE_HEAD,
  PHASE_IDLE,
  PHASE_LINGER,
  PHASE_NEW,
  PHASE_TAKEN,
} from "./_connection.ts";
import { problemResponse } from "../problem.ts";
import { RequestBody } from "./_request_body.ts";
import {
  findHeadEnd,
  HEAD_BARE_LF,
  HEAD_INCOMPLETE,
  parseRequestHead,
  type RequestHead,
  skipLeadingEmptyLines,
} from "./_request_head.ts";
import { writeResponse } from "./_response_writer.ts";
import { createInformationalGate, type SendInformational } from "./_informational.ts";
import { type TakenConnection, takeOverConnection } from "./_takeover.ts";
import { buildRequest } from "./_server_request.ts";
import { fieldsHeaders } from "./fields_headers.ts";

/** What the server knows about a request beyond the fetch `Request`. */
export interface ServeInfo {
  /** The peer. */
  remoteAddr: Deno.NetAddr;
  /** The request-target in origin-form (`/a?b`; an absolute-form target reduced to it), or `*`. */
  target: string;
  /** The method token exactly as sent (case kept: `get` stays `get`). */
  method: string;
  /** The request body as sent, for any method (a GET body is here, not on the `Request`). */
  body: ReadableStream<Uint8Array> | null;
  /** Settles (never rejects) when the response was fully written or the connection died. */
  completed: Promise<void>;
  /**
   * Present for HTTP/1.1 requests: the handler takes the connection over after this request
   * (an `Upgrade`, RFC 9110 §7.8). Called before the handler returns; the server then ignores
   * the returned `Response`, writes nothing, hands the connection to `run` and closes it when
   * `run` settles.
   */
  takeOver?: (run: (connection: TakenConnection) => Promise<void>) => void;
  /**
   * Present for HTTP/1.1 requests (RFC 9110 §15.2: never to an HTTP/1.0 client): writes an
   * interim response, 102-199 (a `103 Early Hints`, RFC 8297), before the final one. Hop-by-hop
   * fields are dropped (RFC 9110 §7.6.1). False when it did not go out: the handler already
   * returned its response, the status or a field is invalid, or the request sent 16 already.
   */
  sendInformational?: SendInformational;
}

export type { SendInformational, TakenConnection };

/** A request as the server parsed it, for a {@link Handler}'s `direct` entry point. */
export interface DirectRequest extends ServeInfo {
  /** The header fields as sent. */
  headers: Headers;
  /** Aborts when the client goes away. */
  signal: AbortSignal;
}

/**
 * A request handler: Hono's `app.fetch` fits.
 *
 * It may carry `direct`, which the server calls first with the request as parsed and no fetch
 * `Request` (building one cost ~5 us per request, most of it URL parsing and `RequestInit`
 * conversion, for a proxied request that only reads the headers and the signal). `direct`
 * returns null, synchronously, to decline: the server then builds the `Request` and calls the
 * handler as usual.
 */
export type Handler = ((request: Request, info: ServeInfo) => Response | Promise<Response>) & {
  direct?: (request: DirectRequest) => Response | Promise<Response> | null;
};

/** Options of {@link serveHttp1}. */
export interface Http1ServerOptions {
  /** The address to listen on (default `0.0.0.0`). */
  hostname?: string;
  /** The port (default 8000; 0 picks a free one). */
  port?: number;
  /** `SO_REUSEPORT`, so several processes share the port (needs `--unstable-net`). */
  reusePort?: boolean;
  /**
   * The whole request head must arrive within this, from the first byte of a request (or from
   * the accept, for a connection's first request). Default 10000. Past it: 408 if any byte
   * came, else the connection is closed silently.
   */
  headerTimeoutMs?: number;
  /** A keep-alive connection with no request in progress is closed after this. Default 60000. */
  idleTimeoutMs?: number;
  /**
   * A request body read that waits this long for a byte errors the body stream with
   * `ClientError("request_timeout")`. Default 60000.
   */
  bodyIdleTimeoutMs?: number;
  /**
   * Accept from this listener instead of binding `hostname:port` (the TLS port hands over its
   * handshaken HTTP/1.1 connections, `tls_server.ts`).
   */
  listener?: Deno.Listener<Deno.TcpConn>;
  /** A request head over this many bytes is answered 431. Default 65536. */
  maxHeadBytes?: number;
  /** Connections accepted beyond this many open ones are closed at once. Default null: none. */
  maxConnections?: number | null;
  /** Called with what a handler threw (the client gets a 500). Default `console.error`. */
  onError?: (error: unknown) => void;
  /** The clock for timeouts, in ms. Default `performance.now`. */
  now?: () => number;
  /** How often the timeout sweep runs. Default: a tenth of the shortest timeout, 5-1000 ms. */
  tickMs?: number;
}

/** A running server. */
export interface Http1Server {
  /** The address it listens on. */
  addr: Deno.NetAddr;
  /** Open connections. */
  connections(): number;
  /**
   * Stops accepting, closes idle keep-alive connections now, lets requests in flight finish
   * (their connections close after the response) and resolves when no connection is left.
   */
  shutdown(): Promise<void>;
  /** Closes the listener and every connection now (requests in flight see their signal abort). */
  close(): void;
}

/** Bytes of an unread request body drained after the response so the connection can be kept. */
const DRAIN_MAX_BYTES = 64 * 1024;
/** How long a closing connection reads and drops what the client still sends (lingering close). */
const LINGER_MS = 2000;
const LINGER_MAX_BYTES = 1024 * 1024;

interface ResolvedOptions {
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  bodyIdleTimeoutMs: number;
  maxHeadBytes: number;
  maxConnections: number | null;
  onError: (error: unknown) => void;
  now: () => number;
  tickMs: number;
}

function resolveOptions(options: Http1ServerOptions): ResolvedOptions {
  const headerTimeoutMs = options.headerTimeoutMs ?? 10_000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const bodyIdleTimeoutMs = options.bodyIdleTimeoutMs ?? 60_000;
  const shortest = Math.min(headerTimeoutMs, idleTimeoutMs, bodyIdleTimeoutMs);
  return {
    headerTimeoutMs,
    idleTimeoutMs,
    bodyIdleTimeoutMs,
    maxHeadBytes: options.maxHeadBytes ?? 65_536,
    maxConnections: options.maxConnections ?? null,
    onError: options.onError ?? ((error) => console.error("breakwater: handler failed", error)),
    now: options.now ?? (() => performance.now()),
    tickMs: options.tickMs ?? Math.max(5, Math.min(1000, Math.floor(shortest / 10))),
  };
}

/** One server's state, shared by the functions below. */
interface ServerState {
  readonly config: ResolvedOptions;
  readonly handler: Handler;
  readonly listener: Deno.Listener<Deno.TcpConn>;
  readonly connections: Set<Connection>;
  accepting: boolean;
  draining: boolean;
  sweepTimer: ReturnType<typeof setInterval> | null;
  /** Resolved once no connection is left (shutdown waits on it). */
  readonly emptyWaiters: (() => void)[];
}

/**
 * Starts the server.
 *
 * The handler gets a fetch `Request` whose url is `http://{Host}{target}` (`localhost` when
 * the Host is absent or no URL parser takes it: route on `info.target`, never on the url's
 * host), whose method is the method as sent (fetch upper-cases the six standard ones; the
 * exact token is `info.method`), with every field as sent, the body unless fetch refuses one
 * for the method (GET, HEAD: then it is only in `info.body`), and a `signal` that aborts when
 * the client goes away (the server's own signal: `clone()` and `new Request(request)` do not
 * carry it, pass `request.signal` on explicitly).
 *
 * @example
 * ```ts
 * const server = serveHttp1({ port: 8080, headerTimeoutMs: 10_000 }, (request, info) =>
 *   new Response(`${info.method} ${info.target}\n`));
 * // ...
 * await server.shutdown();
 * ```
 */
export function serveHttp1(options: Http1ServerOptions, handler: Handler): Http1Server {
  const listenOptions: Deno.TcpListenOptions & { transport?: "tcp"; reusePort?: boolean } = {
    hostname: options.hostname ?? "0.0.0.0",
    port: options.port ?? 8000,
  };
  if (options.reusePort) listenOptions.reusePort = true;
  const state: ServerState = {
    config: resolveOptions(options),
    handler,
    listener: options.listener ?? Deno.listen(listenOptions),
    connections: new Set(),
    accepting: true,
    draining: false,
    sweepTimer: null,
    emptyWaiters: [],
  };
  const accepted = acceptLoop(state);
  return {
    addr: state.listener.addr as Deno.NetAddr,
    connections: () => state.connections.size,
    shutdown() {
      stopAccepting(state);
      for (const connection of state.connections) {
        const phase = connection.phase;
        if (
          phase === PHASE_NEW || phase === PHASE_LINGER ||
          (phase === PHASE_IDLE && connection.buffered === 0)
        ) {
          connection.close();
        } else if (phase === PHASE_TAKEN) {
          // Its taker ends it in its own protocol (a WebSocket close frame) and closes it.
          connection.onShutdown?.();
        }
      }
      const empty = state.connections.size === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => state.emptyWaiters.push(resolve));
      return Promise.all([empty, accepted]).then(() => {});
    },
    close() {
      stopAccepting(state);
      for (const connection of [...state.connections]) connection.close();
    },
  };
}

/** Stops taking connections; requests of open ones are answered `connection: close`. */
function stopAccepting(state: ServerState): void {
  state.draining = true;
  if (!state.accepting) return;
  state.accepting = false;
  try {
    state.listener.close();
  } catch {
    // closed
  }
}

function onConnectionClosed(state: ServerState, connection: Connection): void {
  state.connections.delete(connection);
  if (state.connections.size > 0) return;
  if (state.sweepTimer !== null) {
    clearInterval(state.sweepTimer);
    state.sweepTimer = null;
  }
  for (const resolve of state.emptyWaiters.splice(0)) resolve();
}

/** One pass of the coarse timer: every connection past its phase's timeout is woken or closed. */
function sweep(state: ServerState): void {
  const { config } = state;
  const time = config.now();
  for (const connection of state.connections) {
    const elapsed = time - connection.phaseSince;
    switch (connection.phase) {
      case PHASE_NEW:
        if (elapsed >= config.headerTimeoutMs) connection.close();
        break;
      case PHASE_IDLE:
        if (elapsed >= config.idleTimeoutMs) connection.close();
        break;
      case PHASE_HEAD:
        if (elapsed >= config.headerTimeoutMs && !connection.timedOut) {
          connection.timedOut = true;
          connection.wake();
        }
        break;
      case PHASE_ACTIVE:
        if (
          connection.bodyWaitSince >= 0 && !connection.bodyTimedOut &&
          time - connection.bodyWaitSince >= config.bodyIdleTimeoutMs
        ) {
          connection.bodyTimedOut = true;
          connection.wake();
        }
        break;
      case PHASE_LINGER:
        if (elapsed >= LINGER_MS) connection.close();
        break;
    }
  }
}

async function acceptLoop(state: ServerState): Promise<void> {
  const { config } = state;
  while (state.accepting) {
    let conn: Deno.TcpConn;
    try {
      conn = await state.listener.accept();
    } catch (error) {
      if (!state.accepting || error instanceof Deno.errors.BadResource) return;
      // Out of file descriptors or the like: back off briefly instead of spinning.
      await delay(50);
      continue;
    }
    const full = config.maxConnections !== null &&
      state.connections.size >= config.maxConnections;
    if (!state.accepting || full) {
      try {
        conn.close();
      } catch {
        // closed
      }
      continue;
    }
    try {
      conn.setNoDelay(true);
    } catch {
      // not a TCP socket
    }
    const connection = new Connection(
      conn,
      config.now(),
      (closed) => onConnectionClosed(state, closed),
    );
    state.connections.add(connection);
    state.sweepTimer ??= setInterval(() => sweep(state), config.tickMs);
    serveConnection(state, connection).catch((error) => config.onError(error));
  }
}

async function serveConnection(state: ServerState, connection: Connection): Promise<void> {
  let linger = false;
  try {
    while (true) {
      const head = await readHead(state, connection);
      if (head === null) {
        linger = connection.phase === PHASE_LINGER;
        break;
      }
      const keep = await exchange(state, connection, head);
      if (!keep) {
        linger = !connection.eof;
        break;
      }
      if (state.draining) {
        linger = true;
        break;
      }
    }
  } finally {
    // While draining, the response went out with `connection: close` and its request body
    // was read: close at once rather than keep shutdown waiting on a slow client.
    if (linger && !state.draining && !connection.closed) {
      await lingerAndClose(state, connection);
    }
    connection.close();
  }
}

/** Answers a request the server refuses itself, then the connection lingers and closes. */
async function refuse(
  state: ServerState,
  connection: Connection,
  status: number,
  code: "bad_request" | "request_timeout" | "method_not_allowed",
  detail: string,
): Promise<null> {
  const { now } = state.config;
  connection.enter(PHASE_LINGER, now());
  await writeResponse(connection, problemResponse(code, { status, detail }), {
    methodUpper: "GET",
    minor: 1,
    keepAlive: false,
    body: null,
    signal: new AbortController().signal,
  });
  connection.enter(PHASE_LINGER, now());
  return null;
}

/** Reads and parses the next request head; null when the connection is to end. */
async function readHead(state: ServerState, connection: Connection): Promise<RequestHead | null> {
  const { config } = state;
  const { now } = config;
  const first = connection.requests === 0;
  if (connection.buffered === 0) {
    connection.shrink();
    if (!first) connection.enter(PHASE_IDLE, now());
  } else if (!first) connection.enter(PHASE_HEAD, now());
  // How far into the buffered bytes the scan for the head's end got (relative to `start`,
  // which stays put while a head is incomplete, so compaction cannot invalidate it).
  let scanned = 0;
  while (true) {
    if (connection.buffered > 0) {
      if (connection.phase !== PHASE_HEAD) {
        // The head timer runs from the first byte (from the accept for a first request).
        if (first) connection.phase = PHASE_HEAD;
        else connection.enter(PHASE_HEAD, now());
      }
      const found = scanHead(state, connection, scanned);
      if (found !== null) return found;
      // Scanning resumes at the new bytes (findHeadEnd looks back for the CR LF before).
      scanned = connection.end - connection.start;
    }
    if (connection.closed) return null;
    if (connection.timedOut) {
      if (connection.phase !== PHASE_HEAD) return null;
      return refuse(
        state,
        connection,
        408,
        "request_timeout",
        `the request head did not arrive within ${config.headerTimeoutMs} ms`,
      );
    }
    const before = connection.end - connection.start;
    // +4: the final CRLF CRLF of a head of exactly maxHeadBytes.
    const waited = await connection.fill(config.maxHeadBytes + 4);
    if (!waited || (connection.eof && connection.end - connection.start === before)) {
      // The client closed (before a request, or inside a head: there is no one to answer).
      return null;
    }
  }
}

/**
 * Looks for a whole head in the buffered bytes: the parsed head, a refusal (resolving to
 * null), or null while the head is still incomplete.
 */
function scanHead(
  state: ServerState,
  connection: Connection,
  scanned: number,
): RequestHead | Promise<null> | null {
  const { maxHeadBytes } = state.config;
  const tooLarge = `the request head is over ${maxHeadBytes} bytes`;
  const start = skipLeadingEmptyLines(connection.input, connection.start, connection.end);
  if (start !== connection.start) connection.take(start - connection.start);
  const headEnd = findHeadEnd(
    connection.input,
    connection.start,
    connection.start + scanned,
    connection.end,
  );
  if (headEnd === HEAD_BARE_LF) {
    return refuse(state, connection, 400, "bad_request", "bare LF in the request head");
  }
  if (headEnd === HEAD_INCOMPLETE) {
    if (connection.buffered < maxHeadBytes) return null;
    return refuse(state, connection, 431, "bad_request", tooLarge);
  }
  if (headEnd - connection.start > maxHeadBytes) {
    return refuse(state, connection, 431, "bad_request", tooLarge);
  }
  const parsed = parseRequestHead(connection.input, connection.start, headEnd);
  connection.take(headEnd - connection.start);
  if ("status" in parsed) {
    return refuse(state, connection, parsed.status, parsed.code, parsed.detail);
  }
  return parsed;
}

/** Handles one request and writes its response; true when the connection carries on. */
async function exchange(
  state: ServerState,
  connection: Connection,
  head: RequestHead,
): Promise<boolean> {
  const { config } = state;
  connection.requests++;
  connection.enter(PHASE_ACTIVE, config.now());
  connection.bodyTimedOut = false;
  const body = head.chunked || head.contentLength > 0
    ? new RequestBody(
      connection,
      {
        contentLength: head.chunked ? -1 : head.contentLength,
        expectContinue: head.expectContinue,
      },
      config.now,
      config.bodyIdleTimeoutMs,
    )
    : null;
  const abort = new AbortController();
  const { promise: completed, resolve: resolveCompleted } = Promise.withResolvers<void>();
  connection.onPeerGone = () => {
    abort.abort(new ClientError("bad_request", "the client closed the connection"));
    resolveCompleted();
  };

  let taker: ((connection: TakenConnection) => Promise<void>) | null = null;
  const interim = head.minor === 1 ? createInformationalGate(connection) : null;
  // One object serves as the handler's `ServeInfo` and, with headers and signal, as the
  // `direct` entry point's request (no second copy per request).
  const info: DirectRequest = {
    remoteAddr: connection.remoteAddr,
    target: head.target,
    method: head.method,
    body: body === null ? null : body.stream,
    completed,
    takeOver: head.minor === 1 && body === null
      ? (run) => {
        taker = run;
      }
      : undefined,
    sendInformational: interim?.send,
    // Filled from the pairs only if the handler needs more than get/has (./fields_headers.ts).
    headers: fieldsHeaders(head.fields),
    signal: abort.signal,
  };
  let response: Response | null = null;
  try {
    const direct = state.handler.direct;
    if (direct !== undefined) {
      // Keep a read posted while the handler runs, so a client that goes away is noticed.
      connection.watch();
      response = await directResponse(state, direct, info);
    }
    if (response === null) {
      const request = buildRequest(connection, head, body, abort.signal);
      connection.watch();
      response = await handlerResponse(state, request, info);
    }
  } catch (error) {
    // Only building the headers or the `Request` throws here (the handlers' errors are
    // answers): fields fetch will not take.
    connection.onPeerGone = null;
    resolveCompleted();
    const detail = error instanceof Error ? error.message : String(error);
    await refuse(state, connection, 400, "bad_request", detail);
    return false;
  } finally {
    // Answered: an interim response may no longer follow (RFC 9110 §15.2).
    interim?.close();
  }
  if (taker !== null) return await handOver(state, connection, taker, resolveCompleted);

  const outcome = await writeResponse(connection, response, {
    methodUpper: head.methodUpper,
    minor: head.minor,
    // A body too long to drain afterwards means closing: say so in the response.
    keepAlive: head.keepAlive && !state.draining && !connection.eof &&
      (body === null || (!body.failed && !body.unreadOver(DRAIN_MAX_BYTES))),
    body,
    signal: abort.signal,
  });
  connection.onPeerGone = null;
  resolveCompleted();
  let keep = outcome.keepAlive && !connection.eof;
  if (body !== null) {
    if (keep && !body.done) keep = await body.drain(DRAIN_MAX_BYTES);
    body.detached = true;
    if (body.failed) keep = false;
  }
  return keep && !connection.closed;
}

/** Runs a taker on the connection, then closes it; false: the connection does not carry on. */
async function handOver(
  state: ServerState,
  connection: Connection,
  run: (connection: TakenConnection) => Promise<void>,
  resolveCompleted: () => void,
): Promise<boolean> {
  connection.onPeerGone = null;
  resolveCompleted();
  connection.enter(PHASE_TAKEN, state.config.now());
  const taken = takeOverConnection(connection);
  // Shutdown began while the handler ran: the taker hears of it as soon as it listens.
  if (state.draining) connection.onShutdown?.();
  try {
    await run(taken);
  } catch (error) {
    state.config.onError(error);
  } finally {
    connection.onShutdown = null;
    connection.close();
  }
  return false;
}

/** The direct entry point's response, or null when it declined the request. */
async function directResponse(
  state: ServerState,
  direct: NonNullable<Handler["direct"]>,
  request: DirectRequest,
): Promise<Response | null> {
  try {
    const result = direct(request);
    if (result === null) return null;
    const response = await result;
    if (!(response instanceof Response)) {
      throw new TypeError("the handler did not return a Response");
    }
    return response;
  } catch (error) {
    return handlerError(state, error);
  }
}

/** What a handler threw, as the client's 4xx (a `ClientError`) or a 500 `internal_error`. */
function handlerError(state: ServerState, error: unknown): Response {
  const clientError = findClientError(error);
  if (clientError !== null) {
    return problemResponse(clientError.code, { detail: clientError.message });
  }
  state.config.onError(error);
  return problemResponse("internal_error", { detail: "the request handler failed" });
}

/**
 * The handler's response; what it throws becomes the client's 4xx (a `ClientError`) or a
 * 500 `internal_error` (anything else, reported to `onError`).
 */
async function handlerResponse(
  state: ServerState,
  request: Request,
  info: ServeInfo,
): Promise<Response> {
  try {
    const response = await state.handler(request, info);
    if (!(response instanceof Response)) {
      throw new TypeError("the handler did not return a Response");
    }
    return response;
  } catch (error) {
    return handlerError(state, error);
  }
}

/** Reads and drops what the client still sends after our FIN, for a while, then closes. */
async function lingerAndClose(state: ServerState, connection: Connection): Promise<void> {
  // Closing a socket with unread input sends a reset, which can destroy the response before
  // the client read it (RFC 9112 §9.6): half-close first and drain (nginx's lingering close).
  connection.enter(PHASE_LINGER, state.config.now());
  try {
    await connection.conn.closeWrite();
  } catch {
    return;
  }
  let dropped = 0;
  while (!connection.closed && !connection.timedOut && dropped < LINGER_MAX_BYTES) {
    dropped += connection.buffered;
    connection.take(connection.buffered);
    if (!(await connection.fill(connection.input.length))) break;
  }
}
