/**
 * Trace and span ids (W3C Trace Context: 16 and 8 random bytes as lower-case hex, never all
 * zero), drawn from one block of `crypto.getRandomValues` bytes at a time.
 *
 * Why not the SDK's `RandomIdGenerator`: it hex-encodes through Node's `Buffer` on every id,
 * which was a quarter of what a request the sampler drops costs (~2 us each in a loop). Here a
 * request costs a table lookup per byte, and the random source is the platform's CSPRNG.
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

const HEX: readonly string[] = Array.from(
  { length: 256 },
  (_, i) => i.toString(16).padStart(2, "0"),
);
const BLOCK_BYTES = 4096;

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
  let at = BLOCK_BYTES;
  const id = (length: number): string => {
    if (at + length > BLOCK_BYTES) {
      random(block);
      at = 0;
    }
    let out = "";
    let zero = true;
    for (let i = at; i < at + length; i++) {
      if (block[i] !== 0) zero = false;
      out += HEX[block[i]];
    }
    at += length;
    // An all-zero id is invalid (W3C Trace Context §3.2.2.3-4): 2^-64 at worst, made valid.
    return zero ? `${out.slice(0, -2)}01` : out;
  };
  return { generateTraceId: () => id(16), generateSpanId: () => id(8) };
}
