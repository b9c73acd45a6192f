/**
 * The request body as a pull-based byte stream over the connection (RFC 9112 §6-§7):
 * `Content-Length` or chunked, read from the socket only when the consumer pulls, so a slow
 * consumer (a slow upstream) backpressures the client through TCP. BYOB reads land directly in
 * the consumer's buffer when no read-ahead bytes are pending.
 *
 * Failures are the client's and say so: EOF or a reset inside the body and broken chunked
 * framing error the stream with `ClientError("bad_request")`, a body read that waits
 * `bodyIdleTimeoutMs` for a byte with `ClientError("request_timeout")`.
 *
 * @module
 */
import { ClientError } from "../proxy/client_error.ts";
import { type Connection, INTO_VIEW } from "./_connection.ts";
import { TOKEN } from "./token.ts";

/** The largest chunk-size line (size plus extensions) accepted. */
const MAX_CHUNK_LINE_BYTES = 4096;
/** The largest trailer line, and the largest trailer section; trailers are read and dropped. */
const MAX_TRAILER_LINE_BYTES = 8192;
const MAX_TRAILER_BYTES = 16 * 1024;
/** Read-ahead the line reader may grow the connection's buffer to. */
const LINE_BUFFER_BYTES = 16 * 1024;
/** Default-reader chunks: up to this much per read. */
const READ_BYTES = 64 * 1024;
/** Reads shorter than this are copied out, so the scratch buffer is reused. */
const COPY_BELOW = 8 * 1024;

const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})([\s\S]*)$/;
const CHUNK_EXTENSION = /^[ \t]*;[\t\x20-\x7e\x80-\xff]*$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

const SIZE = 0;
const DATA = 1;
const DATA_END = 2;
const TRAILERS = 3;
const DONE = 4;

/** `Expect: 100-continue` progress. */
const CONTINUE_NONE = 0;
const CONTINUE_WANTED = 1;
const CONTINUE_SENT = 2;
const CONTINUE_WITHHELD = 3;

/** How a body is framed on the wire. */
export interface BodyFraming {
  /** The declared length, or -1 for chunked. */
  contentLength: number;
  /** The client sent `Expect: 100-continue`. */
  expectContinue: boolean;
}

/** A request body being read from a connection, with what the server needs to know about it. */
export class RequestBody {
  /** The stream handed to the handler. */
  readonly stream: ReadableStream<Uint8Array>;
  /** The framing ended: the connection is positioned at the next request. */
  done = false;
  /** Framing broke, the client went away or stalled: the connection cannot carry on. */
  failed = false;
  /** A pull is in progress (the handler is reading right now). */
  pulling = false;
  /** The exchange is over; reads from the handler fail from now on. */
  detached = false;
  /** The response head went out; a `100 Continue` may no longer be sent. */
  responseStarted = false;

  private readonly connection: Connection;
  private readonly now: () => number;
  private readonly bodyIdleTimeoutMs: number;
  /** Content-Length bytes left, or bytes left of the current chunk. */
  private left: number;
  private readonly chunked: boolean;
  private state: number;
  private continueState: number;
  private scratch: Uint8Array | null = null;

  constructor(
    connection: Connection,
    framing: BodyFraming,
    now: () => number,
    bodyIdleTimeoutMs: number,
  ) {
    this.connection = connection;
    this.now = now;
    this.bodyIdleTimeoutMs = bodyIdleTimeoutMs;
    this.chunked = framing.contentLength < 0;
    this.left = this.chunked ? 0 : framing.contentLength;
    this.state = this.chunked ? SIZE : DATA;
    this.continueState = framing.expectContinue ? CONTINUE_WANTED : CONTINUE_NONE;
    this.stream = new ReadableStream<Uint8Array>({
      type: "bytes",
      pull: (controller) => this.pull(controller as ReadableByteStreamController),
      cancel: () => {},
    }, { highWaterMark: 0 });
  }

  /** The client waits for a `100 Continue` that was never sent: its body may never come. */
  get continueWithheld(): boolean {
    return this.continueState === CONTINUE_WANTED || this.continueState === CONTINUE_WITHHELD;
  }

  /** True when more than `maxBytes` of a length-delimited body are still unread. */
  unreadOver(maxBytes: number): boolean {
    return !this.done && !this.chunked && this.left > maxBytes;
  }

  /** Marks the response as started: a pending `100 Continue` is withheld for good. */
  startResponse(): void {
    this.responseStarted = true;
    if (this.continueState === CONTINUE_WANTED) this.continueState = CONTINUE_WITHHELD;
  }

  private async pull(controller: ReadableByteStreamController): Promise<void> {
    if (this.detached) throw new Error("the request is over: its body can no longer be read");
    this.pulling = true;
    try {
      if (this.continueState === CONTINUE_WANTED && !this.responseStarted) {
        // RFC 9110 §10.1.1: the client holds its body back until this interim response.
        this.continueState = CONTINUE_SENT;
        await this.connection.writeInterim(CONTINUE);
      }
      const request = controller.byobRequest;
      if (request !== null && request.view !== null) {
        const view = new Uint8Array(
          request.view.buffer,
          request.view.byteOffset,
          request.view.byteLength,
        );
        const bytes = await this.next(view);
        if (bytes === null) {
          controller.close();
          request.respond(0);
          return;
        }
        request.respond(bytes.length);
      } else {
        const bytes = await this.next(null);
        if (bytes === null) {
          controller.close();
          return;
        }
        controller.enqueue(bytes);
      }
      // A length-delimited body ends with its last byte: no extra pull needed to see the end.
      if (this.done) controller.close();
    } catch (error) {
      if (!this.detached) this.failed = true;
      throw error;
    } finally {
      this.pulling = false;
    }
  }

  /**
   * Reads and drops what is left of the body, up to `maxBytes`, so the connection can carry
   * the next request. False when the body is longer, broken, or cannot be drained now.
   */
  async drain(maxBytes: number): Promise<boolean> {
    this.detached = true;
    if (this.done) return true;
    if (this.failed || this.pulling || this.continueWithheld) return false;
    if (!this.chunked && this.left > maxBytes) return false;
    let drained = 0;
    try {
      while (drained <= maxBytes) {
        const bytes = await this.next(null);
        if (bytes === null) return true;
        drained += bytes.length;
      }
    } catch {
      this.failed = true;
    }
    return false;
  }

  /**
   * The next body bytes: in `target` when given (copied from the read-ahead or read straight
   * into it), else owned bytes. Null at the end of the body.
   */
  private async next(target: Uint8Array | null): Promise<Uint8Array | null> {
    while (true) {
      switch (this.state) {
        case DATA: {
          if (this.left === 0) {
            this.state = DONE;
            this.done = true;
            return null;
          }
          const bytes = await this.readData(target, this.left);
          this.left -= bytes.length;
          if (this.left === 0) {
            if (this.chunked) this.state = DATA_END;
            else {
              this.state = DONE;
              this.done = true;
            }
          }
          return bytes;
        }
        case SIZE: {
          const line = await this.readLine(MAX_CHUNK_LINE_BYTES);
          const match = CHUNK_SIZE.exec(line);
          if (match === null) throw this.framingError("invalid chunk size");
          if (match[2] !== "" && !CHUNK_EXTENSION.test(match[2])) {
            throw this.framingError("invalid chunk extension");
          }
          this.left = parseInt(match[1], 16);
          this.state = this.left === 0 ? TRAILERS : DATA;
          break;
        }
        case DATA_END: {
          await this.readCrlf();
          this.state = SIZE;
          break;
        }
        case TRAILERS: {
          let total = 0;
          while (true) {
            const line = await this.readLine(MAX_TRAILER_LINE_BYTES);
            if (line === "") break;
            total += line.length + 2;
            if (total > MAX_TRAILER_BYTES) throw this.framingError("trailers over 16 KiB");
            const colon = line.indexOf(":");
            if (
              colon <= 0 || !TOKEN.test(line.slice(0, colon)) ||
              !FIELD_VALUE.test(line.slice(colon + 1))
            ) {
              throw this.framingError("invalid trailer field");
            }
          }
          this.state = DONE;
          this.done = true;
          return null;
        }
        default:
          return null;
      }
    }
  }

  private framingError(detail: string): ClientError {
    return new ClientError("bad_request", `malformed chunked request body: ${detail}`);
  }

  /** The error for a body read that ended without bytes: a stall, or the client went away. */
  private readError(): ClientError {
    if (this.connection.bodyTimedOut) {
      return new ClientError(
        "request_timeout",
        `no request body bytes for ${this.bodyIdleTimeoutMs} ms`,
      );
    }
    return new ClientError("bad_request", "the client closed the connection inside the body");
  }

  /** Waits for more read-ahead bytes (at most `maxBytes` buffered). */
  private async waitMore(maxBytes: number): Promise<void> {
    const connection = this.connection;
    connection.bodyWaitSince = this.now();
    const waited = await connection.fill(maxBytes);
    connection.bodyWaitSince = -1;
    if (connection.bodyTimedOut || connection.closed) throw this.readError();
    if (!waited) {
      if (connection.eof) throw this.readError();
      throw this.framingError("framing line too long");
    }
  }

  /** Up to `max` data bytes: read-ahead first, else one socket read. */
  private async readData(target: Uint8Array | null, max: number): Promise<Uint8Array> {
    const connection = this.connection;
    while (true) {
      if (connection.buffered > 0) {
        const limit = target === null ? Math.min(max, READ_BYTES) : Math.min(max, target.length);
        const bytes = connection.take(limit);
        if (target === null) return bytes.slice();
        target.set(bytes);
        return target.subarray(0, bytes.length);
      }
      if (connection.eof || connection.closed || connection.bodyTimedOut) throw this.readError();
      if (connection.isReading) {
        // A watch read is posted into the read-ahead buffer: its bytes come first.
        await this.waitMore(connection.input.length);
        continue;
      }
      let view: Uint8Array;
      if (target !== null) view = target.length > max ? target.subarray(0, max) : target;
      else {
        this.scratch ??= new Uint8Array(READ_BYTES);
        view = max < this.scratch.length ? this.scratch.subarray(0, max) : this.scratch;
      }
      connection.directBytes = 0;
      connection.bodyWaitSince = this.now();
      connection.readInto(view, INTO_VIEW);
      await connection.waitRead();
      connection.bodyWaitSince = -1;
      const got = connection.directBytes;
      if (got === 0) throw this.readError();
      if (target !== null) return view.subarray(0, got);
      if (got < COPY_BELOW) return view.slice(0, got);
      // A big read is handed over whole; the next one gets a fresh scratch buffer.
      this.scratch = null;
      return view.subarray(0, got);
    }
  }

  /** The CRLF that ends a chunk's data. */
  private async readCrlf(): Promise<void> {
    const connection = this.connection;
    while (connection.buffered < 2) {
      if (connection.eof || connection.closed || connection.bodyTimedOut) throw this.readError();
      await this.waitMore(LINE_BUFFER_BYTES);
    }
    const { input, start } = connection;
    if (input[start] !== 13 || input[start + 1] !== 10) {
      throw this.framingError("chunk data longer than its size");
    }
    connection.take(2);
  }

  /** One CRLF-terminated line of chunked framing (without the CRLF), at most `max` bytes. */
  private async readLine(max: number): Promise<string> {
    const connection = this.connection;
    while (true) {
      const { input, start, end } = connection;
      const lf = input.subarray(start, end).indexOf(10);
      if (lf !== -1) {
        if (lf === 0 || input[start + lf - 1] !== 13) throw this.framingError("bare LF");
        if (lf - 1 > max) throw this.framingError("framing line too long");
        // One character per byte (Latin-1), so obs-text in an extension is judged as bytes.
        const line = String.fromCharCode.apply(
          null,
          input.subarray(start, start + lf - 1) as unknown as number[],
        );
        connection.take(lf + 1);
        return line;
      }
      if (end - start > max + 1) throw this.framingError("framing line too long");
      if (connection.eof || connection.closed || connection.bodyTimedOut) throw this.readError();
      await this.waitMore(LINE_BUFFER_BYTES);
    }
  }
}
