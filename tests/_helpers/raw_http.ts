/**
 * A strict HTTP/1.1 upstream on a raw socket for framing tests: it parses every request on each
 * connection itself (Content-Length or chunked, nothing else), records what it saw and answers
 * `200 ok` with keep-alive. Anything it cannot frame is recorded as a framing error, so a test
 * can assert the upstream saw exactly the requests it should and nothing smuggled.
 *
 * @module
 */
import { type RawUpstream, startRawUpstream } from "./upstream.ts";

/** One request as the recorder framed it. */
export interface RecordedRequest {
  /** `GET /path HTTP/1.1`. */
  requestLine: string;
  /** Header lines as received, lower-cased names. */
  headers: [string, string][];
  /** The body bytes as text. */
  body: string;
}

/** A recording upstream. */
export interface RecordingUpstream extends RawUpstream {
  /** Requests framed so far, in order. */
  requests: RecordedRequest[];
  /** Framing problems seen (bad head, both CL and TE, bytes that are no request...). */
  framingErrors: string[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function indexOfCrlfCrlf(bytes: Uint8Array, from = 0): number {
  for (let i = from; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Starts the recorder. `respond` may override the answer per request (raw bytes of a whole
 * response); the default is a keep-alive `200` with body `ok`.
 */
export function startRecordingUpstream(
  respond?: (request: RecordedRequest) => string,
): RecordingUpstream {
  const requests: RecordedRequest[] = [];
  const framingErrors: string[] = [];
  const raw = startRawUpstream(async (conn) => {
    let buffered: Uint8Array = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    const fill = async (): Promise<boolean> => {
      const n = await conn.read(chunk);
      if (n === null) return false;
      buffered = concat(buffered, chunk.subarray(0, n));
      return true;
    };
    while (true) {
      let end: number;
      while ((end = indexOfCrlfCrlf(buffered)) < 0) {
        if (!(await fill())) {
          if (buffered.length > 0) {
            framingErrors.push(`trailing bytes: ${decoder.decode(buffered)}`);
          }
          return;
        }
      }
      const head = decoder.decode(buffered.subarray(0, end));
      buffered = buffered.subarray(end + 4);
      const [requestLine, ...lines] = head.split("\r\n");
      if (!/^[A-Z]+ \S+ HTTP\/1\.1$/.test(requestLine)) {
        framingErrors.push(`bad request line: ${JSON.stringify(requestLine)}`);
        return;
      }
      const headers: [string, string][] = [];
      for (const line of lines) {
        const colon = line.indexOf(":");
        if (colon <= 0 || /[\0\r\n]/.test(line)) {
          framingErrors.push(`bad header line: ${JSON.stringify(line)}`);
          return;
        }
        headers.push([line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]);
      }
      const lengths = headers.filter(([name]) => name === "content-length");
      const te = headers.filter(([name]) => name === "transfer-encoding");
      if (lengths.length > 1 || (lengths.length > 0 && te.length > 0)) {
        framingErrors.push(`ambiguous framing: ${JSON.stringify(headers)}`);
        return;
      }
      let body: Uint8Array = new Uint8Array(0);
      if (te.length > 0) {
        if (te.length > 1 || te[0][1].toLowerCase() !== "chunked") {
          framingErrors.push(`unsupported transfer-encoding: ${JSON.stringify(te)}`);
          return;
        }
        while (true) {
          let lineEnd: number;
          while ((lineEnd = findCrlf(buffered)) < 0) {
            if (!(await fill())) return void framingErrors.push("eof in chunk size");
          }
          const size = parseInt(decoder.decode(buffered.subarray(0, lineEnd)).split(";")[0], 16);
          if (!Number.isFinite(size)) return void framingErrors.push("bad chunk size");
          buffered = buffered.subarray(lineEnd + 2);
          if (size === 0) {
            // Trailers (none expected) up to the empty line.
            while (findCrlf(buffered) < 0) {
              if (!(await fill())) return void framingErrors.push("eof in trailers");
            }
            while (findCrlf(buffered) !== 0) {
              buffered = buffered.subarray(findCrlf(buffered) + 2);
              while (findCrlf(buffered) < 0) {
                if (!(await fill())) return void framingErrors.push("eof in trailers");
              }
            }
            buffered = buffered.subarray(2);
            break;
          }
          while (buffered.length < size + 2) {
            if (!(await fill())) return void framingErrors.push("eof in chunk");
          }
          body = concat(body, buffered.subarray(0, size));
          buffered = buffered.subarray(size + 2);
        }
      } else if (lengths.length === 1) {
        const length = Number(lengths[0][1]);
        if (!/^\d+$/.test(lengths[0][1])) return void framingErrors.push("bad content-length");
        while (buffered.length < length) {
          if (!(await fill())) return void framingErrors.push("eof in body");
        }
        body = buffered.slice(0, length);
        buffered = buffered.subarray(length);
      }
      const request = { requestLine, headers, body: decoder.decode(body) };
      requests.push(request);
      const answer = respond?.(request) ??
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
      await conn.write(encoder.encode(answer));
    }
  });
  return { ...raw, requests, framingErrors };
}

function findCrlf(bytes: Uint8Array): number {
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10) return i;
  }
  return -1;
}

/** Splits raw bytes read from a client socket into the HTTP responses it carries (heads only). */
export function responseStatuses(raw: string): number[] {
  return [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}
