import assert from "node:assert/strict";
import { createTelemetry } from "../../src/telemetry/mod.ts";
import { startOtlpReceiver } from "./_otlp_receiver.ts";
import { withEnv } from "./_env.ts";

function captureLog() {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, sink: (line: Record<string, unknown>) => void lines.push(line) };
}

function events(lines: Array<Record<string, unknown>>): unknown[] {
  return lines.map((line) => line.event);
}

/** A loopback port that nothing listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Time of `count` recorded requests, in ms. */
function timeRecording(telemetry: ReturnType<typeof createTelemetry>, count: number): number {
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    telemetry.serverRequest({ method: "GET", status: 200, service: "users", durationS: 0.002 });
    telemetry.clientAttempt({
      service: "users",
      address: "127.0.0.1",
      port: 9001,
      status: 200,
      durationS: 0.001,
    });
  }
  return performance.now() - start;
}

Deno.test("a collector that is down: requests unaffected, one log line per streak, bounded shutdown", async () => {
  const log = captureLog();
  const port = closedPort();
  const telemetry = await withEnv({ OTEL_EXPORTER_OTLP_TIMEOUT: "40" }, () =>
    createTelemetry({
      serviceNames: ["users"],
      prometheus: true,
      otlp: { endpoint: `http://127.0.0.1:${port}`, intervalMs: 50 },
      instanceId: "down",
      logger: log.sink,
    }));
  try {
    assert.ok(timeRecording(telemetry, 1000) < 200, "recording does not wait for the exporter");
    await sleep(500); // several failed export rounds
    assert.ok(timeRecording(telemetry, 1000) < 200);
    const text = await telemetry.prometheusText();
    assert.match(text ?? "", /http_server_request_duration_seconds_count/);
    const failures = log.lines.filter((line) => line.event === "otlp_export_failed");
    assert.equal(failures.length, 1, `one line per streak, got ${JSON.stringify(log.lines)}`);
    assert.equal(failures[0].level, "warn");
    assert.equal(failures[0].endpoint, `http://127.0.0.1:${port}/v1/metrics`);
    assert.equal(typeof failures[0].error, "string");
  } finally {
    const start = performance.now();
    await telemetry.shutdown();
    assert.ok(performance.now() - start < 2000, "shutdown is bounded");
  }
  assert.equal(log.lines.filter((line) => line.event === "otlp_export_failed").length, 1);
});

Deno.test("a collector that hangs: recording and scrapes stay fast, shutdown bounded", async () => {
  const receiver = startOtlpReceiver({ kind: "hang" });
  const log = captureLog();
  const telemetry = await withEnv(
    { OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: "250" },
    () =>
      createTelemetry({
        serviceNames: ["users"],
        prometheus: true,
        otlp: { endpoint: receiver.baseUrl, intervalMs: 300 },
        instanceId: "hang",
        logger: log.sink,
      }),
  );
  try {
    await receiver.waitFor(1, 3000); // an export is now stuck on the collector
    assert.ok(timeRecording(telemetry, 1000) < 200);
    const scrapeStart = performance.now();
    await telemetry.prometheusText();
    assert.ok(performance.now() - scrapeStart < 500, "a scrape does not wait for the export");
    await sleep(900); // the stuck export times out; later ones hang too
    assert.equal(events(log.lines).filter((e) => e === "otlp_export_failed").length, 1);
    assert.match(String(log.lines[0].error), /timed out|timeout/i);
  } finally {
    const start = performance.now();
    await telemetry.shutdown();
    const elapsedMs = performance.now() - start;
    await receiver.close();
    assert.ok(elapsedMs < 3000, `shutdown took ${elapsedMs} ms`);
  }
});

Deno.test("shutdownTimeoutMs bounds shutdown even when the export deadline is longer", async () => {
  const receiver = startOtlpReceiver({ kind: "hang" });
  const log = captureLog();
  const telemetry = await withEnv({ OTEL_EXPORTER_OTLP_TIMEOUT: "1500" }, () =>
    createTelemetry({
      serviceNames: [],
      prometheus: false,
      otlp: { endpoint: receiver.baseUrl, intervalMs: 60_000 },
      instanceId: "slow",
      logger: log.sink,
      shutdownTimeoutMs: 200,
    }));
  telemetry.retry("users");
  const start = performance.now();
  await telemetry.shutdown();
  const elapsedMs = performance.now() - start;
  assert.ok(elapsedMs < 1000, `shutdown took ${elapsedMs} ms`);
  assert.ok(events(log.lines).includes("telemetry_shutdown_timeout"));
  // Let the abandoned export reach its own deadline so nothing leaks past the test.
  await sleep(1600);
  await receiver.close();
});

Deno.test("failure streaks: failed, recovered, failed again, one line each", async () => {
  const receiver = startOtlpReceiver({ kind: "fail", status: 400 });
  const log = captureLog();
  const telemetry = await withEnv({}, () =>
    createTelemetry({
      serviceNames: ["users"],
      prometheus: false,
      otlp: { endpoint: receiver.baseUrl, intervalMs: 50 },
      instanceId: "streaks",
      logger: log.sink,
    }));
  try {
    telemetry.retry("users");
    await receiver.waitFor(3);
    receiver.setMode({ kind: "ok" });
    let seen = receiver.received.length;
    await receiver.waitFor(seen + 3);
    receiver.setMode({ kind: "fail", status: 500 }); // a new streak
    seen = receiver.received.length;
    await receiver.waitFor(seen + 3);
  } finally {
    await telemetry.shutdown();
    await receiver.close();
  }
  const streakEvents = events(log.lines).filter((e) => String(e).startsWith("otlp_export_"));
  assert.deepEqual(streakEvents.slice(0, 3), [
    "otlp_export_failed",
    "otlp_export_recovered",
    "otlp_export_failed",
  ]);
  assert.equal(streakEvents.length, 3, JSON.stringify(log.lines));
  const recovered = log.lines.find((line) => line.event === "otlp_export_recovered")!;
  assert.ok(Number(recovered.failedExports) >= 3);
});

Deno.test("grpc is reported once and http/protobuf is sent", async () => {
  const receiver = startOtlpReceiver();
  const log = captureLog();
  const telemetry = await withEnv({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }, () =>
    createTelemetry({
      serviceNames: [],
      prometheus: false,
      otlp: { endpoint: receiver.baseUrl, intervalMs: 60_000 },
      instanceId: "proto",
      logger: log.sink,
    }));
  telemetry.retry("users");
  await telemetry.shutdown();
  await receiver.close();
  // One line per signal (metrics and traces both use the general variable).
  assert.deepEqual(events(log.lines), ["otlp_protocol_unsupported", "otlp_protocol_unsupported"]);
  assert.deepEqual(log.lines.map((line) => line.signal), ["metrics", "traces"]);
  assert.equal(receiver.received[0].contentType, "application/x-protobuf");
});

Deno.test("an invalid OTLP endpoint in the environment disables export with one error line per signal", async () => {
  const log = captureLog();
  const telemetry = await withEnv(
    { OTEL_EXPORTER_OTLP_ENDPOINT: "not a url" },
    () =>
      createTelemetry({
        serviceNames: [],
        prometheus: true,
        otlp: { endpoint: null, intervalMs: 1000 },
        instanceId: "bad",
        logger: log.sink,
      }),
  );
  assert.deepEqual(events(log.lines), ["otlp_config_invalid", "otlp_config_invalid"]);
  assert.equal(log.lines[0].level, "error");
  assert.ok((await telemetry.prometheusText())?.includes("target_info"));
  await telemetry.shutdown();
});
