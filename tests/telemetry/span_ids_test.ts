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

Deno.test("spanIds: 100k trace and span ids are well-formed, non-zero and distinct", () => {
  const ids = spanIds();
  const seen = new Set<string>();
  const zeroTrace = "0".repeat(32);
  const zeroSpan = "0".repeat(16);
  for (let i = 0; i < 100_000; i++) {
    const traceId = ids.generateTraceId();
    const spanId = ids.generateSpanId();
    assert.ok(/^[0-9a-f]{32}$/.test(traceId), traceId);
    assert.ok(/^[0-9a-f]{16}$/.test(spanId), spanId);
    assert.notEqual(traceId, zeroTrace);
    assert.notEqual(spanId, zeroSpan);
    seen.add(traceId).add(spanId);
  }
  assert.equal(seen.size, 200_000);
});

Deno.test("spanIds: each id spells its own bytes of the block; only an all-zero one is replaced", () => {
  // Bytes 1, 2, 3, ... with bytes 24..31 zero: the ids are consecutive slices of the block's hex.
  const ids = spanIds((bytes) => {
    bytes.forEach((_, i) => bytes[i] = (i + 1) & 0xff);
    bytes.fill(0, 24, 32);
  });
  assert.equal(ids.generateTraceId(), "0102030405060708090a0b0c0d0e0f10");
  assert.equal(ids.generateSpanId(), "1112131415161718");
  assert.equal(ids.generateSpanId(), "0000000000000001");
  assert.equal(ids.generateSpanId(), "2122232425262728");
});
