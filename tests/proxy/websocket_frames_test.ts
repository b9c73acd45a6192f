/** The frame scanner and the gateway's own close frames (RFC 6455 §5.2, §5.5.1). */
import assert from "node:assert/strict";
import {
  closeFrame,
  closeInfo,
  type ControlFrame,
  encodeFrame,
  FrameScanner,
  OPCODE_CLOSE,
  OPCODE_PING,
} from "../../src/proxy/websocket_frames.ts";

/** A frame as a peer writes it; masked with a fixed key when `mask` is set. */
function frame(opcode: number, payload: Uint8Array, mask: Uint8Array | null): Uint8Array {
  const lengthBytes = payload.length < 126 ? 0 : payload.length < 65536 ? 2 : 8;
  const head = 2 + lengthBytes + (mask ? 4 : 0);
  const out = new Uint8Array(head + payload.length);
  out[0] = 0x80 | opcode;
  const maskBit = mask ? 0x80 : 0;
  if (lengthBytes === 0) out[1] = maskBit | payload.length;
  else if (lengthBytes === 2) {
    out[1] = maskBit | 126;
    out[2] = payload.length >> 8;
    out[3] = payload.length & 0xff;
  } else {
    out[1] = maskBit | 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(payload.length));
  }
  if (mask) out.set(mask, 2 + lengthBytes);
  for (let i = 0; i < payload.length; i++) {
    out[head + i] = mask ? payload[i] ^ mask[i & 3] : payload[i];
  }
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const text = (s: string) => new TextEncoder().encode(s);
const MASK = new Uint8Array([1, 2, 3, 4]);

Deno.test("frames of every length form are followed through chunks of any size", () => {
  const stream = concat(
    frame(0x1, text("hi"), MASK),
    frame(0x2, new Uint8Array(300), MASK),
    frame(OPCODE_PING, text("p"), MASK),
    frame(0x2, new Uint8Array(70_000), null),
    frame(OPCODE_CLOSE, concat(new Uint8Array([0x0f, 0xa1]), text("bye")), MASK),
  );
  for (const chunk of [1, 2, 3, 7, 64, 1000, stream.length]) {
    const controls: ControlFrame[] = [];
    const scanner = new FrameScanner((control) => controls.push(control));
    for (let at = 0; at < stream.length; at += chunk) {
      const end = Math.min(stream.length, at + chunk);
      assert.equal(scanner.scan(stream, at, end, false), end);
    }
    assert.equal(scanner.frames, 5, `chunk ${chunk}`);
    assert.ok(scanner.atBoundary);
    assert.deepEqual(controls.map((c) => c.opcode), [OPCODE_PING, OPCODE_CLOSE]);
    // Unmasked copies; the stream itself is untouched.
    assert.deepEqual(closeInfo(controls[1].payload), { code: 4001, reason: "bye" });
    assert.equal(new TextDecoder().decode(controls[0].payload), "p");
  }
});

Deno.test("stopAtBoundary stops where a frame ends, never inside one", () => {
  const first = frame(0x1, text("abcdef"), MASK);
  const stream = concat(first, frame(0x1, text("xyz"), MASK));
  const scanner = new FrameScanner(() => {});
  // At a boundary already (the start): nothing is taken.
  assert.equal(scanner.scan(stream, 0, stream.length, true), 0);
  assert.equal(scanner.scan(stream, 0, 3, false), 3); // into the first frame
  assert.equal(scanner.atBoundary, false);
  assert.equal(scanner.scan(stream, 3, stream.length, true), first.length);
  assert.ok(scanner.atBoundary);
  // Already at a boundary: nothing is taken.
  assert.equal(scanner.scan(stream, first.length, stream.length, true), first.length);
  assert.equal(scanner.scan(stream, first.length, stream.length, false), stream.length);
});

Deno.test("encodeFrame: every length form, unmasked as a server sends it, masked as a client must", () => {
  for (const length of [0, 125, 126, 65535, 65536]) {
    const payload = new Uint8Array(length).map((_, i) => i & 0xff);
    assert.deepEqual(encodeFrame(0x2, payload, false), frame(0x2, payload, null), `${length}`);
    const masked = encodeFrame(0x1, payload, true);
    const keyAt = 2 + (length < 126 ? 0 : length < 65536 ? 2 : 8);
    const key = masked.slice(keyAt, keyAt + 4);
    assert.deepEqual(masked, frame(0x1, payload, key), `${length} masked`);
  }
});

Deno.test("closeFrame: unmasked as a server sends it, masked as a client must", () => {
  const server = closeFrame(1001, "going away", false);
  assert.equal(server[0], 0x88);
  assert.equal(server[1], 12);
  assert.deepEqual(closeInfo(server.subarray(2)), { code: 1001, reason: "going away" });

  const client = closeFrame(1001, "going away", true);
  assert.equal(client[1] & 0x80, 0x80);
  const controls: ControlFrame[] = [];
  new FrameScanner((control) => controls.push(control)).scan(client, 0, client.length, false);
  assert.deepEqual(closeInfo(controls[0].payload), { code: 1001, reason: "going away" });

  // A reason too long for a control frame is cut to fit 125 bytes.
  assert.equal(closeFrame(1000, "x".repeat(300), false).length, 2 + 125);
  assert.deepEqual(closeInfo(new Uint8Array(0)), { code: null, reason: "" });
});

Deno.test("the masking rule (RFC 6455 §5.1): scanning stops before the frame that breaks it", () => {
  const good = frame(0x1, text("ok"), MASK);
  const bad = frame(0x1, text("no"), null);
  const stream = concat(good, bad);
  const client = new FrameScanner(() => {}, true);
  assert.equal(client.scan(stream, 0, stream.length, false), good.length);
  assert.equal(client.violation, "an unmasked client frame");
  assert.equal(client.violationSplit, false);
  // Nothing more is taken once it broke.
  assert.equal(client.scan(stream, good.length, stream.length, false), good.length);

  // The bad frame's first byte came with an earlier chunk.
  const split = new FrameScanner(() => {}, true);
  assert.equal(split.scan(stream, 0, good.length + 1, false), good.length + 1);
  assert.equal(split.scan(stream, good.length + 1, stream.length, false), good.length + 1);
  assert.equal(split.violationSplit, true);

  const server = new FrameScanner(() => {}, false);
  assert.equal(server.scan(good, 0, good.length, false), 0);
  assert.equal(server.violation, "a masked frame from the server");
  const unchecked = new FrameScanner(() => {});
  assert.equal(unchecked.scan(stream, 0, stream.length, false), stream.length);
  assert.equal(unchecked.violation, null);
});
