/**
 * Just enough of the WebSocket framing (RFC 6455 §5.2) for a relay that passes frames on
 * byte for byte: where each frame ends (so the gateway can put a close frame of its own between
 * two frames, never inside one), and what a control frame says (a close frame's code). Payloads
 * are never copied, unmasked or re-masked: a client's frames stay masked on their way to the
 * upstream (§5.3), and messages are never reassembled.
 *
 * @module
 */

/** Close (RFC 6455 §5.5.1). */
export const OPCODE_CLOSE = 0x8;
/** Ping (§5.5.2). */
export const OPCODE_PING = 0x9;
/** Pong (§5.5.3). */
export const OPCODE_PONG = 0xa;

/** A control frame seen whole (its payload unmasked, at most 125 bytes). */
export interface ControlFrame {
  /** `OPCODE_CLOSE`, `OPCODE_PING`, `OPCODE_PONG` (or a reserved control opcode). */
  opcode: number;
  /** The payload, unmasked (a copy; the relayed bytes are untouched). */
  payload: Uint8Array;
}

/** What a close frame's payload says (§5.5.1, §7.1.5). */
export interface CloseInfo {
  /** The status code, or null for an empty payload (received as 1005). */
  code: number | null;
  /** The reason, decoded as UTF-8 (replacement characters for invalid bytes). */
  reason: string;
}

/** Reads a close frame's payload. */
export function closeInfo(payload: Uint8Array): CloseInfo {
  if (payload.length < 2) return { code: null, reason: "" };
  return {
    code: (payload[0] << 8) | payload[1],
    reason: new TextDecoder().decode(payload.subarray(2)),
  };
}

const MAX_CONTROL_PAYLOAD = 125;
/** Bytes of a frame header before its payload: 2, 4 or 10, plus 4 for a masking key. */
const MAX_HEADER_BYTES = 14;

/**
 * Follows frame boundaries through a byte stream fed in arbitrary chunks.
 *
 * @example
 * ```ts
 * const scanner = new FrameScanner((frame) => console.log(frame.opcode));
 * scanner.scan(bytes, 0, bytes.length, false);
 * scanner.atBoundary; // true when the bytes so far ended a frame
 * ```
 */
export class FrameScanner {
  /** Called with each control frame once its last byte was scanned. */
  private readonly onControl: (frame: ControlFrame) => void;
  /** Header bytes of the frame being read (a header can straddle two chunks). */
  private readonly header = new Uint8Array(MAX_HEADER_BYTES);
  private headerBytes = 0;
  /** Payload bytes of the current frame still to come (-1: in its header). */
  private payloadLeft = -1;
  private opcode = 0;
  private mask: Uint8Array | null = null;
  /** The payload of a control frame, gathered (null for a data frame). */
  private control: Uint8Array | null = null;
  private controlAt = 0;
  /** Whether frames must be masked (from a client), must not be (from a server), or either. */
  private readonly requireMasked: boolean | null;
  /** Frames seen whole. */
  frames = 0;
  /**
   * Set when a frame breaks the masking rule (RFC 6455 §5.1): scanning stops before it for
   * good, and `violationSplit` says whether its first bytes went out with an earlier chunk.
   */
  violation: string | null = null;
  /** See {@link violation}. */
  violationSplit = false;

  /**
   * @param onControl hears each control frame seen whole
   * @param requireMasked true: every frame must be masked (a client's); false: none may be (a
   *   server's); null: not checked
   */
  constructor(onControl: (frame: ControlFrame) => void, requireMasked: boolean | null = null) {
    this.onControl = onControl;
    this.requireMasked = requireMasked;
  }

  /** True when the bytes scanned so far end exactly at a frame boundary. */
  get atBoundary(): boolean {
    return this.payloadLeft === -1 && this.headerBytes === 0;
  }

  /**
   * Scans `bytes[from, to)`. With `stopAtBoundary`, stops at the first frame boundary at or
   * after `from` (returning `from` when already at one). Returns where scanning stopped.
   */
  scan(bytes: Uint8Array, from: number, to: number, stopAtBoundary: boolean): number {
    if (this.violation !== null) return from;
    let at = from;
    while (at < to) {
      if (stopAtBoundary && this.atBoundary) return at;
      if (this.payloadLeft === -1) {
        const frameStart = this.headerBytes === 0 ? at : -1;
        at = this.readHeader(bytes, at, to);
        if (this.violation !== null) {
          this.violationSplit = frameStart === -1;
          return frameStart === -1 ? from : frameStart;
        }
        continue;
      }
      const n = Math.min(this.payloadLeft, to - at);
      if (this.control !== null) {
        this.control.set(bytes.subarray(at, at + n), this.controlAt);
        this.controlAt += n;
      }
      at += n;
      this.payloadLeft -= n;
      if (this.payloadLeft === 0) this.endFrame();
    }
    return at;
  }

  /** Takes header bytes; returns the position after those it took. */
  private readHeader(bytes: Uint8Array, at: number, to: number): number {
    const header = this.header;
    while (at < to) {
      header[this.headerBytes++] = bytes[at++];
      if (this.headerBytes === 2 && this.requireMasked !== null) {
        const masked = (header[1] & 0x80) !== 0;
        if (masked !== this.requireMasked) {
          this.violation = masked ? "a masked frame from the server" : "an unmasked client frame";
          return at;
        }
      }
      const needed = this.headerLength();
      if (needed !== -1 && this.headerBytes === needed) {
        this.startPayload();
        return at;
      }
    }
    return at;
  }

  /** The whole header's length once enough of it is known, else -1. */
  private headerLength(): number {
    if (this.headerBytes < 2) return -1;
    const lengthCode = this.header[1] & 0x7f;
    const masked = (this.header[1] & 0x80) !== 0 ? 4 : 0;
    return (lengthCode === 126 ? 4 : lengthCode === 127 ? 10 : 2) + masked;
  }

  private startPayload(): void {
    const header = this.header;
    this.opcode = header[0] & 0x0f;
    const lengthCode = header[1] & 0x7f;
    let length = lengthCode;
    let at = 2;
    if (lengthCode === 126) {
      length = (header[2] << 8) | header[3];
      at = 4;
    } else if (lengthCode === 127) {
      // 64-bit length; beyond 2^53 is no length a real peer sends.
      length = 0;
      for (let i = 2; i < 10; i++) length = length * 256 + header[i];
      at = 10;
    }
    this.mask = (header[1] & 0x80) !== 0 ? header.slice(at, at + 4) : null;
    this.headerBytes = 0;
    const isControl = (this.opcode & 0x8) !== 0;
    this.control = isControl && length <= MAX_CONTROL_PAYLOAD ? new Uint8Array(length) : null;
    this.controlAt = 0;
    this.payloadLeft = length;
    if (length === 0) this.endFrame();
  }

  private endFrame(): void {
    this.payloadLeft = -1;
    this.frames++;
    const control = this.control;
    if (control === null) return;
    this.control = null;
    const mask = this.mask;
    if (mask !== null) {
      for (let i = 0; i < control.length; i++) control[i] ^= mask[i & 3];
    }
    this.onControl({ opcode: this.opcode, payload: control });
  }
}

/**
 * One whole frame (FIN set) of `opcode` carrying `payload` (RFC 6455 §5.2): unmasked as a server
 * sends it, or masked with a random key as a client must (§5.3).
 *
 * @example
 * ```ts
 * await conn.write(encodeFrame(0x1, new TextEncoder().encode("hi"), true));
 * ```
 */
export function encodeFrame(opcode: number, payload: Uint8Array, masked: boolean): Uint8Array {
  const lengthBytes = payload.length < 126 ? 0 : payload.length < 65536 ? 2 : 8;
  const at = 2 + lengthBytes;
  const frame = new Uint8Array(at + (masked ? 4 : 0) + payload.length);
  frame[0] = 0x80 | opcode;
  const maskBit = masked ? 0x80 : 0;
  if (lengthBytes === 0) frame[1] = maskBit | payload.length;
  else if (lengthBytes === 2) {
    frame[1] = maskBit | 126;
    frame[2] = payload.length >> 8;
    frame[3] = payload.length & 0xff;
  } else {
    frame[1] = maskBit | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(payload.length));
  }
  if (!masked) {
    frame.set(payload, at);
    return frame;
  }
  const key = crypto.getRandomValues(new Uint8Array(4));
  frame.set(key, at);
  for (let i = 0; i < payload.length; i++) frame[at + 4 + i] = payload[i] ^ key[i & 3];
  return frame;
}

/**
 * A close frame (RFC 6455 §5.5.1) with `code` and `reason` (truncated to fit 125 bytes):
 * unmasked as a server sends it, or masked with a random key as a client must (§5.3).
 */
export function closeFrame(code: number, reason: string, masked: boolean): Uint8Array {
  const encoded = new TextEncoder().encode(reason).subarray(0, MAX_CONTROL_PAYLOAD - 2);
  const payload = new Uint8Array(2 + encoded.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(encoded, 2);
  return encodeFrame(OPCODE_CLOSE, payload, masked);
}
