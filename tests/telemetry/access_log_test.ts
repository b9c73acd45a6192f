import assert from "node:assert/strict";
import {
  accessLogEntry,
  type AccessLogInput,
  createLogger,
  logAccess,
  parseLogLevel,
} from "../../src/telemetry/mod.ts";

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
