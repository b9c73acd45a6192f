/**
 * Trace and span ids: W3C Trace Context's form (lower-case hex of 16 and 8 bytes), never all
 * zero, unique across refills of the random block.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spanIds } from "../../src/telemetry/_span_ids.ts";

Deno.test("spanIds: 32 and 16 lower-case hex characters, unique across block refills", () => {
  let draws = 0;
  const ids = spanIds((bytes) => {
    draws++;
    crypto.getRandomValues(bytes);
  });
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const traceId = ids.generateTraceId();
    const spanId = ids.generateSpanId();
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.match(spanId, /^[0-9a-f]{16}$/);
    seen.add(traceId).add(spanId);
  }
  assert.equal(seen.size, 2000);
  assert.ok(draws >= 6, `24000 bytes need several 4 KiB blocks, drew ${draws}`);
});

Deno.test("spanIds: an all-zero draw still gives valid (non-zero) ids", () => {
  const ids = spanIds((bytes) => bytes.fill(0));
  assert.equal(ids.generateTraceId(), "0".repeat(30) + "01");
  assert.equal(ids.generateSpanId(), "0".repeat(14) + "01");
});
