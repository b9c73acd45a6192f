/**
 * Writes a `Response` to an HTTP/1.1 connection (RFC 9112 §4-§7, §9): status line and fields
 * as the handler gave them (names lower-cased as `Headers` yields them, every `Set-Cookie` on
 * its own line, no `date` or `server` added), then the body framed by its declared
 * `Content-Length`, else chunked for HTTP/1.1 and close-delimited for HTTP/1.0. The framing
 * fields are the server's: `transfer-encoding` and `connection` from the handler are replaced
 * (its `connection: close` is honoured), an invalid `content-length` is dropped.
 *
 * A body that is complete at once (a small static body, say) goes out with a computed
 * `Content-Length` in one write with the head. Streaming bodies are read one chunk at a time
 * and each write is awaited before the next read, so memory stays flat whatever the size; byte
 * streams are read with a BYOB reader into one pooled buffer, framed in place.
 *
 * @module
 */
import { findClientError } from "../proxy/client_error.ts";
import { problemResponse } from "../problem.ts";
import type { Connection } from "./_connection.ts";
import type { RequestBody } from "./_request_body.ts";
import { bytesOf, fieldsOf, sortAndCombine } from "./static_body.ts";

/** What the exchange needs from the request to frame the response. */
export interface ResponseTarget {
  /** The request method, upper-cased (HEAD gets no body). */
  methodUpper: string;
  /** The request's HTTP minor version. */
  minor: number;
  /** The server would keep the connection open after this response. */
  keepAlive: boolean;
  /** The request body, if any: its `100 Continue` must not follow the response head. */
  body: RequestBody | null;
  /** Aborts when the client goes away: the response body is then cancelled. */
  signal: AbortSignal;
}

/** How the write went. */
export interface WriteOutcome {
  /** The whole response went out as framed. */
  complete: boolean;
  /** The connection may carry another request. */
  keepAlive: boolean;
}

/** The pooled buffer size, and the most a complete body may be to go out with its head. */
const BUFFER_BYTES = 64 * 1024;
/** Room kept before a chunk's data for its size line (`ffff\r\n` fits a 64 KiB buffer). */
const CHUNK_PREFIX_BYTES = 8;
/** A default-reader chunk this big suggests a long stream: switch to a BYOB reader if possible. */
const BYOB_SWITCH_BYTES = 16 * 1024;
const MAX_POOLED_BUFFERS = 64;

const encoder = new TextEncoder();
const LAST_CHUNK = encoder.encode("0\r\n\r\n");
const DECIMAL = /^[0-9]{1,15}$/;
const noop = () => {};
const toNull = () => null;

/**
 * Resolves null a few microtask ticks from now. A stream read that settles before it had its
 * data ready (Deno's streams for static bodies need one tick for the first read); one that
 * waits for I/O has not.
 */
function soon(): Promise<null> {
  return Promise.resolve().then(noop).then(noop).then(toNull);
}

const REASONS: Record<number, string> = {
  101: "Switching Protocols",
  102: "Processing",
  103: "Early Hints",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** Free 64 KiB buffers: taken while a response streams, so idle connections hold none. */
const pool: ArrayBuffer[] = [];

function takeBuffer(): ArrayBuffer {
  return pool.pop() ?? new ArrayBuffer(BUFFER_BYTES);
}

function giveBuffer(buffer: ArrayBuffer | null): void {
  if (
    buffer !== null && buffer.byteLength === BUFFER_BYTES && !buffer.detached &&
    pool.length < MAX_POOLED_BUFFERS
  ) {
    pool.push(buffer);
  }
}

/** The reason phrase for a status the handler gave no text for. */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}

/**
 * Writes `text` at `into[0]`, one byte per character (header values may carry obs-text, which
 * UTF-8 would turn into two bytes). `into` has room for `text.length` bytes.
 */
function encodeLatin1Into(text: string, into: Uint8Array): void {
  const { read, written } = encoder.encodeInto(text, into);
  if (read === text.length && written === read) return;
  for (let i = 0; i < text.length; i++) into[i] = text.charCodeAt(i);
}

function encodeLatin1(text: string): Uint8Array {
  const bytes = encoder.encode(text);
  if (bytes.length === text.length) return bytes;
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function hasCloseToken(value: string): boolean {
  for (const part of value.split(",")) {
    if (part.trim().toLowerCase() === "close") return true;
  }
  return false;
}

/** Chunks gathered before the head goes out. */
interface Gathered {
  chunks: Uint8Array[];
  total: number;
  /** The stream ended within the gathered chunks. */
  ended: boolean;
  /** A read that had not resolved yet (its result comes next). */
  pending: Promise<ReadableStreamReadResult<Uint8Array>> | null;
}

/**
 * Reads whatever the stream has ready without waiting, up to one buffer: a body that is
 * already complete can then go out with a `Content-Length` and its head in one write, and a
 * streaming body does not hold its head back.
 */
async function gather(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<Gathered> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (total < BUFFER_BYTES) {
    const read = reader.read();
    // A read that is pending after a few ticks waits for I/O: it is kept for later.
    const result = await Promise.race([read, soon()]);
    if (result === null) return { chunks, total, ended: false, pending: read };
    if (result.done) return { chunks, total, ended: true, pending: null };
    if (result.value.length === 0) continue;
    chunks.push(result.value);
    total += result.value.length;
  }
  return { chunks, total, ended: false, pending: null };
}

/**
 * Writes `response` for the request described by `target`. Never throws: a failed write or a
 * broken response body comes back as `complete: false`, and the caller closes the connection.
 */
export async function writeResponse(
  connection: Connection,
  response: Response,
  target: ResponseTarget,
): Promise<WriteOutcome> {
  const fields = responseFields(response);
  let keepAlive = target.keepAlive &&
    (fields.handlerConnection === null || !hasCloseToken(fields.handlerConnection));
  const status = response.status;
  const bodyless = target.methodUpper === "HEAD" || status < 200 || status === 204 ||
    status === 304;
  if (status === 101) keepAlive = false;
  const bytes = bodyless ? null : bytesOf(response);
  if (bytes !== null) {
    // The whole body is known bytes: no stream is built or read (./static_body.ts).
    if (target.body !== null && target.body.continueWithheld) keepAlive = false;
    const gathered = { chunks: [bytes], total: bytes.length, ended: true, pending: null };
    return await writeWhole({ connection, fields, keepAlive, target }, gathered);
  }
  const body = response.body;
  if (bodyless || body === null) {
    return await writeWithoutBody({ connection, fields, keepAlive, target }, body, bodyless);
  }

  let reader: ReadableStreamDefaultReader<Uint8Array>;
  try {
    reader = body.getReader();
  } catch {
    // A locked or used body: nothing sensible can be sent after a head, so send none.
    return { complete: false, keepAlive: false };
  }
  let gathered: Gathered;
  try {
    gathered = await gather(reader);
  } catch (error) {
    return await answerBrokenBody(connection, error, target);
  }
  // Reading the body may have sent a `100 Continue` (the handler streams the request body
  // back) or not: decide now.
  if (target.body !== null && target.body.continueWithheld) keepAlive = false;
  const writing = { connection, fields, keepAlive, target };
  if (gathered.ended) return await writeWhole(writing, gathered);
  return await writeStreaming(writing, body, reader, gathered);
}

/** The response's status line and fields, minus the framing fields the server writes itself. */
interface ResponseFields {
  /** Status line and the handler's fields, each line ending in CRLF. */
  head: string;
  /** The handler's valid `content-length`, or -1. */
  declared: number;
  /** The same, as the handler wrote it. */
  declaredText: string | null;
  /** The handler's `connection` field, if any. */
  handlerConnection: string | null;
}

function responseFields(response: Response): ResponseFields {
  const status = response.status;
  const fields: ResponseFields = {
    head: `HTTP/1.1 ${status} ${response.statusText || reasonPhrase(status)}\r\n`,
    declared: -1,
    declaredText: null,
    handlerConnection: null,
  };
  const pairs = fieldsOf(response);
  // Pairs as `Headers` would yield them, so both forms go out the same way.
  for (const [name, value] of pairs !== null ? sortAndCombine(pairs) : response.headers) {
    switch (name) {
      case "content-length":
        // An invalid length is dropped rather than passed on: the framing is ours to get right.
        if (DECIMAL.test(value)) {
          fields.declared = Number(value);
          fields.declaredText = value;
        }
        continue;
      case "transfer-encoding":
        continue;
      case "connection":
        // Hop-by-hop and about this connection: the server writes its own, honouring `close`.
        fields.handlerConnection = value;
        continue;
    }
    fields.head += `${name}: ${value}\r\n`;
  }
  return fields;
}

/** One response being written, as far as it was decided before its body. */
interface Writing {
  connection: Connection;
  fields: ResponseFields;
  /** The connection may carry on after this response (so far). */
  keepAlive: boolean;
  target: ResponseTarget;
}

/** A response with no body to send: HEAD, 1xx, 204, 304, or a null body. */
async function writeWithoutBody(
  writing: Writing,
  body: ReadableStream<Uint8Array> | null,
  bodyless: boolean,
): Promise<WriteOutcome> {
  const { connection, fields, target } = writing;
  let { keepAlive } = writing;
  const { declared, declaredText } = fields;
  let head = fields.head;
  if (body !== null) body.cancel().catch(() => {});
  // A client still waiting for `100 Continue` may send its body or not: it cannot carry on.
  if (target.body !== null && target.body.continueWithheld) keepAlive = false;
  if (bodyless) {
    if (declaredText !== null) head += `content-length: ${declaredText}\r\n`;
  } else {
    // No body at all: a declared length cannot be honoured, so the connection ends after it.
    head += `content-length: ${declared > 0 ? declaredText : "0"}\r\n`;
    if (declared > 0) keepAlive = false;
  }
  const complete = await writeHead(connection, head, keepAlive, target);
  return { complete: complete && !(declared > 0 && !bodyless), keepAlive: complete && keepAlive };
}

/**
 * The body broke before a byte of this response was written: the client can still get a
 * clear answer instead of a dropped connection. Behind the gateway that body is the
 * upstream's, so it is a 502 (a client's own fault keeps its 4xx).
 */
async function answerBrokenBody(
  connection: Connection,
  error: unknown,
  target: ResponseTarget,
): Promise<WriteOutcome> {
  const clientError = findClientError(error);
  const problem = clientError !== null
    ? problemResponse(clientError.code, { detail: clientError.message })
    : problemResponse("upstream_unreachable", {
      detail: "the response body failed before its first byte",
    });
  await writeResponse(connection, problem, { ...target, keepAlive: false });
  return { complete: false, keepAlive: false };
}

/** The whole body is here: one write, with a length we know. */
async function writeWhole(writing: Writing, gathered: Gathered): Promise<WriteOutcome> {
  const { connection, fields, target } = writing;
  let { keepAlive } = writing;
  const { declared, declaredText } = fields;
  let total = gathered.total;
  if (declared >= 0 && total > declared) total = declared;
  const short = declared >= 0 && total < declared;
  if (short) keepAlive = false;
  let head = fields.head + `content-length: ${declared >= 0 ? declaredText : total}\r\n`;
  head += connectionField(keepAlive, target.minor) + "\r\n";
  const complete = await writeHeadAndChunks(connection, head, gathered.chunks, total, target);
  return { complete: complete && !short, keepAlive: complete && !short && keepAlive };
}

/** A body still streaming: its declared length, else chunked (HTTP/1.1) or close-delimited. */
async function writeStreaming(
  writing: Writing,
  body: ReadableStream<Uint8Array>,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  gathered: Gathered,
): Promise<WriteOutcome> {
  const { connection, fields, target } = writing;
  let { keepAlive } = writing;
  const { declared, declaredText } = fields;
  const closeDelimited = declared < 0 && target.minor === 0;
  const chunked = declared < 0 && !closeDelimited;
  if (closeDelimited) keepAlive = false;
  let head = fields.head;
  if (declared >= 0) head += `content-length: ${declaredText}\r\n`;
  else if (chunked) head += "transfer-encoding: chunked\r\n";
  head += connectionField(keepAlive, target.minor) + "\r\n";

  const onAbort = () => {
    reader.cancel().catch(() => {});
  };
  target.signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await streamBody(connection, body, reader, head, gathered, {
      chunked,
      declared,
      keepAlive,
      target,
    });
  } finally {
    target.signal.removeEventListener("abort", onAbort);
  }
}

/** The `connection` field when it says something the client would not assume. */
function connectionField(keepAlive: boolean, minor: number): string {
  if (!keepAlive && minor === 1) return "connection: close\r\n";
  if (keepAlive && minor === 0) return "connection: keep-alive\r\n";
  return "";
}

async function beforeHead(connection: Connection, target: ResponseTarget): Promise<void> {
  // A `100 Continue` the body pull started must be out before the final head.
  if (connection.pendingWrite !== null) await connection.pendingWrite;
  target.body?.startResponse();
}

async function writeHead(
  connection: Connection,
  head: string,
  keepAlive: boolean,
  target: ResponseTarget,
): Promise<boolean> {
  const text = head + connectionField(keepAlive, target.minor) + "\r\n";
  try {
    await beforeHead(connection, target);
    await connection.write(encodeLatin1(text));
    return true;
  } catch {
    return false;
  }
}

async function writeHeadAndChunks(
  connection: Connection,
  head: string,
  chunks: Uint8Array[],
  total: number,
  target: ResponseTarget,
): Promise<boolean> {
  try {
    // No interim response in flight (the usual case): no promise step before the write.
    if (connection.pendingWrite === null) target.body?.startResponse();
    else await beforeHead(connection, target);
    // One exact-size array: cheaper than a pooled 64 KiB buffer for the usual small body.
    const out = new Uint8Array(head.length + total);
    encodeLatin1Into(head, out);
    let offset = head.length;
    let left = total;
    for (const chunk of chunks) {
      if (left === 0) break;
      const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
      out.set(part, offset);
      offset += part.length;
      left -= part.length;
    }
    // One socket write takes the usual response whole: Connection.write's loop for the rest.
    const written = await connection.conn.write(out);
    if (written < out.length) await connection.write(out.subarray(written));
    return true;
  } catch {
    return false;
  }
}

interface StreamFraming {
  chunked: boolean;
  declared: number;
  keepAlive: boolean;
  target: ResponseTarget;
}

/** Frames `data` as one chunk into a fresh array (default-reader chunks). */
function frameChunk(data: Uint8Array): Uint8Array {
  const prefix = encoder.encode(data.length.toString(16) + "\r\n");
  const out = new Uint8Array(prefix.length + data.length + 2);
  out.set(prefix);
  out.set(data, prefix.length);
  out[out.length - 2] = 13;
  out[out.length - 1] = 10;
  return out;
}

/**
 * Frames the `length` data bytes at `CHUNK_PREFIX_BYTES` in `buffer` as one chunk, in place:
 * the size line goes in the room kept before the data, the CRLF right after it.
 */
function frameInPlace(buffer: ArrayBuffer, length: number): Uint8Array {
  const whole = new Uint8Array(buffer);
  const size = length.toString(16);
  const start = CHUNK_PREFIX_BYTES - size.length - 2;
  for (let i = 0; i < size.length; i++) whole[start + i] = size.charCodeAt(i);
  whole[CHUNK_PREFIX_BYTES - 2] = 13;
  whole[CHUNK_PREFIX_BYTES - 1] = 10;
  whole[CHUNK_PREFIX_BYTES + length] = 13;
  whole[CHUNK_PREFIX_BYTES + length + 1] = 10;
  return whole.subarray(start, CHUNK_PREFIX_BYTES + length + 2);
}

/** One streaming body on its way to the connection. */
interface BodyPump {
  readonly connection: Connection;
  readonly body: ReadableStream<Uint8Array>;
  readonly chunked: boolean;
  reader: ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader;
  /** A read {@link gather} left pending: its result comes first. */
  pending: Promise<ReadableStreamReadResult<Uint8Array>> | null;
  /** Bytes the declared length still allows (Infinity without one). */
  left: number;
  triedByob: boolean;
  /** The pooled buffer, once one was taken. */
  buffer: ArrayBuffer | null;
}

async function streamBody(
  connection: Connection,
  body: ReadableStream<Uint8Array>,
  firstReader: ReadableStreamDefaultReader<Uint8Array>,
  head: string,
  gathered: Gathered,
  framing: StreamFraming,
): Promise<WriteOutcome> {
  const pump: BodyPump = {
    connection,
    body,
    chunked: framing.chunked,
    reader: firstReader,
    pending: gathered.pending,
    left: framing.declared >= 0 ? framing.declared : Infinity,
    triedByob: false,
    buffer: null,
  };
  try {
    await beforeHead(connection, framing.target);
    await connection.write(firstWrite(pump, head, gathered));
  } catch {
    return failPump(pump);
  }
  try {
    while (pump.left > 0) {
      const ended = pump.reader instanceof ReadableStreamDefaultReader
        ? await copyDefaultRead(pump, pump.reader)
        : await copyByobRead(pump, pump.reader);
      if (ended) break;
    }
  } catch {
    giveBuffer(pump.buffer);
    return failPump(pump);
  }
  giveBuffer(pump.buffer);
  return await endBody(pump, framing);
}

function failPump(pump: BodyPump): WriteOutcome {
  pump.reader.cancel().catch(() => {});
  return { complete: false, keepAlive: false };
}

/** Bytes of `data` that fit the declared length, framed for the wire. */
function framed(pump: BodyPump, data: Uint8Array): Uint8Array {
  if (pump.chunked) return frameChunk(data);
  if (data.length > pump.left) data = data.subarray(0, pump.left);
  pump.left -= data.length;
  return data;
}

/** The head and the chunks {@link gather} read, as one write. */
function firstWrite(pump: BodyPump, head: string, gathered: Gathered): Uint8Array {
  const first = encodeLatin1(head);
  if (gathered.total === 0) return first;
  const parts = gathered.chunks.map((chunk) => framed(pump, chunk));
  let size = first.length;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  out.set(first);
  let offset = first.length;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Copies one default-reader chunk; true when the stream ended. */
async function copyDefaultRead(
  pump: BodyPump,
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<boolean> {
  const result = await (pump.pending ?? reader.read());
  pump.pending = null;
  if (result.done) return true;
  const data = result.value;
  if (data.length === 0) return false;
  if (pump.chunked && data.length <= BUFFER_BYTES - CHUNK_PREFIX_BYTES - 2) {
    // Framed in the pooled buffer: a copy, but no allocation per chunk.
    const buffer = pump.buffer ??= takeBuffer();
    new Uint8Array(buffer).set(data, CHUNK_PREFIX_BYTES);
    await pump.connection.write(frameInPlace(buffer, data.length));
  } else {
    await pump.connection.write(framed(pump, data));
  }
  if (!pump.triedByob && data.length >= BYOB_SWITCH_BYTES) {
    // A long stream: read the rest into one reused buffer if it is a byte stream.
    pump.triedByob = true;
    reader.releaseLock();
    try {
      pump.reader = pump.body.getReader({ mode: "byob" });
    } catch {
      pump.reader = pump.body.getReader();
    }
  }
  return false;
}

/** Reads into the pooled buffer (framed in place when chunked); true when the stream ended. */
async function copyByobRead(pump: BodyPump, reader: ReadableStreamBYOBReader): Promise<boolean> {
  const offset = pump.chunked ? CHUNK_PREFIX_BYTES : 0;
  const room = BUFFER_BYTES - offset - (pump.chunked ? 2 : 0);
  const view = new Uint8Array(pump.buffer ??= takeBuffer(), offset, Math.min(room, pump.left));
  const result = await reader.read(view);
  if (result.done) {
    pump.buffer = result.value?.buffer ?? null;
    return true;
  }
  const data = result.value;
  const buffer = pump.buffer = data.buffer as ArrayBuffer;
  if (data.length === 0) return false;
  if (pump.chunked) {
    await pump.connection.write(frameInPlace(buffer, data.length));
  } else {
    pump.left -= data.length;
    await pump.connection.write(data);
  }
  return false;
}

/** After the last byte: a short body fails, the last chunk goes out. */
async function endBody(pump: BodyPump, framing: StreamFraming): Promise<WriteOutcome> {
  if (pump.left > 0 && pump.left !== Infinity) return failPump(pump); // shorter than its length
  if (pump.left === 0) pump.reader.cancel().catch(() => {}); // anything past it is dropped
  if (pump.connection.eof && framing.target.signal.aborted) {
    return { complete: false, keepAlive: false };
  }
  if (pump.chunked) {
    try {
      await pump.connection.write(LAST_CHUNK);
    } catch {
      return { complete: false, keepAlive: false };
    }
  }
  return { complete: true, keepAlive: framing.keepAlive };
}
