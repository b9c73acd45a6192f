/**
 * Trace and span ids (W3C Trace Context: 16 and 8 random bytes as lower-case hex, never all
 * zero), cut from one block of `crypto.getRandomValues` bytes written out as hex at once.
 *
 * Why not the SDK's `RandomIdGenerator`: it hex-encodes through Node's `Buffer` on every id,
 * which was a quarter of what a request the sampler drops costs (~2 us each in a loop). Here a
 * block of 4 KiB becomes one flat hex string when it is drawn, and an id is a slice of it: no
 * per-id concatenation, whose result V8 keeps as a rope (cons string) that every later
 * `charCodeAt` (the OTLP encoder reads each id's digits) and hash must flatten first.
 *
 * @module
 */
/** The two ids the tracer provider and the sampled-out path ask for. */
export interface SpanIds {
  /** 32 hex characters. */
  generateTraceId(): string;
  /** 16 hex characters. */
  generateSpanId(): string;
}

/** ASCII codes of the hex digits. */
const DIGITS = new TextEncoder().encode("0123456789abcdef");
const BLOCK_BYTES = 4096;
/** Only hex digits are decoded, so UTF-8 gives one character per byte. */
const ascii = new TextDecoder();

/**
 * Creates an id source.
 *
 * @param random fills a byte array with random bytes (default `crypto.getRandomValues`)
 * @example
 * ```ts
 * const ids = spanIds();
 * ids.generateTraceId(); // "4bf92f3577b34da6a3ce929d0e0e4736"
 * ```
 */
export function spanIds(
  random: (bytes: Uint8Array) => void = (bytes) => crypto.getRandomValues(bytes),
): SpanIds {
  const block = new Uint8Array(BLOCK_BYTES);
  const digits = new Uint8Array(2 * BLOCK_BYTES);
  let hex = "";
  let at = BLOCK_BYTES;
  const refill = () => {
    random(block);
    for (let i = 0; i < BLOCK_BYTES; i++) {
      digits[2 * i] = DIGITS[block[i] >>> 4];
      digits[2 * i + 1] = DIGITS[block[i] & 15];
    }
    hex = ascii.decode(digits);
    at = 0;
  };
  const id = (length: number): string => {
    if (at + length > BLOCK_BYTES) refill();
    const start = at;
    at += length;
    for (let i = start; i < at; i++) {
      if (block[i] !== 0) return hex.slice(2 * start, 2 * at);
    }
    // An all-zero id is invalid (W3C Trace Context §3.2.2.3-4): 2^-64 at worst, made valid.
    return `${"0".repeat(2 * length - 2)}01`;
  };
  return { generateTraceId: () => id(16), generateSpanId: () => id(8) };
}
