/**
 * A byte-transparent HTTP/1.1 upstream client over `Deno.connect` / `Deno.connectTls`, with
 * its own keep-alive pool per origin (DESIGN.md, "The upstream client": the road to ~2x of
 * `fetch`). One request per connection at a time, no pipelining; idle connections are reused
 * last-in first-out and closed after `idleTimeoutMs`.
 *
 * Parsing is strict: a response head over 64 KiB, obs-fold, bare CR/LF, NUL, invalid field
 * names, duplicate or conflicting `content-length`, `content-length` with
 * `transfer-encoding`, or an unknown transfer coding is an `unreachable` failure and the
 * connection is destroyed. A connection goes back to the pool only after its response body was
 * read to its exact end, the request body was sent in full and nothing follows the response.
 *
 * @module
 */
import {
  type OriginPoolOptions,
  type UpstreamClient,
  UpstreamError,
  type UpstreamRequest,
} from "./upstream_client.ts";

/** The largest response head (status line, headers, final CRLF) accepted. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** The largest chunk-size line (size plus extensions) accepted. */
const MAX_CHUNK_LINE_BYTES = 4096;
/** The largest trailer section accepted (it is read and discarded). */
const MAX_TRAILER_BYTES = 64 * 1024;
/** Interim (1xx) responses skipped before giving up. */
const MAX_INTERIM_RESPONSES = 16;
const READ_SIZE = 64 * 1024;
/** Reads shorter than this are copied out so the read buffer can be reused. */
const COPY_BELOW = 8 * 1024;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Field values: visible ASCII, obs-text, SP and HTAB; no CR, LF, NUL or other controls.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const encoder = new TextEncoder();

/** A protocol violation by the upstream (always `unreachable`). */
class ProtocolError extends Error {}

/** The connection ended or broke before any byte of the response arrived. */
class NoResponseError extends Error {}

interface Origin {
  key: string;
  hostname: string;
  port: number;
  tls: boolean;
  host: string;
}

function parseOrigin(origin: string): Origin {
  const url = new URL(origin);
  const tls = url.protocol === "https:";
  const port = url.port === "" ? (tls ? 443 : 80) : Number(url.port);
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  return { key: origin, hostname, port, tls, host: url.host };
}

/** One upstream connection with its read-ahead buffer. */
class Connection {
  readonly conn: Deno.Conn;
  readonly pool: OriginPool;
  /** Bytes read from the socket and not consumed yet. */
  pending: Uint8Array = new Uint8Array(0);
  closed = false;
  idleTimer: ReturnType<typeof setTimeout> | undefined;
  private buffer = new Uint8Array(READ_SIZE);

  constructor(conn: Deno.Conn, pool: OriginPool) {
    this.conn = conn;
    this.pool = pool;
  }

  /** True while the connection sits in the pool. */
  idle = false;
  /** A read started while idle, which the next exchange takes over. */
  private watch: Promise<Uint8Array | null> | null = null;

  /** Reads what the socket has (owned bytes), or null at the end of the stream. */
  read(): Promise<Uint8Array | null> {
    const watch = this.watch;
    if (watch !== null) {
      this.watch = null;
      return watch;
    }
    return this.readSocket();
  }

  /**
   * Parks the connection: a read stays posted (unref'd, so it keeps no process alive) and
   * destroys the connection if the peer closes it or sends anything while it is idle; taken
   * back, that read becomes the first read of the next response.
   */
  park(): void {
    this.idle = true;
    this.unref();
    if (this.watch !== null) return;
    const watch = this.readSocket();
    this.watch = watch;
    watch.then(() => {
      if (this.idle) this.destroy();
    }, () => {
      if (this.idle) this.destroy();
    });
  }

  unpark(): void {
    this.idle = false;
    try {
      (this.conn as Deno.TcpConn).ref?.();
    } catch {
      // closed
    }
  }

  private unref(): void {
    try {
      (this.conn as Deno.TcpConn).unref?.();
    } catch {
      // closed
    }
  }

  private async readSocket(): Promise<Uint8Array | null> {
    const n = await this.conn.read(this.buffer);
    if (n === null) return null;
    if (n < COPY_BELOW) return this.buffer.slice(0, n);
    const out = this.buffer.subarray(0, n);
    this.buffer = new Uint8Array(READ_SIZE);
    return out;
  }

  /** Appends freshly read bytes to `pending`; false at the end of the stream. */
  async fill(): Promise<boolean> {
    const bytes = await this.read();
    if (bytes === null) return false;
    this.pending = this.pending.length === 0 ? bytes : concat(this.pending, bytes);
    return true;
  }

  async writeAll(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) {
      offset += await this.conn.write(bytes.subarray(offset));
    }
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.pool.forget(this);
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Idle connections of one origin (a LIFO stack) plus every open connection, for `close()`. */
class OriginPool {
  readonly idle: Connection[] = [];
  readonly open = new Set<Connection>();
  constructor(readonly origin: Origin, readonly options: OriginPoolOptions) {}

  forget(connection: Connection): void {
    this.open.delete(connection);
    const index = this.idle.lastIndexOf(connection);
    if (index !== -1) this.idle.splice(index, 1);
  }

  /** Returns a healthy connection to the pool, or closes it when the pool is full or closed. */
  release(connection: Connection, clientClosed: boolean): void {
    if (connection.closed) return;
    if (clientClosed || this.idle.length >= this.options.maxIdlePerHost) {
      connection.destroy();
      return;
    }
    this.idle.push(connection);
    connection.park();
    const timer = setTimeout(() => connection.destroy(), this.options.idleTimeoutMs);
    Deno.unrefTimer(timer);
    connection.idleTimer = timer;
  }

  take(): Connection | null {
    const connection = this.idle.pop();
    if (connection === undefined) return null;
    if (connection.idleTimer !== undefined) clearTimeout(connection.idleTimer);
    connection.idleTimer = undefined;
    connection.unpark();
    return connection;
  }

  closeAll(): void {
    for (const connection of [...this.open]) connection.destroy();
  }
}

/** Connects, giving up (and closing the late socket) when `signal` aborts first. */
function connect(
  origin: Origin,
  signal: AbortSignal,
  caCerts: string[] | undefined,
): Promise<Deno.Conn> {
  const connecting: Promise<Deno.Conn> = origin.tls
    ? Deno.connectTls({ hostname: origin.hostname, port: origin.port, caCerts })
    : Deno.connect({ hostname: origin.hostname, port: origin.port });
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason);
      connecting.then((conn) => {
        try {
          conn.close();
        } catch {
          // closed already
        }
      }, () => {});
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    connecting.then((conn) => {
      // When aborted, onAbort already rejected and closes this socket.
      signal.removeEventListener("abort", onAbort);
      if (!signal.aborted) resolve(conn);
    }, (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
  });
}

/** Maps a failure onto the three outcomes, like the fetch client does. */
function classify(error: unknown, signal: AbortSignal): UpstreamError {
  if (signal.aborted) {
    const reason = signal.reason;
    const kind = reason instanceof UpstreamError ? reason.kind : "aborted";
    return new UpstreamError(kind, `upstream request ${kind}`, error);
  }
  if (error instanceof UpstreamError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new UpstreamError("unreachable", message, error);
}

interface ResponseHead {
  minor: number;
  status: number;
  statusText: string;
  headers: Headers;
  contentLength: number | null;
  chunked: boolean;
  keepAlive: boolean;
}

function latin1(bytes: Uint8Array, start: number, end: number): string {
  let out = "";
  for (let i = start; i < end; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + 8192)));
  }
  return out;
}

function indexOfHeadEnd(bytes: Uint8Array, from: number): number {
  for (let i = Math.max(0, from); i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

/** Parses a head (without the final CRLFCRLF); throws {@link ProtocolError}. */
export function parseResponseHead(text: string): ResponseHead {
  const lines = text.split("\r\n");
  const match = STATUS_LINE.exec(lines[0]);
  if (match === null) throw new ProtocolError("malformed status line");
  const minor = Number(match[1]);
  const status = Number(match[2]);
  const headers = new Headers();
  let contentLength: number | null = null;
  let transferEncoding: string | null = null;
  let connectionTokens = "";
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line.length === 0) throw new ProtocolError("empty header line");
    const first = line.charCodeAt(0);
    if (first === 32 || first === 9) throw new ProtocolError("obs-fold in response head");
    const colon = line.indexOf(":");
    if (colon <= 0) throw new ProtocolError("header line without a name");
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new ProtocolError("invalid header name");
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) throw new ProtocolError("invalid header value");
    const lower = name.toLowerCase();
    if (lower === "content-length") {
      if (contentLength !== null) throw new ProtocolError("duplicate content-length");
      if (!/^[0-9]{1,15}$/.test(value)) throw new ProtocolError("invalid content-length");
      contentLength = Number(value);
    } else if (lower === "transfer-encoding") {
      transferEncoding = transferEncoding === null ? value : `${transferEncoding}, ${value}`;
    } else if (lower === "connection") {
      connectionTokens += "," + value.toLowerCase();
    }
    headers.append(name, value);
  }
  let chunked = false;
  if (transferEncoding !== null) {
    if (contentLength !== null) throw new ProtocolError("content-length with transfer-encoding");
    if (transferEncoding.trim().toLowerCase() !== "chunked") {
      throw new ProtocolError(`unsupported transfer-encoding: ${transferEncoding}`);
    }
    chunked = true;
  }
  const tokens = connectionTokens.split(",").map((token) => token.trim());
  const keepAlive = minor === 1 ? !tokens.includes("close") : false;
  return {
    minor,
    status,
    statusText: match[3] ?? "",
    headers,
    contentLength,
    chunked,
    keepAlive,
  };
}

/** Reads one head from the connection; throws NoResponseError when nothing at all came. */
async function readHead(connection: Connection): Promise<ResponseHead> {
  let scanned = 0;
  while (true) {
    const end = indexOfHeadEnd(connection.pending, scanned - 3);
    if (end !== -1) {
      if (end + 4 > MAX_HEAD_BYTES) throw new ProtocolError("response head over 64 KiB");
      const text = latin1(connection.pending, 0, end);
      connection.pending = connection.pending.subarray(end + 4);
      return parseResponseHead(text);
    }
    if (connection.pending.length >= MAX_HEAD_BYTES) {
      throw new ProtocolError("response head over 64 KiB");
    }
    scanned = connection.pending.length;
    const empty = scanned === 0;
    let more: boolean;
    try {
      more = await connection.fill();
    } catch (error) {
      if (empty && !connection.closed) {
        throw new NoResponseError("connection broke", { cause: error });
      }
      throw error;
    }
    if (!more) {
      if (empty) throw new NoResponseError("connection closed before the response");
      throw new ProtocolError("connection closed inside the response head");
    }
  }
}

/**
 * Pulls body bytes in the response's framing; null at its exact end. `atEnd` (when set) tells
 * that the end was reached with the bytes just returned, so the stream can close at once.
 */
type BodyReader = (() => Promise<Uint8Array | null>) & { atEnd?: () => boolean };

function takePending(connection: Connection, max: number): Uint8Array {
  const pending = connection.pending;
  if (pending.length <= max) {
    connection.pending = new Uint8Array(0);
    return pending;
  }
  connection.pending = pending.subarray(max);
  return pending.subarray(0, max);
}

function lengthReader(connection: Connection, length: number): BodyReader {
  let left = length;
  const read: BodyReader = async () => {
    if (left === 0) return null;
    if (connection.pending.length === 0 && !(await connection.fill())) {
      throw new ProtocolError("connection closed before the end of the body");
    }
    const bytes = takePending(connection, left);
    left -= bytes.length;
    return bytes;
  };
  read.atEnd = () => left === 0;
  return read;
}

function closeDelimitedReader(connection: Connection): BodyReader {
  return async () => {
    if (connection.pending.length === 0 && !(await connection.fill())) return null;
    return takePending(connection, connection.pending.length);
  };
}

/** Reads one CRLF-terminated line (without it), at most `max` bytes. */
async function readLine(connection: Connection, max: number): Promise<string> {
  let scanned = 0;
  while (true) {
    const pending = connection.pending;
    for (let i = scanned; i < pending.length; i++) {
      if (pending[i] === 10) {
        if (i === 0 || pending[i - 1] !== 13) throw new ProtocolError("bare LF in chunked body");
        if (i - 1 > max) throw new ProtocolError("chunked framing line too long");
        const line = latin1(pending, 0, i - 1);
        connection.pending = pending.subarray(i + 1);
        return line;
      }
    }
    scanned = pending.length;
    if (scanned > max) throw new ProtocolError("chunked framing line too long");
    if (!(await connection.fill())) {
      throw new ProtocolError("connection closed inside the chunked body");
    }
  }
}

function chunkedReader(connection: Connection): BodyReader {
  let left = 0; // bytes of the current chunk still to read
  let done = false;
  return async () => {
    if (done) return null;
    if (left === 0) {
      const line = await readLine(connection, MAX_CHUNK_LINE_BYTES);
      const semicolon = line.indexOf(";");
      const sizeText = (semicolon === -1 ? line : line.slice(0, semicolon)).replace(/[ \t]+$/, "");
      if (!/^[0-9a-fA-F]{1,12}$/.test(sizeText)) throw new ProtocolError("invalid chunk size");
      if (semicolon !== -1 && !FIELD_VALUE.test(line.slice(semicolon))) {
        throw new ProtocolError("invalid chunk extension");
      }
      left = parseInt(sizeText, 16);
      if (left === 0) {
        // Trailers: read and discard, strictly.
        let total = 0;
        while (true) {
          const trailer = await readLine(connection, MAX_TRAILER_BYTES);
          if (trailer === "") break;
          total += trailer.length + 2;
          if (total > MAX_TRAILER_BYTES) throw new ProtocolError("trailers over 64 KiB");
          const colon = trailer.indexOf(":");
          if (colon <= 0 || !TOKEN.test(trailer.slice(0, colon))) {
            throw new ProtocolError("invalid trailer line");
          }
          if (!FIELD_VALUE.test(trailer.slice(colon + 1))) {
            throw new ProtocolError("invalid trailer value");
          }
        }
        done = true;
        return null;
      }
    }
    if (connection.pending.length === 0 && !(await connection.fill())) {
      throw new ProtocolError("connection closed inside a chunk");
    }
    const bytes = takePending(connection, left);
    left -= bytes.length;
    if (left === 0) {
      const end = await readLine(connection, 0);
      if (end !== "") throw new ProtocolError("chunk data longer than its size");
    }
    return bytes;
  };
}

const BODYLESS_REQUEST_HEADERS = new Set(["host", "content-length", "transfer-encoding"]);
const CHUNK_END = encoder.encode("\r\n");
const LAST_CHUNK = encoder.encode("0\r\n\r\n");

function serializeHead(
  request: UpstreamRequest,
  origin: Origin,
  framing: string | null,
): string {
  let head = `${request.method} ${request.pathAndQuery} HTTP/1.1\r\nhost: ${origin.host}\r\n`;
  for (const [name, value] of request.headers) {
    if (BODYLESS_REQUEST_HEADERS.has(name.toLowerCase())) continue;
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) {
      throw new UpstreamError("unreachable", `invalid request header ${JSON.stringify(name)}`);
    }
    head += `${name}: ${value}\r\n`;
  }
  if (framing !== null) head += framing;
  return head + "\r\n";
}

function declaredLength(headers: [string, string][]): number | null {
  for (const [name, value] of headers) {
    if (name.toLowerCase() === "content-length" && /^[0-9]{1,15}$/.test(value.trim())) {
      return Number(value.trim());
    }
  }
  return null;
}

/** Origin-form: a `/` and then visible ASCII only (no spaces, controls or raw non-ASCII). */
const REQUEST_TARGET = /^\/[\x21-\x7e]*$/;
const WITH_EMPTY_BODY = new Set(["POST", "PUT", "PATCH"]);

function encodeHead(head: string): Uint8Array {
  // Header values may carry obs-text (bytes 0x80-0xff as Latin-1 characters): keep them bytes.
  // deno-lint-ignore no-control-regex
  if (/^[\x00-\x7f]*$/.test(head)) return encoder.encode(head);
  const out = new Uint8Array(head.length);
  for (let i = 0; i < head.length; i++) out[i] = head.charCodeAt(i);
  return out;
}

/** Options of {@link createHttp1Client}. */
export interface Http1ClientOptions {
  /** Extra trusted CA certificates (PEM) for https origins; the system roots otherwise. */
  caCerts?: string[];
}

/**
 * The HTTP/1.1 client.
 *
 * @param poolFor the pool settings of an origin (its service's `pool`)
 * @param options TLS trust for https origins
 * @example
 * ```ts
 * const client = createHttp1Client(() => ({ maxIdlePerHost: 20, idleTimeoutMs: 30000 }));
 * ```
 */
export function createHttp1Client(
  poolFor: (origin: string) => OriginPoolOptions,
  options: Http1ClientOptions = {},
): UpstreamClient & { openConnections(): number } {
  const pools = new Map<string, OriginPool>();
  let closed = false;

  function poolOf(origin: string): OriginPool {
    let pool = pools.get(origin);
    if (pool === undefined) {
      pool = new OriginPool(parseOrigin(origin), poolFor(origin));
      pools.set(origin, pool);
    }
    return pool;
  }

  async function fresh(pool: OriginPool, signal: AbortSignal): Promise<Connection> {
    const conn = await connect(pool.origin, signal, options.caCerts);
    if (!pool.origin.tls) {
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // not a TCP socket
      }
    }
    const connection = new Connection(conn, pool);
    if (closed) {
      connection.destroy();
      throw new UpstreamError("unreachable", "the upstream client is closed");
    }
    pool.open.add(connection);
    return connection;
  }

  /** The request head and body framing; throws before any connection is taken. */
  function prepare(request: UpstreamRequest, origin: Origin) {
    const body = request.body;
    let framing: string | null = null;
    let fixedLength: number | null = null;
    if (body instanceof Uint8Array) {
      framing = `content-length: ${body.length}\r\n`;
    } else if (body !== null) {
      fixedLength = declaredLength(request.headers);
      framing = fixedLength === null
        ? "transfer-encoding: chunked\r\n"
        : `content-length: ${fixedLength}\r\n`;
    } else if (WITH_EMPTY_BODY.has(request.method)) {
      framing = "content-length: 0\r\n";
    }
    if (!TOKEN.test(request.method) || !REQUEST_TARGET.test(request.pathAndQuery)) {
      throw new UpstreamError("unreachable", "invalid method or request target");
    }
    return { head: encodeHead(serializeHead(request, origin, framing)), fixedLength };
  }

  async function exchange(
    connection: Connection,
    request: UpstreamRequest,
    prepared: { head: Uint8Array; fixedLength: number | null },
  ): Promise<Response> {
    const { signal } = request;
    const pool = connection.pool;
    const body = request.body;
    const { head, fixedLength } = prepared;

    // From here on an abort destroys the socket; every pending read or write then fails.
    let settled = false;
    let bodyReader: ReadableStreamDefaultReader<Uint8Array> | null = null;
    const onAbort = () => {
      connection.destroy();
      bodyReader?.cancel(signal.reason).catch(() => {});
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const detach = () => {
      if (settled) return;
      settled = true;
      signal.removeEventListener("abort", onAbort);
    };

    let requestSent = false;
    let bodyFailure: unknown = null;
    try {
      if (body instanceof Uint8Array) {
        const bytes = body.length <= 64 * 1024 ? concat(head, body) : null;
        try {
          if (bytes !== null) await connection.writeAll(bytes);
          else {
            await connection.writeAll(head);
            await connection.writeAll(body);
          }
        } catch (error) {
          throw new NoResponseError("write failed", { cause: error });
        }
        requestSent = true;
      } else if (body !== null) {
        try {
          await connection.writeAll(head);
        } catch (error) {
          throw new NoResponseError("write failed", { cause: error });
        }
        const reader = body.getReader();
        bodyReader = reader;
        (async () => {
          let sent = 0;
          while (true) {
            const { done, value } = await reader.read();
            if (done) break;
            if (connection.closed) throw new Error("connection closed");
            if (value.length === 0) continue;
            if (fixedLength !== null) {
              sent += value.length;
              if (sent > fixedLength) throw new Error("request body longer than content-length");
              await connection.writeAll(value);
            } else {
              await connection.writeAll(
                concat(encoder.encode(value.length.toString(16) + "\r\n"), value),
              );
              await connection.writeAll(CHUNK_END);
            }
          }
          if (fixedLength !== null && sent !== fixedLength) {
            throw new Error("request body shorter than content-length");
          }
          if (fixedLength === null) await connection.writeAll(LAST_CHUNK);
          requestSent = true;
        })().catch((error) => {
          bodyFailure = error;
          reader.cancel(error).catch(() => {});
          connection.destroy();
        });
      } else {
        try {
          await connection.writeAll(head);
        } catch (error) {
          throw new NoResponseError("write failed", { cause: error });
        }
        requestSent = true;
      }

      let responseHead: ResponseHead;
      let interim = 0;
      while (true) {
        try {
          responseHead = await readHead(connection);
        } catch (error) {
          if (interim > 0 && error instanceof NoResponseError) {
            throw new ProtocolError("connection closed after an interim response");
          }
          throw error;
        }
        if (responseHead.status >= 200) break;
        if (responseHead.status === 101) throw new ProtocolError("unexpected 101 upgrade");
        if (responseHead.status < 100) throw new ProtocolError("invalid status");
        if (++interim > MAX_INTERIM_RESPONSES) throw new ProtocolError("too many 1xx responses");
      }
      if (responseHead.status > 599) throw new ProtocolError("invalid status");

      const { status } = responseHead;
      const bodyless = request.method === "HEAD" || status === 204 || status === 304;
      let read: BodyReader | null;
      let reusable = responseHead.keepAlive;
      if (bodyless || (responseHead.contentLength === 0 && !responseHead.chunked)) {
        read = null;
      } else if (responseHead.chunked) {
        read = chunkedReader(connection);
      } else if (responseHead.contentLength !== null) {
        read = lengthReader(connection, responseHead.contentLength);
      } else {
        read = closeDelimitedReader(connection);
        reusable = false;
      }

      let finished = false;
      const finish = (clean: boolean) => {
        if (finished) return;
        finished = true;
        detach();
        const reuse = clean && reusable && requestSent && bodyFailure === null &&
          connection.pending.length === 0 && !connection.closed;
        if (reuse) pool.release(connection, closed);
        else connection.destroy();
        if (!requestSent) bodyReader?.cancel().catch(() => {});
      };

      const init = { status, statusText: responseHead.statusText, headers: responseHead.headers };
      if (read === null) {
        // An upstream that answered before the request body was sent in full loses the
        // connection (finish sees requestSent false), which also stops the body pump.
        finish(true);
        return new Response(null, init);
      }
      const length = responseHead.contentLength;
      if (!responseHead.chunked && length !== null && length <= connection.pending.length) {
        // The whole body came with the head: hand it over as bytes, which Deno.serve writes
        // without a JavaScript stream, and free the connection at once.
        const bytes = takePending(connection, length);
        finish(true);
        return new Response(bytes as Uint8Array<ArrayBuffer>, init);
      }
      const reader = read;
      const stream = new ReadableStream<Uint8Array>({
        async pull(controller) {
          try {
            const bytes = await reader();
            if (bytes === null) {
              controller.close();
              finish(true);
              return;
            }
            controller.enqueue(bytes);
            if (reader.atEnd?.()) {
              controller.close();
              finish(true);
            }
          } catch (error) {
            finish(false);
            controller.error(classify(error, signal));
          }
        },
        cancel() {
          finish(false);
        },
      }, { highWaterMark: 0 });
      return new Response(stream, init);
    } catch (error) {
      detach();
      connection.destroy();
      bodyReader?.cancel(error).catch(() => {});
      if (bodyFailure !== null && !signal.aborted) {
        throw new UpstreamError("unreachable", "the request body failed", bodyFailure);
      }
      throw error;
    }
  }

  return {
    async send(request) {
      if (closed) throw new UpstreamError("unreachable", "the upstream client is closed");
      const { signal } = request;
      if (signal.aborted) throw classify(signal.reason, signal);
      const pool = poolOf(request.origin);
      const prepared = prepare(request, pool.origin);
      const replayable = request.body === null || request.body instanceof Uint8Array;
      let retried = false;
      while (true) {
        const pooled = retried ? null : pool.take();
        let connection: Connection;
        try {
          connection = pooled ?? await fresh(pool, signal);
        } catch (error) {
          throw classify(error, signal);
        }
        try {
          return await exchange(connection, request, prepared);
        } catch (error) {
          if (
            error instanceof NoResponseError && pooled !== null && replayable && !signal.aborted &&
            !closed
          ) {
            // A stale keep-alive connection: the peer closed it while it was idle.
            retried = true;
            continue;
          }
          throw classify(error, signal);
        }
      }
    },
    close() {
      closed = true;
      for (const pool of pools.values()) pool.closeAll();
      pools.clear();
    },
    openConnections() {
      let count = 0;
      for (const pool of pools.values()) count += pool.open.size;
      return count;
    },
  };
}
