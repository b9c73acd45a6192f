/**
 * A byte-transparent HTTP/1.1 client over `Deno.connect` / `Deno.connectTls`, with its own
 * keep-alive pool per origin: the gateway's default upstream client (README, "Upstream
 * clients"). It sends the method, target and headers exactly as given (only `host` and the body
 * framing are its own) and passes the upstream's status, headers and body bytes on unchanged:
 * no decompression, no added headers, no re-framing. One request per connection at a time, no
 * pipelining; idle connections are reused last-in first-out and closed after `idleTimeoutMs`.
 *
 * Memory stays flat whatever the body size: each connection reads into one 64 KiB buffer, a
 * response body is a byte stream that reads the socket straight into a consumer's BYOB view,
 * and a request body is read with a BYOB reader into one reused buffer and framed in place,
 * each write awaited (backpressure both ways).
 *
 * Parsing is strict (RFC 9112): a response head over 64 KiB, obs-fold, bare CR/LF, NUL,
 * invalid field names, duplicate or conflicting `content-length`, `content-length` with
 * `transfer-encoding`, or an unknown transfer coding is an `unreachable` failure and the
 * connection is destroyed. A connection goes back to the pool only after its response body was
 * read to its exact end, the request body was sent in full and nothing follows the response.
 *
 * @module
 */
import { settlesAtOnce } from "../async/settles_at_once.ts";
import { fieldsResponse } from "../server/static_body.ts";
import { ClientError, findClientError } from "./client_error.ts";
import { type IdleWatch, watchIdle } from "./_idle_watch.ts";
import { connectUpstream, type UpstreamTlsOptions } from "./upstream_tls.ts";
import {
  checkUpstreamRequest,
  classifyUpstreamFailure,
  isFieldValue,
  isToken,
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
/** Interim (1xx) responses taken before the final one; one more fails the attempt. */
const MAX_INTERIM_RESPONSES = 16;
/** Each connection's read-ahead buffer: a whole head must fit. */
const READ_BUFFER_BYTES = MAX_HEAD_BYTES;
/** Request body bytes read (and written) at a time. */
const BODY_CHUNK_BYTES = 64 * 1024;
/** Room before a chunk's data for its size line: at most `10000\r\n` for 64 KiB. */
const CHUNK_PREFIX_BYTES = 8;

const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const encoder = new TextEncoder();

/** A protocol violation by the upstream (always `unreachable`). */
class ProtocolError extends Error {}

/** The connection ended or broke before any byte of the response arrived. */
class NoResponseError extends Error {}

/** The request body stream (the client's side) failed; `cause` is what it threw. */
class BodySourceError extends Error {}

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

/**
 * One upstream connection with its read-ahead buffer: bytes `[start, end)` of `buffer` were
 * read and not consumed yet. The buffer is never replaced, so reading allocates nothing.
 */
class Connection {
  readonly conn: Deno.Conn;
  readonly pool: OriginPool;
  readonly buffer = new Uint8Array(READ_BUFFER_BYTES);
  start = 0;
  end = 0;
  closed = false;
  /** When it was parked (`performance.now()`), for the pool's idle sweep. */
  idleSince = 0;
  /** True while the connection sits in the pool. */
  idle = false;
  /** A read started while idle, which the next exchange takes over. */
  private watch: Promise<number | null> | null = null;

  constructor(conn: Deno.Conn, pool: OriginPool) {
    this.conn = conn;
    this.pool = pool;
  }

  /** Bytes read and not consumed yet. */
  get pendingLength(): number {
    return this.end - this.start;
  }

  /** Marks `count` pending bytes consumed. */
  consume(count: number): void {
    this.start += count;
    if (this.start === this.end) this.start = this.end = 0;
  }

  /** Copies out `count` pending bytes (owned, so the buffer can be reused) and consumes them. */
  take(count: number): Uint8Array<ArrayBuffer> {
    const bytes = this.buffer.slice(this.start, this.start + count);
    this.consume(count);
    return bytes;
  }

  /**
   * Reads more from the socket into the buffer, compacting it first when its tail is full;
   * false at the end of the stream.
   */
  async fill(): Promise<boolean> {
    let n: number | null;
    const watch = this.watch;
    if (watch !== null) {
      this.watch = null;
      n = await watch;
    } else {
      if (this.end === this.buffer.length) {
        if (this.start === 0) throw new ProtocolError("read-ahead buffer full");
        this.buffer.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      }
      n = await this.conn.read(this.buffer.subarray(this.end));
    }
    if (n === null) return false;
    this.end += n;
    return true;
  }

  /**
   * Reads from the socket straight into `view` (nothing may be pending); null at the end of
   * the stream.
   */
  async readInto(view: Uint8Array): Promise<number | null> {
    if (this.watch !== null || this.pendingLength > 0) {
      // Not reached: a response head always comes first and takes over the idle read.
      if (!(await this.fill())) return null;
      const count = Math.min(this.pendingLength, view.length);
      view.set(this.buffer.subarray(this.start, this.start + count));
      this.consume(count);
      return count;
    }
    return await this.conn.read(view);
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
    // Nothing is pending when a connection is parked, so the read lands at the buffer's start.
    this.start = this.end = 0;
    const watch = this.conn.read(this.buffer);
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

  async writeAll(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) {
      offset += await this.conn.write(bytes.subarray(offset));
    }
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
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

/**
 * Idle connections of one origin (a LIFO stack) plus every open connection, for `close()`.
 *
 * Idle timeouts: one coarse, unref'd sweep per pool while it has idle connections, instead of a
 * `setTimeout`/`clearTimeout` pair per request (~2% of a proxied request's CPU under load). The
 * stack is LIFO, so the longest idle are at its bottom; a connection closes up to a tick late.
 */
class OriginPool {
  readonly idle: Connection[] = [];
  readonly open = new Set<Connection>();
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  constructor(readonly origin: Origin, readonly options: OriginPoolOptions) {}

  forget(connection: Connection): void {
    this.open.delete(connection);
    const index = this.idle.lastIndexOf(connection);
    if (index !== -1) this.idle.splice(index, 1);
    if (this.idle.length === 0) this.stopSweep();
  }

  private sweep(): void {
    const oldest = performance.now() - this.options.idleTimeoutMs;
    while (this.idle.length > 0 && this.idle[0].idleSince <= oldest) this.idle[0].destroy();
    if (this.idle.length === 0) this.stopSweep();
  }

  private stopSweep(): void {
    if (this.sweepTimer === undefined) return;
    clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  /** Returns a healthy connection to the pool, or closes it when the pool is full or closed. */
  release(connection: Connection, clientClosed: boolean): void {
    if (connection.closed) return;
    if (clientClosed || this.idle.length >= this.options.maxIdlePerHost) {
      connection.destroy();
      return;
    }
    this.idle.push(connection);
    connection.idleSince = performance.now();
    connection.park();
    if (this.sweepTimer === undefined) {
      const tickMs = Math.max(5, Math.min(1000, Math.floor(this.options.idleTimeoutMs / 10)));
      this.sweepTimer = setInterval(() => this.sweep(), tickMs);
      Deno.unrefTimer(this.sweepTimer);
    }
  }

  take(): Connection | null {
    const connection = this.idle.pop();
    if (connection === undefined) return null;
    connection.unpark();
    return connection;
  }

  closeAll(): void {
    for (const connection of [...this.open]) connection.destroy();
    this.stopSweep();
  }
}

interface ResponseHead {
  minor: number;
  status: number;
  statusText: string;
  /** Name/value pairs as received: the `Response` takes them in one pass (no `Headers` copy). */
  headers: [string, string][];
  contentLength: number | null;
  chunked: boolean;
  keepAlive: boolean;
}

const ascii = new TextDecoder();

function latin1(bytes: Uint8Array, start: number, end: number): string {
  // The usual head is all ASCII, where UTF-8 decoding gives the same string in one native call
  // (String.fromCharCode over spread bytes was ~4% of a proxied request's CPU).
  let high = false;
  for (let i = start; i < end; i++) {
    if (bytes[i] > 0x7f) {
      high = true;
      break;
    }
  }
  if (!high) return ascii.decode(bytes.subarray(start, end));
  let out = "";
  for (let i = start; i < end; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + 8192)));
  }
  return out;
}

/** `text` without leading and trailing SP and HTAB (OWS, RFC 9110 §5.6.3). */
function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text.charCodeAt(start) === 32 || text.charCodeAt(start) === 9)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--;
  // The usual `name: value` has one space and nothing after: one slice, no regular expression.
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

/** Parses a head (without the final CRLFCRLF); throws {@link ProtocolError}. */
export function parseResponseHead(text: string): ResponseHead {
  const lines = text.split("\r\n");
  const match = STATUS_LINE.exec(lines[0]);
  if (match === null) throw new ProtocolError("malformed status line");
  const minor = Number(match[1]);
  const status = Number(match[2]);
  const headers: [string, string][] = [];
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
    if (!isToken(name)) throw new ProtocolError("invalid header name");
    const value = trimOws(line.slice(colon + 1));
    if (!isFieldValue(value)) throw new ProtocolError("invalid header value");
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
    headers.push([name, value]);
  }
  let chunked = false;
  if (transferEncoding !== null) {
    if (contentLength !== null) throw new ProtocolError("content-length with transfer-encoding");
    if (transferEncoding.trim().toLowerCase() !== "chunked") {
      throw new ProtocolError(`unsupported transfer-encoding: ${transferEncoding}`);
    }
    chunked = true;
  }
  const keepAlive = minor === 1
    ? connectionTokens === "" ||
      !connectionTokens.split(",").map((token) => token.trim()).includes("close")
    : false;
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

/** Where `\r\n\r\n` starts in the pending bytes (searching from `from`), or -1. */
function indexOfHeadEnd(connection: Connection, from: number): number {
  const { buffer, start, end } = connection;
  for (let i = start + Math.max(0, from); i + 3 < end; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) {
      return i - start;
    }
  }
  return -1;
}

/**
 * Reads one head from the connection, of at most `maxBytes` (what the interim heads before it
 * left of {@link MAX_HEAD_BYTES}); throws NoResponseError when nothing at all came.
 */
async function readHead(
  connection: Connection,
  maxBytes: number,
): Promise<{ head: ResponseHead; bytes: number }> {
  let scanned = 0;
  while (true) {
    const end = indexOfHeadEnd(connection, scanned - 3);
    if (end !== -1) {
      if (end + 4 > maxBytes) throw new ProtocolError("response heads over 64 KiB");
      const text = latin1(connection.buffer, connection.start, connection.start + end);
      connection.consume(end + 4);
      return { head: parseResponseHead(text), bytes: end + 4 };
    }
    if (connection.pendingLength >= maxBytes) {
      throw new ProtocolError("response heads over 64 KiB");
    }
    scanned = connection.pendingLength;
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
 * Hands over up to `max` body bytes: into `view` when the consumer gave one (straight from the
 * socket when nothing is pending), else as an owned copy. Null at the end of the stream.
 */
async function deliver(
  connection: Connection,
  view: Uint8Array | null,
  max: number,
): Promise<Uint8Array | null> {
  if (connection.pendingLength === 0) {
    if (view !== null) {
      const target = view.length > max ? view.subarray(0, max) : view;
      const n = await connection.readInto(target);
      return n === null ? null : target.subarray(0, n);
    }
    if (!(await connection.fill())) return null;
  }
  const count = Math.min(connection.pendingLength, max, view?.length ?? Infinity);
  if (view === null) return connection.take(count);
  view.set(connection.buffer.subarray(connection.start, connection.start + count));
  connection.consume(count);
  return view.subarray(0, count);
}

/** Reads a response body in its framing, to its exact end. */
interface BodySource {
  /** Body bytes into `view` (or an owned copy when null); null at the exact end. */
  read(view: Uint8Array | null): Promise<Uint8Array | null>;
  /** True once the end was reached with the bytes already returned. */
  atEnd(): boolean;
}

function lengthSource(connection: Connection, length: number): BodySource {
  let left = length;
  return {
    async read(view) {
      if (left === 0) return null;
      const bytes = await deliver(connection, view, left);
      if (bytes === null) throw new ProtocolError("connection closed before the end of the body");
      left -= bytes.length;
      return bytes;
    },
    atEnd: () => left === 0,
  };
}

function closeDelimitedSource(connection: Connection): BodySource {
  return {
    read: (view) => deliver(connection, view, Infinity),
    atEnd: () => false,
  };
}

/** Reads one CRLF-terminated line (without it), at most `max` bytes. */
async function readLine(connection: Connection, max: number): Promise<string> {
  let scanned = 0;
  while (true) {
    const { buffer, start, end } = connection;
    for (let i = start + scanned; i < end; i++) {
      if (buffer[i] === 10) {
        if (i === start || buffer[i - 1] !== 13) {
          throw new ProtocolError("bare LF in chunked body");
        }
        if (i - 1 - start > max) throw new ProtocolError("chunked framing line too long");
        const line = latin1(buffer, start, i - 1);
        connection.consume(i + 1 - start);
        return line;
      }
    }
    scanned = end - start;
    if (scanned > max + 1) throw new ProtocolError("chunked framing line too long");
    if (!(await connection.fill())) {
      throw new ProtocolError("connection closed inside the chunked body");
    }
  }
}

function chunkedSource(connection: Connection): BodySource {
  let left = 0; // bytes of the current chunk still to read
  let done = false;
  return {
    async read(view) {
      if (done) return null;
      if (left === 0) {
        const line = await readLine(connection, MAX_CHUNK_LINE_BYTES);
        const semicolon = line.indexOf(";");
        const sizeText = (semicolon === -1 ? line : line.slice(0, semicolon)).replace(
          /[ \t]+$/,
          "",
        );
        if (!/^[0-9a-fA-F]{1,12}$/.test(sizeText)) throw new ProtocolError("invalid chunk size");
        if (semicolon !== -1 && !isFieldValue(line.slice(semicolon))) {
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
            if (colon <= 0 || !isToken(trailer.slice(0, colon))) {
              throw new ProtocolError("invalid trailer line");
            }
            if (!isFieldValue(trailer.slice(colon + 1))) {
              throw new ProtocolError("invalid trailer value");
            }
          }
          done = true;
          return null;
        }
      }
      const bytes = await deliver(connection, view, left);
      if (bytes === null) throw new ProtocolError("connection closed inside a chunk");
      left -= bytes.length;
      if (left === 0) {
        const end = await readLine(connection, 0);
        if (end !== "") throw new ProtocolError("chunk data longer than its size");
      }
      return bytes;
    },
    atEnd: () => done,
  };
}

const FRAMING_HEADERS = new Set(["host", "content-length", "transfer-encoding"]);
const LAST_CHUNK = encoder.encode("0\r\n\r\n");

function serializeHead(
  request: UpstreamRequest,
  origin: Origin,
  framing: string | null,
): string {
  let head = `${request.method} ${request.pathAndQuery} HTTP/1.1\r\nhost: ${origin.host}\r\n`;
  for (const [name, value] of request.headers) {
    if (FRAMING_HEADERS.has(name.toLowerCase())) continue;
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

/** RFC 9110 §9.3.3-9.3.4: methods whose empty body still gets `content-length: 0`. */
const WITH_EMPTY_BODY = new Set(["POST", "PUT", "PATCH"]);

function encodeHead(head: string): Uint8Array {
  // Header values may carry obs-text (bytes 0x80-0xff as Latin-1 characters): keep them bytes.
  // UTF-8 gives one byte per character exactly when all are ASCII (no scan of the head first).
  const utf8 = encoder.encode(head);
  if (utf8.length === head.length) return utf8;
  const out = new Uint8Array(head.length);
  for (let i = 0; i < head.length; i++) out[i] = head.charCodeAt(i);
  return out;
}

/** Writes `size` as hex right-aligned before `at` in `buffer`, then CRLF; returns its start. */
function writeChunkSize(buffer: Uint8Array, at: number, size: number): number {
  buffer[at - 2] = 13;
  buffer[at - 1] = 10;
  let position = at - 2;
  do {
    const digit = size & 15;
    buffer[--position] = digit < 10 ? 48 + digit : 87 + digit;
    size >>>= 4;
  } while (size > 0);
  return position;
}

/**
 * Sends a streamed request body: read with a BYOB reader into one reused buffer when the stream
 * is a byte stream (else default reads, copied into that buffer when chunked), each write
 * awaited so a slow upstream slows the reads. A chunk's size line and CRLF are written around
 * its data in the same buffer, so each chunk is one write. A failure of the stream itself is
 * thrown as {@link BodySourceError}.
 */
async function pumpBody(
  connection: Connection,
  reader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array>,
  byob: boolean,
  fixedLength: number | null,
  head: Uint8Array,
): Promise<void> {
  // The head goes out with the first body bytes when they are there at once (a body that came
  // with its request head): with Nagle on (TLS with a client certificate, see upstream_tls.ts)
  // a small write after the head waited for the upstream's delayed ACK, ~40 ms a request.
  let pendingHead: Uint8Array | null = head;
  const write = async (bytes: Uint8Array) => {
    if (pendingHead === null) return await connection.writeAll(bytes);
    const out = concat(pendingHead, bytes);
    pendingHead = null;
    await writeOrNoResponse(connection, out);
  };
  const read = async (view: Uint8Array) => {
    try {
      return byob
        ? await (reader as ReadableStreamBYOBReader).read(view)
        : await (reader as ReadableStreamDefaultReader<Uint8Array>).read();
    } catch (error) {
      throw new BodySourceError("the request body failed", { cause: error });
    }
  };
  let buffer: ArrayBuffer = new ArrayBuffer(CHUNK_PREFIX_BYTES + BODY_CHUNK_BYTES + 2);
  let sent = 0;
  while (true) {
    const reading = read(new Uint8Array(buffer, CHUNK_PREFIX_BYTES, BODY_CHUNK_BYTES));
    if (pendingHead !== null && !(await settlesAtOnce(reading))) {
      // The client has not sent body bytes yet: the upstream gets the head now.
      await writeOrNoResponse(connection, pendingHead);
      pendingHead = null;
    }
    const { done, value } = await reading;
    if (byob && value !== undefined) buffer = value.buffer as ArrayBuffer;
    if (done) break;
    if (connection.closed) throw new Error("connection closed");
    if (value.length === 0) continue;
    sent += value.length;
    if (fixedLength !== null) {
      if (sent > fixedLength) {
        throw new ClientError("bad_request", "request body longer than its content-length");
      }
      await write(value);
      continue;
    }
    // Chunked: frame in place around the data (a default read's chunk is copied in first).
    for (let offset = 0; offset < value.length; offset += BODY_CHUNK_BYTES) {
      const frame = new Uint8Array(buffer);
      const size = Math.min(BODY_CHUNK_BYTES, value.length - offset);
      if (!byob) frame.set(value.subarray(offset, offset + size), CHUNK_PREFIX_BYTES);
      const start = writeChunkSize(frame, CHUNK_PREFIX_BYTES, size);
      frame[CHUNK_PREFIX_BYTES + size] = 13;
      frame[CHUNK_PREFIX_BYTES + size + 1] = 10;
      await write(frame.subarray(start, CHUNK_PREFIX_BYTES + size + 2));
    }
  }
  if (fixedLength !== null && sent !== fixedLength) {
    throw new ClientError("bad_request", "request body shorter than its content-length");
  }
  if (fixedLength === null) await write(LAST_CHUNK);
  else if (pendingHead !== null) await write(new Uint8Array(0));
}

/** Options of {@link createHttp1Client}. */
export interface Http1ClientOptions {
  /**
   * TLS for https origins: extra trusted CA certificates (besides Deno's default roots) and a
   * client certificate. Every connection of this client uses them; a service with other
   * settings gets a client of its own (src/proxy/clients.ts), so pools never mix them.
   */
  tls?: UpstreamTlsOptions;
  /** Extra trusted CA certificates (PEM), added to `tls.caCerts`. */
  caCerts?: string[];
}

/** The HTTP/1.1 client, with a count of its open upstream connections. */
export interface Http1Client extends UpstreamClient {
  /** Open upstream connections (in use and idle), for tests and metrics. */
  openConnections(): number;
}

/**
 * The HTTP/1.1 client.
 *
 * @param poolFor the pool settings of an origin (the largest of the services naming it)
 * @param options TLS trust and client certificate for https origins
 * @example
 * ```ts
 * const client = createHttp1Client(() => ({ maxIdlePerHost: 20, idleTimeoutMs: 30000 }));
 * const response = await client.send({
 *   origin: "http://127.0.0.1:9001",
 *   pathAndQuery: "/orders?page=2",
 *   method: "GET",
 *   headers: [["accept", "application/json"]],
 *   body: null,
 *   signal: AbortSignal.timeout(5000),
 *   bodyIdleTimeoutMs: 10_000,
 * });
 * ```
 */
export function createHttp1Client(
  poolFor: (origin: string) => OriginPoolOptions,
  options: Http1ClientOptions = {},
): Http1Client {
  const client: ClientState = {
    pools: new Map(),
    closed: false,
    poolFor,
    tls: options.caCerts === undefined
      ? options.tls ?? null
      : { ...options.tls, caCerts: [...options.caCerts, ...(options.tls?.caCerts ?? [])] },
  };
  return {
    send: (request) => send(client, request),
    close() {
      client.closed = true;
      for (const pool of client.pools.values()) pool.closeAll();
      client.pools.clear();
    },
    openConnections() {
      let count = 0;
      for (const pool of client.pools.values()) count += pool.open.size;
      return count;
    },
  };
}

/** One client's pools and settings. */
interface ClientState {
  readonly pools: Map<string, OriginPool>;
  closed: boolean;
  readonly poolFor: (origin: string) => OriginPoolOptions;
  readonly tls: UpstreamTlsOptions | null;
}

/** The request head and body framing, prepared before any connection is taken. */
interface PreparedRequest {
  head: Uint8Array;
  fixedLength: number | null;
}

async function send(client: ClientState, request: UpstreamRequest): Promise<Response> {
  if (client.closed) throw new UpstreamError("unreachable", "the upstream client is closed");
  const pool = poolOf(client, request.origin);
  const prepared = prepare(request, pool.origin);
  const { signal } = request;
  if (signal.aborted) throw classifyUpstreamFailure(signal.reason, signal);
  const replayable = request.body === null || request.body instanceof Uint8Array;
  let retried = false;
  while (true) {
    const pooled = retried ? null : pool.take();
    let connection: Connection;
    try {
      connection = pooled ?? await fresh(client, pool, signal);
    } catch (error) {
      throw classifyUpstreamFailure(error, signal);
    }
    try {
      return await exchange(client, connection, request, prepared);
    } catch (error) {
      if (error instanceof ClientError) throw error;
      if (
        error instanceof NoResponseError && pooled !== null && replayable && !signal.aborted &&
        !client.closed
      ) {
        // A stale keep-alive connection: the peer closed it while it was idle.
        retried = true;
        continue;
      }
      throw classifyUpstreamFailure(error, signal);
    }
  }
}

function poolOf(client: ClientState, origin: string): OriginPool {
  let pool = client.pools.get(origin);
  if (pool === undefined) {
    pool = new OriginPool(parseOrigin(origin), client.poolFor(origin));
    client.pools.set(origin, pool);
  }
  return pool;
}

async function fresh(
  client: ClientState,
  pool: OriginPool,
  signal: AbortSignal,
): Promise<Connection> {
  const conn = await connectUpstream(pool.origin.key, client.tls, signal);
  const connection = new Connection(conn, pool);
  if (client.closed) {
    connection.destroy();
    throw new UpstreamError("unreachable", "the upstream client is closed");
  }
  pool.open.add(connection);
  return connection;
}

/** The request head and body framing; throws a ClientError before any connection is taken. */
function prepare(request: UpstreamRequest, origin: Origin): PreparedRequest {
  checkUpstreamRequest(request);
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
  return { head: encodeHead(serializeHead(request, origin, framing)), fixedLength };
}

/** One request and its response on one connection, and what is known of the request body. */
interface Exchange {
  readonly client: ClientState;
  readonly connection: Connection;
  readonly request: UpstreamRequest;
  bodyReader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array> | null;
  /** The request, body included, went out in full. */
  requestSent: boolean;
  /** What the request body stream threw, if it failed. */
  bodyFailure: unknown;
  /** Stops listening to the request's signal; idempotent. */
  detach(): void;
}

async function exchange(
  client: ClientState,
  connection: Connection,
  request: UpstreamRequest,
  prepared: PreparedRequest,
): Promise<Response> {
  const x = openExchange(client, connection, request);
  try {
    if (request.body === null) {
      // The usual bodiless request: its head in one write, awaited here (no helper chain).
      await writeOrNoResponse(connection, prepared.head);
      x.requestSent = true;
    } else {
      await writeRequest(x, prepared, request.body);
    }
    return respond(x, await readFinalHead(connection, request.onInformational));
  } catch (error) {
    x.detach();
    connection.destroy();
    x.bodyReader?.cancel(error).catch(() => {});
    throw blame(x, error);
  }
}

/** From here on an abort destroys the socket; every pending read or write then fails. */
function openExchange(
  client: ClientState,
  connection: Connection,
  request: UpstreamRequest,
): Exchange {
  return new OpenExchange(client, connection, request);
}

const ONCE = { once: true };

/** One object and one listener per exchange (it was an object and three closures). */
class OpenExchange implements Exchange {
  bodyReader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array> | null = null;
  requestSent = false;
  bodyFailure: unknown = null;
  private attached = true;
  private readonly onAbort = () => {
    this.connection.destroy();
    this.bodyReader?.cancel(this.request.signal.reason).catch(() => {});
  };

  constructor(
    readonly client: ClientState,
    readonly connection: Connection,
    readonly request: UpstreamRequest,
  ) {
    request.signal.addEventListener("abort", this.onAbort, ONCE);
  }

  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.request.signal.removeEventListener("abort", this.onAbort);
  }
}

/** What a failure is, once the request body's own failure is taken into account. */
function blame(x: Exchange, error: unknown): unknown {
  if (x.bodyFailure === null) return error;
  const clientError = findClientError(x.bodyFailure);
  if (clientError !== null) return clientError;
  if (x.request.signal.aborted) return error;
  return new UpstreamError("unreachable", "the request body failed", x.bodyFailure);
}

/** Writes `first` (then `second`); a failure means no response can come. */
async function writeOrNoResponse(
  connection: Connection,
  first: Uint8Array,
  second?: Uint8Array,
): Promise<void> {
  try {
    // One socket write takes the usual head whole: the loop in writeAll only for the rest.
    const written = await connection.conn.write(first);
    if (written < first.length) await connection.writeAll(first.subarray(written));
    if (second !== undefined) await connection.writeAll(second);
  } catch (error) {
    throw new NoResponseError("write failed", { cause: error });
  }
}

/** Sends the head and a buffered body, or starts pumping a streamed one (not awaited). */
async function writeRequest(
  x: Exchange,
  prepared: PreparedRequest,
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer>,
): Promise<void> {
  const { connection } = x;
  const { head, fixedLength } = prepared;
  if (body instanceof Uint8Array) {
    if (body.length <= 64 * 1024) await writeOrNoResponse(connection, concat(head, body));
    else await writeOrNoResponse(connection, head, body);
    x.requestSent = true;
    return;
  }
  let byob = true;
  let reader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array>;
  try {
    reader = body.getReader({ mode: "byob" });
  } catch {
    byob = false;
    reader = body.getReader();
  }
  x.bodyReader = reader;
  pumpBody(connection, reader, byob, fixedLength, head).then(() => {
    x.requestSent = true;
  }, (error) => {
    x.bodyFailure = error instanceof BodySourceError ? error.cause : error;
    reader.cancel(error).catch(() => {});
    connection.destroy();
  });
}

/**
 * Reads response heads until the final one. Interim (1xx) heads go to `onInformational` as they
 * come (all but `100 Continue`, which answers the gateway's own `Expect`, not the client's):
 * at most {@link MAX_INTERIM_RESPONSES}, and all heads together within {@link MAX_HEAD_BYTES},
 * so an upstream sending endless 1xx fails the attempt instead of holding it.
 */
async function readFinalHead(
  connection: Connection,
  onInformational: UpstreamRequest["onInformational"],
): Promise<ResponseHead> {
  let interim = 0;
  let headBytes = 0;
  while (true) {
    let responseHead: ResponseHead;
    try {
      const read = await readHead(connection, MAX_HEAD_BYTES - headBytes);
      responseHead = read.head;
      headBytes += read.bytes;
    } catch (error) {
      if (interim > 0 && error instanceof NoResponseError) {
        throw new ProtocolError("connection closed after an interim response");
      }
      throw error;
    }
    if (responseHead.status >= 200) {
      if (responseHead.status > 599) throw new ProtocolError("invalid status");
      return responseHead;
    }
    if (responseHead.status === 101) throw new ProtocolError("unexpected 101 upgrade");
    if (responseHead.status < 100) throw new ProtocolError("invalid status");
    if (++interim > MAX_INTERIM_RESPONSES) throw new ProtocolError("too many 1xx responses");
    if (responseHead.status !== 100) onInformational?.(responseHead.status, responseHead.headers);
  }
}

/** The response for a final head: no body, the whole body at once, or a byte stream. */
function respond(x: Exchange, responseHead: ResponseHead): Response {
  const { connection } = x;
  const { status } = responseHead;
  const bodyless = x.request.method === "HEAD" || status === 204 || status === 304;
  let source: BodySource | null;
  let reusable = responseHead.keepAlive;
  if (bodyless || (responseHead.contentLength === 0 && !responseHead.chunked)) {
    source = null;
  } else if (responseHead.chunked) {
    source = chunkedSource(connection);
  } else if (responseHead.contentLength !== null) {
    source = lengthSource(connection, responseHead.contentLength);
  } else {
    source = closeDelimitedSource(connection);
    reusable = false;
  }
  const ending = endOfResponse(x, reusable);
  // Fields as parsed (checked strictly above): `Headers` are built only if someone reads them.
  const { statusText, headers } = responseHead;
  if (source === null) {
    // An upstream that answered before the request body was sent in full loses the
    // connection (finish sees requestSent false), which also stops the body pump.
    ending.finish(true);
    return fieldsResponse(null, status, statusText, headers);
  }
  const length = responseHead.contentLength;
  if (!responseHead.chunked && length !== null && length <= connection.pendingLength) {
    // The whole body came with the head: hand it over as bytes, which a server writes
    // without a JavaScript stream, and free the connection at once.
    const bytes = connection.take(length);
    ending.finish(true);
    return fieldsResponse(bytes, status, statusText, headers);
  }
  return fieldsResponse(bodyStream(x, source, ending), status, statusText, headers);
}

/** Ends a response once: the connection goes back to the pool only after a clean end. */
interface ResponseEnding {
  /** Cuts the body when it stalls (`bodyIdleTimeoutMs`), once the stream exists. */
  idle: IdleWatch | null;
  finish(clean: boolean): void;
}

function endOfResponse(x: Exchange, reusable: boolean): ResponseEnding {
  const { connection } = x;
  let finished = false;
  const ending: ResponseEnding = {
    idle: null,
    finish(clean) {
      if (finished) return;
      finished = true;
      ending.idle?.stop();
      x.detach();
      const reuse = clean && reusable && x.requestSent && x.bodyFailure === null &&
        connection.pendingLength === 0 && !connection.closed;
      if (reuse) connection.pool.release(connection, x.client.closed);
      else connection.destroy();
      if (!x.requestSent) x.bodyReader?.cancel().catch(() => {});
    },
  };
  return ending;
}

/** The response body as a byte stream read from the socket, cut when it stalls too long. */
function bodyStream(
  x: Exchange,
  source: BodySource,
  ending: ResponseEnding,
): ReadableStream<Uint8Array> {
  const { connection, request } = x;
  let idleFailure: UpstreamError | null = null;
  const idleTimeoutMs = request.bodyIdleTimeoutMs;
  if (idleTimeoutMs !== undefined) {
    ending.idle = watchIdle(idleTimeoutMs, () => {
      idleFailure = new UpstreamError("timeout", `no response body bytes for ${idleTimeoutMs} ms`);
      // Fails the outstanding socket read, which errors the stream below.
      connection.destroy();
    });
  }
  const failure = (error: unknown): unknown =>
    idleFailure ?? blame(x, classifyUpstreamFailure(error, request.signal));
  return new ReadableStream({
    type: "bytes",
    async pull(controller) {
      // A BYOB consumer's view is filled straight from the socket; a default reader gets
      // owned copies (no autoAllocateChunkSize, so no 64 KiB allocation per read).
      const byobRequest = controller.byobRequest;
      const view = byobRequest?.view
        ? new Uint8Array(
          byobRequest.view.buffer,
          byobRequest.view.byteOffset,
          byobRequest.view.byteLength,
        )
        : null;
      const { idle } = ending;
      idle?.waiting();
      try {
        const bytes = await source.read(view);
        idle?.delivered();
        if (bytes === null) {
          ending.finish(true);
          controller.close();
          byobRequest?.respond(0);
          return;
        }
        if (byobRequest) byobRequest.respond(bytes.length);
        else controller.enqueue(bytes as Uint8Array<ArrayBuffer>);
        if (source.atEnd()) {
          ending.finish(true);
          controller.close();
        }
      } catch (error) {
        idle?.delivered();
        ending.finish(false);
        const failed = failure(error);
        if (
          failed instanceof UpstreamError && failed.kind !== "aborted" && !request.signal.aborted
        ) {
          request.onBodyFailure?.(failed);
        }
        controller.error(failed);
      }
    },
    cancel() {
      ending.finish(false);
    },
  }) as ReadableStream<Uint8Array>;
}
