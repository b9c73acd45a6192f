/**
 * The encoded span processor keeps the SDK batch processor's behaviour (batch size, queue
 * limit, schedule delay, export timeout, forceFlush, shutdown) while holding bytes, and what it
 * exports is byte for byte what the official serializer writes for the same spans.
 */
import assert from "node:assert/strict";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import {
  createEncodedSpanProcessor,
  type EncodedSpanExporter,
  type EncodedSpanProcessorOptions,
} from "../../src/telemetry/encoded_span_processor.ts";
import { withEncodedSpanFailureStreakLogging } from "../../src/telemetry/export_errors.ts";
import {
  createEncodedTraceSerializer,
  createSpanBatchEncoder,
  type EncodedSpanBatch,
} from "../../src/telemetry/otlp_trace_protobuf.ts";
import { waitFor, within } from "../_helpers/wait.ts";

/** An exporter that records batches; `hold` keeps the result callbacks until released. */
function recordingExporter(hold = false) {
  const batches: EncodedSpanBatch[] = [];
  const pending: ((result: ExportResult) => void)[] = [];
  let shutdowns = 0;
  const exporter: EncodedSpanExporter = {
    encoded: true,
    export(batch, resultCallback) {
      batches.push(batch);
      if (hold) pending.push(resultCallback);
      else resultCallback({ code: ExportResultCode.SUCCESS });
    },
    shutdown() {
      shutdowns++;
      return Promise.resolve();
    },
  };
  return {
    exporter,
    batches,
    release() {
      for (const callback of pending.splice(0)) callback({ code: ExportResultCode.SUCCESS });
    },
    shutdowns: () => shutdowns,
  };
}

/** A provider feeding the processor under test and, alongside, an in-memory exporter. */
function setup(options: Omit<EncodedSpanProcessorOptions, "exporter">, hold = false) {
  const recorder = recordingExporter(hold);
  const memory = new InMemorySpanExporter();
  const processor = createEncodedSpanProcessor({ exporter: recorder.exporter, ...options });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": "breakwater" }),
    spanProcessors: [processor, new SimpleSpanProcessor({ exporter: memory })],
  });
  const tracer = provider.getTracer("breakwater", "0.1.0");
  const end = (count: number) => {
    for (let i = 0; i < count; i++) {
      tracer.startSpan(`span ${i}`, { attributes: { "http.response.status_code": 200 + i } })
        .end();
    }
  };
  return { ...recorder, memory, processor, provider, end };
}

const LONG_MS = 60_000;

Deno.test("encoded spans: full batches go at once, the rest on forceFlush, bytes as the official serializer's", async () => {
  const t = setup({ maxExportBatchSize: 4, scheduledDelayMillis: LONG_MS });
  try {
    t.end(10);
    // The first full batch goes at once; the next when that export has settled (as the SDK's).
    assert.deepEqual(t.batches.map((batch) => batch.count), [4]);
    await waitFor(() => t.batches.length === 2, { timeoutMs: 5000 });
    await t.processor.forceFlush();
    assert.deepEqual(t.batches.map((batch) => batch.count), [4, 4, 2]);
    const spans = t.memory.getFinishedSpans();
    const serializer = createEncodedTraceSerializer();
    for (const [index, batch] of t.batches.entries()) {
      assert.deepEqual(
        serializer.serializeRequest(batch),
        ProtobufTraceSerializer.serializeRequest(spans.slice(index * 4, index * 4 + 4)),
      );
    }
  } finally {
    await t.provider.shutdown();
  }
});

Deno.test("encoded spans: the schedule delay exports a part batch", async () => {
  const t = setup({ maxExportBatchSize: 512, scheduledDelayMillis: 20 });
  try {
    t.end(3);
    assert.equal(t.batches.length, 0);
    await waitFor(() => t.batches.length === 1, { timeoutMs: 5000 });
    assert.equal(t.batches[0].count, 3);
  } finally {
    await t.provider.shutdown();
  }
});

Deno.test("encoded spans: past maxQueueSize spans are dropped while an export is out", async () => {
  const t = setup({ maxExportBatchSize: 4, maxQueueSize: 4, scheduledDelayMillis: LONG_MS }, true);
  try {
    t.end(4); // a full batch: exported at once, its result held
    t.end(6); // 4 queued, 2 dropped
    assert.equal(t.batches.length, 1);
    t.release();
    await waitFor(() => t.batches.length === 2, { timeoutMs: 5000 });
    t.release();
    await t.processor.forceFlush();
    assert.deepEqual(t.batches.map((batch) => batch.count), [4, 4]);
  } finally {
    t.release();
    await t.provider.shutdown();
  }
});

Deno.test("encoded spans: an export that never answers fails the flush after the export timeout", async () => {
  const t = setup(
    { maxExportBatchSize: 8, scheduledDelayMillis: LONG_MS, exportTimeoutMillis: 30 },
    true,
  );
  try {
    t.end(2);
    await assert.rejects(
      within(t.processor.forceFlush(), 5000, "forceFlush"),
      (error: Error) => error.message === "Timeout",
    );
  } finally {
    t.release();
    await t.provider.shutdown();
  }
});

Deno.test("encoded spans: shutdown exports what is queued, shuts the exporter, ignores later spans", async () => {
  const t = setup({ maxExportBatchSize: 8, scheduledDelayMillis: LONG_MS });
  t.end(3);
  await t.processor.shutdown();
  assert.deepEqual(t.batches.map((batch) => batch.count), [3]);
  assert.equal(t.shutdowns(), 1);
  await t.processor.shutdown();
  assert.equal(t.shutdowns(), 1, "idempotent");
  t.end(2);
  await t.processor.forceFlush();
  assert.equal(t.batches.length, 1);
  await t.provider.shutdown();
});

Deno.test("encoded spans: unsampled spans are not queued", async () => {
  const recorder = recordingExporter();
  const processor = createEncodedSpanProcessor({ exporter: recorder.exporter });
  const provider = new TracerProvider({
    sampler: new AlwaysOffSampler(),
    spanProcessors: [processor],
  });
  provider.getTracer("breakwater").startSpan("dropped").end();
  await provider.forceFlush();
  assert.equal(recorder.batches.length, 0);
  await provider.shutdown();
});

Deno.test("encoded spans: an exporter that throws fails the flush at once and leaves no timer", async () => {
  // In a process of its own: a timer left behind shows as a process that outlives the flush
  // by the export timeout (the test sanitizers do not see a pending timer).
  const module = new URL("../../src/telemetry/encoded_span_processor.ts", import.meta.url).href;
  const script = `
    import { createEncodedSpanProcessor } from ${JSON.stringify(module)};
    import { TracerProvider } from "@opentelemetry/sdk-trace";
    const exporter = {
      encoded: true,
      export() { throw new Error("exporter broke"); },
      shutdown: () => Promise.resolve(),
    };
    const processor = createEncodedSpanProcessor({ exporter, exportTimeoutMillis: 15000 });
    const provider = new TracerProvider({ spanProcessors: [processor] });
    provider.getTracer("breakwater").startSpan("one").end();
    await processor.forceFlush().then(() => console.log("resolved"), (e) => console.log(e.message));
    await provider.shutdown();
  `;
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/throwing_exporter.ts`;
    await Deno.writeTextFile(file, script);
    const command = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        `--config=${new URL("../../deno.json", import.meta.url).pathname}`,
        file,
      ],
      stdout: "piped",
      stderr: "piped",
    });
    const startedMs = performance.now();
    const output = await within(command.output(), 60_000, "the process");
    const elapsedMs = performance.now() - startedMs;
    assert.ok(elapsedMs < 10_000, `ended after ${Math.round(elapsedMs)} ms (export timeout 15 s)`);
    assert.equal(new TextDecoder().decode(output.stdout).trim(), "exporter broke");
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("encoded spans: export failures are logged once per streak, a throw counted as a failure", async () => {
  const lines: Record<string, unknown>[] = [];
  const outcomes = ["fail", "throw", "ok", "fail"];
  const inner: EncodedSpanExporter = {
    encoded: true,
    export(_batch, resultCallback) {
      const outcome = outcomes.shift();
      if (outcome === "throw") throw new Error("exporter broke");
      resultCallback(
        outcome === "ok"
          ? { code: ExportResultCode.SUCCESS }
          : { code: ExportResultCode.FAILED, error: new Error("503") },
      );
    },
    shutdown: () => Promise.resolve(),
  };
  const exporter = withEncodedSpanFailureStreakLogging(
    inner,
    (line) => lines.push(line),
    "http://collector:4318/v1/traces",
  );
  assert.equal(exporter.encoded, true);
  const results: ExportResultCode[] = [];
  const batch = createSpanBatchEncoder().take();
  for (let i = 0; i < 4; i++) exporter.export(batch, (result) => results.push(result.code));
  assert.deepEqual(results, [
    ExportResultCode.FAILED,
    ExportResultCode.FAILED,
    ExportResultCode.SUCCESS,
    ExportResultCode.FAILED,
  ]);
  assert.deepEqual(lines.map((line) => [line.event, line.signal]), [
    ["otlp_export_failed", "traces"],
    ["otlp_export_recovered", "traces"],
    ["otlp_export_failed", "traces"],
  ]);
  await exporter.shutdown();
});
