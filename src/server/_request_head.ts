/**
 * Strict parsing of an HTTP/1.1 request head (RFC 9112 §2-§3, §5-§6): the request line, field
 * lines and the framing fields, refusing anything two parsers could read differently.
 *
 * @module
 */
import { isValidHost } from "../routing/request_target.ts";
import { TOKEN } from "./token.ts";

/** A parsed request head: what the server needs for framing plus every field as sent. */
export interface RequestHead {
  /** The method token exactly as sent (case kept). */
  method: string;
  /** The method upper-cased (methods are case-sensitive, but fetch and the checks here are not). */
  methodUpper: string;
  /** The request-target as sent: origin-form, or `*` for OPTIONS. */
  target: string;
  /** The HTTP minor version: 0 or 1. */
  minor: number;
  /** Every field line as `[name, value]`, names as sent, values without surrounding whitespace. */
  fields: [string, string][];
  /** The `Host` value, or null when absent (HTTP/1.0 only). */
  host: string | null;
  /** The declared `Content-Length`, or -1. */
  contentLength: number;
  /** `Transfer-Encoding: chunked`. */
  chunked: boolean;
  /** Whether the client allows the connection to stay open after this exchange. */
  keepAlive: boolean;
  /** `Expect: 100-continue` on an HTTP/1.1 request. */
  expectContinue: boolean;
}

/** Why a head was refused: the status and `x-breakwater-error` code to answer with. */
export interface HeadError {
  status: 400 | 405 | 505;
  code: "bad_request" | "method_not_allowed";
  detail: string;
}

/** {@link findHeadEnd}: more bytes are needed. */
export const HEAD_INCOMPLETE = -1;
/** {@link findHeadEnd}: a LF without its CR (RFC 9112 §2.2 lets a server refuse it; we do). */
export const HEAD_BARE_LF = -2;

const CR = 13;
const LF = 10;

/**
 * Skips the empty lines a client may send before a request line (RFC 9112 §2.2: a server
 * SHOULD ignore at least one). Returns the new start.
 */
export function skipLeadingEmptyLines(buf: Uint8Array, start: number, end: number): number {
  while (start + 1 < end && buf[start] === CR && buf[start + 1] === LF) start += 2;
  return start;
}

/**
 * Finds the end of a head in `buf[start, end)`, continuing at `from` (bytes before it were
 * scanned already). Returns the index just past the final CRLF CRLF, {@link HEAD_INCOMPLETE}
 * or {@link HEAD_BARE_LF}.
 */
export function findHeadEnd(buf: Uint8Array, start: number, from: number, end: number): number {
  const view = buf.subarray(0, end);
  let i = from < start ? start : from;
  while (true) {
    i = view.indexOf(LF, i);
    if (i === -1) return HEAD_INCOMPLETE;
    if (i === start || view[i - 1] !== CR) return HEAD_BARE_LF;
    // An empty line: CRLF right after the previous line's LF (which was checked the same way).
    if (i - 2 > start && view[i - 2] === LF) return i + 1;
    i++;
  }
}

// Field values: visible ASCII, obs-text, SP and HTAB; no CR, LF, NUL or other controls.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** `http://authority` or `https://authority`, then the path and query (group 2, may be empty). */
const ABSOLUTE_FORM = /^[hH][tT][tT][pP][sS]?:\/\/([^/?#]*)([/?][^#]*)?$/;
// Origin-form: "/" then visible ASCII without "#" (a fragment is never sent, RFC 9112 §3.2).
const ORIGIN_FORM = /^\/[\x21\x22\x24-\x7e]*$/;
const HTTP_VERSION = /^HTTP\/[0-9]\.[0-9]$/;
const NON_ASCII = /[\x80-\uffff]/;
const DECIMAL = /^[0-9]{1,15}$/;
const decoder = new TextDecoder();

/** The bytes as Latin-1 text: one character per byte, so obs-text survives into `Headers`. */
function latin1(buf: Uint8Array, start: number, end: number): string {
  const ascii = decoder.decode(buf.subarray(start, end));
  if (!NON_ASCII.test(ascii)) return ascii;
  let out = "";
  for (let i = start; i < end; i += 4096) {
    out += String.fromCharCode.apply(
      null,
      buf.subarray(i, Math.min(end, i + 4096)) as unknown as number[],
    );
  }
  return out;
}

function refuse(detail: string, status: HeadError["status"] = 400): HeadError {
  return { status, code: status === 405 ? "method_not_allowed" : "bad_request", detail };
}

function hasToken(list: string, token: string): boolean {
  for (const part of list.split(",")) {
    if (part.trim().toLowerCase() === token) return true;
  }
  return false;
}

/**
 * Parses the head in `buf[start, headEnd)` (`headEnd` from {@link findHeadEnd}).
 *
 * Refused with 400: a malformed request line, a method that is no token, a target that is not
 * origin-form (or `*` with OPTIONS), obs-fold, whitespace before a colon, a field name that is
 * no token, a value with CR, LF, NUL or another control, no or several `Host` on HTTP/1.1, an
 * invalid `Host`, a repeated or non-decimal `Content-Length`, `Transfer-Encoding` other than
 * exactly `chunked` (unknown codings too: 400 rather than 501, so every framing doubt is one
 * answer), `Transfer-Encoding` with `Content-Length` or on HTTP/1.0 (RFC 9112 §6.1).
 * 505 for versions other than 1.0 and 1.1; 405 for TRACE, TRACK and CONNECT in any case.
 */
export function parseRequestHead(
  buf: Uint8Array,
  start: number,
  headEnd: number,
): RequestHead | HeadError {
  const text = latin1(buf, start, headEnd - 4);
  const line = parseRequestLine(text);
  if ("status" in line) return line;
  const fields = parseFields(text, line.lineEnd + 2);
  if ("status" in fields) return fields;
  return settleFraming(line, fields);
}

/** The request line, read. */
interface RequestLine {
  method: string;
  methodUpper: string;
  /** Origin-form (an absolute-form target reduced to it), or `*`. */
  target: string;
  minor: number;
  /** The authority of an absolute-form target, which stands in for Host. */
  absoluteHost: string | null;
  /** Where the line ends in the head's text. */
  lineEnd: number;
}

function parseRequestLine(text: string): RequestLine | HeadError {
  let lineEnd = text.indexOf("\r\n");
  if (lineEnd === -1) lineEnd = text.length;
  const requestLine = text.slice(0, lineEnd);
  const sp1 = requestLine.indexOf(" ");
  const sp2 = sp1 === -1 ? -1 : requestLine.indexOf(" ", sp1 + 1);
  if (sp2 === -1 || requestLine.indexOf(" ", sp2 + 1) !== -1) {
    return refuse("malformed request line");
  }
  const method = requestLine.slice(0, sp1);
  const version = requestLine.slice(sp2 + 1);
  if (!TOKEN.test(method)) return refuse("the method is not a token");
  if (!HTTP_VERSION.test(version)) return refuse("malformed HTTP version");
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    return refuse(`${version} is not supported`, 505);
  }
  const minor = version === "HTTP/1.1" ? 1 : 0;
  const methodUpper = method.toUpperCase();
  if (methodUpper === "TRACE" || methodUpper === "TRACK" || methodUpper === "CONNECT") {
    return refuse(`${method} is not forwarded`, 405);
  }
  let target = requestLine.slice(sp1 + 1, sp2);
  // Absolute-form (RFC 9112 §3.2.2): a server MUST accept it, and the authority then stands in
  // for Host. The path is what routes; the authority never picks an upstream.
  let absoluteHost: string | null = null;
  const absolute = ABSOLUTE_FORM.exec(target);
  if (absolute !== null) {
    absoluteHost = absolute[1];
    if (!isValidHost(absoluteHost)) return refuse("invalid authority in the request target");
    const rest = absolute[2] ?? "";
    target = rest === "" ? "/" : rest.startsWith("?") ? "/" + rest : rest;
  }
  if (target === "*") {
    if (methodUpper !== "OPTIONS") return refuse("the * target is for OPTIONS only");
  } else if (!ORIGIN_FORM.test(target)) {
    return refuse("the request target must be origin-form (/path?query) or absolute-form");
  }
  return { method, methodUpper, target, minor, absoluteHost, lineEnd };
}

/** The field lines, and the few fields that decide framing. */
interface FieldLines {
  fields: [string, string][];
  host: string | null;
  hostCount: number;
  contentLength: number;
  transferEncoding: string | null;
  connection: string | null;
  expect: string | null;
}

function parseFields(text: string, from: number): FieldLines | HeadError {
  const lines: FieldLines = {
    fields: [],
    host: null,
    hostCount: 0,
    contentLength: -1,
    transferEncoding: null,
    connection: null,
    expect: null,
  };
  let pos = from;
  while (pos < text.length) {
    let next = text.indexOf("\r\n", pos);
    if (next === -1) next = text.length;
    const first = text.charCodeAt(pos);
    if (first === 32 || first === 9) return refuse("obs-fold (a folded field line)");
    const colon = text.indexOf(":", pos);
    if (colon === -1 || colon >= next || colon === pos) {
      return refuse("a field line without a name");
    }
    const name = text.slice(pos, colon);
    if (!TOKEN.test(name)) return refuse("invalid field name (or whitespace before the colon)");
    const value = trimmedValue(text, colon + 1, next);
    if (!FIELD_VALUE.test(value)) return refuse(`invalid characters in the ${name} field`);
    lines.fields.push([name, value]);
    pos = next + 2;
    const refused = noteFramingField(lines, name, value);
    if (refused !== null) return refused;
  }
  return lines;
}

/** `text[start, end)` without the spaces and tabs around it. */
function trimmedValue(text: string, start: number, end: number): string {
  while (start < end) {
    const c = text.charCodeAt(start);
    if (c !== 32 && c !== 9) break;
    start++;
  }
  while (end > start) {
    const c = text.charCodeAt(end - 1);
    if (c !== 32 && c !== 9) break;
    end--;
  }
  return text.slice(start, end);
}

/** Keeps the fields that matter for framing; a repeat two parsers could read apart is refused. */
function noteFramingField(lines: FieldLines, name: string, value: string): HeadError | null {
  // Length first keeps the common field cheap.
  switch (name.length) {
    case 4:
      if (name.toLowerCase() === "host") {
        lines.hostCount++;
        lines.host = value;
      }
      break;
    case 6:
      if (name.toLowerCase() === "expect") lines.expect = value;
      break;
    case 10:
      if (name.toLowerCase() === "connection") {
        lines.connection = lines.connection === null ? value : `${lines.connection},${value}`;
      }
      break;
    case 14:
      if (name.toLowerCase() === "content-length") {
        // Even a repeat of the same value is refused: two parsers must never disagree.
        if (lines.contentLength !== -1) return refuse("repeated Content-Length");
        if (!DECIMAL.test(value)) return refuse("Content-Length is not a decimal number");
        lines.contentLength = Number(value);
      }
      break;
    case 17:
      if (name.toLowerCase() === "transfer-encoding") {
        if (lines.transferEncoding !== null) return refuse("repeated Transfer-Encoding");
        lines.transferEncoding = value;
      }
      break;
  }
  return null;
}

/** Host, body framing and persistence, from the request line and the framing fields. */
function settleFraming(line: RequestLine, lines: FieldLines): RequestHead | HeadError {
  const { minor, absoluteHost } = line;
  const { fields, contentLength, connection, expect } = lines;
  let host = lines.host;
  if (lines.hostCount > 1) return refuse("repeated Host");
  if (absoluteHost !== null) {
    // The target's authority wins over any Host field (RFC 9112 §3.2.2).
    host = absoluteHost;
    const index = fields.findIndex(([name]) => name.length === 4 && name.toLowerCase() === "host");
    if (index === -1) fields.push(["host", absoluteHost]);
    else fields[index] = [fields[index][0], absoluteHost];
  } else {
    if (minor === 1 && lines.hostCount === 0) return refuse("Host is required in HTTP/1.1");
    if (host !== null && !isValidHost(host)) return refuse("invalid Host");
  }
  let chunked = false;
  if (lines.transferEncoding !== null) {
    if (minor === 0) return refuse("Transfer-Encoding in an HTTP/1.0 request");
    if (contentLength !== -1) return refuse("Transfer-Encoding with Content-Length");
    if (lines.transferEncoding.toLowerCase() !== "chunked") {
      return refuse("Transfer-Encoding other than chunked");
    }
    chunked = true;
  }
  const keepAlive = minor === 1
    ? connection === null || !hasToken(connection, "close")
    : connection !== null && hasToken(connection, "keep-alive") &&
      !hasToken(connection, "close");
  // RFC 9110 §10.1.1: an HTTP/1.0 client cannot expect 100-continue; ignore it there.
  const expectContinue = minor === 1 && expect !== null && expect.toLowerCase() === "100-continue";
  return {
    method: line.method,
    methodUpper: line.methodUpper,
    target: line.target,
    minor,
    fields,
    host,
    contentLength,
    chunked,
    keepAlive,
    expectContinue,
  };
}
