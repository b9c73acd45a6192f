import assert from "node:assert/strict";
import { createLineWriter } from "../../src/telemetry/line_writer.ts";

function memorySink() {
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  return {
    chunks,
    writeSync(bytes: Uint8Array) {
      chunks.push(decoder.decode(bytes));
      return bytes.length;
    },
  };
}

Deno.test("lines are batched into one write per batch, in order", async () => {
  const sink = memorySink();
  const out = createLineWriter({ sink, maxDelayMs: 5 });
  out.write("a");
  out.write("b");
  assert.deepEqual(sink.chunks, []);
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.deepEqual(sink.chunks, ["a\nb\n"]);
  out.write("c");
  out.flush();
  out.flush();
  assert.deepEqual(sink.chunks, ["a\nb\n", "c\n"]);
});

Deno.test("a full buffer is written at once; partial writes are completed", () => {
  const written: number[] = [];
  const out = createLineWriter({
    maxBufferedChars: 10,
    sink: {
      writeSync(bytes) {
        const n = Math.min(4, bytes.length); // a pipe that takes 4 bytes at a time
        written.push(n);
        return n;
      },
    },
  });
  out.write("12345");
  out.write("67890"); // 12 chars with newlines: flushed now, no timer left behind
  assert.equal(written.reduce((a, b) => a + b, 0), 12);
});
