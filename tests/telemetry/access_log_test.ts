import assert from "node:assert/strict";
import {
  accessLogEntry,
  type AccessLogInput,
  createLogger,
  logAccess,
  type Logger,
  parseLogLevel,
} from "../../src/telemetry/mod.ts";
import { isoTimeOf } from "../../src/telemetry/access_log.ts";

function capture(level?: Parameters<typeof createLogger>[0] extends infer O ? O : never) {
  const lines: string[] = [];
  const logger = createLogger({ ...level, write: (line) => void lines.push(line) });
  return { logger, lines, parsed: () => lines.map((line) => JSON.parse(line)) };
}

const request: AccessLogInput = {
  method: "GET",
  path: "/api/users/42?token=s3cret&session=abc#frag",
  service: "users",
  status: 200,
  durationMs: 3.14159,
  upstream: "http://127.0.0.1:9001",
  requestId: "req-1",
  breakerState: "closed",
};

Deno.test("an access-log line has the documented fields and no query string", () => {
  const { logger, lines, parsed } = capture({ level: "info" });
  logAccess(logger, request);
  assert.equal(lines.length, 1);
  const [line] = parsed();
  assert.equal(line.level, "info");
  assert.equal(line.msg, "request");
  assert.ok(!Number.isNaN(Date.parse(line.time)));
  assert.deepEqual(
    { ...line, time: undefined },
    {
      time: undefined,
      level: "info",
      msg: "request",
      method: "GET",
      path: "/api/users/42",
      service: "users",
      status: 200,
      durationMs: 3.142,
      upstream: "http://127.0.0.1:9001",
      requestId: "req-1",
      breakerState: "closed",
    },
  );
  assert.doesNotMatch(lines[0], /s3cret|session|frag|\?/);
});

Deno.test("headers, cookies and credentials never reach the line", () => {
  const { logger, lines } = capture({ level: "debug" });
  // A careless caller passing the whole request: only allow-listed fields are copied.
  const careless = {
    ...request,
    path: "http://alice:pa55word@gw.example/api/users?api_key=k3y",
    upstream: "http://bob:hunter2@10.0.0.5:9001/x?sig=abc",
    headers: { authorization: "Bearer top-secret", cookie: "sid=c00kie" },
    authorization: "Bearer top-secret",
    cookie: "sid=c00kie",
    error: "upstream_timeout",
  } as AccessLogInput;
  logger.info("request", accessLogEntry(careless));
  // Fields passed straight to the logger with secret names are redacted, whatever the case.
  logger.warn("odd", { Authorization: "Bearer top-secret", Cookie: "sid=c00kie", ok: 1 });
  const all = lines.join("\n");
  for (const secret of ["top-secret", "c00kie", "pa55word", "hunter2", "k3y", "sig=abc", "alice"]) {
    assert.ok(!all.includes(secret), `${secret} leaked: ${all}`);
  }
  const [entry, odd] = lines.map((line) => JSON.parse(line));
  assert.equal(entry.path, "/api/users");
  assert.equal(entry.upstream, "http://10.0.0.5:9001");
  assert.equal(entry.error, "upstream_timeout");
  assert.equal(entry.headers, undefined);
  assert.equal(odd.Authorization, "[redacted]");
  assert.equal(odd.ok, 1);
});

Deno.test("level filtering: lines below the level are dropped; off drops all", () => {
  const { logger, parsed } = capture({ level: "warn" });
  logger.debug("d");
  logger.info("i");
  logAccess(logger, request);
  logger.warn("w");
  logger.error("e", { code: 7 });
  assert.deepEqual(parsed().map((line) => [line.level, line.msg]), [["warn", "w"], ["error", "e"]]);
  logger.level = "off";
  logger.error("silenced");
  assert.equal(parsed().length, 2);
  logger.level = "debug";
  logger.debug("now visible");
  assert.equal(parsed().at(-1).msg, "now visible");
});

Deno.test("fields cannot overwrite time, level or msg", () => {
  const { logger, parsed } = capture({ level: "info" });
  logger.info("real", { level: "error", msg: "fake", time: "never" });
  const [line] = parsed();
  assert.equal(line.level, "info");
  assert.equal(line.msg, "real");
  assert.notEqual(line.time, "never");
});

Deno.test("BREAKWATER_LOG_LEVEL sets the default level", () => {
  const previous = Deno.env.get("BREAKWATER_LOG_LEVEL");
  try {
    Deno.env.set("BREAKWATER_LOG_LEVEL", "ERROR");
    assert.equal(createLogger({ write: () => {} }).level, "error");
    Deno.env.set("BREAKWATER_LOG_LEVEL", "nonsense");
    assert.equal(createLogger({ write: () => {} }).level, "info");
    Deno.env.delete("BREAKWATER_LOG_LEVEL");
    assert.equal(createLogger({ write: () => {} }).level, "info");
    assert.equal(createLogger({ level: "debug", write: () => {} }).level, "debug");
  } finally {
    if (previous === undefined) Deno.env.delete("BREAKWATER_LOG_LEVEL");
    else Deno.env.set("BREAKWATER_LOG_LEVEL", previous);
  }
  assert.equal(parseLogLevel("warning"), "warn");
  assert.equal(parseLogLevel(" Off "), "off");
  assert.equal(parseLogLevel(undefined), null);
});

Deno.test("a value that cannot be serialised still yields one valid line", () => {
  const { logger, parsed } = capture({ level: "info" });
  logger.info("big", { n: 10n });
  const [line] = parsed();
  assert.equal(line.msg, "big");
  assert.equal(line.fieldsError, "unserializable");
});

Deno.test("trace context: trace_id and span_id as the OpenTelemetry log spec names them", () => {
  const traced = accessLogEntry({
    ...request,
    traceId: "0af7651916cd43dd8448eb211c80319c",
    spanId: "b7ad6b7169203331",
  });
  assert.equal(traced.trace_id, "0af7651916cd43dd8448eb211c80319c");
  assert.equal(traced.span_id, "b7ad6b7169203331");
  // Absent without tracing, and never anything but lowercase hex ids.
  assert.equal("trace_id" in accessLogEntry(request), false);
  const forged = accessLogEntry({ ...request, traceId: "x\ny", spanId: "B7AD6B7169203331" });
  assert.equal("trace_id" in forged, false);
  assert.equal("span_id" in forged, false);
});

/**
 * The line as the logger writes it for `info("request", accessLogEntry(a))` (JSON.stringify of
 * the entry object), with the time of `line`, the line `logAccess` wrote.
 */
function entryLine(a: AccessLogInput, line: string): string {
  const time = /^\{"time":"([^"]*)"/.exec(line)?.[1];
  assert.ok(time !== undefined && !Number.isNaN(Date.parse(time)), `no time in ${line}`);
  return JSON.stringify({ time, level: "info", msg: "request", ...accessLogEntry(a) });
}

/** logAccess's line for `a`, next to what the logger wrote for the entry object. */
function bothLines(a: AccessLogInput): { written: string; expected: string; viaInfo: string } {
  const { logger, lines } = capture({ level: "info" });
  logAccess(logger, a);
  logger.info("request", accessLogEntry(a));
  assert.equal(lines.length, 2);
  const [written, info] = lines;
  // Same time in both: replace the second line's (a millisecond may have passed).
  const viaInfo = info.replace(/^\{"time":"[^"]*"/, written.slice(0, written.indexOf('",') + 1));
  return { written, expected: entryLine(a, written), viaInfo };
}

/** A small seeded generator (mulberry32), so a failing case can be run again. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE_STRINGS = [
  "",
  'quo"te',
  "back\\slash",
  "new\nline\r\ttab",
  "\u0000\u0001\u001f\u007f",
  "line\u2028sep\u2029para",
  "lone \ud800 high",
  "lone \udc00 low",
  "\udc00\ud800 reversed pair",
  "emoji 😀 pair",
  "non-ASCII ÄÖü ünïcödé 日本",
  "</script><script>alert(1)</script>",
  "\ufeffbom \uffff",
  "x".repeat(300),
  "😀".repeat(200), // truncation at an odd length cuts a surrogate pair
];

const HOSTILE_PATHS = [
  "/api/users/42?token=s3cret&session=abc#frag",
  "/a?b",
  "/a#b?c",
  "http://alice:pa55word@gw.example/api/users?api_key=k3y",
  "https://gw.example",
  "*",
  "not a url ?q",
  `/${"p".repeat(2047)}😀/tail?secret=1`, // the cut falls inside the pair
  `/${'a\\"'.repeat(1100)}`,
  ...HOSTILE_STRINGS.map((value) => `/${value}?token=${value}`),
];

const HOSTILE_UPSTREAMS = [
  null,
  "http://127.0.0.1:9001",
  "https://[::1]:8443",
  "http://bob:hunter2@10.0.0.5:9001/x?sig=abc",
  "unix:/var/run/up.sock",
  ...HOSTILE_STRINGS,
];

const HOSTILE_NUMBERS = [0, -0, 200, 1.5, 3.14159, -0.0004, 1e21, 1e-7, NaN, Infinity, -Infinity];

function pick<T>(values: readonly T[], random: () => number): T {
  return values[Math.floor(random() * values.length)];
}

Deno.test("the access-log line is byte for byte JSON.stringify of the entry, over hostile values", () => {
  const random = seeded(20261130);
  const optional = <T>(values: readonly T[]) => random() < 0.5 ? undefined : pick(values, random);
  for (let i = 0; i < 3000; i++) {
    const a: AccessLogInput = {
      method: i % 7 === 0
        ? pick(HOSTILE_STRINGS, random)
        : pick(["GET", "POST", "M".repeat(40)], random),
      path: pick(HOSTILE_PATHS, random),
      service: pick([null, "users", ...HOSTILE_STRINGS], random),
      status: pick(HOSTILE_NUMBERS, random),
      durationMs: pick(HOSTILE_NUMBERS, random),
      upstream: pick(HOSTILE_UPSTREAMS, random),
      requestId: pick(
        ["req-1", "7d8e0c4a-2f5b-4e0e-9a55-3f1b7c1d9e21", ...HOSTILE_STRINGS],
        random,
      ),
      breakerState: pick([null, "closed", "open", "half_open", ...HOSTILE_STRINGS], random),
      error: optional(["upstream_timeout", ...HOSTILE_STRINGS]),
      fallback: optional(["static", "service=cache", ...HOSTILE_STRINGS]),
      traceId: optional([
        "0af7651916cd43dd8448eb211c80319c",
        "0AF7651916CD43DD8448EB211C80319C",
        "x\ny",
      ]),
      spanId: optional(["b7ad6b7169203331", "b7ad6b716920333", 'b7ad6b71692033"1']),
      websocket: optional([
        { bytesFromClient: 10, bytesFromUpstream: 2048, closeCode: 1000, ending: "client_close" },
        { bytesFromClient: NaN, bytesFromUpstream: -0, closeCode: null, ending: 'up"\n\ud800' },
      ]),
    };
    const { written, expected, viaInfo } = bothLines(a);
    assert.equal(written, expected, `case ${i}: ${JSON.stringify(a)}`);
    assert.equal(written, viaInfo, `case ${i}`);
    for (const secret of ["s3cret", "pa55word", "hunter2", "k3y", "sig=abc", "token="]) {
      assert.ok(!written.includes(secret), `case ${i}: ${secret} leaked: ${written}`);
    }
  }
});

Deno.test("the access-log line escapes every UTF-16 code unit as JSON.stringify does", () => {
  for (let unit = 0; unit <= 0xffff; unit++) {
    const char = String.fromCharCode(unit);
    const a: AccessLogInput = {
      ...request,
      path: `/a${char}b`,
      service: `s${char}`,
      requestId: `${char}`,
      breakerState: char,
      error: `e${char}`,
    };
    const { written, expected } = bothLines(a);
    if (written !== expected) assert.equal(written, expected, `code unit ${unit.toString(16)}`);
  }
});

Deno.test("fields left out of the entry are left out of the line", () => {
  // Callers outside the type system: undefined where a value is due, as JSON.stringify omits it.
  const loose = {
    ...request,
    service: undefined,
    breakerState: undefined,
    upstream: null,
    error: undefined,
    fallback: undefined,
  } as unknown as AccessLogInput;
  const { written, expected } = bothLines(loose);
  assert.equal(written, expected);
  assert.equal("service" in JSON.parse(written), false);
  assert.equal(JSON.parse(written).upstream, null);
});

Deno.test("a value JSON cannot hold gives the logger's one-line fallback, as before", () => {
  const { logger, parsed } = capture({ level: "info" });
  logAccess(logger, { ...request, status: 10n as unknown as number });
  const [line] = parsed();
  assert.equal(line.msg, "request");
  assert.equal(line.fieldsError, "unserializable");
});

Deno.test("a logger not made by createLogger gets info('request', entry)", () => {
  const calls: [string, Record<string, unknown> | undefined][] = [];
  const logger: Logger = {
    level: "info",
    debug: () => {},
    info: (msg, fields) => void calls.push([msg, fields]),
    warn: () => {},
    error: () => {},
    flush: () => {},
  };
  logAccess(logger, request);
  assert.deepEqual(calls, [["request", accessLogEntry(request)]]);
  logger.level = "warn";
  logAccess(logger, request);
  assert.equal(calls.length, 1);
});

Deno.test("isoTimeOf is new Date(ms).toISOString() for every kind of time", () => {
  const random = seeded(7);
  const times = [0, -1, 999, 1000, 1001, -999, -1000, -1001, 8.64e15, -8.64e15, 253402300799999];
  times.push(253402300800000, -62167219200001, Date.UTC(2024, 1, 29, 23, 59, 59, 999));
  const start = Date.UTC(2026, 10, 30, 1, 59, 58, 990);
  for (let ms = start; ms < start + 2100; ms++) times.push(ms); // across two second boundaries
  for (let i = 0; i < 5000; i++) times.push(Math.round((random() * 2 - 1) * 8.64e15));
  for (let i = 0; i < 5000; i++) times.push(Math.round(random() * 4e12)); // 1970-2096
  times.push(1.5, -1.5, 1796004308463.75);
  for (const ms of times) assert.equal(isoTimeOf(ms), new Date(ms).toISOString(), `${ms}`);
  // Beyond what a Date holds, the same RangeError.
  for (const ms of [NaN, 8.64e15 + 1, Infinity]) {
    assert.throws(() => new Date(ms).toISOString(), RangeError);
    assert.throws(() => isoTimeOf(ms), RangeError);
  }
});
