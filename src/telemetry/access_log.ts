/**
 * Structured JSON logging: one object per line on stdout, and the access-log entry of a
 * request, built from an explicit allow-list of fields so nothing secret (Authorization,
 * cookies, query strings) can reach the log.
 *
 * @module
 */

import { createLineWriter } from "./line_writer.ts";

/** Log levels, most verbose first; `off` silences everything. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "off";

/** A leveled JSON-lines logger. */
export interface Logger {
  /** Lines below this level are dropped. Can be changed at run time. */
  level: LogLevel;
  /** Logs at `debug`. */
  debug(msg: string, fields?: Record<string, unknown>): void;
  /** Logs at `info`. */
  info(msg: string, fields?: Record<string, unknown>): void;
  /** Logs at `warn`. */
  warn(msg: string, fields?: Record<string, unknown>): void;
  /** Logs at `error`. */
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Writes out lines still buffered (call before exit). */
  flush(): void;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Default: env `BREAKWATER_LOG_LEVEL`, else `info`. */
  level?: LogLevel;
  /** Where each JSON line goes (without a newline). Default: stdout, batched. */
  write?: (line: string) => void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, off: 100 };

/** The env variable that sets the default log level. */
export const LOG_LEVEL_ENV = "BREAKWATER_LOG_LEVEL";

/** `"WARN"` -> `"warn"`, `"warning"` -> `"warn"`; null when the value names no level. */
export function parseLogLevel(value: string | undefined): LogLevel | null {
  const normalized = value?.trim().toLowerCase();
  if (normalized === "warning") return "warn";
  return normalized !== undefined && normalized in RANK ? normalized as LogLevel : null;
}

function levelFromEnv(): LogLevel {
  try {
    return parseLogLevel(Deno.env.get(LOG_LEVEL_ENV)) ?? "info";
  } catch {
    return "info"; // no --allow-env
  }
}

/** Field names whose values are never written, whoever passes them. */
const SECRET_FIELD = /^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|token)$/i;

/** Field names already judged (the code's own keys: a handful), so a line tests no regex. */
const secretByName = new Map<string, boolean>();
const MAX_JUDGED_NAMES = 1024;

function isSecretField(name: string): boolean {
  let secret = secretByName.get(name);
  if (secret === undefined) {
    secret = SECRET_FIELD.test(name);
    if (secretByName.size < MAX_JUDGED_NAMES) secretByName.set(name, secret);
  }
  return secret;
}

/** `000` to `999`: the milliseconds of an ISO 8601 time. */
const MILLIS = Array.from({ length: 1000 }, (_, ms) => String(ms).padStart(3, "0"));

/** The last second formatted, up to its `.` (`2026-11-30T01:50:07.`). */
let lastSecond = NaN;
let lastSecondPrefix = "";

/**
 * `new Date(ms).toISOString()`, with `toISOString` called once per second: the rest of a second
 * only changes its three millisecond digits (`toISOString` costs ~1 us on the bench machine, as
 * much as the rest of an access-log line).
 *
 * @example
 * ```ts
 * isoTimeOf(Date.UTC(2026, 10, 30, 1, 50, 7, 42)); // "2026-11-30T01:50:07.042Z"
 * ```
 */
export function isoTimeOf(ms: number): string {
  // A fraction (Date drops it), or what a Date cannot hold (NaN, beyond ±8.64e15 ms: ECMA-262
  // TimeClip, a RangeError) takes toISOString's own way.
  if (!Number.isInteger(ms) || Math.abs(ms) > 8.64e15) return new Date(ms).toISOString();
  const second = Math.floor(ms / 1000);
  if (second !== lastSecond) {
    const iso = new Date(second * 1000).toISOString(); // ends `.000Z`
    lastSecondPrefix = iso.slice(0, iso.length - 4);
    lastSecond = second;
  }
  return lastSecondPrefix + MILLIS[ms - second * 1000] + "Z";
}

/** The last millisecond formatted: lines of the same millisecond (many, under load) share it. */
let lastMs = NaN;
let lastIso = "";

/** `new Date().toISOString()`, formatted at most once per millisecond. */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastIso = isoTimeOf(ms);
    lastMs = ms;
  }
  return lastIso;
}

/**
 * Where each logger made by {@link createLogger} writes its finished lines: the access log
 * writes its line itself (see {@link logAccess}) into the same output. Not a property of the
 * logger, so the `Logger` contract stays four methods and a level.
 */
const lineOutputs = new WeakMap<Logger, (line: string) => void>();

/** Keys every line starts with; a field cannot overwrite them. */
const RESERVED_FIELDS = new Set(["time", "level", "msg"]);

/**
 * Creates a logger that writes `{"time":…,"level":…,"msg":…, ...fields}` lines.
 *
 * @example
 * ```ts
 * const logger = createLogger({ level: "warn" });
 * logger.info("not written");
 * logger.warn("kv slow", { latencyMs: 120 }); // {"time":"…","level":"warn","msg":"kv slow","latencyMs":120}
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const batched = options.write === undefined ? createLineWriter() : null;
  const write = options.write ?? ((line: string) => batched!.write(line));
  const logger: Logger = {
    level: options.level ?? levelFromEnv(),
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    flush: () => batched?.flush(),
  };
  function emit(level: Exclude<LogLevel, "off">, msg: string, fields?: Record<string, unknown>) {
    if (RANK[level] < RANK[logger.level]) return;
    const line: Record<string, unknown> = { time: isoNow(), level, msg };
    if (fields !== undefined) {
      for (const key in fields) {
        if (RESERVED_FIELDS.has(key)) continue;
        line[key] = isSecretField(key) ? "[redacted]" : fields[key];
      }
    }
    let text: string;
    try {
      text = JSON.stringify(line);
    } catch {
      text = JSON.stringify({ time: line.time, level, msg, fieldsError: "unserializable" });
    }
    write(text);
  }
  lineOutputs.set(logger, write);
  return logger;
}

/** What one request's access-log line is made of. */
export interface AccessLogInput {
  /** Request method as received. */
  method: string;
  /** Request path; anything from `?` or `#` on is dropped. */
  path: string;
  /** The service that owned the path, or null (no route). */
  service: string | null;
  /** Status sent to the client. */
  status: number;
  /** Time from request to response headers, in milliseconds. */
  durationMs: number;
  /** The upstream origin of the last attempt, or null when none was tried. */
  upstream: string | null;
  /** The `X-Request-Id` sent upstream and to the client. */
  requestId: string;
  /** The service's breaker state when the request was admitted or refused. */
  breakerState: string | null;
  /** The `x-breakwater-error` value or a short error description. */
  error?: string;
  /** The `x-breakwater-fallback` value when the service's fallback answered. */
  fallback?: string;
  /** The request's trace id (`trace_id`), when tracing is on. */
  traceId?: string;
  /** The gateway's server span id (`span_id`), when tracing is on. */
  spanId?: string;
  /** An upgraded (WebSocket) request: bytes each way after the 101, the close code, the end. */
  websocket?: {
    bytesFromClient: number;
    bytesFromUpstream: number;
    closeCode: number | null;
    ending: string;
  };
}

const MAX_PATH_CHARS = 2048;
const MAX_SHORT_CHARS = 128;

function truncate(value: string, max: number): string {
  return value.length <= max ? value : value.slice(0, max) + "…";
}

/** `/a/b?token=x#f` -> `/a/b`; a full URL keeps only its path (no credentials, no host). */
export function pathWithoutQuery(path: string): string {
  let end = path.length;
  const query = path.indexOf("?");
  if (query >= 0) end = query;
  const fragment = path.indexOf("#");
  if (fragment >= 0 && fragment < end) end = fragment;
  let bare = path.slice(0, end);
  if (!bare.startsWith("/")) {
    try {
      bare = new URL(bare).pathname;
    } catch {
      // Not a URL either (e.g. `*` of OPTIONS): keep it, it has no query part left.
    }
  }
  return truncate(bare, MAX_PATH_CHARS);
}

const TRACE_ID = /^[0-9a-f]{32}$/;
const SPAN_ID = /^[0-9a-f]{16}$/;

/** `http://host:port` with no credentials, path, query or fragment. */
const PLAIN_ORIGIN = /^https?:\/\/[^/?#@\s]+$/;

/** An upstream URL reduced to its origin (`http://10.0.0.5:9001`): no credentials, path or query. */
function upstreamOrigin(upstream: string | null): string | null {
  if (upstream === null) return null;
  if (PLAIN_ORIGIN.test(upstream)) return upstream; // the usual case: no URL parse per line
  try {
    const origin = new URL(upstream).origin;
    if (origin !== "null") return origin;
  } catch {
    // fall through
  }
  return truncate(pathWithoutQuery(upstream), MAX_SHORT_CHARS);
}

/**
 * The fields of one access-log line. Built field by field from {@link AccessLogInput}: headers,
 * cookies and query strings have no way in.
 *
 * @example
 * ```ts
 * logger.info("request", accessLogEntry({
 *   method: "GET", path: "/api/users/1?token=s3cret", service: "users", status: 200,
 *   durationMs: 3.2, upstream: "http://127.0.0.1:9001", requestId: "abc", breakerState: "closed",
 * }));
 * // {"time":…,"level":"info","msg":"request","method":"GET","path":"/api/users/1",…}
 * ```
 */
export function accessLogEntry(a: AccessLogInput): Record<string, unknown> {
  const entry: Record<string, unknown> = {
    method: truncate(String(a.method), 32),
    path: pathWithoutQuery(String(a.path)),
    service: a.service,
    status: a.status,
    durationMs: Math.round(a.durationMs * 1000) / 1000,
    upstream: upstreamOrigin(a.upstream),
    requestId: truncate(String(a.requestId), MAX_SHORT_CHARS),
    breakerState: a.breakerState,
  };
  if (a.error !== undefined) entry.error = truncate(String(a.error), 256);
  if (a.fallback !== undefined) entry.fallback = truncate(String(a.fallback), MAX_SHORT_CHARS);
  // Field names of the OpenTelemetry spec for trace context in non-OTLP log formats.
  if (a.traceId !== undefined && TRACE_ID.test(a.traceId)) entry.trace_id = a.traceId;
  if (a.spanId !== undefined && SPAN_ID.test(a.spanId)) entry.span_id = a.spanId;
  if (a.websocket !== undefined) {
    const { bytesFromClient, bytesFromUpstream, closeCode, ending } = a.websocket;
    entry.websocket = { bytesFromClient, bytesFromUpstream, closeCode, ending };
  }
  return entry;
}

/**
 * JSON text of a string exactly as `JSON.stringify` writes it (ECMA-262 QuoteJSONString): a
 * value with no `"`, `\\`, control character or surrogate is written between quotes as it is;
 * any other goes through `JSON.stringify` (which escapes lone surrogates and keeps pairs).
 */
const NEEDS_JSON_ESCAPE = /[^\x20\x21\x23-\x5b\x5d-\ud7ff\ue000-\uffff]/; // all but those

function jsonString(value: string): string {
  return NEEDS_JSON_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
}

/**
 * A value's JSON text as `JSON.stringify` writes it inside an object, or undefined where it
 * would leave the key out. Strings and numbers take the short way; the rest (null, booleans,
 * objects) go through `JSON.stringify`, which may throw (a bigint) like the logger's.
 */
function jsonValue(value: unknown): string | undefined {
  if (typeof value === "string") return jsonString(value);
  // JSON has no NaN or Infinity: JSON.stringify writes null; finite numbers as String does.
  if (typeof value === "number") return Number.isFinite(value) ? `${value}` : "null";
  return JSON.stringify(value);
}

/** `,"key":value`, or nothing where `JSON.stringify` would leave the key out. */
function member(key: string, value: unknown): string {
  const text = jsonValue(value);
  return text === undefined ? "" : `,"${key}":${text}`;
}

/**
 * `member(key, format(value))` kept per value, for fields whose values repeat line after line
 * (the service name, breaker state, method, upstream origin): most lines look their text up
 * instead of formatting and checking its characters. Only short strings and null are kept
 * (a client's method is its own), at most 1024 of them; any other value is formatted each time.
 */
function memberCache<T>(
  key: string,
  format: (value: T) => unknown,
  maxChars: number,
): (value: T) => string {
  const texts = new Map<unknown, string>();
  const MAX_VALUES = 1024;
  return (value) => {
    let text = texts.get(value);
    if (text === undefined) {
      text = member(key, format(value));
      const keep = value === null || (typeof value === "string" && value.length <= maxChars);
      if (keep && texts.size < MAX_VALUES) texts.set(value, text);
    }
    return text;
  };
}

const asIs = (value: unknown) => value;
const serviceMember = memberCache("service", asIs, MAX_SHORT_CHARS);
const breakerStateMember = memberCache("breakerState", asIs, MAX_SHORT_CHARS);
const methodMember = memberCache("method", (method: string) => truncate(String(method), 32), 32);
const upstreamMember = memberCache("upstream", upstreamOrigin, 256);

/** The start of a request line, for the last millisecond's time (lines of one ms share it). */
let lastRequestHeadMs = NaN;
let lastRequestHead = "";

function requestLineHead(): string {
  const time = isoNow();
  if (lastMs !== lastRequestHeadMs) {
    lastRequestHeadMs = lastMs;
    lastRequestHead = `{"time":"${time}","level":"info","msg":"request"`;
  }
  return lastRequestHead;
}

/**
 * The access-log line of a request written straight from {@link AccessLogInput}: the same text,
 * key for key and byte for byte, as the logger writes for `info("request",
 * accessLogEntry(a))`, without the entry object, the logger's line object or a whole-object
 * `JSON.stringify`. None of its keys is a reserved or secret field name, so the logger would
 * copy every one as it is.
 */
function accessLogLine(a: AccessLogInput): string {
  let line = requestLineHead() +
    methodMember(a.method) +
    member("path", pathWithoutQuery(String(a.path))) +
    serviceMember(a.service) +
    member("status", a.status) +
    member("durationMs", Math.round(a.durationMs * 1000) / 1000) +
    upstreamMember(a.upstream) +
    member("requestId", truncate(String(a.requestId), MAX_SHORT_CHARS)) +
    breakerStateMember(a.breakerState);
  if (a.error !== undefined) line += member("error", truncate(String(a.error), 256));
  if (a.fallback !== undefined) {
    line += member("fallback", truncate(String(a.fallback), MAX_SHORT_CHARS));
  }
  // Checked to be lowercase hex: nothing to escape.
  if (a.traceId !== undefined && TRACE_ID.test(a.traceId)) line += `,"trace_id":"${a.traceId}"`;
  if (a.spanId !== undefined && SPAN_ID.test(a.spanId)) line += `,"span_id":"${a.spanId}"`;
  if (a.websocket !== undefined) {
    const { bytesFromClient, bytesFromUpstream, closeCode, ending } = a.websocket;
    line += member("websocket", { bytesFromClient, bytesFromUpstream, closeCode, ending });
  }
  return line + "}";
}

/**
 * True when `logger` writes `info` lines, the access log's level: a caller can skip gathering
 * a line's values (the breaker state is a look-up per request) when it is off.
 */
export function accessLogOn(logger: Logger): boolean {
  return RANK.info >= RANK[logger.level];
}

/**
 * Writes one access-log line at `info` (message `request`). A logger made by
 * {@link createLogger} gets the line written directly (the same text as
 * `logger.info("request", accessLogEntry(a))`, at a fraction of the cost per request); any
 * other logger gets that call.
 */
export function logAccess(logger: Logger, a: AccessLogInput): void {
  if (!accessLogOn(logger)) return; // skip building the line when filtered out
  const write = lineOutputs.get(logger);
  if (write !== undefined) {
    let line: string | undefined;
    try {
      line = accessLogLine(a);
    } catch {
      // A value JSON cannot hold (a bigint): the logger writes its one-line fallback for it.
    }
    if (line !== undefined) return write(line);
  }
  logger.info("request", accessLogEntry(a));
}
