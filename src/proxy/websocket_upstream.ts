/**
 * The upstream side of a WebSocket handshake: a connection of its own (never one of the pooled
 * HTTP connections, which would be lost to the tunnel), the upgrade request, the response head,
 * and, when the upstream refused to switch, its answer as an ordinary response for the client.
 *
 * @module
 */
import { parseResponseHead } from "./http1_client.ts";
import { classifyUpstreamFailure, UpstreamError } from "./upstream_client.ts";
import { connectUpstream, type UpstreamTlsOptions } from "./upstream_tls.ts";

/** The largest response head taken from an upstream (as the HTTP client's limit). */
const MAX_HEAD_BYTES = 64 * 1024;
/** Interim answers before the final one that are skipped before giving up (RFC 9110 §15.2). */
const MAX_INTERIM = 10;

/** A response head and the bytes that came after it. */
export interface UpstreamHead {
  /** The status. */
  status: number;
  /** The reason phrase. */
  statusText: string;
  /** Fields as received. */
  headers: [string, string][];
  /** The body's framing, for a status other than 101. */
  contentLength: number | null;
  /** The body is chunked. */
  chunked: boolean;
  /** Bytes read past the head: the first WebSocket frames, or the start of the body. */
  rest: Uint8Array;
}

/**
 * Connects to `origin` (`https:` over TLS with the service's trust and client certificate, ALPN
 * `http/1.1`, since a WebSocket handshake is an HTTP/1.1 upgrade: README, "Upstream TLS"),
 * sends `request` and reads the final response head. Fails with an {@link UpstreamError}: `unreachable` (refused, reset, a malformed head),
 * or the kind of `signal`'s reason (`timeout` at the deadline, `aborted` when the client left).
 */
export async function openUpstream(
  origin: string,
  tls: UpstreamTlsOptions | null,
  request: Uint8Array,
  signal: AbortSignal,
): Promise<{ conn: Deno.Conn; head: UpstreamHead }> {
  let conn: Deno.Conn | null = null;
  const onAbort = () => conn?.close();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    if (signal.aborted) throw signal.reason;
    conn = await connectUpstream(origin, tls, signal);
    if (signal.aborted) throw signal.reason;
    await writeAll(conn, request);
    const head = await readFinalHead(conn);
    return { conn, head };
  } catch (error) {
    try {
      conn?.close();
    } catch {
      // closed by the abort
    }
    throw classifyUpstreamFailure(error, signal);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Writes all of `bytes`. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

async function readFinalHead(conn: Deno.Conn): Promise<UpstreamHead> {
  let buffer = new Uint8Array(4096);
  let end = 0;
  let interim = 0;
  while (true) {
    const headEnd = indexOfHeadEnd(buffer, end);
    if (headEnd === -1) {
      if (end >= MAX_HEAD_BYTES) throw new UpstreamError("unreachable", "response head too large");
      if (end === buffer.length) {
        const grown = new Uint8Array(buffer.length * 2);
        grown.set(buffer);
        buffer = grown;
      }
      const n = await conn.read(buffer.subarray(end));
      if (n === null) {
        throw new UpstreamError(
          "unreachable",
          "the upstream closed the connection before a response",
        );
      }
      end += n;
      continue;
    }
    let text = "";
    for (let i = 0; i < headEnd; i++) text += String.fromCharCode(buffer[i]);
    let parsed;
    try {
      parsed = parseResponseHead(text);
    } catch (error) {
      throw new UpstreamError("unreachable", `malformed response head: ${String(error)}`, error);
    }
    const rest = buffer.slice(headEnd + 4, end);
    if (parsed.status >= 100 && parsed.status < 200 && parsed.status !== 101) {
      // An interim answer (100, 103): the final one follows.
      if (++interim > MAX_INTERIM) throw new UpstreamError("unreachable", "too many 1xx answers");
      buffer = new Uint8Array(Math.max(4096, rest.length * 2));
      buffer.set(rest);
      end = rest.length;
      continue;
    }
    if (parsed.status < 100 || parsed.status > 599) {
      throw new UpstreamError("unreachable", `invalid status ${parsed.status}`);
    }
    return {
      status: parsed.status,
      statusText: parsed.statusText,
      headers: parsed.headers,
      contentLength: parsed.contentLength,
      chunked: parsed.chunked,
      rest,
    };
  }
}

function indexOfHeadEnd(buffer: Uint8Array, end: number): number {
  for (let i = 0; i + 3 < end; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

/**
 * The body of a response that refused the upgrade, as a stream read from `conn` by its framing
 * (`Content-Length`, chunked, or until the upstream closes); `done` runs once when it ended,
 * failed or was cancelled, and the connection is closed then (it served one exchange only).
 */
export function refusalBody(
  conn: Deno.Conn,
  head: UpstreamHead,
  done: () => void,
): ReadableStream<Uint8Array> | null {
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    try {
      conn.close();
    } catch {
      // closed
    }
    done();
  };
  const bodyless = head.status === 204 || head.status === 304 ||
    (!head.chunked && head.contentLength === 0);
  if (bodyless) {
    finish();
    return null;
  }
  const source = head.chunked
    ? chunkedBytes(conn, head.rest)
    : sizedBytes(conn, head.rest, head.contentLength);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done: ended, value } = await source.next();
        if (ended) {
          finish();
          controller.close();
        } else {
          controller.enqueue(value);
        }
      } catch (error) {
        finish();
        controller.error(error);
      }
    },
    cancel() {
      finish();
    },
  }, { highWaterMark: 0 });
}

/** `length` bytes (or all until EOF when null), starting with what was read already. */
async function* sizedBytes(
  conn: Deno.Conn,
  rest: Uint8Array,
  length: number | null,
): AsyncGenerator<Uint8Array> {
  let left = length ?? Infinity;
  if (rest.length > 0) {
    const first = rest.subarray(0, Math.min(rest.length, left));
    left -= first.length;
    yield first;
  }
  while (left > 0) {
    const buffer = new Uint8Array(Math.min(64 * 1024, left));
    const n = await conn.read(buffer);
    if (n === null) {
      if (length === null) return;
      throw new UpstreamError("unreachable", "the upstream closed the connection inside a body");
    }
    left -= n;
    yield buffer.subarray(0, n);
  }
}

/** A chunked body decoded (RFC 9112 §7.1), trailers dropped. */
async function* chunkedBytes(conn: Deno.Conn, rest: Uint8Array): AsyncGenerator<Uint8Array> {
  let pending = rest;
  const more = async () => {
    const buffer = new Uint8Array(64 * 1024);
    const n = await conn.read(buffer);
    if (n === null) {
      throw new UpstreamError("unreachable", "the upstream closed the connection inside a body");
    }
    const joined = new Uint8Array(pending.length + n);
    joined.set(pending);
    joined.set(buffer.subarray(0, n), pending.length);
    pending = joined;
  };
  const line = async (): Promise<string> => {
    while (true) {
      const lf = pending.indexOf(10);
      if (lf !== -1) {
        let text = "";
        for (let i = 0; i < lf; i++) text += String.fromCharCode(pending[i]);
        pending = pending.subarray(lf + 1);
        return text.endsWith("\r") ? text.slice(0, -1) : text;
      }
      if (pending.length > 8192) throw new UpstreamError("unreachable", "chunk line too long");
      await more();
    }
  };
  while (true) {
    const size = parseInt((await line()).split(";")[0].trim(), 16);
    if (!Number.isFinite(size) || size < 0) {
      throw new UpstreamError("unreachable", "malformed chunk size");
    }
    if (size === 0) {
      while ((await line()) !== "") {
        // trailer fields: dropped
      }
      return;
    }
    let left = size;
    while (left > 0) {
      if (pending.length === 0) await more();
      const n = Math.min(left, pending.length);
      yield pending.slice(0, n);
      pending = pending.subarray(n);
      left -= n;
    }
    await line();
  }
}
